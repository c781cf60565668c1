"""docs/RESULTS.md writer: the C1-C3 tables with spread, a verdict per claim from the numbers, and the speed/score
plot of every sweep arm (PNG)."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from redraft.evaluation.report import EvalReport, mean_std, paired_difference, pm
from redraft.evaluation.results import ARMS, Results, seed_means

# C1 as issue 15 states its goal: S Mode's mean TPF at least this many times Q Mode's ...
C1_MIN_SPEEDUP = 1.4
# ... while the mean score drops by at most this much (absolute)
C1_MAX_DROP = 0.05
# the paper's LLaDA2.1 numbers for comparison: mean TPF in S Mode and in Q Mode
PAPER_TPF = {"speedy": 5.34, "quality": 3.12}


def _ms(report: EvalReport, metric: str) -> tuple[float, float]:
    return mean_std(seed_means(report, metric))


def _task_rows(reports: dict[str, EvalReport], tasks: list[str]) -> list[str]:
    names = list(reports)
    lines = ["| task | " + " | ".join(f"{n} score | {n} TPF" for n in names) + " |",
             "|---|" + "---|---|" * len(names)]
    for task in tasks:
        cells = []
        for n in names:
            s = reports[n].summary()[task]
            cells.append(f"{pm(s['score'], s['score_std'], 3)} | {pm(s['tpf'], s['tpf_std'], 2)}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    cells = [f"**{pm(*_ms(reports[n], 'score'), 3)}** | **{pm(*_ms(reports[n], 'tpf'), 2)}**" for n in names]
    lines.append("| **mean over tasks** | " + " | ".join(cells) + " |")
    return lines


def c1_verdict(quality: EvalReport, speedy: EvalReport) -> str:
    """C1 from the numbers: S Mode's TPF over Q Mode's and the paired score change, against the goal."""
    (qs, _), (qt, _), (st, _) = _ms(quality, "score"), _ms(quality, "tpf"), _ms(speedy, "tpf")
    change, se, pairs = paired_difference(quality, speedy)
    ratio = st / qt if qt else float("inf")
    text = (f"Speedy/quality TPF ratio **{ratio:.2f}x** (goal ≥ {C1_MIN_SPEEDUP}x; the paper's LLaDA2.1: "
            f"{PAPER_TPF['speedy']}/{PAPER_TPF['quality']} = {PAPER_TPF['speedy'] / PAPER_TPF['quality']:.2f}x), "
            f"score change **{change:+.3f} ± {se:.3f}** (standard error over {pairs} paired examples; goal: a loss "
            f"of at most {C1_MAX_DROP}).")
    if qs <= 0.0:
        return text + " **No verdict**: the model solves no example in Q Mode, so there is no score to keep."
    holds = ratio >= C1_MIN_SPEEDUP and -change <= C1_MAX_DROP
    return text + f" The claim **{'reproduces' if holds else 'does not reproduce'}**."


def _c1(res: Results) -> list[str]:
    q, s = res.reports["quality"], res.reports["speedy"]
    return ["## C1: S Mode (speedy) vs Q Mode (quality)", "",
            *_task_rows({"quality": q, "speedy": s}, q.tasks()), "", c1_verdict(q, s), ""]


def _c1_evidence(res: Results) -> list[str]:
    """The confidence histograms behind C1's TPF gap (see `redraft.evaluation.confidence`)."""
    if not res.confidence:
        return []
    q, s = res.reports["quality"], res.reports["speedy"]
    tm = {"quality": q.config.get("tau_mask"), "speedy": s.config.get("tau_mask")}
    hists = res.confidence
    edges = next(iter(hists.values())).edges
    bins = [f"{a:.1f}–{b:.1f}" for a, b in zip(edges, edges[1:])]
    lines = ["### C1 evidence: the model's confidence at the masked positions it decides on", "",
             f"Top-token probability at every still-masked position of the current block, at every forward of "
             f"{res.settings.confidence_n} decoded eval examples per task (seed {res.settings.seeds[0]}; each "
             f"forward replayed without the cache). Share of (forward, masked position) pairs per probability bin, "
             f"and T2T edits per generated token.", "",
             "| mode | tau_mask | forwards | masked positions | " + " | ".join(bins) + " | edits/token |",
             "|---|---|---|---|" + "---|" * len(bins) + "---|"]
    for name, h in hists.items():
        shares = " | ".join(f"{100 * c / h.total:.1f}%" if h.total else "–" for c in h.counts)
        lines.append(f"| {name} | {tm.get(name)} | {h.forwards} | {h.total} | {shares} | "
                     f"{_ms(res.reports[name], 'edits_per_token')[0]:.3f} |")
    lo, hi = tm["speedy"], tm["quality"]
    if lo in edges and hi in edges and lo < hi and "quality" in hists:
        h = hists["quality"]
        lines += ["", f"In Q Mode's trajectories {100 * h.share(lo, hi):.1f}% of the masked positions have a top "
                      f"probability in ({lo:g}, {hi:g}], the band S Mode fills and Q Mode waits on; "
                      f"{100 * h.share(hi, 1.0):.1f}% are above {hi:g} (both modes fill them)."]
    return lines + [""]


