"""Small random checkpoints for tests, benchmarks and the README's demo before a trained model exists."""

from __future__ import annotations

import glob
import os
import sysconfig
from pathlib import Path

import torch

from .config import LLaDA2MoeConfig
from .loading import save_model
from .modeling import LLaDA2MoeModelLM
from .tokenizer import Tokenizer, train_bpe_tokenizer

TINY_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, first_k_dense_replace=1, num_experts=8, num_experts_per_tok=2,
                   n_group=4, topk_group=2, moe_intermediate_size=32, num_shared_experts=1,
                   max_position_embeddings=4096, torch_dtype="float32")


def stdlib_texts(pattern: str = "json/*.py", limit: int | None = None) -> list[str]:
    """Source files of the Python standard library (always available offline)."""
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], pattern)))[:limit]
    return [Path(f).read_text(encoding="utf-8", errors="replace") for f in files]


def small_tokenizer(vocab_size: int = 512) -> Tokenizer:
    """A byte-level BPE tokenizer trained in about a second on a few standard-library files."""
    return train_bpe_tokenizer(stdlib_texts(), vocab_size)


def random_model(config: LLaDA2MoeConfig, seed: int = 0, std: float = 0.02, head_std: float | None = None,
                 dtype: torch.dtype = torch.float32) -> LLaDA2MoeModelLM:
    """A randomly initialised model. A larger `head_std` spreads token confidences over 0..1 (as the parity
    checkpoint does) so that decoding thresholds matter."""
    gen = torch.Generator().manual_seed(seed)
    model = LLaDA2MoeModelLM(config)
    model.init_weights(std, generator=gen)
    if head_std is not None:
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, head_std, generator=gen)
            model.model.word_embeddings.weight.normal_(0.0, 1.0, generator=gen)
    return model.to(dtype).eval()


def make_tiny_checkpoint(directory: str | os.PathLike, seed: int = 0, vocab_size: int = 512,
                         head_std: float | None = 2.0, **overrides) -> Path:
    """Write a tiny random checkpoint with its own tokenizer (config.json, model.safetensors, tokenizer files)."""
    tok = small_tokenizer(vocab_size)
    cfg = LLaDA2MoeConfig(**{**TINY_CONFIG, "vocab_size": tok.vocab_size, "pad_token_id": tok.pad_id, **overrides})
    model = random_model(cfg, seed=seed, head_std=head_std)
    return save_model(model, directory, tokenizer=tok)
