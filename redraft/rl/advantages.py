"""Group-normalised advantages: each prompt's G samples are compared with each other (GRPO-style, for eq. 4).

    mean_std: Â_i = (r_i − mean_g r) / (std_g r + eps)       (std with Bessel's correction, as in GRPO)
    mean:     Â_i = r_i − mean_g r                            (Dr. GRPO: no division by the std)
    rloo:     Â_i = r_i − mean_{j≠i} r_j = G/(G−1) (r_i − mean_g r)   (leave-one-out baseline)

A group whose rewards are all equal carries no learning signal (every Â_i = 0); with `skip_zero_variance` its rows
are marked to be left out of the loss, so they neither dilute the mean nor cost a backward pass.

negative_scale multiplies the negative advantages (1 = the plain estimator; 0 = learn from better-than-average
samples only). Pushing a whole sequence's ELBO down also pushes down its correct tokens, which a small model feels
as lost confidence; a scale below 1 trades that against the bias of an asymmetric estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

METHODS = ("mean_std", "mean", "rloo")


def _check(method: str, negative_scale: float) -> None:
    if method not in METHODS:
        raise ValueError(f"advantages.method must be one of {METHODS}, got {method!r}")
    if isinstance(negative_scale, bool) or not isinstance(negative_scale, (int, float)) \
            or not 0.0 <= negative_scale <= 1.0:
        raise ValueError(f"advantages.negative_scale must be a number in [0, 1], got {negative_scale!r}")


@dataclass(frozen=True)
class AdvantageConfig:
    """method: "mean_std" | "mean" | "rloo"; skip_zero_variance: leave all-equal groups out of the loss;
    negative_scale: multiplies negative advantages (1 = plain; 0 = positive samples only)."""

    method: str = "mean_std"
    skip_zero_variance: bool = True
    negative_scale: float = 1.0

    def __post_init__(self) -> None:
        _check(self.method, self.negative_scale)


def group_advantages(rewards: Tensor, method: str = "mean_std", eps: float = 1e-6,
                     skip_zero_variance: bool = True, negative_scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """rewards [P, G] float -> (advantages [P, G] float32, keep [P, G] bool)."""
    _check(method, negative_scale)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [P, G], got shape {tuple(rewards.shape)}")
    num_samples = rewards.shape[1]
    if num_samples < 2:
        raise ValueError(f"group size G must be >= 2 for group-normalised advantages, got {num_samples}")
    if not eps > 0:
        raise ValueError(f"advantages.eps must be > 0, got {eps!r}")
    r = rewards.float()
    centred = r - r.mean(dim=1, keepdim=True)
    if method == "mean_std":
        adv = centred / (r.std(dim=1, keepdim=True) + eps)
    elif method == "mean":
        adv = centred
    else:
        adv = centred * (num_samples / (num_samples - 1))
    if negative_scale != 1.0:
        adv = torch.where(adv < 0, adv * negative_scale, adv)
    varied = (r != r[:, :1]).any(dim=1, keepdim=True).expand_as(r)
    keep = varied if skip_zero_variance else torch.ones_like(varied)
    return adv, keep
