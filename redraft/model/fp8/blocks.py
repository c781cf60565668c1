"""Per-block FP8 (e4m3) weight quantization, the DeepSeek-V3 / Hugging Face "fine-grained FP8" layout.

A weight W [N, K] (output rows N, input columns K; leading dimensions such as experts allowed) is cut into blocks of
`block = (bn, bk)` (128 x 128 by default). Block (i, j) is stored as `q = round_e4m3(W_block / s_ij)` with
`s_ij = max|W_block| / 448` (448 = e4m3's largest finite value), and `weight_scale_inv[i, j] = s_ij` in float32, so
W ~= q * weight_scale_inv (the "_inv" is historical: it is what a dequantizer multiplies by). Partial blocks at the
edges are allowed: the scale grid is [ceil(N / bn), ceil(K / bk)], as vLLM and SGLang compute it.

e4m3 keeps 3 mantissa bits, so every element with a normal scaled value is within 2^-4 of itself (relative), and so
within 2^-4 of its block's largest magnitude; subnormal scaled values (below 2^-6 * s) are within 2^-10 * s.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
Block = tuple[int, int]


def scale_shape(shape: Sequence[int], block: Block, row_splits: Sequence[int] | None = None) -> tuple[int, ...]:
    """The `weight_scale_inv` shape of a weight of `shape` ([..., N, K]). `row_splits`: a fused weight made of
    row groups quantized separately (gate rows, then up rows): the grids stacked along the rows."""
    *lead, n, k = shape
    splits = list(row_splits) if row_splits else [n]
    if sum(splits) != n:
        raise ValueError(f"row_splits {splits} must sum to the weight's {n} rows")
    return (*lead, sum(-(-s // block[0]) for s in splits), -(-k // block[1]))


def _expand(scale: Tensor, n: int, k: int, block: Block) -> Tensor:
    return scale.repeat_interleave(block[0], -2)[..., :n, :].repeat_interleave(block[1], -1)[..., :k]


def quantize_block_fp8(weight: Tensor, block: Block = (128, 128)) -> tuple[Tensor, Tensor]:
    """weight [..., N, K] (any float dtype) -> (float8_e4m3fn [..., N, K], float32 weight_scale_inv
    [..., ceil(N/bn), ceil(K/bk)]). An all-zero block gets scale 1."""
    *lead, n, k = weight.shape
    bn, bk = block
    nb, kb = -(-n // bn), -(-k // bk)
    w = weight.float()
    if nb * bn != n or kb * bk != k:
        w = torch.nn.functional.pad(w, (0, kb * bk - k, 0, nb * bn - n))
    amax = w.reshape(*lead, nb, bn, kb, bk).abs().amax(dim=(-3, -1))
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (weight.float() / _expand(scale, n, k, block)).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale


def dequantize_block_fp8(q: Tensor, scale_inv: Tensor, block: Block = (128, 128),
                         dtype: torch.dtype = torch.bfloat16, row_splits: Sequence[int] | None = None) -> Tensor:
    """The inverse of `quantize_block_fp8`: q * weight_scale_inv per block, in `dtype` (products in float32).
    `row_splits`: see `scale_shape`."""
    *_, n, k = q.shape
    if not row_splits or len(row_splits) == 1:
        return (q.float() * _expand(scale_inv, n, k, block)).to(dtype)
    parts, row, srow = [], 0, 0
    for s in row_splits:
        sb = -(-s // block[0])
        parts.append(dequantize_block_fp8(q[..., row:row + s, :], scale_inv[..., srow:srow + sb, :], block, dtype))
        row, srow = row + s, srow + sb
    return torch.cat(parts, dim=-2)


def quantize_rows(weight: Tensor, block: Block, row_splits: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """`quantize_block_fp8` of each row group of a fused weight (see `scale_shape`), stacked back."""
    if not row_splits or len(row_splits) == 1:
        return quantize_block_fp8(weight, block)
    qs, ss = zip(*(quantize_block_fp8(part, block) for part in weight.split(list(row_splits), dim=-2)))
    return torch.cat(qs, dim=-2), torch.cat(ss, dim=-2)
