"""LLaDA2-MoE: the `llada2_moe` architecture with the official parameter names (`LLaDA2MoeModelLM`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .attention import Attention
from .config import LLaDA2MoeConfig
from .invariant import RowTiles, apply_linear, dense_tile
from .kv_cache import KV, KVCache
from .layers import MLP, RMSNorm, RotaryEmbedding
from .masks import BlockLayout, KeyGroup, TwoStreamMask, ragged_key_groups, window_mask
from .moe import MoE


@dataclass
class ModelOutput:
    """logits: [B, T, V] float32 ([B, E, V] with `logits_index`). new_kv: per layer this window's (k, v)
    [B, H_kv, T, D], for `KVCache.commit`."""

    logits: Tensor
    new_kv: list[KV]


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LLaDA2MoeConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.attention = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.mlp = MoE(cfg) if cfg.is_moe_layer(layer_idx) else MLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, past: KV | None,
                key_groups: list[KeyGroup] | None = None, tiles: RowTiles | None = None) -> tuple[Tensor, KV]:
        h, kv = self.attention(self.input_layernorm(x), cos, sin, mask, past, key_groups, tiles)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x), tiles), kv


class LLaDA2MoeModel(nn.Module):
    def __init__(self, cfg: LLaDA2MoeConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg.rotary_dim, cfg.rope_theta)


class LLaDA2MoeModelLM(nn.Module):
    """Block-diffusion LM. Logits at position i predict token i (no shift)."""

    def __init__(self, cfg: LLaDA2MoeConfig):
        super().__init__()
        self.config = cfg
        self.model = LLaDA2MoeModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.gradient_checkpointing = False

    def forward(self, input_ids: Tensor, position_ids: Tensor | None = None, layout: BlockLayout | None = None, *,
                attn_mask: Tensor | TwoStreamMask | None = None, cache: KVCache | None = None, static_cache: bool = False,
                logits_index: Tensor | None = None, batch_invariant: bool | RowTiles | None = None) -> ModelOutput:
        """Run a window of tokens.

        input_ids: [B, T]. position_ids: [B, T] absolute positions (default 0..T-1, or continuing each cached row).
        layout: the block structure (default: one block covering the window, i.e. bidirectional).
        attn_mask: explicit bool mask [B or 1, 1, T, S+T] (True = attend), used instead of `layout`, or a
            `TwoStreamMask` (the training objective's [x_t ; x_0] layout, attention on its live parts); no cache.
        cache: committed keys/values the window attends to (read only; commit with `cache.commit(out.new_kv, ...)`).
        static_cache: attend over all `cache.capacity` slots (masked by length) instead of the longest row, so the
            shapes do not depend on host-side lengths (CUDA-graph capture, see `cuda_graphs.py`).
        logits_index: optional [B, E] window positions whose logits are wanted: `logits` is then [B, E, V] and the
            LM head runs on those positions only (a decode window's commit copies and a joining prompt need none).
        batch_invariant: make every row's result independent of the other rows of the batch, bit for bit: each row
            attends over exactly its own keys (`ragged_key_groups`) and every GEMM runs on fixed row tiles
            (`invariant.py`; a `RowTiles` sets the tile sizes). None (default): on for CPU inference forwards (no
            grad) built from a layout, i.e. decoding; off otherwise. Not with `attn_mask` or `static_cache`.
        """
        bsz, t = input_ids.shape
        key_groups = None
        if batch_invariant is None:
            batch_invariant = (input_ids.device.type == "cpu" and attn_mask is None and not static_cache
                               and not torch.is_grad_enabled())
        elif batch_invariant is not False and (attn_mask is not None or static_cache):
            raise ValueError("batch_invariant works with a layout-built mask and a dynamic cache only "
                             "(not with attn_mask or static_cache)")
        tiles = (batch_invariant if isinstance(batch_invariant, RowTiles)
                 else RowTiles() if batch_invariant else None)
        if position_ids is None:
            base = cache.lengths[:, None] if cache is not None else 0
            position_ids = base + torch.arange(t, device=input_ids.device)[None].expand(bsz, t)
        if attn_mask is None:
            if layout is None:
                layout = BlockLayout(block_length=int(position_ids.max()) + 1 if t else 1)
            width = 0 if cache is None else (cache.capacity if static_cache else cache.width)
            lengths = cache.lengths if cache is not None else None
            attn_mask = window_mask(position_ids, layout, lengths, width)
            if tiles is not None:
                key_groups = ragged_key_groups(attn_mask, lengths, width, layout.valid)
        elif isinstance(attn_mask, TwoStreamMask):
            if cache is not None or t != 2 * attn_mask.length:
                raise ValueError(f"a TwoStreamMask covers [x_t ; x_0] of 2 x {attn_mask.length} tokens without a "
                                 f"cache; got {t} tokens{' and a cache' if cache is not None else ''}")
        elif attn_mask.dim() == 2:
            attn_mask = attn_mask[None, None]
        h = self.model.word_embeddings(input_ids)
        cos, sin = self.model.rotary_emb(position_ids, h.dtype)
        new_kv: list[KV] = []
        for i, layer in enumerate(self.model.layers):
            past = cache.layer(i, full=static_cache) if cache is not None else None
            if self.gradient_checkpointing and self.training:
                h, kv = torch.utils.checkpoint.checkpoint(layer, h, cos, sin, attn_mask, past, key_groups, tiles,
                                                          use_reentrant=False)
            else:
                h, kv = layer(h, cos, sin, attn_mask, past, key_groups, tiles)
            new_kv.append(kv)
        if logits_index is not None:
            h = h.gather(1, logits_index[:, :, None].expand(-1, -1, h.shape[-1]))
        logits = apply_linear(self.lm_head, self.model.norm(h), dense_tile(tiles)).float()
        return ModelOutput(logits=logits, new_kv=new_kv)

    def reset_non_persistent_buffers(self) -> None:
        self.model.rotary_emb.reset()

    def init_weights(self, std: float = 0.02, generator: torch.Generator | None = None) -> None:
        """Random initialisation (normal(0, std) matrices, unit norms, zero expert bias), drawn tensor by tensor in
        the order of the official state dict (fused storage such as `gate_up_proj` is filled through its views)."""
        buffers = {name for name, _ in self.named_buffers()}
        for name, p in self.state_dict(keep_vars=True).items():
            if name in buffers:
                continue
            with torch.no_grad():
                if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, std, generator=generator)
        for m in self.modules():
            if hasattr(m, "expert_bias"):
                m.expert_bias.zero_()
        self.reset_non_persistent_buffers()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
