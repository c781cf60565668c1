"""Per-request decoding state (host side, tensor-free) and the block bookkeeping of the official loop.

A row's canvas is its prompt followed by `max_new_tokens` masks, padded to whole blocks. Blocks that hold only
prompt tokens are never decoded (they are committed to the cache by the row's first forward). Block indices:
  cache_blocks <= edit_start <= block < num_blocks
  [0, cache_blocks)           committed to the KV cache (final tokens, block-causal keys)
  [cache_blocks, edit_start)  final but not yet in the cache: "commit copies" in the next forward
  [edit_start, block]         the editable window (the current block plus up to `mbe_blocks` finished ones)
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import torch

from .config import DecodeConfig
from .results import DecodeStats, Trajectory, TrajectoryStep


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Row:
    request_id: str
    config: DecodeConfig
    prompt: list[int]
    mask_id: int
    eos_ids: frozenset[int]
    canvas: list[int] = field(default_factory=list)
    block: int = 0
    post_steps: int = 0
    cache_blocks: int = 0
    status: Status = Status.WAITING
    finish_reason: str | None = None
    stats: DecodeStats = field(default_factory=DecodeStats)
    trajectory: Trajectory | None = None
    generator: torch.Generator | None = None
    previous: list[int] | None = None  # token before the last edit, per canvas position (oscillation guard)
    emitted_tokens: int = 0
    emitted_text: str = ""
    final_memo: tuple[tuple[int, bool], list[int], str] | None = None  # (final_blocks, finished), ids, text
    event_blocks: int = -1  # final_blocks at the engine's last look for news
    started_at: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        L, n = self.config.block_length, len(self.prompt)
        total = -(-(n + self.config.max_new_tokens) // L) * L
        self.canvas = list(self.prompt) + [self.mask_id] * (total - n)
        self.block = n // L
        if self.config.oscillation_guard:
            self.previous = [-1] * total
        if self.config.trajectory:
            self.trajectory = Trajectory(n, L, self.mask_id, list(self.canvas))

    # ------------------------------------------------------------------------------------------------ geometry
    @property
    def block_length(self) -> int:
        return self.config.block_length

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)

    @property
    def num_blocks(self) -> int:
        return len(self.canvas) // self.block_length

    @property
    def first_block(self) -> int:
        return self.prompt_len // self.block_length

    @property
    def edit_start(self) -> int:
        """First block of the editable window."""
        return max(self.block - self.config.mbe_blocks, self.first_block)

    @property
    def is_finished(self) -> bool:
        return self.status is Status.FINISHED

    def window_has_mask(self) -> bool:
        L = self.block_length
        return self.mask_id in self.canvas[self.edit_start * L:(self.block + 1) * L]

    # ------------------------------------------------------------------------------------------------ protocol
    def prepare(self) -> bool:
        """The pre-forward part of one step: count a post step, end blocks on the cap (no forward).

        Returns True when the row needs a forward now, False when it finished."""
        while not self.is_finished:
            if self.window_has_mask():
                return True
            self.post_steps += 1
            if self.post_steps <= self.config.max_post_steps:
                return True
            if self.trajectory is not None:
                self.trajectory.steps.append(TrajectoryStep(self.block, False))
            self.end_block()
        return False

    def apply(self, new_window: list[int], m2t: list[int], t2t: list[int], had_mask: bool) -> None:
        """Write one step's result (eq. 3) for the editable window; end the block when the step began without
        masks and made no edit (the forward then ran on the block's final tokens)."""
        L, start = self.block_length, self.edit_start * self.block_length
        cur_start = self.block * L
        step = TrajectoryStep(self.block, True) if self.trajectory is not None else None
        num_edits = 0
        for i, (tok, filled, edited) in enumerate(zip(new_window, m2t, t2t)):
            if not (filled or edited):
                continue
            pos = start + i
            old = self.canvas[pos]
            self.canvas[pos] = tok
            if filled:
                self.stats.m2t_fills += 1
                if step is not None:
                    step.filled.append((pos, tok))
            else:
                num_edits += 1
                self.stats.t2t_edits += 1
                if pos < cur_start:
                    self.stats.mbe_edits += 1
                if self.previous is not None:
                    self.previous[pos] = old
                if step is not None:
                    step.edited.append((pos, old, tok))
        self.stats.forwards += 1
        if step is not None:
            self.trajectory.steps.append(step)
        if not had_mask and num_edits == 0:
            self.end_block()
        if step is not None:
            step.final_blocks = self.final_blocks

    def end_block(self) -> None:
        """The current block is done: move on, then apply the official early stop and the end of the canvas."""
        self.block += 1
        self.post_steps = 0
        L = self.block_length
        if self.config.eos_early_stop:
            generated = self.canvas[self.prompt_len:self.block * L]
            if self.mask_id not in generated and not self.eos_ids.isdisjoint(generated):
                self.finish("eos")
                return
        if self.block >= self.num_blocks:
            self.finish("eos" if not self.eos_ids.isdisjoint(self.output_ids(self.num_blocks)) else "length")

    def finish(self, reason: str) -> None:
        self.status = Status.FINISHED
        self.finish_reason = reason
        self.stats.wall_time = time.perf_counter() - self.started_at

    # ------------------------------------------------------------------------------------------------ output
    @property
    def final_blocks(self) -> int:
        """Blocks whose tokens can no longer change."""
        return self.num_blocks if self.is_finished else self.edit_start

    def output_ids(self, blocks: int) -> list[int]:
        """Generated tokens of the first `blocks` blocks, capped at max_new_tokens, cut just after the first eos."""
        end = min(blocks * self.block_length, self.prompt_len + self.config.max_new_tokens)
        out = self.canvas[self.prompt_len:end]
        for i, tok in enumerate(out):
            if tok in self.eos_ids:
                return out[:i + 1]
        return out

    def final_ids(self) -> list[int]:
        return self.output_ids(self.final_blocks)
