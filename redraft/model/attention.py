"""Grouped-query attention with fused QKV, per-head RMSNorm on q and k, partial rotary, optional KV cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LLaDA2MoeConfig
from .invariant import RowTiles, apply_linear, dense_tile
from .layers import RMSNorm, apply_rotary, rms_norm
from .masks import KeyGroup, TwoStreamMask


class Attention(nn.Module):
    def __init__(self, cfg: LLaDA2MoeConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.query_key_value = nn.Linear(cfg.hidden_size, (self.num_heads + 2 * self.num_kv_heads) * self.head_dim,
                                         bias=cfg.use_qkv_bias)
        self.dense = nn.Linear(self.num_heads * self.head_dim, cfg.hidden_size, bias=cfg.use_bias)
        if cfg.use_qk_norm:
            self.query_layernorm = RMSNorm(self.head_dim, eps=cfg.rms_norm_eps)
            self.key_layernorm = RMSNorm(self.head_dim, eps=cfg.rms_norm_eps)
        else:
            self.query_layernorm = self.key_layernorm = None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | TwoStreamMask,
                past: tuple[Tensor, Tensor] | None = None,
                key_groups: list[KeyGroup] | None = None,
                tiles: RowTiles | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x: [B, T, H]; mask: bool [B, 1, T, S+T], or a `TwoStreamMask` for T = 2L (no cache); past: cached (k, v)
        [B, Hkv, S, D].
        key_groups: optional (see `ragged_key_groups`): each row attends over exactly its own keys, one attention
        call per group of rows with equal key counts (`mask` is then unused).
        tiles: row tiles of the projections for a batch-invariant forward (see `invariant.py`).

        Returns the output [B, T, H] and this window's (k, v) [B, Hkv, T, D] (what a commit stores).
        """
        bsz, t, _ = x.shape
        tile = dense_tile(tiles)
        qkv = apply_linear(self.query_key_value, x, tile)
        qkv = qkv.view(bsz, t, self.num_heads + 2 * self.num_kv_heads, self.head_dim)
        # q and k heads side by side: one norm and one rotation for both (elementwise, so the same bits)
        qk, v = qkv.transpose(1, 2).split([self.num_heads + self.num_kv_heads, self.num_kv_heads], dim=1)
        if self.query_layernorm is not None:
            weight = torch.cat([self.query_layernorm.weight.expand(self.num_heads, -1),
                                self.key_layernorm.weight.expand(self.num_kv_heads, -1)])[:, None]
            qk = rms_norm(qk, weight, self.query_layernorm.eps)
        q, k = apply_rotary(qk, cos, sin).split([self.num_heads, self.num_kv_heads], dim=1)
        new_kv = (k, v)
        if past is not None and past[0].shape[2] > 0:
            k = torch.cat([past[0].to(k.dtype), k], dim=2)
            v = torch.cat([past[1].to(v.dtype), v], dim=2)
        gqa = self.num_heads != self.num_kv_heads
        if isinstance(mask, TwoStreamMask):  # noisy queries over every key, clean queries over the clean keys
            n = t - mask.length
            out = torch.cat([
                F.scaled_dot_product_attention(q[:, :, :n], k, v, attn_mask=mask.noisy, enable_gqa=gqa),
                F.scaled_dot_product_attention(q[:, :, n:], k[:, :, n:], v[:, :, n:], attn_mask=mask.clean,
                                               enable_gqa=gqa)], dim=2)
        elif key_groups is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        else:
            out = torch.empty_like(q)
            for g in key_groups:
                idx = g.keys[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
                out[g.rows] = F.scaled_dot_product_attention(q[g.rows], k[g.rows].gather(2, idx),
                                                             v[g.rows].gather(2, idx), attn_mask=g.mask,
                                                             enable_gqa=gqa)
        out = out.transpose(1, 2).reshape(bsz, t, self.num_heads * self.head_dim)
        return apply_linear(self.dense, out, tile), new_kv