def _c2(res: Results) -> list[str]:
    targets = {"Q Mode TPF": _ms(res.reports["quality"], "tpf")[0], "S Mode TPF": _ms(res.reports["speedy"], "tpf")[0]}
    lines = ["## C2: T2T training is what makes editing useful (matched TPF)", "",
             "Each arm is swept over tau_mask " + ", ".join(f"{t:g}" for t in res.settings.tau_masks) + "; its score "
             "is interpolated (piecewise linear in TPF, per seed) at the TPF the T2T model reaches in Q Mode and in "
             "S Mode. `n/a` = the arm never reaches that TPF.", "",
             "| arm | TPF range | " + " | ".join(f"score at {k} = {v:.2f}" for k, v in targets.items()) + " |",
             "|---|---|" + "---|" * len(targets)]
    at: dict[tuple[str, str], float | None] = {}
    for arm, _, _ in ARMS:
        lo, hi = res.tpf_range(arm)
        cells = []
        for k, v in targets.items():
            m = res.matched(arm, v)
            at[(arm, k)] = None if m is None else m[0]
            cells.append("n/a" if m is None else pm(m[0], m[1], 3))
        lines.append(f"| {arm} | {lo:.2f}–{hi:.2f} | " + " | ".join(cells) + " |")
    lines.append("")
    for k in targets:
        main_e, main_off = at[(ARMS[0][0], k)], at[(ARMS[2][0], k)]
        twin_e, twin_off = at[(ARMS[3][0], k)], at[(ARMS[4][0], k)]
        if None in (main_e, main_off, twin_e, twin_off):
            lines.append(f"* At {k}: not every arm reaches this TPF; no verdict.")
            continue
        checks = [("T2T model with editing beats the twin with editing", main_e > twin_e),
                  ("T2T model with editing beats the twin without editing", main_e > twin_off),
                  ("editing helps the T2T model", main_e > main_off),
                  ("editing helps the twin less than the T2T model", twin_e - twin_off < main_e - main_off)]
        lines.append(f"* At {k}: " + "; ".join(f"{c}: **{'yes' if ok else 'no'}**" for c, ok in checks) +
                     f" (T2T {main_e:.3f} / {main_off:.3f} with/without editing; twin {twin_e:.3f} / "
                     f"{twin_off:.3f}).")
    return lines + [""]


def _c3(res: Results) -> list[str]:
    r = res.reports
    k = res.settings.mbe_blocks
    reps = {"quality": r["quality"], f"quality+MBE{k}": r["quality+mbe"], "speedy": r["speedy"],
            f"speedy+MBE{k}": r["speedy+mbe"]}
    lines = ["## C3: Multi-Block Editing off vs on", "", *_task_rows(reps, r["quality"].tasks()), ""]
    for mode in ("quality", "speedy"):
        change, se, pairs = paired_difference(r[mode], r[mode + "+mbe"])
        (ta, _), (tb, _) = _ms(r[mode], "tpf"), _ms(r[mode + "+mbe"], "tpf")
        mbe = _ms(r[mode + "+mbe"], "mbe_edits_per_token")[0]
        lines.append(f"* {mode}: MBE changes the score by **{change:+.3f} ± {se:.3f}** (standard error over {pairs} "
                     f"paired examples) and TPF by {tb - ta:+.2f} ({mbe:.3f} MBE edits per token); score up: "
                     f"**{'yes' if change > 0 else 'no'}**"
                     f"{' (by more than 2 SE)' if change > 2 * se else ' (within 2 SE)' if change > 0 else ''}.")
    return lines + [""]


