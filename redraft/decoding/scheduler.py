"""Scheduler: which rows run in the next forward (tensor-free bookkeeping, nano-vllm style).

Rows are grouped in batches by block length (one KV cache each). A step is either a *join* step (waiting rows of
one block length run their first forward: prompt blocks as commit copies + their first block) or a *decode* step
(every running row of one batch). Join steps go first, while the running set has room; decode steps take the
batches in turn.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .row import Row, Status


@dataclass
class Plan:
    """block_length: the batch. rows: rows of the forward (all of the batch, in cache order, or joining rows).
    had_mask: per row, whether its window held a mask at the start of the step. finished: rows that ended before
    the forward (post-step cap, cancellation). keep: indices of the batch's rows that stay (cache rows to keep)."""

    block_length: int
    rows: list[Row]
    had_mask: list[bool]
    join: bool
    finished: list[Row] = field(default_factory=list)
    keep: list[int] = field(default_factory=list)


class Scheduler:
    def __init__(self, max_batch_size: int):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.max_batch_size = max_batch_size
        self.waiting: deque[Row] = deque()
        self.running: dict[int, list[Row]] = {}
        self._turn = 0

    @property
    def num_running(self) -> int:
        return sum(len(rows) for rows in self.running.values())

    def has_work(self) -> bool:
        return bool(self.waiting) or self.num_running > 0

    def add(self, row: Row) -> None:
        self.waiting.append(row)

    def schedule(self) -> Plan | None:
        """Plan the next step (runs each row's pre-forward check); None when nothing is left to run."""
        finished = [r for r in self.waiting if r.is_finished]  # cancelled while waiting
        self.waiting = deque(r for r in self.waiting if not r.is_finished)
        room = self.max_batch_size - self.num_running
        if self.waiting and room > 0:
            L = self.waiting[0].block_length
            rows = [r for r in self.waiting if r.block_length == L][:room]
            for r in rows:
                self.waiting.remove(r)
                r.status = Status.RUNNING
            ready = [r for r in rows if r.prepare()]
            finished += [r for r in rows if r.is_finished]
            if ready:
                return Plan(L, ready, [r.window_has_mask() for r in ready], True, finished)
        keys = [k for k, rows in self.running.items() if rows]
        if not keys:
            return Plan(0, [], [], False, finished) if finished else None
        L = keys[self._turn % len(keys)]
        self._turn += 1
        batch = self.running[L]
        for r in batch:
            if not r.is_finished:
                r.prepare()
        keep = [i for i, r in enumerate(batch) if not r.is_finished]
        finished += [r for r in batch if r.is_finished]
        self.running[L] = rows = [batch[i] for i in keep]
        return Plan(L, rows, [r.window_has_mask() for r in rows], False, finished, keep)

    def admit(self, plan: Plan) -> None:
        """After a join step: the joining rows become part of their batch (in cache order)."""
        if plan.join:
            self.running.setdefault(plan.block_length, []).extend(plan.rows)

    def remove_finished(self, block_length: int) -> tuple[list[int] | None, list[Row]]:
        """Drop finished rows of a batch; returns the kept indices (cache rows; None when nothing changed) and the
        dropped rows. After a join step these include running rows cancelled meanwhile, which were not in the plan."""
        batch = self.running.get(block_length, [])
        keep = [i for i, r in enumerate(batch) if not r.is_finished]
        if len(keep) == len(batch):
            return None, []
        self.running[block_length] = [batch[i] for i in keep]
        return keep, [r for r in batch if r.is_finished]
