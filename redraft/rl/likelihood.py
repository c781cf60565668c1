"""Block-level ELBO of responses, every block in one forward per noise level (LLaDA2.1 eq. 5).

For noise levels t_n with quadrature weights w_n, the response part y of each row [x ; y] is masked at rate t_n
(exact-k: k = round(t_n·m) of the m response tokens; Bernoulli: each with probability t_n) giving y_{t_n}; the prompt
is never masked. One forward over z_n = [x ; y_{t_n}] ⊕ [x ; y_0] under the two-stream mask (noisy block b sees
itself and clean blocks < b; blocks counted from position 0 of prompt+response, as at decoding) yields every block's
term at once:

    ℓ_{n,b} = s_n · Σ_{i ∈ block b, i masked} log p_θ(y_i | z_n)      (labels at the same position, no shift)

with the ELBO weight s_n = 1/t_n (Bernoulli) or m/k (exact-k), or 1 when `elbo_weight` is off. The sequence
log-likelihood proxy is log π(y|x) ≈ Σ_n w_n Σ_b ℓ_{n,b} / Z with the normaliser Z = 1, the number of response tokens
or the number of response blocks. Masks come from a per-row seed and the level index only, so θ, θ_old and a
reference policy always see the same y_{t_n} (and the same t_n under stratified sampling).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from redraft.training.objective import two_stream_logits

LEVELS = ("gauss_legendre", "stratified")
MASKINGS = ("exact_k", "bernoulli")
NORMALIZERS = ("none", "token", "block")


@dataclass(frozen=True)
class ElboConfig:
    """num_levels N; levels: "gauss_legendre" (fixed nodes/weights on [0, 1]) or "stratified" (t_n = (n + u)/N,
    u ~ U[0,1) per row and level, w_n = 1/N); masking: "exact_k" or "bernoulli"; normalizer: "none" | "token" |
    "block" (divides log π); elbo_weight: scale masked log-probs by 1/t (or m/k); block_length: as at decoding."""

    num_levels: int = 3
    levels: str = "gauss_legendre"
    masking: str = "exact_k"
    normalizer: str = "token"
    elbo_weight: bool = True
    block_length: int = 32

    def __post_init__(self) -> None:
        for name, allowed in (("levels", LEVELS), ("masking", MASKINGS), ("normalizer", NORMALIZERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"elbo.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("num_levels", "block_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"elbo.{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.elbo_weight, bool):
            raise ValueError(f"elbo.elbo_weight must be a bool, got {self.elbo_weight!r}")

    def replace(self, **changes) -> "ElboConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class SequenceBatch:
    """Rows [x ; y] for likelihoods, right-padded to a common length L (B rows).

    input_ids: [B, L] int64 (prompt, response, then padding). prompt_lens: [B] int64. lengths: [B] int64, valid
    tokens per row (prompt + response); positions >= lengths are padding, invisible to every query.
    mask_seeds: [B] int64, the per-row noise seed (the same for θ, θ_old and the reference policy).
    """

    input_ids: Tensor
    prompt_lens: Tensor
    lengths: Tensor
    mask_seeds: Tensor

    def __post_init__(self) -> None:
        if self.input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, L], got shape {tuple(self.input_ids.shape)}")
        bsz, length = self.input_ids.shape
        for name in ("prompt_lens", "lengths", "mask_seeds"):
            if tuple(getattr(self, name).shape) != (bsz,):
                raise ValueError(f"{name} must have shape ({bsz},), got {tuple(getattr(self, name).shape)}")
        if bool((self.lengths > length).any()) or bool((self.prompt_lens > self.lengths).any()):
            raise ValueError(f"need prompt_lens <= lengths <= {length}, got prompt_lens={self.prompt_lens.tolist()}"
                             f", lengths={self.lengths.tolist()}")

    @property
    def position_ids(self) -> Tensor:
        bsz, length = self.input_ids.shape
        return torch.arange(length, device=self.input_ids.device)[None].expand(bsz, length)

    @property
    def segment_ids(self) -> Tensor:
        """[B, L]: 0 on valid tokens, -1 on padding (the packed-mask convention of `redraft.training.masks`)."""
        valid = self.position_ids < self.lengths[:, None]
        return torch.where(valid, 0, -1)

    @property
    def response_mask(self) -> Tensor:
        """[B, L] bool: the response positions (the only ones ever masked)."""
        pos = self.position_ids
        return (pos >= self.prompt_lens[:, None]) & (pos < self.lengths[:, None])

    def num_blocks(self, block_length: int) -> int:
        return math.ceil(self.input_ids.shape[1] / block_length)

    def select(self, rows: Tensor | list[int]) -> "SequenceBatch":
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.input_ids.device)
        keep = int(self.lengths[rows].max()) if len(rows) else 0
        return SequenceBatch(self.input_ids[rows, :keep], self.prompt_lens[rows], self.lengths[rows],
                             self.mask_seeds[rows])


@dataclass
class NoisedLevel:
    """One noise level for every row: x_t [B, L] (masked response tokens replaced by the mask id), masked [B, L]
    bool, t [B] the level, scale [B] the ELBO weight s_n, weight [B] the quadrature weight w_n."""

    x_t: Tensor
    masked: Tensor
    t: Tensor
    scale: Tensor
    weight: Tensor


def gauss_legendre(num_levels: int) -> tuple[Tensor, Tensor]:
    """Nodes t_n and weights w_n of N-point Gauss-Legendre quadrature on [0, 1] (weights sum to 1), float64."""
    x, w = np.polynomial.legendre.leggauss(num_levels)
    return torch.from_numpy((x + 1.0) / 2.0), torch.from_numpy(w / 2.0)


def _row_generator(seed: int, level: int) -> torch.Generator:
    mixed = (seed * 0x9E3779B97F4A7C15 + (level + 1) * 0xBF58476D1CE4E5B9) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def noise_level(batch: SequenceBatch, level: int, cfg: ElboConfig, mask_id: int) -> NoisedLevel:
    """Mask the response tokens of every row at level n (same seed and n -> same mask, whatever the model)."""
    if not 0 <= level < cfg.num_levels:
        raise ValueError(f"level must be in [0, {cfg.num_levels}), got {level}")
    bsz, length = batch.input_ids.shape
    nodes, weights = gauss_legendre(cfg.num_levels)
    masked = torch.zeros(bsz, length, dtype=torch.bool)
    t = torch.empty(bsz, dtype=torch.float64)
    scale = torch.ones(bsz, dtype=torch.float64)
    weight = torch.empty(bsz, dtype=torch.float64)
    starts, ends = batch.prompt_lens.tolist(), batch.lengths.tolist()
    for row, (seed, start, end) in enumerate(zip(batch.mask_seeds.tolist(), starts, ends)):
        gen = _row_generator(int(seed), level)
        if cfg.levels == "gauss_legendre":
            t[row], weight[row] = nodes[level], weights[level]
        else:
            t[row] = (level + float(torch.rand((), generator=gen, dtype=torch.float64))) / cfg.num_levels
            weight[row] = 1.0 / cfg.num_levels
        m = end - start
        if m == 0:
            continue
        score = torch.rand(m, generator=gen, dtype=torch.float64)
        if cfg.masking == "bernoulli":
            chosen = score < t[row]
            s = 1.0 / float(t[row])
        else:
            k = min(max(round(float(t[row]) * m), 1), m)
            chosen = torch.zeros(m, dtype=torch.bool)
            chosen[score.argsort()[:k]] = True
            s = m / k
        masked[row, start:end] = chosen
        if cfg.elbo_weight:
            scale[row] = s
    dev = batch.input_ids.device
    masked = masked.to(dev)
    x_t = torch.where(masked, torch.full_like(batch.input_ids, mask_id), batch.input_ids)
    return NoisedLevel(x_t, masked, t.to(dev), scale.to(dev), weight.to(dev))


def token_logprobs(model: nn.Module, batch: SequenceBatch, x_t: Tensor, block_length: int) -> Tensor:
    """[B, L] float32: log p(y_0 at i | z) read from the noisy half of z = [x_t ; x_0] (eq. 5 layout)."""
    logits = two_stream_logits(model, x_t, batch.input_ids, batch.position_ids, batch.segment_ids, block_length)
    return -F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch.input_ids.reshape(-1),
                            reduction="none").view(batch.input_ids.shape)


def level_block_terms(model: nn.Module, batch: SequenceBatch, noised: NoisedLevel, block_length: int) -> Tensor:
    """ℓ_{n,b} for one level: [B, num_blocks] float32 (differentiable when grad is on; eq. 5)."""
    logp = token_logprobs(model, batch, noised.x_t, block_length)
    contrib = logp * noised.masked * noised.scale[:, None].float()
    blk = torch.div(batch.position_ids, block_length, rounding_mode="floor")
    out = torch.zeros(contrib.shape[0], batch.num_blocks(block_length), dtype=contrib.dtype, device=contrib.device)
    return out.scatter_add(1, blk, contrib)


@dataclass
class ElboTerms:
    """terms: [B, N, num_blocks] the block terms ℓ_{n,b}; weights: [B, N] the quadrature weights w_n."""

    terms: Tensor
    weights: Tensor


def block_terms(model: nn.Module, batch: SequenceBatch, cfg: ElboConfig, mask_id: int) -> ElboTerms:
    """All levels' block terms, one forward per level (eq. 5). Gradient flows when enabled by the caller."""
    terms, weights = [], []
    for n in range(cfg.num_levels):
        noised = noise_level(batch, n, cfg, mask_id)
        terms.append(level_block_terms(model, batch, noised, cfg.block_length))
        weights.append(noised.weight)
    return ElboTerms(torch.stack(terms, dim=1), torch.stack(weights, dim=1).float())


def normalizer(batch: SequenceBatch, cfg: ElboConfig) -> Tensor:
    """[B] float32 Z: 1, the number of response tokens, or the number of blocks holding response tokens (min 1)."""
    m = (batch.lengths - batch.prompt_lens).float()
    if cfg.normalizer == "none":
        return torch.ones_like(m)
    if cfg.normalizer == "token":
        return m.clamp(min=1.0)
    bl = cfg.block_length
    first = torch.div(batch.prompt_lens, bl, rounding_mode="floor")
    last = torch.div(batch.lengths - 1, bl, rounding_mode="floor")
    return torch.where(m > 0, (last - first + 1).float(), torch.ones_like(m))


def sequence_logp(elbo: ElboTerms, norm: Tensor) -> Tensor:
    """[B]: the ELBO proxy Σ_n w_n Σ_b ℓ_{n,b} / Z (eq. 5); log ρ is its difference between two policies."""
    return (elbo.terms.sum(-1) * elbo.weights).sum(-1) / norm
