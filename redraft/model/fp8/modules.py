"""FP8 drop-in modules: `Fp8Linear` (for an `nn.Linear`) and `Fp8ExpertBank` (for an `ExpertBank`).

Both hold float8_e4m3fn weights with float32 per-block `weight_scale_inv` and keep the official state-dict names
(`<module>.weight` + `<module>.weight_scale_inv`; experts `experts.{e}.{gate,up,down}_proj.weight[_scale_inv]`).

Compute: on a CUDA device with FP8 tensor cores, block-scaled FP8 GEMMs (`kernels.py`); everywhere else the weight is
dequantized block by block to the activation dtype and multiplied by the same (tiled, batch-invariant) GEMMs as the
unquantized model, so a row's result still never depends on the other rows of the batch.

`Fp8Linear.weight` is the dequantized weight: the model's layers read `.weight` and call `tiled_linear`, so they run
unchanged; calling the module itself (`forward`) uses the FP8 kernel when it can.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..invariant import tiled_linear, tiled_swiglu
from ..moe import _PROJ, ExpertBank
from .blocks import FP8_DTYPE, Block, dequantize_block_fp8, quantize_rows, scale_shape
from .grouped import GroupedFp8, grouped_fp8_matmul, row_tiles
from .kernels import FastPath, block_fp8_linear


def _frozen(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t, requires_grad=False)


class Fp8Linear(nn.Module):
    """y = x @ dequant(weight).T + bias with a float8 weight [out, in] and float32 block scales.

    row_splits: a fused weight whose row groups were quantized separately (MLP gate rows, then up rows, as the
    checkpoint stores `gate_proj` and `up_proj`); its scale grid is the groups' grids stacked.
    """

    takes_row_tiles = True  # `forward(x, tile)`: the layers pass a batch-invariant forward's tile (invariant.py)

    def __init__(self, in_features: int, out_features: int, bias: bool = False, block: Block = (128, 128),
                 dtype: torch.dtype = torch.bfloat16, device: torch.device | str | None = None,
                 row_splits: Sequence[int] | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.block = tuple(block)
        self.row_splits = tuple(row_splits) if row_splits else None
        self.compute_dtype = dtype
        self.qweight = _frozen(torch.empty(out_features, in_features, dtype=FP8_DTYPE, device=device))
        self.weight_scale_inv = _frozen(torch.empty(scale_shape((out_features, in_features), self.block,
                                                                self.row_splits), dtype=torch.float32, device=device))
        self.bias = _frozen(torch.empty(out_features, dtype=dtype, device=device)) if bias else None
        self.fast = FastPath()

    @classmethod
    def from_linear(cls, linear: nn.Linear, block: Block, dtype: torch.dtype,
                    row_splits: Sequence[int] | None = None) -> "Fp8Linear":
        """An Fp8Linear of the linear's shape on its device; its weights quantized unless they are on meta."""
        w = linear.weight
        new = cls(w.shape[1], w.shape[0], linear.bias is not None, block, dtype, w.device, row_splits)
        if not w.is_meta:
            with torch.no_grad():
                q, s = quantize_rows(w.detach(), new.block, new.row_splits)
                new.qweight.copy_(q)
                new.weight_scale_inv.copy_(s)
                if linear.bias is not None:
                    new.bias.copy_(linear.bias)
        return new

    @property
    def weight(self) -> Tensor:
        """The dequantized weight [out, in] in the compute dtype (computed on each access)."""
        return dequantize_block_fp8(self.qweight, self.weight_scale_inv, self.block, self.compute_dtype,
                                    self.row_splits)

    def forward(self, x: Tensor, tile: int | None = None) -> Tensor:
        if tile is None and not self.row_splits and self.fast.usable(x, self.block, [self.qweight.shape]):
            return self.fast.run(
                lambda: block_fp8_linear(x, self.qweight, self.weight_scale_inv, self.bias, x.dtype),
                lambda: F.linear(x, self.weight, self.bias))
        return tiled_linear(x, self.weight, self.bias, tile)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"block={self.block}, fp8=e4m3")

    # the state dict uses the checkpoint names: weight (float8) + weight_scale_inv (+ bias)
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for key, p in (("weight", self.qweight), ("weight_scale_inv", self.weight_scale_inv), ("bias", self.bias)):
            if p is not None:
                destination[prefix + key] = p if keep_vars else p.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        if prefix + "weight" in state_dict:
            w = state_dict.pop(prefix + "weight")
            if w.dtype != FP8_DTYPE:
                error_msgs.append(f"{prefix}weight: expected float8_e4m3fn (an FP8 module), got {w.dtype}")
                return
            state_dict[prefix + "qweight"] = w
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        missing_keys[:] = [prefix + "weight" if k == prefix + "qweight" else k for k in missing_keys]


