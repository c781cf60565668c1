"""Prompt schedule and seeds as pure functions of (seed, step), so a resumed run sees exactly the same data."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch


def derive_seed(*parts: int | str) -> int:
    """A 62-bit seed from a tuple (stable across machines and Python runs)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


@dataclass
class PromptPool:
    """A fixed pool of task examples and their prompt ids, visited in a fresh seeded permutation per pass."""

    samples: list[Any]
    prompt_ids: list[list[int]]
    seed: int

    def __post_init__(self) -> None:
        if not self.samples or len(self.samples) != len(self.prompt_ids):
            raise ValueError(f"prompt pool: {len(self.samples)} samples, {len(self.prompt_ids)} prompt id lists")

    def indices(self, step: int, per_step: int) -> list[int]:
        """Pool indices of the `per_step` prompts of rollout step `step` (0-based)."""
        size = len(self.samples)
        out = []
        for i in range(step * per_step, (step + 1) * per_step):
            epoch, offset = divmod(i, size)
            perm = torch.randperm(size, generator=torch.Generator().manual_seed(derive_seed(self.seed, "pool", epoch)))
            out.append(int(perm[offset]))
        return out


def shard(items: list, rank: int, world_size: int) -> list:
    """This rank's contiguous share of `items` (len divisible by world_size)."""
    if len(items) % world_size:
        raise ValueError(f"{len(items)} items cannot be split evenly over {world_size} processes")
    per = len(items) // world_size
    return items[rank * per:(rank + 1) * per]
