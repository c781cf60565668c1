"""Noise for the Mixture M2T + T2T objective (LLaDA2.1 §3.1), batched, no per-row Python loops.

Formulation (the paper gives the idea; the exact choices below are ours and are marked "choice"):

- Eligible positions E: the tokens a row is trained on (the response and its EOS padding in SFT, every document token
  in CPT); prompt tokens and padding are never noised and never in the loss.
- **M2T (drafting stream).** A masking rate t is drawn per sequence or per block (`mask_ratio_per`) from
  U[mask_ratio_min, mask_ratio_max]; each eligible position is replaced by <|mask|> independently with probability t.
  With `elbo_weight` each masked position's cross-entropy is weighted 1/t (the masked-diffusion ELBO) and the batch
  loss is divided by |E| (choice: the per-token ELBO); without it the loss is a weighted mean over supervised
  positions (the official SFT framework's plain mean over masked tokens, extended to the terms below).
- **T2T (editing stream).** Per example, with probability `t2t_ratio` (the mixture: M2T-only vs M2T+T2T in one
  sample), a rate r ~ U[0, t2t_max_rate] is drawn and each *visible* eligible position (not masked) is replaced with
  probability r by a token drawn uniformly from the non-special vocabulary, never the original token. Corrupted
  positions are trained toward x_0 with weight `t2t_weight` (times 1/t under `elbo_weight`, choice: the same scale
  as the masked positions of that row).
- **Keep term.** Visible, uncorrupted eligible positions get cross-entropy toward themselves with the small weight
  `keep_weight` (choice: in every row, including M2T-only rows), so the model is confidently right where the draft is
  right, which the edit rule (replace only when another token beats tau_edit) needs.
- **MTF** lives in `objective.py` (it needs the model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MASK_RATIO_PER = ("sequence", "block")
MTF_SELECT = ("confidence", "random")


@dataclass
class NoiseConfig:
    """Rates and weights of the M2T + T2T objective and of Multi-Turn Forward (see the module docstring)."""

    mask_ratio_min: float = 0.001
    mask_ratio_max: float = 1.0
    mask_ratio_per: str = "sequence"
    elbo_weight: bool = False
    t2t_ratio: float = 0.5
    t2t_max_rate: float = 0.2
    t2t_weight: float = 1.0
    keep_weight: float = 0.1
    mtf_turns: int = 2
    mtf_ratio: float = 0.5
    mtf_select: str = "random"
    mtf_fraction: float = 0.5
    mtf_confidence: float = 0.5

    def __post_init__(self) -> None:
        for name in ("mask_ratio_min", "mask_ratio_max", "t2t_ratio", "t2t_max_rate", "mtf_ratio", "mtf_fraction",
                     "mtf_confidence"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"noise.{name} must be in [0, 1], got {value!r}")
        if self.mask_ratio_min > self.mask_ratio_max:
            raise ValueError(f"noise.mask_ratio_min ({self.mask_ratio_min}) must be <= mask_ratio_max "
                             f"({self.mask_ratio_max})")
        if self.mask_ratio_max <= 0.0:
            raise ValueError(f"noise.mask_ratio_max must be positive, got {self.mask_ratio_max}")
        if self.elbo_weight and self.mask_ratio_min <= 0.0:
            raise ValueError("noise.mask_ratio_min must be positive with elbo_weight (the weight is 1/t), got "
                             f"{self.mask_ratio_min}")
        if self.mask_ratio_per not in MASK_RATIO_PER:
            raise ValueError(f"noise.mask_ratio_per must be one of {MASK_RATIO_PER}, got {self.mask_ratio_per!r}")
        if self.mtf_select not in MTF_SELECT:
            raise ValueError(f"noise.mtf_select must be one of {MTF_SELECT}, got {self.mtf_select!r}")
        for name in ("t2t_weight", "keep_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"noise.{name} must be >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.mtf_turns, int) or self.mtf_turns < 1:
            raise ValueError(f"noise.mtf_turns must be an int >= 1, got {self.mtf_turns!r}")

    @property
    def uses_t2t(self) -> bool:
        return self.t2t_ratio > 0 and self.t2t_max_rate > 0

    @property
    def uses_mtf(self) -> bool:
        return self.mtf_turns > 1 and self.mtf_ratio > 0


@dataclass
class NoisedBatch:
    """One noised batch. All tensors [B, L] on the batch's device.

    x_t: the noisy tokens (int64). masked: positions holding <|mask|> (M2T). corrupted: positions holding a random
    token that is not x_0's (T2T). drafted: masked positions into which MTF wrote the model's own prediction (right or
    wrong; see `objective.py`). keep: visible eligible positions that hold x_0 and were never masked or corrupted.
    scale: per-position factor of the loss (1/t under the ELBO weight, else 1), float32.
    """

    x_t: Tensor
    masked: Tensor
    corrupted: Tensor
    drafted: Tensor
    keep: Tensor
    scale: Tensor


def uniform(shape: tuple[int, ...], lo: float, hi: float, gen: torch.Generator, device: torch.device) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=device)


def sample_mask_ratio(eligible: Tensor, block_idx: Tensor, cfg: NoiseConfig, gen: torch.Generator) -> Tensor:
    """Masking rate t per position [B, L] (constant over a sequence or over a block)."""
    bsz, length = eligible.shape
    if cfg.mask_ratio_per == "sequence":
        t = uniform((bsz, 1), cfg.mask_ratio_min, cfg.mask_ratio_max, gen, eligible.device)
        return t.expand(bsz, length)
    t = uniform((bsz, length), cfg.mask_ratio_min, cfg.mask_ratio_max, gen, eligible.device)
    return t.gather(1, block_idx)


def random_replacement(x0: Tensor, allowed_ids: Tensor, gen: torch.Generator) -> Tensor:
    """For every position a token drawn uniformly from `allowed_ids` (sorted, 1-D) other than x0 itself.

    When x0 is allowed there are n-1 choices: draw k < n-1 and skip past x0's rank; otherwise n choices.
    """
    n = allowed_ids.numel()
    rank = torch.searchsorted(allowed_ids, x0)
    is_allowed = (rank < n) & (allowed_ids[rank.clamp(max=n - 1)] == x0)
    choices = n - is_allowed.long()
    k = (torch.rand(x0.shape, generator=gen, device=x0.device) * choices).long().clamp(max=n - 1)
    k = k + (is_allowed & (k >= rank)).long()
    return allowed_ids[k]


def apply_noise(x0: Tensor, eligible: Tensor, block_idx: Tensor, cfg: NoiseConfig, mask_id: int,
                allowed_ids: Tensor, gen: torch.Generator) -> NoisedBatch:
    """M2T masking, then T2T corruption of visible eligible positions in the rows drawn for the T2T variant.

    x0: [B, L] int64 clean tokens; eligible: [B, L] bool; block_idx: [B, L] from `masks.block_index`;
    allowed_ids: sorted 1-D tensor of the token ids T2T may write (the non-special vocabulary).
    """
    if allowed_ids.numel() < 2:
        raise ValueError(f"allowed_ids must hold at least 2 tokens, got {allowed_ids.numel()}")
    bsz = x0.shape[0]
    device = x0.device
    t = sample_mask_ratio(eligible, block_idx, cfg, gen)
    masked = eligible & (torch.rand(x0.shape, generator=gen, device=device) < t)
    corrupted = torch.zeros_like(masked)
    if cfg.uses_t2t:
        t2t_row = torch.rand((bsz, 1), generator=gen, device=device) < cfg.t2t_ratio
        r = uniform((bsz, 1), 0.0, cfg.t2t_max_rate, gen, device)
        corrupted = eligible & ~masked & t2t_row & (torch.rand(x0.shape, generator=gen, device=device) < r)
    x_t = torch.where(masked, torch.full_like(x0, mask_id), x0)
    if cfg.uses_t2t:
        x_t = torch.where(corrupted, random_replacement(x0, allowed_ids, gen), x_t)
    keep = eligible & ~masked & ~corrupted
    scale = (1.0 / t) if cfg.elbo_weight else torch.ones_like(t)
    return NoisedBatch(x_t=x_t, masked=masked, corrupted=corrupted, drafted=torch.zeros_like(masked), keep=keep,
                       scale=scale.float().contiguous())


def loss_weights(noised: NoisedBatch, eligible: Tensor, cfg: NoiseConfig) -> tuple[Tensor, Tensor]:
    """(per-position weight [B, L] float32, normaliser: scalar tensor) of the cross-entropy toward x_0.

    Masked and drafted positions weigh `scale` (drafts stay M2T positions of the ELBO: choice), corrupted ones
    `t2t_weight * scale`, kept ones `keep_weight`. Normaliser: |E| under `elbo_weight`, else the unscaled weight sum.
    """
    base = (noised.masked | noised.drafted).float() + cfg.t2t_weight * noised.corrupted.float()
    w = base * noised.scale + cfg.keep_weight * noised.keep.float()
    if cfg.elbo_weight:
        norm = eligible.float().sum()
    else:
        norm = (base + cfg.keep_weight * noised.keep.float()).sum()
    return w, norm.clamp(min=1.0)
