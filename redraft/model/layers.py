"""Small building blocks with the official parameter names: RMSNorm, partial rotary embedding, SwiGLU MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .invariant import RowTiles, apply_linear, dense_tile


class RMSNorm(nn.Module):
    """RMSNorm computed in float32, weight applied in the input dtype (as the official code does)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm over the last dim of x; weight broadcasts against x (e.g. one row per head)."""
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotate-half rotary embedding on the first `rotary_dim` dims of a head."""

    def __init__(self, rotary_dim: int, theta: float):
        super().__init__()
        self.rotary_dim = rotary_dim
        self.theta = theta
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self, device: torch.device | str | None = None) -> Tensor:
        exponent = torch.arange(0, self.rotary_dim, 2, dtype=torch.int64, device=device).float() / self.rotary_dim
        return 1.0 / (self.theta ** exponent)

    def reset(self) -> None:
        """Recompute the frequencies in place (after the module was built on the meta device)."""
        self.inv_freq = self.compute_inv_freq(self.inv_freq.device)

    def forward(self, position_ids: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.float()  # [B, T, rd/2]
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: [B, H, T, D]; cos/sin: [B, T, rd]. Rotates x[..., :rd], passes the rest through."""
    rd = cos.shape[-1]
    cos, sin = cos[:, None], sin[:, None]
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    return torch.cat([x_rot * cos + rotate_half(x_rot) * sin, x_pass], dim=-1)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), with gate and up in one [2I, H] matrix (one GEMM instead of two).

    The state dict keeps the official names `gate_proj.weight` / `up_proj.weight` (views of the two halves), so
    checkpoints load and save unchanged.
    """

    def __init__(self, hidden: int, intermediate: int, bias: bool = False):
        super().__init__()
        self.intermediate = intermediate
        self.gate_up_proj = nn.Linear(hidden, 2 * intermediate, bias=bias)
        self.down_proj = nn.Linear(intermediate, hidden, bias=bias)
        self.register_state_dict_post_hook(_split_gate_up)
        self.register_load_state_dict_pre_hook(_join_gate_up)

    def forward(self, x: Tensor, tiles: RowTiles | None = None) -> Tensor:
        """tiles: row tiles of a batch-invariant forward (see `invariant.py`); None: one GEMM per projection."""
        tile = dense_tile(tiles)
        gate, up = apply_linear(self.gate_up_proj, x, tile).chunk(2, dim=-1)
        return apply_linear(self.down_proj, F.silu(gate) * up, tile)


# the fused tensors split into gate/up halves: weight_scale_inv = FP8 block scales (model/fp8); base_layer.*: under a
# PEFT LoRA wrapper
_FUSED = ("weight", "bias", "weight_scale_inv", "base_layer.weight", "base_layer.bias")


def _split_gate_up(module: MLP, state_dict, prefix: str, local_metadata) -> None:
    """State dict: `gate_up_proj.*` -> official `gate_proj.*` and `up_proj.*` (views), in the official order.
    Adapter tensors of a wrapped `gate_up_proj` (`lora_A`, `lora_B`: one adapter over the fused matrix) keep their
    names."""
    tail = {k: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(prefix)]}
    for key, value in tail.items():
        name = key[len(prefix):]
        suffix = name[len("gate_up_proj."):] if name.startswith("gate_up_proj.") else None
        if suffix in _FUSED:
            state_dict[f"{prefix}gate_proj.{suffix}"], state_dict[f"{prefix}up_proj.{suffix}"] = value.chunk(2, 0)
        else:
            state_dict[key] = value


def _join_gate_up(module: MLP, state_dict, prefix: str, local_metadata, strict, missing_keys, unexpected_keys,
                  error_msgs) -> None:
    """Loading: official `gate_proj.*` + `up_proj.*` -> `gate_up_proj.*` (when both halves are there)."""
    for suffix in _FUSED:
        gate, up = f"{prefix}gate_proj.{suffix}", f"{prefix}up_proj.{suffix}"
        if gate in state_dict and up in state_dict:
            state_dict[f"{prefix}gate_up_proj.{suffix}"] = torch.cat([state_dict.pop(gate), state_dict.pop(up)])
