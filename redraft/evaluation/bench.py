"""`bench`: the paper-style comparison of one model: quality vs speedy vs no-editing, MBE off vs on, and a
tau_mask x tau_edit sweep with its speed/score Pareto front."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from redraft.decoding.config import DecodeConfig
from redraft.evaluation.harness import GenerateFn, ProgressFn, decode_config, evaluate, load
from redraft.evaluation.report import EvalReport, mean_std
from redraft.evaluation.tasks import get_task

DEFAULT_TASKS = ("addition", "sorting", "sudoku4", "reverse")


@dataclass(frozen=True)
class BenchSettings:
    """What `bench` runs. tau_edits: the T2T thresholds of the sweep; each tau_mask is also run with editing off.
    mbe_blocks: k of the "MBE on" rows. overrides: DecodeConfig fields applied to every configuration."""

    tasks: tuple[str, ...] = DEFAULT_TASKS
    n: int = 20
    seeds: tuple[int, ...] = (0,)
    batch_size: int = 16
    tau_masks: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    tau_edits: tuple[float, ...] = (0.0, 0.5, 0.9)
    mbe_blocks: int = 1
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("tasks", "seeds", "tau_masks", "tau_edits"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty, got {getattr(self, name)!r}")
        for v in self.tau_masks:
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"tau_masks values must be in [0, 1], got {v!r}")
        for v in self.tau_edits:
            if not isinstance(v, (int, float)) or v < 0.0:
                raise ValueError(f"tau_edits values must be >= 0, got {v!r}")
        if not isinstance(self.mbe_blocks, int) or self.mbe_blocks < 1:
            raise ValueError(f"mbe_blocks must be an int >= 1, got {self.mbe_blocks!r}")


@dataclass
class BenchPoint:
    """One decoding configuration and its evaluation. group: "modes", "mbe" or "sweep"."""

    name: str
    group: str
    changes: dict[str, Any]
    report: EvalReport

    def mean(self, metric: str) -> float:
        """Macro average over tasks of the per-task (seed-averaged) metric."""
        summary = self.report.summary()
        return sum(s[metric] for s in summary.values()) / len(summary)

    def spread(self, metric: str) -> float:
        """Std over seeds of the task-averaged metric."""
        seeds = self.report.seeds
        per_seed = [sum(getattr(r, metric) for r in self.report.runs if r.seed == s) / len(self.report.tasks())
                    for s in seeds]
        return mean_std(per_seed)[1]


@dataclass
class BenchReport:
    model: str
    settings: dict[str, Any]
    points: list[BenchPoint]
    created: str

    def group(self, name: str) -> list[BenchPoint]:
        return [p for p in self.points if p.group == name]

    def point(self, name: str) -> BenchPoint:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)

    def pareto(self) -> list[BenchPoint]:
        """Sweep points no other sweep point beats on both TPF and score (ties kept), by increasing TPF."""
        pts = self.group("sweep")
        front = [p for p in pts if not any(
            q.mean("tpf") >= p.mean("tpf") and q.mean("score") >= p.mean("score")
            and (q.mean("tpf") > p.mean("tpf") or q.mean("score") > p.mean("score")) for q in pts)]
        return sorted(front, key=lambda p: p.mean("tpf"))

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "created": self.created, "settings": self.settings,
                "pareto": [p.name for p in self.pareto()],
                "points": [{"name": p.name, "group": p.group, "changes": p.changes, "score": p.mean("score"),
                            "score_std": p.spread("score"), "tpf": p.mean("tpf"), "tpf_std": p.spread("tpf"),
                            "tokens_per_s": p.mean("tokens_per_s"), "edits_per_token": p.mean("edits_per_token"),
                            "report": p.report.as_dict()} for p in self.points]}

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def plan(settings: BenchSettings) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, group, (mode, DecodeConfig changes)) of every configuration bench runs."""
    k = settings.mbe_blocks
    out: list[tuple[str, str, dict[str, Any]]] = [
        ("quality", "modes", {"mode": "quality"}), ("speedy", "modes", {"mode": "speedy"}),
        ("no-edit", "modes", {"mode": "no-edit"}),
        ("quality", "mbe", {"mode": "quality"}), (f"quality+mbe{k}", "mbe", {"mode": "quality", "mbe_blocks": k}),
        ("speedy", "mbe", {"mode": "speedy"}), (f"speedy+mbe{k}", "mbe", {"mode": "speedy", "mbe_blocks": k})]
    for tm in settings.tau_masks:
        for te in settings.tau_edits:
            out.append((f"m{tm:g}/e{te:g}", "sweep", {"mode": "quality", "tau_mask": tm, "tau_edit": te}))
        out.append((f"m{tm:g}/off", "sweep", {"mode": "quality", "tau_mask": tm, "editing": False}))
    return out


def bench(model_or_path: Any, settings: BenchSettings | None = None, *, tokenizer: Any = None,
          generate_fn: GenerateFn | None = None, progress: ProgressFn | None = None, device: str = "cpu",
          quantization: str | None = None, adapter: str | os.PathLike | None = None) -> BenchReport:
    """Evaluate every planned configuration (identical configurations are decoded once) on the same examples.
    quantization: per-block FP8 weights when loading a path ("fp8", "fp8-all"; see `redraft.load_model`).
    adapter: a LoRA adapter directory (PEFT layout) merged into the checkpoint at load."""
    settings = settings or BenchSettings()
    model, tokenizer, name = load(model_or_path, tokenizer, device, quantization, adapter)
    planned = plan(settings)
    configs: list[DecodeConfig] = []
    for _, _, spec in planned:
        changes = {k: v for k, v in spec.items() if k != "mode"}
        configs.append(decode_config(spec["mode"], {**dict(settings.overrides), **changes}))
    unique = list(dict.fromkeys(configs))
    tasks = [get_task(t) for t in settings.tasks]  # built once: some tasks read data when created
    per_config = len(settings.tasks) * len(settings.seeds) * settings.n
    reports: dict[DecodeConfig, EvalReport] = {}
    for i, config in enumerate(unique):
        tick = None if progress is None else (
            lambda d, t, i=i: progress(i * per_config + d, len(unique) * per_config))
        reports[config] = evaluate(model, tasks, config=config, overrides=settings.overrides, n=settings.n,
                                   seeds=settings.seeds, batch_size=settings.batch_size, tokenizer=tokenizer,
                                   keep_samples=False, progress=tick, generate_fn=generate_fn, label=str(i))
    points = []
    for (pname, group, spec), config in zip(planned, configs):
        report = reports[config]
        labelled = EvalReport(model=name, label=pname, config=report.config, n=report.n, seeds=report.seeds,
                              runs=report.runs, created=report.created, machine=report.machine)
        points.append(BenchPoint(pname, group, dict(spec), labelled))
    settings_dict = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}
    settings_dict["overrides"] = dict(settings.overrides)
    return BenchReport(model=name, settings=settings_dict, points=points,
                       created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
