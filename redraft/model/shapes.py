"""The released LLaDA2.x model shapes (config.json fields), for size estimates and benchmarks at real shapes."""

from __future__ import annotations

from .config import LLaDA2MoeConfig

_COMMON = dict(vocab_size=157184, head_dim=128, num_key_value_heads=4, num_experts=256, num_experts_per_tok=8,
               n_group=8, topk_group=4, num_shared_experts=1, first_k_dense_replace=1, routed_scaling_factor=2.5,
               partial_rotary_factor=0.5, torch_dtype="bfloat16")
SHAPES: dict[str, dict] = {
    # LLaDA2.x-mini: 16B parameters, 1.4B active
    "mini": dict(_COMMON, hidden_size=2048, intermediate_size=5120, num_hidden_layers=20, num_attention_heads=16,
                 moe_intermediate_size=512),
    # LLaDA2.x-flash: 103B parameters, 6.1B active
    "flash": dict(_COMMON, hidden_size=4096, intermediate_size=9216, num_hidden_layers=32, num_attention_heads=32,
                  moe_intermediate_size=1024),
}


def shape_config(name: str, **overrides) -> LLaDA2MoeConfig:
    if name not in SHAPES:
        raise ValueError(f"shape must be one of {sorted(SHAPES)}, got {name!r}")
    return LLaDA2MoeConfig(**{**SHAPES[name], **overrides})
