"""`LLaDA2MoeConfig`: the fields of a Hugging Face `llada2_moe` config.json that the architecture uses."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LLaDA2MoeConfig:
    """Architecture hyper-parameters, named as in the official config.json.

    Unknown keys of a config.json are kept in `extra` (and written back on save) but never used.
    """

    vocab_size: int = 157184
    hidden_size: int = 2048
    intermediate_size: int = 5120
    num_hidden_layers: int = 20
    num_attention_heads: int = 16
    num_key_value_heads: int = 4
    head_dim: int | None = 128
    partial_rotary_factor: float = 0.5
    rope_theta: float = 600000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    first_k_dense_replace: int = 1
    num_experts: int = 256
    num_experts_per_tok: int = 8
    n_group: int = 8
    topk_group: int = 4
    moe_intermediate_size: int = 512
    num_shared_experts: int = 1
    routed_scaling_factor: float = 2.5
    norm_topk_prob: bool = True
    use_qk_norm: bool = True
    use_qkv_bias: bool = False
    use_bias: bool = False
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    pad_token_id: int | None = None
    torch_dtype: str = "bfloat16"
    model_type: str = "llada2_moe"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        positive = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "head_dim", "moe_intermediate_size")
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"config field {name!r} must be positive, got {getattr(self, name)!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"config: num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                             f"num_key_value_heads ({self.num_key_value_heads})")
        if self.first_k_dense_replace < self.num_hidden_layers:
            if self.num_experts % self.n_group:
                raise ValueError(f"config: num_experts ({self.num_experts}) must be a multiple of n_group ({self.n_group})")
            if not 1 <= self.topk_group <= self.n_group:
                raise ValueError(f"config: topk_group ({self.topk_group}) must be in [1, n_group={self.n_group}]")
            if not 1 <= self.num_experts_per_tok <= self.num_experts:
                raise ValueError(f"config: num_experts_per_tok ({self.num_experts_per_tok}) out of range")
        if self.hidden_act != "silu":
            raise ValueError(f"config: hidden_act {self.hidden_act!r} is not supported (only 'silu')")
        if self.torch_dtype not in _DTYPES:
            raise ValueError(f"config: torch_dtype {self.torch_dtype!r} is not one of {sorted(_DTYPES)}")
        if not 0.0 < self.partial_rotary_factor <= 1.0:
            raise ValueError(f"config: partial_rotary_factor must be in (0, 1], got {self.partial_rotary_factor}")

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.torch_dtype]

    def is_moe_layer(self, layer: int) -> bool:
        return layer >= self.first_k_dense_replace and self.num_experts > 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LLaDA2MoeConfig":
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        if kwargs.get("model_type", "llada2_moe") not in ("llada2_moe", "llada2"):
            raise ValueError(f"config: model_type {kwargs['model_type']!r} is not an LLaDA2-MoE model ('llada2_moe')")
        if kwargs.get("torch_dtype") is None:
            kwargs.pop("torch_dtype", None)
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_file(cls, path: str | Path) -> "LLaDA2MoeConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        try:
            return cls.from_dict(data)
        except TypeError as e:
            raise ValueError(f"{path}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out = {**self.extra, **out}
        out.setdefault("architectures", ["LLaDA2MoeModelLM"])
        return out

    def num_parameters(self) -> int:
        """Parameter count implied by the config (embeddings and head included)."""
        h, hd = self.hidden_size, self.head_dim
        attn = h * (self.num_attention_heads + 2 * self.num_key_value_heads) * hd + self.num_attention_heads * hd * h
        attn += 2 * hd if self.use_qk_norm else 0
        dense = 3 * h * self.intermediate_size
        moe = (self.num_experts * 3 * h * self.moe_intermediate_size + self.num_experts * h + self.num_experts
               + 3 * h * self.moe_intermediate_size * self.num_shared_experts)
        total = 0
        for layer in range(self.num_hidden_layers):
            total += attn + 2 * h + (moe if self.is_moe_layer(layer) else dense)
        return total + 2 * self.vocab_size * h + h
