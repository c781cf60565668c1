"""What decoding returns: per-row stats, the optional trajectory, the final result and streaming events."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DecodeStats:
    """forwards: model forwards (NFE) the row took part in. tokens: tokens returned. tpf: tokens per forward.
    m2t_fills: masks filled (eq. 1). t2t_edits: tokens rewritten (eq. 2), all blocks. mbe_edits: the part of
    t2t_edits made in earlier blocks of a Multi-Block Editing window. wall_time: seconds from request to finish."""

    forwards: int = 0
    tokens: int = 0
    m2t_fills: int = 0
    t2t_edits: int = 0
    mbe_edits: int = 0
    wall_time: float = 0.0

    @property
    def tpf(self) -> float:
        return self.tokens / self.forwards if self.forwards else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_time if self.wall_time > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"forwards": self.forwards, "tokens": self.tokens, "tpf": self.tpf, "m2t_fills": self.m2t_fills,
                "t2t_edits": self.t2t_edits, "mbe_edits": self.mbe_edits, "wall_time": self.wall_time,
                "tokens_per_s": self.tokens_per_s}


@dataclass
class TrajectoryStep:
    """One decoding step of one row. Positions are absolute canvas positions.

    block: the current block. forward: False for a step that ended a block on the post-step cap without a forward.
    filled: (position, token) of M2T fills. edited: (position, old, new) of T2T edits. final_blocks: blocks final
    after the step (they left the editable window)."""

    block: int
    forward: bool
    filled: list[tuple[int, int]] = field(default_factory=list)
    edited: list[tuple[int, int, int]] = field(default_factory=list)
    final_blocks: int = 0


@dataclass
class Trajectory:
    """Every step of one row: the initial canvas (prompt + masks) and the steps that changed it."""

    prompt_len: int
    block_length: int
    mask_id: int
    canvas: list[int]
    steps: list[TrajectoryStep] = field(default_factory=list)

    def canvases(self) -> list[list[int]]:
        """The canvas after each step (index 0 = before the first step)."""
        cur = list(self.canvas)
        out = [list(cur)]
        for s in self.steps:
            for pos, tok in s.filled:
                cur[pos] = tok
            for pos, _, new in s.edited:
                cur[pos] = new
            out.append(list(cur))
        return out


@dataclass
class GenerationResult:
    """token_ids: the generated part (cut just after the first eos id, like the official `generate`; cut at a stop
    string). finish_reason: "eos" | "stop" | "length" | "cancelled"."""

    request_id: str
    token_ids: list[int]
    text: str | None
    finish_reason: str
    stats: DecodeStats
    trajectory: Trajectory | None = None


@dataclass
class StepEvent:
    """A row's news after one engine step: tokens/text that just became final, and the result when finished."""

    request_id: str
    new_token_ids: list[int]
    text: str
    finished: bool = False
    result: GenerationResult | None = None
