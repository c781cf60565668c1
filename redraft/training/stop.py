"""Stopping a run early without losing work: a time limit (`max_time_s`) or SIGTERM / Ctrl-C, agreed on by every rank.

The recipes check `StopRequest.reason()` after each optimiser step; when it names a reason they save a checkpoint at
that step (so `--resume` continues exactly there), export OUTPUT/final and return. A second Ctrl-C interrupts at
once, as usual. Under torchrun every rank gets the signal from the launcher, maybe at different steps: one all-reduce
(max) per step makes all ranks stop after the same step, so their collective checkpoint does not hang.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

import torch
import torch.distributed as dist

from .distributed import DistInfo

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Context manager: while active, SIGTERM and a first SIGINT are remembered instead of ending the process.

    Outside the main thread (where Python cannot install handlers) only the time limit applies."""

    def __init__(self, info: DistInfo, max_time_s: float | None = None) -> None:
        self.info = info
        self.max_time_s = max_time_s
        self.signal: int | None = None
        self._t0 = time.perf_counter()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        self._t0 = time.perf_counter()
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signal is not None:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without the checkpoint
        self.signal = signum

    def reason(self) -> str | None:
        """Why the run should stop after this step ('max_time_s', 'SIGTERM', 'SIGINT'), the same on every rank."""
        timed_out = self.max_time_s is not None and time.perf_counter() - self._t0 > self.max_time_s
        flags = [float(timed_out), float(self.signal or 0)]
        if self.info.is_distributed:
            t = torch.tensor(flags, device=self.info.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flags = t.tolist()
        if flags[1]:
            return signal.Signals(int(flags[1])).name
        return "max_time_s" if flags[0] else None
