"""The Draft-and-Edit rule (LLaDA2.1 eq. 1-3) as one pure, batched function over tensors.

One call decides one step for every row of a batch: no loop over rows, no host sync, no hidden state.
Positions are those of each row's editable window ([B, E]; under the official rule the window is the current block).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class PolicyResult(NamedTuple):
    """tokens: [B, E] long, the window after the step. m2t: [B, E] bool, filled masks (eq. 1).
    t2t: [B, E] bool, edited tokens (eq. 2). The applied set is m2t | t2t (eq. 3)."""

    tokens: Tensor
    m2t: Tensor
    t2t: Tensor


# exp below this is subnormal in float32: x86 computes subnormals ~10x slower (measured 1.9 ms vs 0.7 ms for a
# 32 x 8192 window with wide logits), and such terms are < 1e-37 of a sum that is >= 1, so clamping changes nothing.
_SUBNORMAL_EXP = -87.0


def greedy_top(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Top token and its probability per position ([..., V] -> [...], [...]): the top softmax value,
    1 / sum(exp(logit - max)) (= exp(max - logsumexp), without its cancellation), no normalised softmax kept."""
    logits = logits.float()
    top_logit, top = logits.max(dim=-1)
    shifted = (logits - top_logit[..., None]).clamp_(min=_SUBNORMAL_EXP)
    return top, shifted.exp_().sum(dim=-1).reciprocal_()


def decide(tokens: Tensor, top_tokens: Tensor, top_probs: Tensor, frozen: Tensor, *, mask_id: int,
           tau_mask: Tensor, tau_edit: Tensor, num_to_transfer: Tensor, editing: Tensor,
           previous: Tensor | None = None, stutter_ngram: Tensor | None = None,
           max_ngram: int = 0) -> PolicyResult:
    """Eq. 3: apply M2T (eq. 1) and T2T (eq. 2) together to every row's window.

    tokens, top_tokens: [B, E] long; top_probs: [B, E] float; frozen: [B, E] bool, prompt or padding positions
    (never filled, never edited). Per-row settings [B]: tau_mask, tau_edit (float), num_to_transfer (long),
    editing (bool). previous: optional [B, E] long, the token each position held before its last edit (-1 = none):
    an edit back to it is refused (edit-oscillation guard). stutter_ngram: optional [B] long, n > 0 refuses fills
    that complete an immediately repeated n-gram, except each row's most confident fill (max_ngram: its host-side max).
    """
    masked = (tokens == mask_id) & ~frozen
    conf = torch.where(masked, top_probs, torch.full_like(top_probs, -1.0))
    high = masked & (top_probs > tau_mask[:, None])
    # fallback: the `num_to_transfer` most confident masked positions (rank < k)
    order = torch.argsort(conf, dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=order.device)
                                            .expand_as(order))
    k = torch.minimum(num_to_transfer, masked.sum(-1))
    fallback = masked & (rank < k[:, None])
    use_high = high.sum(-1) >= num_to_transfer
    m2t = torch.where(use_high[:, None], high, fallback)

    editable = ~masked & ~frozen
    t2t = editable & (top_probs > tau_edit[:, None]) & (top_tokens != tokens) & editing[:, None]
    if previous is not None:
        t2t = t2t & (top_tokens != previous)

    if stutter_ngram is not None and max_ngram > 0:
        proposed = torch.where(m2t | t2t, top_tokens, tokens)
        stutter = repeated_ngram_end(proposed, stutter_ngram, max_ngram, mask_id)
        m2t = m2t & ~(stutter & (rank > 0))
    new_tokens = torch.where(m2t | t2t, top_tokens, tokens)
    return PolicyResult(new_tokens, m2t, t2t)


def greedy_step(logits: Tensor, tokens: Tensor, frozen: Tensor, tau_mask: Tensor, tau_edit: Tensor,
                num_to_transfer: Tensor, editing: Tensor, *, mask_id: int) -> Tensor:
    """The tensor part of a greedy step after the forward: top token and probability of every window position
    (`greedy_top`), then eq. 3 (`decide`, no oscillation guard or stutter rule). logits [B, E, V] -> [3, B, E] long:
    the new window, M2T (0/1), T2T (0/1), one tensor for the step's one host read. No host sync, no Python branch on
    values: a CUDA graph captures it together with the forward (`CUDAGraphRunner(post=...)`)."""
    top, prob = greedy_top(logits)
    res = decide(tokens, top, prob, frozen, mask_id=mask_id, tau_mask=tau_mask, tau_edit=tau_edit,
                 num_to_transfer=num_to_transfer, editing=editing)
    return torch.stack([res.tokens, res.m2t.long(), res.t2t.long()])


def repeated_ngram_end(tokens: Tensor, n: Tensor, max_n: int, mask_id: int) -> Tensor:
    """[B, E] bool: position i ends an n-gram equal to the n-gram just before it (tokens[i-2n+1..i]), per-row n
    ([B] long, 0 = never, at most max_n). Masks never match."""
    bsz, e = tokens.shape
    out = torch.zeros_like(tokens, dtype=torch.bool)
    for size in range(1, max_n + 1):
        if 2 * size > e:
            break
        eq = torch.ones(bsz, e, dtype=torch.bool, device=tokens.device)
        eq[:, : 2 * size - 1] = False
        for j in range(size):
            a = tokens[:, 2 * size - 1 - j: e - j]
            b = tokens[:, size - 1 - j: e - size - j]
            eq[:, 2 * size - 1:] &= (a == b) & (a != mask_id)
        out |= eq & (n[:, None] == size)
    return out
