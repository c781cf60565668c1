"""Attention layouts: which keys a query may see, described by block structure, turned into boolean masks here.

Every layout redraft uses is "a query sees the keys whose position is below a per-query limit":
  - block-causal (decoding, the official forward): limit = end of the query's own block;
  - one bidirectional window of several blocks (Multi-Block Editing): limit = end of the window;
  - full bidirectional attention: one block covering everything.
The two-stream training layout ([x_t ; x_0], `dual_stream_mask`) repeats positions, so it is built separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor


@dataclass
class BlockLayout:
    """Block structure of one forward window.

    block_length: blocks are `[k*block_length, (k+1)*block_length)` in absolute positions.
    key_limit: optional [B, T] int tensor; query t of row b sees keys with position < key_limit[b, t].
        Default: the end of the query's own block (block-causal).
    valid: optional [B, T] bool tensor; False marks padding in the window (such keys are never seen).
    """

    block_length: int
    key_limit: Tensor | None = None
    valid: Tensor | None = None

    def __post_init__(self) -> None:
        if self.block_length <= 0:
            raise ValueError(f"block_length must be positive, got {self.block_length}")

    def limits(self, position_ids: Tensor) -> Tensor:
        if self.key_limit is not None:
            return self.key_limit
        return (torch.div(position_ids, self.block_length, rounding_mode="floor") + 1) * self.block_length


def window_mask(position_ids: Tensor, layout: BlockLayout, cache_lengths: Tensor | None = None,
                cache_width: int = 0) -> Tensor:
    """Boolean mask [B, 1, T, cache_width + T] (True = attend) for a window after `cache_width` cached key slots.

    Cached slot j of row b holds position j and is valid when j < cache_lengths[b]; all cached positions precede
    the window, so every valid cached key is visible. A query always sees itself (padding rows stay finite).
    """
    bsz, t = position_ids.shape
    limit = layout.limits(position_ids)  # [B, T]
    win = position_ids[:, None, :] < limit[:, :, None]  # [B, Tq, Tk]
    if layout.valid is not None:
        win = win & layout.valid[:, None, :]
    win = win | torch.eye(t, dtype=torch.bool, device=position_ids.device)[None]
    if cache_width == 0:
        return win[:, None]
    slots = torch.arange(cache_width, device=position_ids.device)
    cached = (slots[None, :] < cache_lengths[:, None])[:, None, :].expand(bsz, t, cache_width)
    return torch.cat([cached, win], dim=-1)[:, None]


@dataclass
class KeyGroup:
    """Rows of a forward that have the same number n of real keys: rows [G] (batch indices), keys [G, n] (their key
    slots among `window_mask`'s cache_width + T), mask [G, 1, T, n] (the window mask on those slots)."""

    rows: Tensor
    keys: Tensor
    mask: Tensor


def ragged_key_groups(mask: Tensor, cache_lengths: Tensor | None, cache_width: int,
                      valid: Tensor | None) -> list[KeyGroup] | None:
    """Each row's real keys (its cached positions and valid window positions), rows grouped by key count; None when
    every row's keys fill all slots (no padding anywhere). Built once per forward, used by every layer.

    Used on CPU so a row's attention never depends on the rest of the batch: SDPA's CPU kernel rounds differently
    for different key counts, and padding a row to the longest row changes its key count (rows of equal key count
    attend together: batch composition alone does not change SDPA's result). Padding queries that see no real key
    are pointed at the row's first key, so outputs stay finite.
    """
    bsz, _, t, _ = mask.shape
    lengths = cache_lengths.tolist() if cache_lengths is not None and cache_width else [0] * bsz
    valid_rows = valid.tolist() if valid is not None else [[True] * t] * bsz
    if all(n == cache_width for n in lengths) and all(all(v) for v in valid_rows):
        return None
    by_count: dict[int, list[tuple[int, list[int]]]] = {}
    for b in range(bsz):
        slots = list(range(lengths[b])) + [cache_width + j for j in range(t) if valid_rows[b][j]]
        by_count.setdefault(len(slots), []).append((b, slots))
    groups = []
    for n, members in by_count.items():
        rows = torch.tensor([b for b, _ in members], dtype=torch.long, device=mask.device)
        keys = torch.tensor([slots for _, slots in members], dtype=torch.long, device=mask.device)
        sub = mask[rows].gather(3, keys[:, None, None, :].expand(-1, 1, t, n))
        first = torch.arange(n, device=mask.device) == 0
        groups.append(KeyGroup(rows, keys, sub | (~sub.any(-1, keepdim=True) & first)))
    return groups


def dual_stream_mask(length: int, block_length: int, device: torch.device | str = "cpu") -> Tensor:
    """[2L, 2L] bool mask for the training input [x_t ; x_0] (eq. 5 layout; both halves at positions 0..L-1).

    Noisy query in block b: its own noisy block and clean blocks < b. Clean query in block b: clean blocks <= b.
    A clean query never sees a noisy key.
    """
    blk = torch.arange(length, device=device) // block_length
    qb, kb = blk[:, None], blk[None, :]
    noisy_noisy = qb == kb
    noisy_clean = kb < qb
    clean_clean = kb <= qb
    clean_noisy = torch.zeros_like(noisy_noisy)
    top = torch.cat([noisy_noisy, noisy_clean], dim=1)
    bottom = torch.cat([clean_noisy, clean_clean], dim=1)
    return torch.cat([top, bottom], dim=0)


class TwoStreamMask(NamedTuple):
    """The [x_t ; x_0] mask (`dual_stream_mask`) as its two live parts: a clean query never sees a noisy key, so
    attention runs the noisy queries over all 2L keys and the clean queries over the L clean keys only (3L^2 scores
    instead of 4L^2). The skipped scores are exact zeros after the softmax, so outputs and gradients equal the full
    mask's up to float rounding (the kernels block the keys differently: ~1e-6 relative in float32).

    noisy: bool [B or 1, 1, L, 2L], rows of the noisy queries. clean: bool [B or 1, 1, L, L], the clean queries
    over the clean keys."""

    noisy: Tensor
    clean: Tensor

    @property
    def length(self) -> int:
        return self.clean.shape[-1]

    def full(self) -> Tensor:
        """The equivalent bool mask [B, 1, 2L, 2L]."""
        bottom = torch.cat([torch.zeros_like(self.clean), self.clean], dim=-1)  # clean queries: no noisy key
        return torch.cat([self.noisy, bottom.expand(self.noisy.shape[0], -1, -1, -1)], dim=-2)
