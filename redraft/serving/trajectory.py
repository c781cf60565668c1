"""Per-step trajectory events over SSE: redraft's opt-in streaming extension (`"trajectory": true` with
`"stream": true`); the playground draws them. Off by default: a request without it sees plain OpenAI chunks.

Loop thread: `TrajectoryFeed` watches the rows of such requests and, after every engine step, hands out the steps
each row took since the last call (`TrajectoryDelta`, sent to the request before that step's text event).
Request side: `TrajectoryEncoder` turns deltas into JSON events with the text of every token id seen for the first
time. Wire format (one SSE event each, `event: redraft.trajectory`; `index` is the choice index):

    {"index", "type": "start", "prompt_len", "block_length", "mask_id", "canvas", "eos_ids", "vocab"}   first, once
    {"index", "type": "steps", "steps": [{block, forward, filled, edited, final_blocks}], "vocab"}
    {"index", "type": "end", "end", "finish_reason", "stats"}         after the choice finished (end: answer's end)

The step objects are those of `redraft.decoding.trace.trajectory_data` (the renderer's input).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redraft.decoding import GenerationResult, Trajectory, TrajectoryStep
from redraft.decoding.trace import step_data, step_ids, token_vocab

EVENT = "redraft.trajectory"


def sse_event(data: dict[str, Any]) -> bytes:
    """One named SSE event (`event: redraft.trajectory`); OpenAI chunks stay unnamed `data:` events."""
    return f"event: {EVENT}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


@dataclass(frozen=True)
class TrajectoryDelta:
    """Steps a row took since the last delta; `header` (the initial canvas) comes with the first one."""

    request_id: str
    steps: list[TrajectoryStep]
    header: Trajectory | None = None


class TrajectoryFeed:
    """Loop-thread bookkeeping: which rows are watched and how many of their steps were sent."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[Trajectory, int]] = {}

    def watch(self, request_id: str, trajectory: Trajectory | None) -> None:
        if trajectory is not None:
            self._rows[request_id] = (trajectory, -1)

    def forget(self, request_id: str) -> None:
        self._rows.pop(request_id, None)

    def collect(self) -> list[TrajectoryDelta]:
        out = []
        for rid, (traj, sent) in self._rows.items():
            steps = traj.steps[max(sent, 0):]
            if steps or sent < 0:
                out.append(TrajectoryDelta(rid, list(steps), traj if sent < 0 else None))
                self._rows[rid] = (traj, len(traj.steps))
        return out


class TrajectoryEncoder:
    """One request's JSON events; token texts are sent once per request (token_text: id -> str)."""

    def __init__(self, tokenizer, mask_id: int, eos_ids: list[int] | tuple[int, ...] = ()) -> None:
        self._tokenizer = tokenizer
        self.mask_id = mask_id
        self.eos_ids = [int(i) for i in eos_ids]
        self._known: set[int] = set()

    def _vocab(self, ids: set[int]) -> dict[str, str]:
        new = ids - self._known
        self._known |= new
        return token_vocab(new, lambda t: self._tokenizer.decode([t], skip_special_tokens=False), self.mask_id)

    def encode(self, index: int, delta: TrajectoryDelta) -> list[dict[str, Any]]:
        events = []
        if delta.header is not None:
            h = delta.header
            events.append({"index": index, "type": "start", "prompt_len": h.prompt_len,
                           "block_length": h.block_length, "mask_id": h.mask_id, "canvas": list(h.canvas),
                           "eos_ids": self.eos_ids,
                           "vocab": self._vocab(set(h.canvas))})
        if delta.steps:
            ids = set().union(*(step_ids(s) for s in delta.steps))
            events.append({"index": index, "type": "steps", "steps": [step_data(s) for s in delta.steps],
                           "vocab": self._vocab(ids)})
        return events

    @staticmethod
    def end(index: int, result: GenerationResult, finish_reason: str) -> dict[str, Any]:
        traj = result.trajectory
        end = traj.prompt_len + len(result.token_ids) if traj is not None else None
        return {"index": index, "type": "end", "end": end, "finish_reason": finish_reason,
                "stats": result.stats.as_dict()}
