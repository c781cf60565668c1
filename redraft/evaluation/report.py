"""Evaluation results: per (task, seed) runs, per-task summaries over seeds, and the JSON / Markdown writers."""

from __future__ import annotations

import json
import math
import platform
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Sample:
    """One scored generation (kept in the JSON report so every number can be checked)."""

    key: str
    completion: str
    answer: str
    score: float
    finish_reason: str
    forwards: int
    tokens: int
    t2t_edits: int


@dataclass
class TaskRun:
    """All eval examples of one task decoded with one seed.

    score: mean example score. tpf: generated tokens / model forwards, summed over rows (a row's forwards are the
    forwards it took part in). tokens_per_s: generated tokens / wall-clock seconds of the batched generate calls.
    edits_per_token: T2T edits / generated tokens; mbe_edits_per_token: the part made in earlier blocks (MBE).
    """

    task: str
    seed: int
    n: int
    score: float
    forwards: int
    tokens: int
    m2t_fills: int
    t2t_edits: int
    mbe_edits: int
    generate_s: float
    finish_reasons: dict[str, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    @property
    def tpf(self) -> float:
        return self.tokens / self.forwards if self.forwards else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.generate_s if self.generate_s > 0 else 0.0

    @property
    def edits_per_token(self) -> float:
        return self.t2t_edits / self.tokens if self.tokens else 0.0

    @property
    def mbe_edits_per_token(self) -> float:
        return self.mbe_edits / self.tokens if self.tokens else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(tpf=self.tpf, tokens_per_s=self.tokens_per_s, edits_per_token=self.edits_per_token,
                 mbe_edits_per_token=self.mbe_edits_per_token)
        return d


METRICS = ("score", "tpf", "tokens_per_s", "edits_per_token", "mbe_edits_per_token")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0.0 for a single value)."""
    if not values:
        return 0.0, 0.0
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def paired_difference(a: "EvalReport", b: "EvalReport", metric: str = "score") -> tuple[float, float, int]:
    """b - a of the macro average over tasks of a per-example metric, with its standard error, pairing the examples
    the two reports decoded (same task, seed and key): per task the mean and variance of the paired differences,
    then mean = average over tasks, SE = sqrt(sum of var_t / n_t) / tasks. Returns (mean, se, pairs)."""
    def by_key(report: EvalReport) -> dict[tuple[str, int, str], float]:
        return {(r.task, r.seed, x.key): getattr(x, metric) for r in report.runs for x in r.samples}

    xa, xb = by_key(a), by_key(b)
    per_task: dict[str, list[float]] = {}
    for key in xa.keys() & xb.keys():
        per_task.setdefault(key[0], []).append(xb[key] - xa[key])
    if not per_task:
        raise ValueError("paired_difference: the two reports share no (task, seed, example) to pair")
    means, var_over_n = [], 0.0
    for diffs in per_task.values():
        m, sd = mean_std(diffs)
        means.append(m)
        var_over_n += sd * sd / len(diffs)
    return sum(means) / len(means), math.sqrt(var_over_n) / len(means), sum(map(len, per_task.values()))


@dataclass
class EvalReport:
    """Everything one `evaluate` call measured. config: the DecodeConfig fields used (before per-task budgets)."""

    model: str
    label: str
    config: dict[str, Any]
    n: int
    seeds: list[int]
    runs: list[TaskRun]
    created: str
    machine: str = field(default_factory=lambda: f"{platform.node()} {platform.machine()} {platform.processor()}".strip())

    def tasks(self) -> list[str]:
        return list(dict.fromkeys(r.task for r in self.runs))

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per task: mean and std over seeds of each metric, plus example count and finish reasons."""
        out: dict[str, dict[str, Any]] = {}
        for task in self.tasks():
            runs = [r for r in self.runs if r.task == task]
            row: dict[str, Any] = {"seeds": len(runs), "examples": sum(r.n for r in runs)}
            for metric in METRICS:
                row[metric], row[metric + "_std"] = mean_std([getattr(r, metric) for r in runs])
            row["finish_reasons"] = dict(sum((Counter(r.finish_reasons) for r in runs), Counter()))
            out[task] = row
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "label": self.label, "config": self.config, "n": self.n, "seeds": self.seeds,
                "created": self.created, "machine": self.machine, "summary": self.summary(),
                "runs": [r.as_dict() for r in self.runs]}

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def to_markdown(self) -> str:
        cfg = ", ".join(f"{k}={self.config[k]}" for k in ("tau_mask", "tau_edit", "editing", "mbe_blocks",
                                                         "block_length") if k in self.config)
        lines = [f"## {self.label}: {self.model}", "",
                 f"{self.n} eval examples per task and seed; seeds {self.seeds}; {cfg}. "
                 f"Mean ± std over seeds. Created {self.created} on {self.machine}.", "",
                 "| task | score | TPF | tokens/s | edits/token | MBE edits/token | finish |",
                 "|---|---|---|---|---|---|---|"]
        for task, s in self.summary().items():
            finish = ", ".join(f"{k} {v}" for k, v in sorted(s["finish_reasons"].items()))
            lines.append(f"| {task} | {pm(s['score'], s['score_std'], 3)} | {pm(s['tpf'], s['tpf_std'], 2)} | "
                         f"{pm(s['tokens_per_s'], s['tokens_per_s_std'], 1)} | "
                         f"{pm(s['edits_per_token'], s['edits_per_token_std'], 3)} | "
                         f"{s['mbe_edits_per_token']:.3f} | {finish} |")
        return "\n".join(lines) + "\n"

    def write_markdown(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_markdown(), encoding="utf-8")
        return path


def pm(mean: float, std: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
