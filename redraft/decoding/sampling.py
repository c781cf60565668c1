"""Top token and its probability per position: greedy (argmax) or sampled (temperature, top-k, top-p).

Sampling follows the official rule: scale by temperature, filter top-k then top-p, softmax, draw x0 ~ p and report
p(x0). The draw is an exponential race (argmax p / E, E ~ Exp(1)) whose noise comes from each row's own seeded
generator over that row's own positions, so a row's samples never depend on the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .policy import greedy_top


def filter_top_k_top_p(logits: Tensor, top_k: Tensor, top_p: Tensor) -> Tensor:
    """logits [N, E, V] with per-row top_k [N] (0 = off) and top_p [N] (1.0 = off) -> filtered logits (-inf out)."""
    sorted_logits, _ = logits.sort(dim=-1, descending=True)
    v = logits.shape[-1]
    k = torch.where(top_k > 0, top_k.clamp(max=v), torch.full_like(top_k, v))
    kth = sorted_logits.gather(-1, (k - 1)[:, None, None].expand(*logits.shape[:2], 1))
    neg_inf = torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device)
    logits = torch.where(logits < kth, neg_inf, logits)
    sorted_logits = torch.where(sorted_logits < kth, neg_inf, sorted_logits)
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass strictly before each sorted token; the first is always kept
    keep = before <= top_p[:, None, None]
    smallest_kept = torch.where(keep, sorted_logits, torch.full_like(sorted_logits, float("inf"))).min(-1, True)[0]
    return torch.where(logits < smallest_kept, neg_inf, logits)


def sample_top(logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor,
               generators: Sequence[torch.Generator], lengths: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Sampled token and its probability for rows [N, E, V]; row i draws noise for its first lengths[i] positions."""
    scaled = logits.float() / temperature[:, None, None]
    scaled = filter_top_k_top_p(scaled, top_k, top_p)
    probs = scaled.softmax(dim=-1)
    noise = torch.ones_like(probs)
    for i, (gen, n) in enumerate(zip(generators, lengths)):
        noise[i, :n].exponential_(generator=gen)
    token = (probs / noise).argmax(dim=-1)
    return token, probs.gather(-1, token[..., None])[..., 0]


def top_tokens(logits: Tensor, temperature: Sequence[float], top_k: Sequence[int], top_p: Sequence[float],
               generators: Sequence[torch.Generator | None], lengths: Sequence[int],
               forbid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per row greedy (temperature 0) or sampled top token and probability: logits [B, E, V] -> [B, E], [B, E].

    Settings are host-side lists (no sync to choose rows). forbid: optional [B, V] bool of token ids a row may not
    predict (the never-emit-mask switch).
    """
    if forbid is not None:
        logits = logits.masked_fill(forbid[:, None, :], float("-inf"))
    token, prob = greedy_top(logits)
    rows = [i for i, t in enumerate(temperature) if t > 0]
    if rows:
        dev = logits.device
        idx = torch.tensor(rows, device=dev)
        s_tok, s_prob = sample_top(
            logits.index_select(0, idx),
            torch.tensor([temperature[i] for i in rows], device=dev),
            torch.tensor([top_k[i] for i in rows], device=dev),
            torch.tensor([top_p[i] for i in rows], device=dev, dtype=torch.float32),
            [generators[i] for i in rows], [lengths[i] for i in rows])
        token = token.index_copy(0, idx, s_tok)
        prob = prob.index_copy(0, idx, s_prob)
    return token, prob
