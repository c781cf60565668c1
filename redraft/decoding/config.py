"""`DecodeConfig`: every setting of one request's decoding, validated once; the S/Q Mode presets are instances."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DecodeConfig:
    """Settings of one request (rows of one batch may differ in everything except `block_length`).

    tau_mask: M2T threshold (eq. 1): a masked position is filled when its top-token probability is > tau_mask.
    tau_edit: T2T threshold (eq. 2): a written, non-prompt position is rewritten when its top token differs and its
        probability is > tau_edit. 0.0 is the official "full editing" (any differing prediction with p > 0 edits).
    editing: False turns T2T off explicitly (pure M2T decoding, the LLaDA2.0 behaviour). Independent of tau_edit.
    max_post_steps: steps allowed after the block (window) has no masks left; the official cap.
    block_length: tokens per block; one value per batch (the engine groups requests by it).
    num_to_transfer: M2T fallback: when fewer than this many masked positions clear tau_mask, fill the
        `num_to_transfer` most confident masked positions instead.
    max_new_tokens: the official `gen_length`: the canvas is prompt + max_new_tokens masks, padded to whole blocks.
    temperature: 0.0 = greedy (argmax); > 0 samples the top token (official sampling rule, seeded per request).
    top_k: keep the k most likely tokens before sampling (0 = off). top_p: nucleus sampling mass (1.0 = off).
    seed: per-request seed of the sampler (None = 0); the same seed gives the same tokens whatever the batch.
    eos_ids: end-of-sequence ids; empty = the tokenizer's stop ids (eos and `<|role_end|>`).
    eos_early_stop: stop a row after a block ends when its generated part holds an eos id (official rule).
    stop: stop strings; the row ends when finalised text contains one (the text is cut before it).
    mbe_blocks: Multi-Block Editing: the number k of finished blocks that stay editable (0 = official behaviour).
    mask_id: the mask token id; None = the tokenizer's `mask_id`.
    forbid_mask_token: safety switch: never predict the mask id as a token (off by default: official behaviour).
    oscillation_guard: block a T2T edit that would restore the token a position held before its last edit.
    stutter_ngram: n > 0 rejects an M2T fill that completes an immediately repeated n-gram (never the step's most
        confident fill, so decoding always progresses). 0 = off.
    """

    tau_mask: float = 0.7
    tau_edit: float = 0.5
    editing: bool = True
    max_post_steps: int = 16
    block_length: int = 32
    num_to_transfer: int = 1
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    eos_ids: tuple[int, ...] = ()
    eos_early_stop: bool = True
    stop: tuple[str, ...] = ()
    mbe_blocks: int = 0
    mask_id: int | None = None
    forbid_mask_token: bool = False
    oscillation_guard: bool = False
    stutter_ngram: int = 0
    trajectory: bool = False

    def __post_init__(self) -> None:
        # normalise sequences given as lists / a single string
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        if isinstance(self.eos_ids, int):
            object.__setattr__(self, "eos_ids", (self.eos_ids,))
        object.__setattr__(self, "eos_ids", tuple(int(i) for i in self.eos_ids))
        for name in ("tau_mask", "tau_edit", "temperature", "top_p"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"DecodeConfig.{name} must be a finite number, got {v!r}")
        _check(self.tau_mask, "tau_mask", 0.0 <= self.tau_mask <= 1.0, "in [0, 1]")
        _check(self.tau_edit, "tau_edit", 0.0 <= self.tau_edit, ">= 0 (values > 1 never edit)")
        _check(self.temperature, "temperature", self.temperature >= 0.0, ">= 0")
        _check(self.top_p, "top_p", 0.0 < self.top_p <= 1.0, "in (0, 1]")
        for name, low in (("max_post_steps", 0), ("block_length", 1), ("num_to_transfer", 1), ("max_new_tokens", 1),
                          ("top_k", 0), ("mbe_blocks", 0), ("stutter_ngram", 0)):
            v = getattr(self, name)
            _check(v, name, isinstance(v, int) and not isinstance(v, bool) and v >= low, f"an integer >= {low}")
        _check(self.num_to_transfer, "num_to_transfer", self.num_to_transfer <= self.block_length,
               f"<= block_length ({self.block_length})")
        if self.seed is not None:
            _check(self.seed, "seed", isinstance(self.seed, int) and not isinstance(self.seed, bool), "an integer")
        if self.mask_id is not None:
            _check(self.mask_id, "mask_id", isinstance(self.mask_id, int) and self.mask_id >= 0, "an id >= 0")
        for i in self.eos_ids:
            _check(self.eos_ids, "eos_ids", i >= 0, "ids >= 0")
        for s in self.stop:
            _check(self.stop, "stop", isinstance(s, str) and len(s) > 0, "non-empty strings")
        for name in ("editing", "eos_early_stop", "forbid_mask_token", "oscillation_guard", "trajectory"):
            v = getattr(self, name)
            _check(v, name, isinstance(v, bool), "a bool")

    def replace(self, **changes) -> "DecodeConfig":
        """A copy with some fields changed (validated again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"DecodeConfig has no field {sorted(unknown)[0]!r}")
        return dataclasses.replace(self, **changes)


def _check(value, name: str, ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"DecodeConfig.{name} must be {what}, got {value!r}")


# LLaDA2.1 model card: Q Mode and S Mode (block 32, greedy).
PRESETS: dict[str, DecodeConfig] = {
    "quality": DecodeConfig(tau_mask=0.7, tau_edit=0.5, max_post_steps=16, block_length=32),
    "speedy": DecodeConfig(tau_mask=0.5, tau_edit=0.0, max_post_steps=16, block_length=32),
}


def preset(name: str = "quality", **overrides) -> DecodeConfig:
    """A named preset ("quality" = Q Mode, "speedy" = S Mode) with any fields overridden."""
    if name not in PRESETS:
        raise ValueError(f"preset name must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


__all__ = ["DecodeConfig", "PRESETS", "preset"]
