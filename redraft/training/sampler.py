"""Deterministic data order: the rows of global sample g are a pure function of (seed, g).

Epoch e = g // N walks a permutation drawn from `numpy.random.default_rng([seed, e])`. Step s consumes the global
samples [s * batch_size, (s + 1) * batch_size); micro-batch m of rank r reads the slice starting at
s * batch_size + (m * world_size + r) * micro_batch_size. Resuming at step s therefore needs only s.
"""

from __future__ import annotations

import numpy as np


class RowSampler:
    def __init__(self, num_rows: int, seed: int, batch_size: int, micro_batch_size: int, world_size: int = 1,
                 rank: int = 0):
        if num_rows <= 0:
            raise ValueError(f"num_rows must be positive, got {num_rows}")
        if batch_size % (micro_batch_size * world_size):
            raise ValueError(f"batch_size ({batch_size}) must be a multiple of micro_batch_size x world_size "
                             f"({micro_batch_size} x {world_size})")
        self.num_rows = num_rows
        self.seed = seed
        self.batch_size = batch_size
        self.micro_batch_size = micro_batch_size
        self.world_size = world_size
        self.rank = rank
        self._perms: dict[int, np.ndarray] = {}

    @property
    def accumulation_steps(self) -> int:
        return self.batch_size // (self.micro_batch_size * self.world_size)

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)}
        return self._perms[epoch]

    def rows(self, step: int, micro: int) -> np.ndarray:
        start = step * self.batch_size + (micro * self.world_size + self.rank) * self.micro_batch_size
        out = np.empty(self.micro_batch_size, dtype=np.int64)
        for i, g in enumerate(range(start, start + self.micro_batch_size)):
            out[i] = self._perm(g // self.num_rows)[g % self.num_rows]
        return out

    def epoch_at(self, step: int) -> float:
        return step * self.batch_size / self.num_rows
