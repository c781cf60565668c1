"""C1 evidence: how confident a model is at the masked positions it decides on, per decoding mode.

S Mode (tau_mask 0.5) and Q Mode (tau_mask 0.7) differ only in which masked positions eq. 1 fills at a step, so the
TPF gap between them is decided by how much of the top-token probability mass at masked positions falls in the band
between the two thresholds. For each forward of a decoding trajectory this replays the canvas before that step
through the model (uncached, block-causal: the prefix through the current block) and records the top-token
probability of every still-masked position of the current block. The replay is exact: the engine's cached forward
computes the same logits (`redraft conformance`)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from redraft.decoding.config import DecodeConfig
from redraft.decoding.results import Trajectory
from redraft.model.masks import BlockLayout

from .harness import task_config
from .tasks import Task

EDGES = tuple(i / 10 for i in range(11))


@dataclass
class ConfidenceHistogram:
    """Counts of the top-token probability at masked positions, one count per (forward, masked position).

    edges: bin edges from 0 to 1; bin i holds edges[i] < p <= edges[i+1] (bin 0 also p = 0). forwards: the
    forwards that had masked positions in their block (post-fill editing forwards are not counted)."""

    label: str
    edges: tuple[float, ...] = EDGES
    counts: list[int] = field(default_factory=lambda: [0] * (len(EDGES) - 1))
    forwards: int = 0

    def add(self, probs: Sequence[float]) -> None:
        for p in probs:
            i = bisect.bisect_left(self.edges, p) - 1
            self.counts[min(max(i, 0), len(self.counts) - 1)] += 1

    @property
    def total(self) -> int:
        return sum(self.counts)

    def share(self, lo: float, hi: float) -> float:
        """Fraction of the counted positions with lo < p <= hi (lo and hi must be bin edges)."""
        i, j = self.edges.index(lo), self.edges.index(hi)
        return sum(self.counts[i:j]) / self.total if self.total else 0.0


@torch.inference_mode()
def masked_confidences(model: Any, trajectory: Trajectory) -> list[list[tuple[int, float]]]:
    """Per forward of the trajectory: (position, top-token probability) of each masked position of the current
    block."""
    L, mask_id = trajectory.block_length, trajectory.mask_id
    device = next(model.parameters()).device
    out = []
    for canvas, step in zip(trajectory.canvases(), trajectory.steps):
        if not step.forward:
            continue
        start, end = step.block * L, (step.block + 1) * L
        masked = [p for p in range(start, end) if canvas[p] == mask_id]
        if not masked:
            out.append([])
            continue
        ids = torch.tensor([canvas[:end]], dtype=torch.long, device=device)
        index = torch.tensor([masked], dtype=torch.long, device=device)
        logits = model(ids, None, BlockLayout(L), logits_index=index).logits[0].float()
        out.append(list(zip(masked, torch.softmax(logits, dim=-1).amax(dim=-1).tolist())))
    return out


def confidence_histograms(model: Any, tokenizer: Any, tasks: Sequence[Task], configs: dict[str, DecodeConfig], *,
                          n: int, seed: int, overrides: dict[str, Any] | None = None,
                          batch_size: int = 16) -> dict[str, ConfidenceHistogram]:
    """One histogram per named config over `n` eval examples of each task (seed `seed`), decoded with the real
    engine (trajectories on) and replayed."""
    from redraft.decoding import generate

    overrides = overrides or {}
    hists = {}
    for label, base in configs.items():
        hist = ConfidenceHistogram(label)
        for task in tasks:
            config = task_config(base, task, seed, overrides).replace(trajectory=True)
            examples = task.examples(n, seed=seed, split="eval")
            for start in range(0, n, batch_size):
                prompts = [task.prompt_ids(e, tokenizer) for e in examples[start:start + batch_size]]
                for result in generate(model, tokenizer, prompts, [config] * len(prompts)):
                    for probs in masked_confidences(model, result.trajectory):
                        hist.forwards += bool(probs)
                        hist.add([p for _, p in probs])
        hists[label] = hist
    return hists
