"""Grouped FP8-weight GEMM for the routed experts, in Triton: activations stay in bf16, each 128 x 128 weight block
is read as float8 (1 byte per weight: the bytes a decoding step is bound by), converted in registers, multiplied, and
scaled by its `weight_scale_inv`. One launch covers every expert of a layer (rows grouped by expert, as the MoE
dispatch sorts them), like the bf16 model's grouped matmul.

Available when triton imports and the device is CUDA; `GroupedFp8` checks its first result against the dequantized
reference (one expert) and turns itself off, with a warning, on any error or mismatch, so a triton or driver that
miscompiles it costs nothing but speed. `TRITON_INTERPRET=1` runs the kernel on CPU (tests).
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

try:  # triton ships with CUDA builds of torch; absent on CPU installs
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

BLOCK = 128  # the kernel's N and K tiles are the weight blocks
BLOCK_M = 16


if triton is not None:
    @triton.jit
    def _grouped_w8_kernel(x_ptr, w_ptr, s_ptr, out_ptr, tile_expert_ptr, tile_row_ptr, tile_end_ptr, N, K: tl.constexpr,
                           stride_xm, stride_we, stride_wn, stride_se, stride_sn, stride_om,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        pid_t = tl.program_id(0)
        pid_n = tl.program_id(1)
        e = tl.load(tile_expert_ptr + pid_t).to(tl.int64)
        row0 = tl.load(tile_row_ptr + pid_t)
        row_end = tl.load(tile_end_ptr + pid_t)
        rows = row0 + tl.arange(0, BLOCK_M)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        ks = tl.arange(0, BLOCK_K)
        row_ok = rows < row_end
        col_ok = cols < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kb = k0 // BLOCK_K
            kk = k0 + ks
            k_ok = kk < K
            a = tl.load(x_ptr + rows[:, None].to(tl.int64) * stride_xm + kk[None, :],
                        mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(w_ptr + e * stride_we + cols[None, :].to(tl.int64) * stride_wn + kk[:, None],
                        mask=col_ok[None, :] & k_ok[:, None], other=0.0)
            s = tl.load(s_ptr + e * stride_se + pid_n * stride_sn + kb)
            acc += tl.dot(a, b.to(a.dtype)).to(tl.float32) * s
        tl.store(out_ptr + rows[:, None].to(tl.int64) * stride_om + cols[None, :],
                 acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def grouped_available(x: Tensor) -> bool:
    return triton is not None and (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")


def row_tiles(counts: list[int], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(expert, first row, end row) of every BLOCK_M-row tile of rows grouped by expert (int32, on `device`)."""
    experts, starts, ends = [], [], []
    start = 0
    for e, n in enumerate(counts):
        for r in range(start, start + n, BLOCK_M):
            experts.append(e)
            starts.append(r)
            ends.append(start + n)
        start += n
    t = torch.tensor([experts, starts, ends], dtype=torch.int32).to(device, non_blocking=True)
    return t[0], t[1], t[2]


def grouped_fp8_matmul(x: Tensor, tiles: tuple[Tensor, Tensor, Tensor], weight: Tensor, scale_inv: Tensor) -> Tensor:
    """x [M, K] (rows grouped by expert) @ dequant(weight [E, N, K], scale_inv [E, N/128, K/128]).T per expert
    -> [M, N] in x's dtype."""
    m, k = x.shape
    n = weight.shape[1]
    x = x.contiguous()
    out = x.new_empty(m, n)
    if m == 0 or tiles[0].numel() == 0:
        return out.zero_()
    grid = (tiles[0].numel(), triton.cdiv(n, BLOCK))
    _grouped_w8_kernel[grid](x, weight, scale_inv, out, tiles[0], tiles[1], tiles[2], n, k,
                             x.stride(0), weight.stride(0), weight.stride(1), scale_inv.stride(0),
                             scale_inv.stride(1), out.stride(0), BLOCK_M=BLOCK_M, BLOCK_N=BLOCK, BLOCK_K=BLOCK)
    return out


class GroupedFp8:
    """Whether a bank's experts run through the grouped kernel: decided by its first call (checked), off after a
    failure."""

    def __init__(self) -> None:
        self.enabled: bool | None = None

    def usable(self, x: Tensor, block: tuple[int, int], hidden: int, intermediate: int) -> bool:
        if self.enabled is False or not grouped_available(x) or x.dtype not in (torch.bfloat16, torch.float16):
            return False
        ok = block == (BLOCK, BLOCK) and hidden % BLOCK == 0 and intermediate % BLOCK == 0
        if not ok:
            self.enabled = False
        return ok

    def run(self, fn, check):
        """out = fn(); on the first call also `check(out)` (raises on a mismatch); any failure disables the
        kernel and returns None (the caller then takes another path)."""
        try:
            out = fn()
            if self.enabled is None:
                check(out)
                self.enabled = True
            return out
        except Exception as e:  # compile errors, launch errors, a wrong result: all mean "not here"
            warnings.warn(f"redraft FP8: the grouped triton kernel is off ({type(e).__name__}: {e}); using the "
                          "per-expert path", RuntimeWarning, stacklevel=3)
            self.enabled = False
            return None
