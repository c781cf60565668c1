"""redraft: editable block-diffusion language models (LLaDA2.1) — exact decoding with token editing, training,
EBPO reinforcement learning and an OpenAI-compatible server."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "redraft.model.loading",
    "save_model": "redraft.model.loading",
    "load_tokenizer": "redraft.model.tokenizer",
    "LLaDA2MoeConfig": "redraft.model.config",
    "LLaDA2MoeModelLM": "redraft.model.modeling",
    "KVCache": "redraft.model.kv_cache",
    "generate": "redraft.decoding",
    "DecodeConfig": "redraft.decoding",
    "preset": "redraft.decoding",
    "Engine": "redraft.decoding",
    "quantize_model": "redraft.model.fp8",
    "Fp8Config": "redraft.model.fp8",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'redraft' has no attribute {name!r}")
