"""EBPO loss: the PPO-style clipped surrogate on the block-level ELBO ratio (LLaDA2.1 eq. 4), with optional k3 KL.

    J_i = min(ρ_i Â_i, clip(ρ_i, 1 − ε_low, 1 + ε_high) Â_i),   log ρ_i = log π_θ(y_i|x_i) − log π_old(y_i|x_i)
    loss = Σ_i r_i (−J_i + β k3_i),   k3_i = exp(Δ_i) − Δ_i − 1,  Δ_i = log π_ref − log π_θ

with log π the normalised ELBO proxy of `likelihood.py` and r_i the row weights (1 / number of rows in the whole
optimiser step, 0 for skipped rows). `ebpo_backward` computes the exact gradient of this loss with memory that does
not grow with the number of levels N: a no-grad pass gives log π_θ, hence ρ, the clip indicator and the per-row
coefficient c_i = ∂loss/∂log π_θ(y_i), then for each level n one forward + backward of Σ_i c_i w_n Σ_b ℓ_{n,b} / Z_i.
`ebpo_loss` is the same loss built all at once (memory grows with N; the reference the tests compare against).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .likelihood import ElboConfig, SequenceBatch, block_terms, level_block_terms, noise_level, normalizer, \
    sequence_logp


@dataclass(frozen=True)
class LossConfig:
    """clip_low ε_low and clip_high ε_high of eq. 4 (asymmetric: DAPO-style higher upper clip); kl_coef β of the
    k3 KL to the reference policy (0 = off, no reference needed)."""

    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.clip_low < 1.0:
            raise ValueError(f"loss.clip_low must be in [0, 1), got {self.clip_low!r}")
        if not self.clip_high >= 0.0:
            raise ValueError(f"loss.clip_high must be >= 0, got {self.clip_high!r}")
        if not self.kl_coef >= 0.0:
            raise ValueError(f"loss.kl_coef must be >= 0, got {self.kl_coef!r}")


def is_clipped(ratio: Tensor, advantages: Tensor, cfg: LossConfig) -> Tensor:
    """[B] bool: rows where the min of eq. 4 takes the clipped, constant term (zero gradient)."""
    return ((advantages > 0) & (ratio > 1.0 + cfg.clip_high)) | ((advantages < 0) & (ratio < 1.0 - cfg.clip_low))


def clipped_surrogate(log_ratio: Tensor, advantages: Tensor, cfg: LossConfig) -> Tensor:
    """[B]: J_i = min(ρÂ, clip(ρ, 1−ε_low, 1+ε_high)Â) (eq. 4); differentiable in log_ratio."""
    ratio = log_ratio.exp()
    clipped = ratio.clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
    return torch.minimum(ratio * advantages, clipped * advantages)


def k3(log_ref_ratio: Tensor) -> Tensor:
    """[B]: the k3 estimator exp(Δ) − Δ − 1 of KL(π_θ ‖ π_ref), Δ = log π_ref − log π_θ (>= 0, unbiased)."""
    return log_ref_ratio.exp() - log_ref_ratio - 1.0


def loss_coefficients(logp: Tensor, old_logp: Tensor, advantages: Tensor, row_weight: Tensor, cfg: LossConfig,
                      ref_logp: Tensor | None = None) -> Tensor:
    """[B]: c_i = ∂loss/∂log π_θ(y_i) = r_i (−Â_i ρ_i 1[not clipped] + β (1 − exp(Δ_i))) (eq. 4), no grad."""
    ratio = (logp - old_logp).exp()
    coef = -advantages * ratio * (~is_clipped(ratio, advantages, cfg)).float()
    if cfg.kl_coef > 0:
        if ref_logp is None:
            raise ValueError("loss.kl_coef > 0 needs the reference policy's log-likelihoods (ref_logp)")
        coef = coef + cfg.kl_coef * (1.0 - (ref_logp - logp).exp())
    return coef * row_weight


@dataclass
class StepStats:
    """Sums over the rows of one backward call (divide by `rows` for means): loss is Σ r_i(−J_i + β k3_i)."""

    loss: float
    rows: int
    clipped: int
    ratio_sum: float
    ratio_min: float
    ratio_max: float
    kl_sum: float


def ebpo_backward(model: nn.Module, batch: SequenceBatch, old_logp: Tensor, advantages: Tensor, row_weight: Tensor,
                  elbo: ElboConfig, cfg: LossConfig, mask_id: int, ref_logp: Tensor | None = None,
                  no_sync: Callable[[], AbstractContextManager] | None = None) -> StepStats:
    """Accumulate the exact gradient of the EBPO loss (eq. 4-5) into `.grad`, one level at a time.

    old_logp, ref_logp, advantages, row_weight: [B] float32 (ref_logp only with kl_coef > 0).
    no_sync: a context (e.g. DDP's `no_sync`) entered around every level's backward but the last, so gradients are
    reduced across processes once (it wraps each level's forward and backward).
    """
    norm = normalizer(batch, elbo).to(old_logp.device)
    with torch.no_grad():
        logp = sequence_logp(block_terms(model, batch, elbo, mask_id), norm)
        coef = loss_coefficients(logp, old_logp, advantages, row_weight, cfg, ref_logp)
        log_ratio = logp - old_logp
        ratio = log_ratio.exp()
        kl = k3(ref_logp - logp) if ref_logp is not None else torch.zeros_like(logp)
        loss = (row_weight * (-clipped_surrogate(log_ratio, advantages, cfg) + cfg.kl_coef * kl)).sum()
    for n in range(elbo.num_levels):
        last = n == elbo.num_levels - 1
        with no_sync() if (no_sync is not None and not last) else contextlib.nullcontext():  # forward + backward
            noised = noise_level(batch, n, elbo, mask_id)
            terms = level_block_terms(model, batch, noised, elbo.block_length)
            (coef * noised.weight.float() * terms.sum(-1) / norm).sum().backward()
    clipped = is_clipped(ratio, advantages, cfg) & (row_weight > 0)
    return StepStats(loss=float(loss), rows=int(batch.input_ids.shape[0]), clipped=int(clipped.sum()),
                     ratio_sum=float(ratio.sum()), ratio_min=float(ratio.min()), ratio_max=float(ratio.max()),
                     kl_sum=float(kl.sum()))


def ebpo_loss(model: nn.Module, batch: SequenceBatch, old_logp: Tensor, advantages: Tensor, row_weight: Tensor,
              elbo: ElboConfig, cfg: LossConfig, mask_id: int, ref_logp: Tensor | None = None) -> Tensor:
    """The EBPO loss (eq. 4-5) as one autograd graph over all N levels: the all-at-once reference form."""
    norm = normalizer(batch, elbo).to(old_logp.device)
    logp = sequence_logp(block_terms(model, batch, elbo, mask_id), norm)
    loss = -clipped_surrogate(logp - old_logp, advantages, cfg)
    if cfg.kl_coef > 0:
        if ref_logp is None:
            raise ValueError("loss.kl_coef > 0 needs the reference policy's log-likelihoods (ref_logp)")
        loss = loss + cfg.kl_coef * k3(ref_logp - logp)
    return (row_weight * loss).sum()
