"""Attention masks for training: the two-stream layout [x_t ; x_0], made document-aware for packed rows.

A packed row holds several segments (documents, chat examples) side by side. Each segment restarts its positions at
0 and counts its blocks from its own position 0, as decoding does. Padding has segment id -1 and sees only itself.
With one segment covering positions 0..L-1 the mask equals `redraft.model.masks.dual_stream_mask(L, block_length)`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from redraft.model.masks import TwoStreamMask


def packed_dual_stream_mask(position_ids: Tensor, segment_ids: Tensor, block_length: int) -> Tensor:
    """Bool mask [B, 1, 2L, 2L] (True = attend) for the input [x_t ; x_0] of packed rows.

    position_ids, segment_ids: [B, L] int. Query i and key j must share a segment (id >= 0); with b(.) = position //
    block_length: noisy i sees noisy j iff b(j) == b(i) and clean j iff b(j) < b(i); clean i sees clean j iff
    b(j) <= b(i) and never a noisy key. Every query sees itself (padding rows stay finite).
    """
    return packed_two_stream_mask(position_ids, segment_ids, block_length).full()


def packed_two_stream_mask(position_ids: Tensor, segment_ids: Tensor, block_length: int) -> TwoStreamMask:
    """`packed_dual_stream_mask` as its two live parts (`TwoStreamMask`: attention skips the clean queries' L x L
    scores over noisy keys, which are all masked); `.full()` is the whole mask."""
    if block_length <= 0:
        raise ValueError(f"block_length must be positive, got {block_length}")
    blk = torch.div(position_ids, block_length, rounding_mode="floor")
    same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, :, None] >= 0)
    qb, kb = blk[:, :, None], blk[:, None, :]
    eye = torch.eye(same.shape[-1], dtype=torch.bool, device=same.device)
    noisy = torch.cat([(same & (qb == kb)) | eye, same & (kb < qb)], dim=2)
    clean = (same & (kb <= qb)) | eye
    return TwoStreamMask(noisy[:, None], clean[:, None])


def packed_block_mask(position_ids: Tensor, segment_ids: Tensor, block_length: int) -> Tensor:
    """Bool mask [B, 1, L, L] for the noisy stream alone when every block is a whole segment (block_length >= L):
    a query sees its own block of its own segment. Used instead of the two-stream input when no clean copy is needed
    (LLaDA2.0's stable phase with one block per sequence)."""
    blk = torch.div(position_ids, block_length, rounding_mode="floor")
    same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, :, None] >= 0)
    mask = same & (blk[:, :, None] == blk[:, None, :])
    eye = torch.eye(mask.shape[-1], dtype=torch.bool, device=mask.device)
    return (mask | eye)[:, None]


def block_index(position_ids: Tensor, segment_ids: Tensor, block_length: int) -> Tensor:
    """[B, L] int64: a running index of (segment, block) pairs within each row (0, 1, 2, ...), for per-block noise."""
    blk = torch.div(position_ids, block_length, rounding_mode="floor")
    new = torch.ones_like(blk, dtype=torch.bool)
    new[:, 1:] = (blk[:, 1:] != blk[:, :-1]) | (segment_ids[:, 1:] != segment_ids[:, :-1])
    return new.long().cumsum(1) - 1
