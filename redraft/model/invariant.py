"""Batch-invariant matrix multiplies: every GEMM of a forward runs on row tiles of one fixed shape.

A BLAS picks its kernel, blocking and thread split from the matrix shape, so a token's row of `x @ W.T` can round
differently when other tokens share the call. Measured on a 2-core AVX-512 Xeon (MKL 2024.2, torch 2.13): float32 rows
of matrices with fewer than 16 rows (one thread), and with two threads any row count below ~90 at K = N = 1024;
bfloat16 at scattered row counts from K = 512. Zero-padding to a multiple of 8 rows (this project's first fix) was
enough on one machine and not on another. What holds on both: a call of one fixed shape [T, K] x [K, N] gives a row
the same bits wherever it sits in the tile and whatever the other rows are (0 mismatches over K 128-2048, N up to 6144,
float32 and bfloat16, 1 and 2 threads, T = 8, 16, 32; `tests/test_model_batch_invariance.py` checks this premise on
the machine it runs on). So under `RowTiles`, a linear splits its rows into tiles of exactly T rows (the last one
zero-padded) and calls the GEMM once per tile.

Cost (same machine, float32, 2 threads): about 1.1-1.2x per linear at 32 rows (one decode window), 1.5-2x at 256
rows (batch 8); see `benchmarks/decode_speed.py` for the end-to-end effect. The engine turns it on for CPU decoding
(`Engine(batch_invariant=...)`); training never uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class RowTiles:
    """Row-tile sizes of a batch-invariant forward.

    dense: rows per GEMM of the token-wise layers (QKV, attention output, dense MLPs, shared experts, router, LM
        head); decode windows are whole blocks, so a multiple of the block length needs no padding.
    expert: rows per GEMM of a routed expert (an expert sees few tokens of a window: a small tile wastes less).
    """

    dense: int = 32
    expert: int = 8

    def __post_init__(self) -> None:
        if self.dense <= 0 or self.expert <= 0:
            raise ValueError(f"row tiles must be positive, got dense={self.dense} expert={self.expert}")


def dense_tile(tiles: RowTiles | None) -> int | None:
    """The token-wise layers' tile of a forward (None: plain GEMMs)."""
    return tiles.dense if tiles is not None else None


def tiled_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, tile: int | None = None) -> Tensor:
    """`F.linear(x, weight, bias)`; with `tile`, computed as one GEMM per tile of exactly `tile` rows of x's
    flattened leading dimensions, so each row's result does not depend on the other rows."""
    if tile is None:
        return F.linear(x, weight, bias)
    lead = x.shape[:-1]
    flat = pad_rows(x.reshape(-1, x.shape[-1]), tile)
    wt = weight.t()

    def gemm(rows: Tensor, out: Tensor | None = None) -> Tensor:
        return torch.mm(rows, wt, out=out) if bias is None else torch.addmm(bias, rows, wt, out=out)

    if needs_grad(flat, weight):  # out= has no autograd
        out = torch.cat([gemm(rows) for rows in flat.split(tile)])
    else:
        out = flat.new_empty(flat.shape[0], weight.shape[0])
        for s in range(0, flat.shape[0], tile):
            gemm(flat[s:s + tile], out=out[s:s + tile])
    return out[:lead.numel()].view(*lead, weight.shape[0])


def apply_linear(module: nn.Module, x: Tensor, tile: int | None = None) -> Tensor:
    """A token-wise linear layer's forward: a plain `nn.Linear` through `tiled_linear` (row tiles when `tile` is
    set); a module that declares `takes_row_tiles` (an FP8 linear, `model/fp8`) is called with the tile; any other
    module in its place (a PEFT LoRA wrapper, see `redraft/model/lora.py`) is called as a module, so its own forward
    (base + adapter) runs. Such a wrapper is not batch invariant under `tile`: merge the adapter first
    (`redraft merge`, `--adapter` does so) for bit-exact decoding."""
    if type(module) is nn.Linear:
        return tiled_linear(x, module.weight, module.bias, tile)
    if getattr(module, "takes_row_tiles", False):
        return module(x, tile)
    return module(x)


def needs_grad(x: Tensor, weight: Tensor) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)


def pad_rows(x: Tensor, tile: int) -> Tensor:
    """x [M, K] with zero rows appended up to a multiple of `tile` (x itself when M already is one)."""
    pad = -x.shape[0] % tile
    return torch.cat([x, x.new_zeros(pad, x.shape[1])]) if pad else x


def tiled_swiglu(x: Tensor, gate_up: Tensor, down: Tensor, tile: int | None = None) -> Tensor:
    """down(silu(gate(x)) * up(x)) for x [M, H] and bias-free weights `gate_up` [2I, H] (gate rows first) and
    `down` [H, I], as a routed expert stores them; with `tile`, one tile of `tile` rows at a time (an expert's rows:
    padded once, each tile's two GEMMs of fixed shape)."""
    if tile is None:
        gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, down)
    m = x.shape[0]
    flat = pad_rows(x, tile)
    gut, dt = gate_up.t(), down.t()

    def swiglu(h: Tensor) -> Tensor:
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate) * up

    if needs_grad(flat, gate_up):  # out= has no autograd
        return torch.cat([torch.mm(swiglu(torch.mm(c, gut)), dt) for c in flat.split(tile)])[:m]
    out = flat.new_empty(flat.shape[0], down.shape[0])
    for s in range(0, flat.shape[0], tile):
        torch.mm(swiglu(torch.mm(flat[s:s + tile], gut)), dt, out=out[s:s + tile])
    return out[:m]