def plot_arms(res: Results, path: str | Path) -> Path:
    """Score against TPF for every sweep arm (one line per arm, points = tau_mask), Q/S Mode marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.2))
    ax = fig.subplots()
    styles = ["-o", "-s", ":o", "--^", ":v"]
    colours = ["tab:blue", "tab:purple", "tab:cyan", "tab:orange", "tab:red"]
    for (arm, _, _), style, colour in zip(ARMS, styles, colours):
        pts = [(mean_std(seed_means(r, "tpf"))[0], mean_std(seed_means(r, "score"))[0], tm)
               for tm, r in res.sweep[arm]]
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour, label=arm, ms=5)
        for x, y, tm in pts:
            ax.annotate(f"{tm:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6, color=colour)
    for name in ("quality", "speedy"):
        x, y = _ms(res.reports[name], "tpf")[0], _ms(res.reports[name], "score")[0]
        ax.scatter(x, y, s=170, facecolors="none", edgecolors="black", linewidths=1.5, zorder=5)
        ax.annotate({"quality": "Q Mode", "speedy": "S Mode"}[name], (x, y), textcoords="offset points",
                    xytext=(7, -12), fontsize=8)
    ax.set_xlabel("TPF (tokens per forward) — faster →")
    ax.set_ylabel(f"score, mean over {len(res.settings.tasks)} tasks")
    ax.set_title(f"speed vs score (labels = tau_mask; n={res.settings.n} x {len(res.settings.seeds)} seeds)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _sweep_table(res: Results) -> list[str]:
    lines = ["## Appendix: every sweep point", "", "| arm | tau_mask | score | TPF | edits/token |", "|---|---|---|---|---|"]
    for arm, _, _ in ARMS:
        for tm, r in res.sweep[arm]:
            lines.append(f"| {arm} | {tm:g} | {pm(*_ms(r, 'score'), 3)} | {pm(*_ms(r, 'tpf'), 2)} | "
                         f"{_ms(r, 'edits_per_token')[0]:.3f} |")
    return lines + [""]


def write_results(res: Results, path: str | Path, command: str, device: str) -> Path:
    """Write RESULTS.md and its plot (`<stem>_pareto.png` beside it)."""
    path = Path(path)
    png = plot_arms(res, path.with_name(path.stem.lower() + "_pareto.png"))
    st = res.settings
    head = ["# Results: the LLaDA2.1 claims on redraft's tiny models", "",
            f"Command: `{command}`  ", f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}  ",
            f"Machine: {platform.node()} ({platform.machine()}, {platform.processor() or 'cpu'}), device `{device}`"
            f"{' (' + torch.cuda.get_device_name() + ')' if device.startswith('cuda') and torch.cuda.is_available() else ''}, "
            f"torch {torch.__version__}  ",
            f"Models: T2T model `{res.model}`, M2T-only twin `{res.twin}`  ",
            f"Tasks: {', '.join(st.tasks)}; {st.n} eval-split examples per task and seed; seeds {list(st.seeds)}; "
            f"values are mean ± sample std over seeds (per task: of the task's score; means: of the per-seed macro "
            f"average over tasks). Overrides: {dict(st.overrides) or 'none'}.", "",
            "Score = exact-match accuracy; TPF = generated tokens per model forward. Verdicts below are computed "
            "from these numbers, not written by hand.", ""]
    body = (head + _c1(res) + _c1_evidence(res) + _c2(res) + [f"![speed vs score of every arm]({png.name})", ""]
            + _c3(res) + _sweep_table(res))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(body), encoding="utf-8")
    return path
