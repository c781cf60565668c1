"""Mixture-of-experts layer: sigmoid router with group-limited top-k, stacked experts, sorted dispatch.

Experts are stored stacked ([E, I, H] tensors) so they can run as one grouped matrix multiply; the state dict still
uses the official per-expert names `experts.{e}.{gate,up,down}_proj.weight` (see `ExpertBank`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LLaDA2MoeConfig
from .invariant import RowTiles, dense_tile, needs_grad, tiled_linear, tiled_swiglu
from .layers import MLP

_PROJ = ("gate_proj", "up_proj", "down_proj")
# the batched tile path copies one gate+up weight per tile: above this many elements (8 MB in bfloat16) the copy
# costs more than the GEMM calls it saves, and the tiles run one GEMM each
TILE_GATHER_MAX = 1 << 22


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a matmul of x runs in: the autocast dtype when autocast is on for x's device, else x's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class Router(nn.Module):
    """Sigmoid scores; `expert_bias` shifts scores for selection only; top-2 per group rank the groups."""

    def __init__(self, cfg: LLaDA2MoeConfig):
        super().__init__()
        self.top_k = cfg.num_experts_per_tok
        self.n_group = cfg.n_group
        self.topk_group = cfg.topk_group
        self.norm_topk_prob = cfg.norm_topk_prob
        self.routed_scaling_factor = cfg.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(cfg.num_experts, cfg.hidden_size))
        self.register_buffer("expert_bias", torch.zeros(cfg.num_experts))

    def forward(self, x: Tensor, tile: int | None = None) -> tuple[Tensor, Tensor]:
        """x: [N, H] -> (expert ids [N, k] int64, weights [N, k] float32). tile: see `invariant.py`."""
        logits = tiled_linear(x.float(), self.weight.float(), tile=tile)
        scores = torch.sigmoid(logits)
        choice = scores + self.expert_bias.float()
        n = choice.shape[0]
        grouped = choice.view(n, self.n_group, -1)
        group_scores = grouped.topk(min(2, grouped.shape[-1]), dim=-1)[0].sum(-1)
        group_idx = group_scores.topk(self.topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, group_idx, True)
        expert_mask = group_mask[:, :, None].expand_as(grouped).reshape(n, -1)
        idx = choice.masked_fill(~expert_mask, float("-inf")).topk(self.top_k, dim=-1)[1]
        weight = scores.gather(1, idx)
        if self.top_k > 1 and self.norm_topk_prob:
            weight = weight / (weight.sum(-1, keepdim=True) + 1e-20)
        return idx, (weight * self.routed_scaling_factor if self.routed_scaling_factor != 1.0 else weight)


class ExpertBank(nn.Module):
    """E SwiGLU experts stored stacked, gate and up fused: `gate_up_proj` [E, 2I, H] (gate rows first), `down_proj`
    [E, H, I]. Saved and loaded under the official per-expert names `{e}.{gate,up,down}_proj.weight` (views)."""

    def __init__(self, num_experts: int, hidden: int, intermediate: int, top_k: int = 1):
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k  # experts per token: rows per expert <= rows / top_k (sizes the padded path)
        self.intermediate = intermediate
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate, hidden))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, intermediate))
        self.use_grouped_mm: bool | None = None  # None: automatic (CPU; CUDA bf16 on Hopper or newer)

    # -- official names in the state dict -------------------------------------------------------------------
    def official_views(self, keep_vars: bool = False) -> dict[str, Tensor]:
        """{"{e}.gate_proj.weight": [I, H] view, ...} in the official order (all gate, all up, all down)."""
        gate_up = self.gate_up_proj if keep_vars else self.gate_up_proj.detach()
        down = self.down_proj if keep_vars else self.down_proj.detach()
        i = self.intermediate
        stacks = {"gate_proj": gate_up[:, :i], "up_proj": gate_up[:, i:], "down_proj": down}
        return {f"{e}.{name}.weight": stacks[name][e] for name in _PROJ for e in range(self.num_experts)}

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for key, view in self.official_views(keep_vars).items():
            destination[prefix + key] = view

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        own = self.official_views()
        for key, target in own.items():
            if prefix + key not in state_dict:
                missing_keys.append(prefix + key)
                continue
            src = state_dict[prefix + key]
            if tuple(src.shape) != tuple(target.shape):
                error_msgs.append(f"size mismatch for {prefix + key}: checkpoint {tuple(src.shape)}, "
                                  f"model {tuple(target.shape)}")
                continue
            with torch.no_grad():
                target.copy_(src)
        if strict:
            for key in state_dict:
                if key.startswith(prefix) and key[len(prefix):] not in own:
                    unexpected_keys.append(key)

    # -- compute -------------------------------------------------------------------------------------------
    def _grouped_ok(self, x: Tensor) -> bool:
        """Grouped matmul: on CPU always (torch's CPU kernel, with autograd: training's experts in two grouped GEMMs
        instead of a loop of per-expert slices, each slice's backward a zero-filled full-size gradient); on CUDA for
        bf16 on Hopper or newer. `use_grouped_mm` forces it on or off."""
        if not hasattr(torch, "_grouped_mm") or x.device.type not in ("cpu", "cuda"):
            return False
        if self.use_grouped_mm is not None:
            return self.use_grouped_mm
        if not x.is_cuda:  # the CPU kernel takes float32, bfloat16 and float16 (not float64: the loop then)
            if torch.compiler.is_compiling():  # but its shape function, run while tracing, bfloat16 only
                return _compute_dtype(x) == torch.bfloat16
            return _compute_dtype(x) in (torch.float32, torch.bfloat16, torch.float16)
        return x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device)[0] >= 9

    def _grouped(self, x_sorted: Tensor, counts: Tensor) -> Tensor:
        """Two grouped GEMMs (gate+up, down) over the experts' row groups, in the autocast dtype when autocast is on
        (grouped matmul has no autocast rule: inputs and weights are cast here, once per forward)."""
        dtype = _compute_dtype(x_sorted)
        offs = counts.cumsum(0).to(torch.int32)
        gate_up, down = self.gate_up_proj.to(dtype), self.down_proj.to(dtype)
        gate, up = torch._grouped_mm(x_sorted.to(dtype), gate_up.transpose(1, 2), offs=offs).chunk(2, dim=-1)
        return torch._grouped_mm(F.silu(gate) * up, down.transpose(1, 2), offs=offs)

    def forward(self, x_sorted: Tensor, counts: Tensor, tile: int | None = None) -> Tensor:
        """x_sorted: [M, H] rows grouped by expert (expert e owns `counts[e]` consecutive rows) -> [M, H].

        Paths: grouped matmul (CPU; CUDA bf16 Hopper+; two grouped GEMMs: gate+up, down); otherwise padded batched
        matmul (no host sync; E/k times the work) under torch.compile, while a CUDA graph is being captured, or on
        CUDA when its buffers are small; otherwise a loop over experts with one host sync per layer. With `tile` (a batch-invariant
        forward, see `invariant.py`) each expert's rows in GEMMs of exactly `tile` rows: a token's result then does
        not depend on how many other tokens picked the same expert.
        """
        if tile is None and self._grouped_ok(x_sorted):
            return self._grouped(x_sorted, counts)
        capacity = x_sorted.shape[0] // self.top_k  # tokens: a token picks an expert at most once
        if tile is None and (torch.compiler.is_compiling() or x_sorted.is_cuda and (
                torch.cuda.is_current_stream_capturing() or self._padded_fits(x_sorted, capacity))):
            return self._padded(x_sorted, counts, capacity)
        if tile is not None and not needs_grad(x_sorted, self.gate_up_proj):
            return self._tiled(x_sorted, counts.tolist(), tile)
        out = torch.empty_like(x_sorted)
        start = 0
        for e, n in enumerate(counts.tolist()):  # one host sync per layer, not per expert
            if n:
                out[start:start + n] = tiled_swiglu(x_sorted[start:start + n], self.gate_up_proj[e],
                                                    self.down_proj[e], tile)
                start += n
        return out

    def _tiled(self, x_sorted: Tensor, counts: list[int], tile: int) -> Tensor:
        """The batch-invariant path without autograd: every expert's rows padded to whole tiles of `tile` rows in
        one buffer, and each projection as batched GEMMs over the tiles (each tile against its expert's weight)
        where that pays (`_batched_tiles_pay`), otherwise one GEMM per tile. Both give a tile the bits of
        `tiled_swiglu`'s fixed-shape GEMM whatever the other tiles are (`bmm` runs the same per-matrix kernel:
        checked by tests/test_model_batch_invariance.py on the machine it runs on); the activation runs once over
        all tiles (elementwise: the same bits as tile by tile).

        Batched layout: when at least half the experts have rows, the first E tiles are each expert's first tile
        (zeros for an expert without rows), multiplied against the stacked weights as they are (no copy); the
        remaining tiles follow, against weights gathered per tile. Two or four GEMM calls per projection replace
        one per tile (each ~15-20 us of set-up in bfloat16 on CPU)."""
        hidden = x_sorted.shape[1]
        batched = self._batched_tiles_pay(sum(-(-n // tile) for n in counts))
        full_bank = batched and 2 * sum(1 for n in counts if n) >= self.num_experts
        # each sorted row's slot in the padded buffer; the expert of each tile after the bank tiles
        dest, tile_expert = [], []
        padded = self.num_experts * tile if full_bank else 0
        for e, n in enumerate(counts):
            if n and full_bank:
                first = min(n, tile)
                dest.extend(range(e * tile, e * tile + first))
                n -= first
            if n:
                dest.extend(range(padded, padded + n))
                num = -(-n // tile)
                tile_expert.extend([e] * num)
                padded += num * tile
        dest_t = torch.tensor(dest, dtype=torch.long, device=x_sorted.device)
        buf = x_sorted.new_zeros(padded, hidden)
        buf[dest_t] = x_sorted
        if batched:
            experts = torch.tensor(tile_expert, dtype=torch.long, device=x_sorted.device)
            gate, up = self._bmm_tiles(buf, self.gate_up_proj, experts, full_bank, tile).chunk(2, dim=-1)
            return self._bmm_tiles(F.silu(gate) * up, self.down_proj, experts, full_bank, tile)[dest_t]
        gate_up = x_sorted.new_empty(padded, 2 * self.intermediate)
        for t, e in enumerate(tile_expert):
            s = t * tile
            torch.mm(buf[s:s + tile], self.gate_up_proj[e].t(), out=gate_up[s:s + tile])
        gate, up = gate_up.chunk(2, dim=-1)
        act = F.silu(gate) * up
        out = x_sorted.new_empty(padded, hidden)
        for t, e in enumerate(tile_expert):
            s = t * tile
            torch.mm(act[s:s + tile], self.down_proj[e].t(), out=out[s:s + tile])
        return out[dest_t]

    def _bmm_tiles(self, x: Tensor, weight: Tensor, experts: Tensor, full_bank: bool, tile: int) -> Tensor:
        """x [tiles * tile, K] in `_tiled`'s batched layout, weight [E, N, K] -> [tiles * tile, N]."""
        out = x.new_empty(x.shape[0], weight.shape[1])
        bank = self.num_experts * tile if full_bank else 0
        if full_bank:
            torch.bmm(x[:bank].view(self.num_experts, tile, -1), weight.transpose(1, 2),
                      out=out[:bank].view(self.num_experts, tile, -1))
        if len(experts):
            torch.bmm(x[bank:].view(len(experts), tile, -1), weight.index_select(0, experts).transpose(1, 2),
                      out=out[bank:].view(len(experts), tile, -1))
        return out

    def _batched_tiles_pay(self, n_tiles: int) -> bool:
        """Whether `_tiled` runs each projection as one batched GEMM over gathered per-tile weights: for 16-bit
        weights (a bfloat16 GEMM call costs ~15-20 us of set-up on CPU, the batched call pays it once) while the
        gather stays small; float32 GEMM calls are cheap (~5 us) and the weight copy would cost more (measured on
        the 2-core Xeon, benchmarks/decode_speed.py --forward)."""
        weight = self.gate_up_proj
        return weight.element_size() == 2 and n_tiles * weight[0].numel() <= TILE_GATHER_MAX

    def _padded_fits(self, x_sorted: Tensor, capacity: int) -> bool:
        """Whether the padded path's buffers stay small (<= 2^26 elements): then it also serves eager CUDA
        forwards (no host sync); larger models without grouped matmul take the expert loop."""
        return self.num_experts * capacity * 2 * max(self.intermediate, x_sorted.shape[1]) <= 1 << 26

    def _padded(self, x_sorted: Tensor, counts: Tensor, capacity: int | None = None) -> Tensor:
        """No host sync: every expert gets a `capacity`-row slot (default all rows; a token picks an expert at most
        once, so the number of tokens is enough) and two batched GEMMs run over all experts."""
        m = x_sorted.shape[0]
        cap = m if capacity is None else capacity
        ends = counts.cumsum(0)
        expert = torch.searchsorted(ends, torch.arange(m, device=x_sorted.device), right=True)
        rank = torch.arange(m, device=x_sorted.device) - (ends - counts)[expert]
        buf = x_sorted.new_zeros(self.num_experts, cap, x_sorted.shape[1])
        buf[expert, rank] = x_sorted
        gate, up = torch.bmm(buf, self.gate_up_proj.transpose(1, 2)).chunk(2, dim=-1)
        return torch.bmm(F.silu(gate) * up, self.down_proj.transpose(1, 2))[expert, rank]


class MoE(nn.Module):
    """Routed experts (sorted dispatch) plus shared experts."""

    def __init__(self, cfg: LLaDA2MoeConfig):
        super().__init__()
        self.top_k = cfg.num_experts_per_tok
        self.num_experts = cfg.num_experts
        self.gate = Router(cfg)
        self.experts = ExpertBank(cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size,
                                  cfg.num_experts_per_tok)
        self.shared_experts = (MLP(cfg.hidden_size, cfg.moe_intermediate_size * cfg.num_shared_experts)
                               if cfg.num_shared_experts else None)

    def forward(self, x: Tensor, tiles: RowTiles | None = None) -> Tensor:
        """tiles: row tiles of a batch-invariant forward (see `invariant.py`); None: the fastest path."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        idx, weight = self.gate(flat, dense_tile(tiles))
        order = idx.view(-1).argsort(stable=True)
        # scatter_add instead of bincount: bincount syncs with the host on CUDA to size its output
        flat_idx = idx.view(-1)
        counts = torch.zeros(self.num_experts, dtype=torch.long, device=x.device).scatter_add_(
            0, flat_idx, torch.ones_like(flat_idx))
        out_sorted = self.experts(flat[order // self.top_k], counts, tiles.expert if tiles is not None else None)
        per_slot = torch.empty_like(out_sorted)
        per_slot[order] = out_sorted
        y = (per_slot.view(-1, self.top_k, shape[-1]).float() * weight[..., None]).sum(1).to(x.dtype)
        y = y.view(shape)
        if self.shared_experts is not None:
            y = y + self.shared_experts(x, tiles)
        return y

    def forward_reference(self, x: Tensor) -> Tensor:
        """Simple per-token form (tests compare the sorted dispatch against it)."""
        flat = x.reshape(-1, x.shape[-1])
        idx, weight = self.gate(flat)
        outs = []
        for t in range(flat.shape[0]):
            acc = torch.zeros(flat.shape[-1], dtype=torch.float32, device=x.device)
            for j in range(self.top_k):
                e = int(idx[t, j])
                gate, up = F.linear(flat[t], self.experts.gate_up_proj[e]).chunk(2, dim=-1)
                h = F.silu(gate) * up
                acc += F.linear(h, self.experts.down_proj[e]).float() * weight[t, j]
            outs.append(acc.to(x.dtype))
        y = torch.stack(outs).view(x.shape)
        if self.shared_experts is not None:
            y = y + self.shared_experts(x)
        return y
