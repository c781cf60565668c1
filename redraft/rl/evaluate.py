"""Held-out accuracy of the policy: greedy decoding (same mode as the rollouts) on the task's eval split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from redraft.decoding import generate

from .rollout import RolloutConfig


def heldout_accuracy(model, tokenizer, task: Any, samples: Sequence[Any], prompt_ids: Sequence[Sequence[int]],
                     rollout: RolloutConfig, temperature: float = 0.0) -> dict[str, float]:
    """{"eval_accuracy", "eval_tpf", "eval_forwards", "eval_tokens"}: mean task score and decoding cost per sample
    (temperature 0 = greedy; > 0 samples with seed = index)."""
    if not samples:
        return {}
    configs = [rollout.decode_config(i, temperature=temperature) for i in range(len(samples))]
    with torch.inference_mode():
        results = generate(model, tokenizer, [list(p) for p in prompt_ids], configs,
                           max_batch_size=rollout.max_batch_size)
    texts = [r.text if r.text is not None else tokenizer.decode(r.token_ids, skip_special_tokens=True)
             for r in results]
    scores = task.score_many(list(samples), texts)
    forwards = sum(r.stats.forwards for r in results)
    tokens = sum(r.stats.tokens for r in results)
    return {"eval_accuracy": sum(scores) / len(scores), "eval_tpf": tokens / forwards if forwards else 0.0,
            "eval_forwards": forwards / len(results), "eval_tokens": tokens / len(results)}
