"""Helpers for decoding tests and benchmarks: a tiny random model with spread confidences and a forward recorder."""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass

from torch import Tensor

from redraft.model import BlockLayout, LLaDA2MoeConfig
from redraft.model.testing import TINY_CONFIG, random_model

TINY_VOCAB = 512
TINY_MASK_ID = TINY_VOCAB - 1


def tiny_model(seed: int = 0, head_std: float = 2.0, vocab_size: int = TINY_VOCAB, **overrides):
    """A 3-layer random LLaDA2-MoE (float32) whose top-token probabilities spread over 0..1."""
    cfg = LLaDA2MoeConfig(**{**TINY_CONFIG, "vocab_size": vocab_size, **overrides})
    return random_model(cfg, seed=seed, head_std=head_std)


@dataclass
class Call:
    """One recorded forward: inputs, layout, whether a cache was read (and its per-row lengths), fp32 logits."""

    ids: Tensor
    positions: Tensor
    layout: BlockLayout
    cache_lengths: list[int] | None
    logits: Tensor


class RecordingModel:
    """Wraps a model and records every forward (a copy of inputs and logits); otherwise a drop-in for it."""

    def __init__(self, model):
        self.model = model
        self.calls: list[Call] = []

    def __getattr__(self, name):
        return getattr(self.__dict__["model"], name)

    def __call__(self, input_ids, position_ids=None, layout=None, **kwargs):
        cache = kwargs.get("cache")
        lengths = list(cache.host_lengths) if cache is not None else None
        index = kwargs.pop("logits_index", None)  # record every position's logits, return the asked ones
        out = self.model(input_ids, position_ids, layout, **kwargs)
        layout_copy = BlockLayout(layout.block_length,
                                  key_limit=None if layout.key_limit is None else layout.key_limit.clone(),
                                  valid=None if layout.valid is None else layout.valid.clone())
        self.calls.append(Call(input_ids.clone(), position_ids.clone(), layout_copy, lengths, out.logits.clone()))
        if index is not None:
            logits = out.logits.gather(1, index[:, :, None].expand(-1, -1, out.logits.shape[-1]))
            out = dataclasses.replace(out, logits=logits)
        return out
