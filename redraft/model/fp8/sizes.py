"""Weight bytes of a model shape unquantized and in FP8, counted from the exact tensors a checkpoint holds (the model
is built on the meta device: no memory, any size)."""

from __future__ import annotations

import math

import torch

from ..config import LLaDA2MoeConfig
from ..modeling import LLaDA2MoeModelLM
from .blocks import scale_shape
from .config import Fp8Config, resolve_quantization
from .transform import select


def weight_bytes(cfg: LLaDA2MoeConfig, quantization: Fp8Config | str | None = None,
                 dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of the state dict (what the checkpoint stores and the model keeps resident), FP8 scales included."""
    with torch.device("meta"):
        model = LLaDA2MoeModelLM(cfg).to(dtype)
    state = model.state_dict()
    total = sum(t.numel() * t.element_size() for t in state.values())
    config = resolve_quantization(quantization)
    if config is not None:
        for c in select(model, config):
            for name in c.official:
                t = state[name]
                total += t.numel() * (1 - t.element_size())
                total += 4 * math.prod(scale_shape(t.shape, config.weight_block_size))
    return total


def size_table(cfg: LLaDA2MoeConfig, dtype: torch.dtype = torch.bfloat16) -> dict[str, int]:
    """{"bf16": bytes, "fp8_experts": bytes, "fp8_all": bytes} (bf16 stands for the given dtype)."""
    return {"bf16": weight_bytes(cfg, None, dtype), "fp8_experts": weight_bytes(cfg, "fp8", dtype),
            "fp8_all": weight_bytes(cfg, "fp8-all", dtype)}
