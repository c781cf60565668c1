"""Top token and probability from vocab-parallel logits (a model cut by `redraft.model.parallel`).

Greedy rows need only each position's (max logit, argmax, sum exp) reduced across ranks (`ParallelState.reduce_top`:
3 numbers per position instead of V/tp logits); a batch with a sampled row gathers the full logits once, since
top-k/top-p and the draw need the whole distribution. Every rank gets the same tokens (same seeds, same logits).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .sampling import top_tokens


def parallel_top_tokens(parallel, logits: Tensor, temperature: Sequence[float], top_k: Sequence[int],
                        top_p: Sequence[float], generators: Sequence[torch.Generator | None], lengths: Sequence[int],
                        forbid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`top_tokens` for this rank's logits slice [B, E, V/tp] (see `redraft.decoding.sampling.top_tokens`)."""
    if any(t > 0 for t in temperature):
        return top_tokens(parallel.gather_logits(logits), temperature, top_k, top_p, generators, lengths, forbid)
    return parallel.reduce_top(logits, forbid)