class Fp8ExpertBank(ExpertBank):
    """`ExpertBank` with float8 stacked weights: `gate_up_proj` [E, 2I, H], `down_proj` [E, H, I], and float32 block
    scales `gate_up_proj_scale_inv` [E, gate grid + up grid, ceil(H/bk)], `down_proj_scale_inv`. The state dict
    holds the official per-expert names with a `weight_scale_inv` next to each weight."""

    def __init__(self, num_experts: int, hidden: int, intermediate: int, block: Block = (128, 128),
                 dtype: torch.dtype = torch.bfloat16, device: torch.device | str | None = None):
        nn.Module.__init__(self)
        self.num_experts, self.hidden, self.intermediate = num_experts, hidden, intermediate
        self.block = tuple(block)
        self.compute_dtype = dtype
        e, i, h = num_experts, intermediate, hidden
        self.gate_up_proj = _frozen(torch.empty(e, 2 * i, h, dtype=FP8_DTYPE, device=device))
        self.gate_up_proj_scale_inv = _frozen(torch.empty(scale_shape((e, 2 * i, h), self.block, (i, i)),
                                                          dtype=torch.float32, device=device))
        self.down_proj = _frozen(torch.empty(e, h, i, dtype=FP8_DTYPE, device=device))
        self.down_proj_scale_inv = _frozen(torch.empty(scale_shape((e, h, i), self.block), dtype=torch.float32,
                                                       device=device))
        self.use_grouped_mm: bool | None = None  # unused (kept for code that toggles it on every bank)
        self.fast = FastPath()
        self.grouped = GroupedFp8()

    @classmethod
    def from_bank(cls, bank: ExpertBank, block: Block, dtype: torch.dtype) -> "Fp8ExpertBank":
        e, two_i, h = bank.gate_up_proj.shape
        new = cls(e, h, two_i // 2, block, dtype, bank.gate_up_proj.device)
        if not bank.gate_up_proj.is_meta:
            with torch.no_grad():
                i = two_i // 2
                q, s = quantize_rows(bank.gate_up_proj.detach(), new.block, (i, i))
                new.gate_up_proj.copy_(q)
                new.gate_up_proj_scale_inv.copy_(s)
                q, s = quantize_rows(bank.down_proj.detach(), new.block)
                new.down_proj.copy_(q)
                new.down_proj_scale_inv.copy_(s)
        return new

    def official_views(self, keep_vars: bool = False) -> dict[str, Tensor]:
        """{"{e}.gate_proj.weight": float8 [I, H] view, "{e}.gate_proj.weight_scale_inv": float32 view, ...}."""
        gu, gus, d, ds = (self.gate_up_proj, self.gate_up_proj_scale_inv, self.down_proj, self.down_proj_scale_inv)
        if not keep_vars:
            gu, gus, d, ds = gu.detach(), gus.detach(), d.detach(), ds.detach()
        i, ib = self.intermediate, -(-self.intermediate // self.block[0])
        stacks = {"gate_proj": (gu[:, :i], gus[:, :ib]), "up_proj": (gu[:, i:], gus[:, ib:]), "down_proj": (d, ds)}
        out = {}
        for name in _PROJ:
            w, s = stacks[name]
            for e in range(self.num_experts):
                out[f"{e}.{name}.weight"] = w[e]
                out[f"{e}.{name}.weight_scale_inv"] = s[e]
        return out

    def expert_weights(self, e: int, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """Expert e's dequantized (gate_up [2I, H], down [H, I])."""
        dtype = dtype or self.compute_dtype
        i = self.intermediate
        return (dequantize_block_fp8(self.gate_up_proj[e], self.gate_up_proj_scale_inv[e], self.block, dtype, (i, i)),
                dequantize_block_fp8(self.down_proj[e], self.down_proj_scale_inv[e], self.block, dtype))

    def forward(self, x_sorted: Tensor, counts: Tensor, tile: int | None = None) -> Tensor:
        """As `ExpertBank.forward`. CUDA: the grouped triton kernel (float8 weights read as such, bf16 activations,
        all experts in one launch per GEMM), else per expert FP8 tensor-core GEMMs (Hopper+), else dequantized
        weights. CPU (and with `tile`): each expert's weights dequantized and `tiled_swiglu` (batch invariant with
        `tile`). Under CUDA-graph capture: the padded path on dequantized weights (no host sync)."""
        if tile is None and x_sorted.is_cuda and torch.cuda.is_current_stream_capturing():
            return self._padded(x_sorted, counts)
        if tile is None and self.grouped.usable(x_sorted, self.block, self.hidden, self.intermediate):
            counts_list = counts.tolist()
            out = self.grouped.run(lambda: self._grouped(x_sorted, counts_list),
                                   lambda out: self._check(x_sorted, counts_list, out))
            if out is not None:
                return out
        shapes = [tuple(self.gate_up_proj.shape[1:]), tuple(self.down_proj.shape[1:])]
        fast = (tile is None and self.intermediate % self.block[0] == 0
                and self.fast.usable(x_sorted, self.block, shapes))
        out = torch.empty_like(x_sorted)
        start = 0
        for e, n in enumerate(counts.tolist()):  # one host sync per layer
            if n:
                rows = x_sorted[start:start + n]
                if fast:
                    out[start:start + n] = self.fast.run(lambda: self._fp8_expert(rows, e),
                                                         lambda: tiled_swiglu(rows, *self.expert_weights(e, rows.dtype)))
                else:
                    out[start:start + n] = tiled_swiglu(rows, *self.expert_weights(e, rows.dtype), tile)
                start += n
        return out

    def _grouped(self, x_sorted: Tensor, counts: list[int]) -> Tensor:
        tiles = row_tiles(counts, x_sorted.device)
        gate, up = grouped_fp8_matmul(x_sorted, tiles, self.gate_up_proj, self.gate_up_proj_scale_inv).chunk(2, -1)
        return grouped_fp8_matmul(F.silu(gate) * up, tiles, self.down_proj, self.down_proj_scale_inv)

    def _check(self, x_sorted: Tensor, counts: list[int], out: Tensor) -> None:
        """The grouped kernel's rows of the busiest expert against the dequantized reference."""
        e = max(range(len(counts)), key=counts.__getitem__)
        start = sum(counts[:e])
        rows = x_sorted[start:start + counts[e]]
        ref = tiled_swiglu(rows, *self.expert_weights(e, rows.dtype)).float()
        err = float((out[start:start + counts[e]].float() - ref).abs().max()) if counts[e] else 0.0
        if not err <= 0.02 * float(ref.abs().max()) + 1e-3:
            raise ValueError(f"grouped kernel result differs from the reference by {err:.3g}")

    def _fp8_expert(self, rows: Tensor, e: int) -> Tensor:
        gate, up = block_fp8_linear(rows, self.gate_up_proj[e], self.gate_up_proj_scale_inv[e],
                                    out_dtype=rows.dtype).chunk(2, dim=-1)
        return block_fp8_linear(F.silu(gate) * up, self.down_proj[e], self.down_proj_scale_inv[e],
                                out_dtype=rows.dtype)

    def _padded(self, x_sorted: Tensor, counts: Tensor) -> Tensor:
        m = x_sorted.shape[0]
        ends = counts.cumsum(0)
        expert = torch.searchsorted(ends, torch.arange(m, device=x_sorted.device), right=True)
        rank = torch.arange(m, device=x_sorted.device) - (ends - counts)[expert]
        buf = x_sorted.new_zeros(self.num_experts, m, x_sorted.shape[1])
        buf[expert, rank] = x_sorted
        i = self.intermediate
        gate_up = dequantize_block_fp8(self.gate_up_proj, self.gate_up_proj_scale_inv, self.block, x_sorted.dtype,
                                       (i, i))
        down = dequantize_block_fp8(self.down_proj, self.down_proj_scale_inv, self.block, x_sorted.dtype)
        gate, up = torch.bmm(buf, gate_up.transpose(1, 2)).chunk(2, dim=-1)
        return torch.bmm(F.silu(gate) * up, down.transpose(1, 2))[expert, rank]

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, hidden={self.hidden}, intermediate={self.intermediate}, "
                f"block={self.block}, fp8=e4m3")
