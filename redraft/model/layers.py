"""Small building blocks with the official parameter names: RMSNorm, partial rotary embedding, SwiGLU MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .invariant import RowTiles, dense_tile, tiled_linear


class RMSNorm(nn.Module):
    """RMSNorm computed in float32, weight applied in the input dtype (as the official code does)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


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
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden: int, intermediate: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.up_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.down_proj = nn.Linear(intermediate, hidden, bias=bias)

    def forward(self, x: Tensor, tiles: RowTiles | None = None) -> Tensor:
        """tiles: row tiles of a batch-invariant forward (see `invariant.py`); None: one GEMM per projection."""
        tile = dense_tile(tiles)
        h = F.silu(tiled_linear(x, self.gate_proj.weight, self.gate_proj.bias, tile)) * tiled_linear(
            x, self.up_proj.weight, self.up_proj.bias, tile)
        return tiled_linear(h, self.down_proj.weight, self.down_proj.bias, tile)
