"""Writers for `bench`: the Markdown tables (modes, MBE, sweep) and the speed/score Pareto plot (PNG, Agg)."""

from __future__ import annotations

from pathlib import Path

from redraft.evaluation.bench import BenchPoint, BenchReport
from redraft.evaluation.report import pm


def _cells(point: BenchPoint, task: str) -> str:
    s = point.report.summary()[task]
    return f"{pm(s['score'], s['score_std'], 2)} | {s['tpf']:.2f}"


def _task_table(points: list[BenchPoint], tasks: list[str]) -> list[str]:
    head = "| task | " + " | ".join(f"{p.name} score | {p.name} TPF" for p in points) + " |"
    lines = [head, "|---|" + "---|---|" * len(points)]
    for task in tasks:
        lines.append(f"| {task} | " + " | ".join(_cells(p, task) for p in points) + " |")
    lines.append("| **mean** | " + " | ".join(
        f"**{p.mean('score'):.2f}** | **{p.mean('tpf'):.2f}**" for p in points) + " |")
    return lines


def to_markdown(report: BenchReport, png_name: str | None = "pareto.png") -> str:
    st = report.settings
    tasks = report.points[0].report.tasks()
    lines = [f"# redraft bench: {report.model}", "",
             f"{st['n']} eval examples per task and seed, seeds {st['seeds']}, created {report.created} on "
             f"{report.points[0].report.machine}. Score: exact-match accuracy (mean ± std over seeds). TPF: generated "
             "tokens per model forward. Means are macro averages over tasks.", "",
             "## Quality vs speedy vs no editing", "", *_task_table(report.group("modes"), tasks), "",
             "## Multi-Block Editing off vs on", "", *_task_table(report.group("mbe"), tasks), "",
             "## tau_mask x tau_edit sweep", "",
             "`off` = T2T editing disabled (M2T only). ★ = on the speed/score Pareto front.", "",
             "| config | tau_mask | tau_edit | score | TPF | tokens/s | edits/token | Pareto |",
             "|---|---|---|---|---|---|---|---|"]
    front = {p.name for p in report.pareto()}
    for p in report.group("sweep"):
        c = p.changes
        te = f"{c['tau_edit']:g}" if c.get("editing", True) else "off"
        lines.append(f"| {p.name} | {c['tau_mask']:g} | {te} | {pm(p.mean('score'), p.spread('score'), 3)} | "
                     f"{pm(p.mean('tpf'), p.spread('tpf'), 2)} | {p.mean('tokens_per_s'):.1f} | "
                     f"{p.mean('edits_per_token'):.3f} | {'★' if p.name in front else ''} |")
    if png_name:
        lines += ["", f"![speed/score Pareto plot]({png_name})"]
    return "\n".join(lines) + "\n"


def write_markdown(report: BenchReport, path: str | Path, png_name: str | None = "pareto.png") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_markdown(report, png_name), encoding="utf-8")
    return path


def plot_pareto(report: BenchReport, path: str | Path) -> Path:
    """Score (y) against TPF (x) for every sweep point, one panel for the task mean and one per task; colour =
    tau_edit (grey = editing off), labels = tau_mask, the Pareto front of the mean drawn as a line, and the Q / S
    Mode presets marked."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: no global figure state, renders with Agg
    from matplotlib.lines import Line2D

    sweep = report.group("sweep")
    tasks = sweep[0].report.tasks()
    panels = ["mean over tasks", *tasks] if len(tasks) > 1 else tasks
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(5.2 * cols, 4.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    edits = sorted({p.changes["tau_edit"] for p in sweep if p.changes.get("editing", True)})
    cmap = colormaps["viridis"]
    colour = {te: cmap(i / max(1, len(edits) - 1) * 0.85) for i, te in enumerate(edits)}
    presets = {"Q Mode": report.point("quality"), "S Mode": report.point("speedy")}

    def xy(point: BenchPoint, panel: str) -> tuple[float, float]:
        if panel == "mean over tasks":
            return point.mean("tpf"), point.mean("score")
        s = point.report.summary()[panel]
        return s["tpf"], s["score"]

    for ax, panel in zip(axes.flat, panels):
        for p in sweep:
            on = p.changes.get("editing", True)
            x, y = xy(p, panel)
            ax.scatter(x, y, s=40, color=colour[p.changes["tau_edit"]] if on else "0.6",
                       marker="o" if on else "s", edgecolors="black", linewidths=0.4, zorder=3)
            ax.annotate(f"{p.changes['tau_mask']:g}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        if panel == "mean over tasks":
            front = [xy(p, panel) for p in report.pareto()]
            ax.plot([f[0] for f in front], [f[1] for f in front], "-", color="crimson", lw=1.5, zorder=2,
                    label="Pareto front")
        for label, point in presets.items():
            x, y = xy(point, panel)
            ax.scatter(x, y, s=160, facecolors="none", edgecolors="crimson", linewidths=1.6, zorder=4)
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, -12), fontsize=8, color="crimson")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("TPF (tokens per forward) — faster →")
        ax.set_ylabel("score (exact match)")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles = [Line2D([], [], marker="o", ls="", color=colour[te], markeredgecolor="black",
                          label=f"tau_edit={te:g}") for te in edits]
    handles.append(Line2D([], [], marker="s", ls="", color="0.6", markeredgecolor="black", label="editing off"))
    handles.append(Line2D([], [], color="crimson", label="Pareto front (mean)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"redraft bench: speed vs score ({Path(report.model).name}; labels = tau_mask; "
                 f"n={report.settings['n']} x {len(report.settings['seeds'])} seeds)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
