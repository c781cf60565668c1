"""LLaDA2-MoE model, KV cache, masks, checkpoint and tokenizer loading."""

from .config import LLaDA2MoeConfig
from .kv_cache import KVCache
from .loading import CheckpointError, load_model, save_model
from .masks import BlockLayout, dual_stream_mask
from .modeling import LLaDA2MoeModelLM, ModelOutput

__all__ = ["LLaDA2MoeConfig", "KVCache", "CheckpointError", "load_model", "save_model", "BlockLayout",
           "dual_stream_mask", "LLaDA2MoeModelLM", "ModelOutput"]
