"""Reproduce the paper's claims on a model and its M2T-only twin: (C1) speedy vs quality, (C2) T2T training makes
editing useful, at matched TPF, (C3) Multi-Block Editing on vs off; computed from fresh runs over several seeds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redraft.decoding.config import DecodeConfig
from redraft.evaluation.confidence import ConfidenceHistogram, confidence_histograms
from redraft.evaluation.harness import GenerateFn, ProgressFn, decode_config, evaluate, load
from redraft.evaluation.report import EvalReport, mean_std
from redraft.evaluation.tasks import get_task

DEFAULT_TASKS = ("addition", "sorting", "sudoku4", "reverse")
# sweep arms: (arm name, model "main" | "twin", tau_edit or None = editing off)
ARMS = (("T2T model, tau_edit=0.5", "main", 0.5), ("T2T model, tau_edit=0", "main", 0.0),
        ("T2T model, editing off", "main", None), ("M2T-only twin, tau_edit=0.5", "twin", 0.5),
        ("M2T-only twin, editing off", "twin", None))


@dataclass(frozen=True)
class ResultsSettings:
    """tau_masks: the sweep used for the matched-TPF comparison (C2) and the Pareto plot."""

    tasks: tuple[str, ...] = DEFAULT_TASKS
    n: int = 50
    seeds: tuple[int, ...] = (0, 1, 2)
    batch_size: int = 64
    tau_masks: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    mbe_blocks: int = 1
    overrides: Mapping[str, Any] = field(default_factory=dict)
    confidence_n: int = 16  # examples per task (first seed) replayed for C1's confidence histograms; 0 = none

    def __post_init__(self) -> None:
        if len(self.seeds) < 1 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds!r}")
        if len(self.tau_masks) < 2 or any(not 0.0 <= t <= 1.0 for t in self.tau_masks):
            raise ValueError(f"tau_masks must hold >= 2 values in [0, 1], got {self.tau_masks!r}")
        if not isinstance(self.mbe_blocks, int) or self.mbe_blocks < 1:
            raise ValueError(f"mbe_blocks must be an int >= 1, got {self.mbe_blocks!r}")
        if not isinstance(self.confidence_n, int) or self.confidence_n < 0:
            raise ValueError(f"confidence_n must be an int >= 0, got {self.confidence_n!r}")


def seed_means(report: EvalReport, metric: str) -> list[float]:
    """Per seed, the macro average over tasks of a metric."""
    tasks = report.tasks()
    return [sum(getattr(r, metric) for r in report.runs if r.seed == s) / len(tasks) for s in report.seeds]


def interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    """Piecewise-linear y at x through points sorted by x (None outside their x range)."""
    pts = sorted(points)
    if not pts or x < pts[0][0] or x > pts[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[0][1]


@dataclass
class Results:
    settings: ResultsSettings
    model: str
    twin: str
    reports: dict[str, EvalReport]  # "quality", "speedy", "quality+mbe", "speedy+mbe" (all on the main model)
    sweep: dict[str, list[tuple[float, EvalReport]]]  # arm -> [(tau_mask, report)]
    confidence: dict[str, ConfidenceHistogram] | None = None  # "quality", "speedy" (main model), C1's evidence

    def matched(self, arm: str, tpf_target: float) -> tuple[float, float] | None:
        """Score of an arm at a TPF, interpolated along its tau_mask sweep separately for each seed: mean, std."""
        values = []
        for i in range(len(self.settings.seeds)):
            pts = [(seed_means(r, "tpf")[i], seed_means(r, "score")[i]) for _, r in self.sweep[arm]]
            y = interpolate(pts, tpf_target)
            if y is None:
                return None
            values.append(y)
        return mean_std(values)

    def tpf_range(self, arm: str) -> tuple[float, float]:
        tpfs = [mean_std(seed_means(r, "tpf"))[0] for _, r in self.sweep[arm]]
        return min(tpfs), max(tpfs)


def run_results(model_path: Any, twin_path: Any, settings: ResultsSettings | None = None, *,
                generate_fn: GenerateFn | None = None, progress: ProgressFn | None = None,
                device: str = "cpu", tokenizer: Any = None, twin_tokenizer: Any = None) -> Results:
    """Run every configuration the claims need (identical configurations decoded once per model)."""
    settings = settings or ResultsSettings()
    if generate_fn is not None and settings.confidence_n:
        raise ValueError("confidence_n > 0 replays the real engine's trajectories: set it to 0 with a generate_fn")
    main, main_tok, main_name = load(model_path, tokenizer, device)
    twin, twin_tok, twin_name = load(twin_path, twin_tokenizer, device)
    models = {"main": (main, main_tok), "twin": (twin, twin_tok)}
    tasks = [get_task(t) for t in settings.tasks]
    ov = dict(settings.overrides)
    k = settings.mbe_blocks
    jobs: list[tuple[str, DecodeConfig]] = [
        ("main", decode_config("quality", ov)), ("main", decode_config("speedy", ov)),
        ("main", decode_config("quality", {**ov, "mbe_blocks": k})),
        ("main", decode_config("speedy", {**ov, "mbe_blocks": k}))]
    for _, which, te in ARMS:
        for tm in settings.tau_masks:
            extra = {"tau_mask": tm, "editing": False} if te is None else {"tau_mask": tm, "tau_edit": te}
            jobs.append((which, decode_config("quality", {**ov, **extra})))
    unique = list(dict.fromkeys(jobs))
    per_job = len(tasks) * len(settings.seeds) * settings.n
    done: dict[tuple[str, DecodeConfig], EvalReport] = {}
    for i, (which, config) in enumerate(unique):
        tick = None if progress is None else (lambda d, t, i=i: progress(i * per_job + d, len(unique) * per_job))
        model, tok = models[which]
        done[(which, config)] = evaluate(model, tasks, config=config, overrides=ov, n=settings.n,
                                         seeds=settings.seeds, batch_size=settings.batch_size, tokenizer=tok,
                                         keep_samples=(which, config) in jobs[:4],  # paired SEs of C1, C3
                                         progress=tick, generate_fn=generate_fn)
    named = dict(zip(("quality", "speedy", "quality+mbe", "speedy+mbe"), (done[j] for j in jobs[:4])))
    sweep: dict[str, list[tuple[float, EvalReport]]] = {}
    rest = iter(jobs[4:])
    for arm, _, _ in ARMS:
        sweep[arm] = [(tm, done[next(rest)]) for tm in settings.tau_masks]
    confidence = None
    if settings.confidence_n:
        confidence = confidence_histograms(main, main_tok, tasks, {"quality": jobs[0][1], "speedy": jobs[1][1]},
                                           n=settings.confidence_n, seed=settings.seeds[0], overrides=ov,
                                           batch_size=settings.batch_size)
    return Results(settings, main_name, twin_name, named, sweep, confidence)
