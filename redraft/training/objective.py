"""The vectorised block-diffusion objective: one forward over [x_t ; x_0], loss read from the noisy half.

Layout (LLaDA2 / Fast-dLLM-v2 style, the same in every public trainer): the input is the noisy row x_t followed by the
clean row x_0 (length 2L), both halves at their own positions (each packed segment from 0), with
`packed_dual_stream_mask`: noisy block b sees itself and the clean blocks before it, so one forward gives every block
the context it has at decoding time. **Labels are at the same position** (logit i predicts token i; no shift).
When the block length covers every segment (block_length >= L) the clean half is not needed and only x_t runs.

Multi-Turn Forward (MTF, choice of formulation): for rows drawn with probability `mtf_ratio`, turns 1..T-1 run the
model without gradient on the current x_t; each turn writes its argmax (the mask token excluded) into masked positions
(those with confidence >= `mtf_confidence`, or a random `mtf_fraction` of them) and rewrites earlier drafts with its
new argmax (the model's own updated draft, as LLaDA2.2 describes). Turn T is trained toward x_0 on every noised
position: M2T on what is still masked, T2T on drafts (wrong ones must be edited, right ones kept) and random tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masks import block_index, packed_block_mask, packed_two_stream_mask
from .noise import NoiseConfig, NoisedBatch, apply_noise, loss_weights


@dataclass
class TrainBatch:
    """A batch of packed rows, all [B, L] on one device.

    input_ids: clean tokens x_0 (int64). position_ids: position within the segment (int64). segment_ids: segment
    number within the row, -1 for padding (int64). eligible: positions trained and noised (bool).
    """

    input_ids: Tensor
    position_ids: Tensor
    segment_ids: Tensor
    eligible: Tensor

    def to(self, device: torch.device | str) -> "TrainBatch":
        return TrainBatch(*(t.to(device, non_blocking=True) for t in
                            (self.input_ids, self.position_ids, self.segment_ids, self.eligible)))

    def select(self, rows: Tensor) -> "TrainBatch":
        """The batch of the given row indices (int64 [R])."""
        return TrainBatch(*(t.index_select(0, rows) for t in
                            (self.input_ids, self.position_ids, self.segment_ids, self.eligible)))

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())


def two_stream_logits(model: nn.Module, x_t: Tensor, x_0: Tensor, position_ids: Tensor, segment_ids: Tensor,
                      block_length: int) -> Tensor:
    """Logits [B, L, V] of the noisy half of one forward over [x_t ; x_0] (`packed_two_stream_mask`). The LM head
    runs on the noisy half only: the clean stream's logits are never read (half the head's work, and no [B, 2L, V]
    float32 tensor)."""
    bsz, length = x_t.shape
    mask = packed_two_stream_mask(position_ids, segment_ids, block_length)
    noisy_half = torch.arange(length, device=x_t.device)[None].expand(bsz, length)
    return model(torch.cat([x_t, x_0], dim=1), torch.cat([position_ids, position_ids], dim=1), attn_mask=mask,
                 logits_index=noisy_half).logits


def noisy_logits(model: nn.Module, x_t: Tensor, batch: TrainBatch, block_length: int) -> Tensor:
    """Logits [B, L, V] of the noisy half: the two-stream forward, or x_t alone when one block covers every segment."""
    if block_length >= x_t.shape[1]:
        mask = packed_block_mask(batch.position_ids, batch.segment_ids, block_length)
        return model(x_t, batch.position_ids, attn_mask=mask).logits
    return two_stream_logits(model, x_t, batch.input_ids, batch.position_ids, batch.segment_ids, block_length)


class DiffusionObjective:
    """Mixture M2T + T2T loss with MTF. `allowed_ids`: the token ids T2T may write (non-special vocabulary)."""

    def __init__(self, cfg: NoiseConfig, mask_id: int, allowed_ids: Tensor):
        self.cfg = cfg
        self.mask_id = mask_id
        self.allowed_ids = allowed_ids.sort().values

    def noise(self, model: nn.Module, batch: TrainBatch, block_length: int, gen: torch.Generator) -> NoisedBatch:
        """Noise the batch (M2T, T2T) and run the MTF turns (no gradient)."""
        blk = block_index(batch.position_ids, batch.segment_ids, block_length)
        allowed = self.allowed_ids.to(batch.input_ids.device)
        noised = apply_noise(batch.input_ids, batch.eligible, blk, self.cfg, self.mask_id, allowed, gen)
        if not self.cfg.uses_mtf:
            return noised
        bsz = batch.input_ids.shape[0]
        rows = torch.rand((bsz, 1), generator=gen, device=batch.input_ids.device) < self.cfg.mtf_ratio
        # the draft forwards run on the MTF rows only (the others' predictions are never written): `mtf_ratio` of
        # the cost. With no MTF row it still runs, on row 0 (every process of a sharded run must take part in each
        # forward); the random draws stay full-size, so the noise does not depend on which rows ran.
        picked = rows[:, 0].nonzero()[:, 0]
        if not len(picked):
            picked = torch.zeros(1, dtype=torch.long, device=rows.device)
        sub = batch.select(picked)
        x_t, masked, drafted = noised.x_t, noised.masked, noised.drafted
        for _ in range(self.cfg.mtf_turns - 1):
            with torch.no_grad():
                logits = noisy_logits(model, x_t[picked], sub, block_length).float()
                logits[..., self.mask_id] = float("-inf")
                top, picked_pred = logits.max(-1)
                pred = x_t.index_copy(0, picked, picked_pred)
            if self.cfg.mtf_select == "confidence":  # the top softmax value without the normalised softmax
                conf = torch.zeros(x_t.shape, device=x_t.device).index_copy(
                    0, picked, torch.exp(top - torch.logsumexp(logits, dim=-1)))
                write = masked & rows & (conf >= self.cfg.mtf_confidence)
            else:
                write = masked & rows & (torch.rand(x_t.shape, generator=gen, device=x_t.device) < self.cfg.mtf_fraction)
            x_t = torch.where(drafted | write, pred, x_t)
            drafted = drafted | write
            masked = masked & ~write
        return NoisedBatch(x_t=x_t, masked=masked, corrupted=noised.corrupted, drafted=drafted, keep=noised.keep,
                           scale=noised.scale)

    def __call__(self, model: nn.Module, batch: TrainBatch, block_length: int,
                 gen: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        """(scalar loss, metrics): metric values are detached sums; `summarize_metrics` turns them into means."""
        noised = self.noise(model, batch, block_length, gen)
        logits = noisy_logits(model, noised.x_t, batch, block_length)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.input_ids.reshape(-1),
                             reduction="none").view_as(batch.input_ids)
        w, norm = loss_weights(noised, batch.eligible, self.cfg)
        loss = (ce * w).sum() / norm
        return loss, term_metrics(ce.detach(), logits.detach(), batch.input_ids, noised)


def term_metrics(ce: Tensor, logits: Tensor, x0: Tensor, noised: NoisedBatch) -> dict[str, Tensor]:
    """Per term (m2t, t2t, draft, keep): sum of cross-entropy, count and correct-argmax count (all detached)."""
    correct = logits.argmax(-1) == x0
    out: dict[str, Tensor] = {}
    for name, sel in (("m2t", noised.masked), ("t2t", noised.corrupted), ("draft", noised.drafted),
                      ("keep", noised.keep)):
        f = sel.float()
        out[f"{name}_ce_sum"] = (ce * f).sum()
        out[f"{name}_count"] = f.sum()
        out[f"{name}_correct"] = (correct.float() * f).sum()
    return out


def summarize_metrics(sums: dict[str, Tensor]) -> dict[str, float]:
    """Means from summed `term_metrics`: {term}_loss and {term}_acc for each term that had positions."""
    out: dict[str, float] = {}
    for name in ("m2t", "t2t", "draft", "keep"):
        count = float(sums.get(f"{name}_count", 0.0))
        if count > 0:
            out[f"{name}_loss"] = float(sums[f"{name}_ce_sum"]) / count
            out[f"{name}_acc"] = float(sums[f"{name}_correct"]) / count
    return out
