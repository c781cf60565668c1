"""`EngineLoop`: the one thread that owns the engine (and so the model) and calls `engine.step()`.

HTTP handlers never touch the engine. They `submit` work (bounded: beyond `max_in_flight` choices -> `QueueFull`,
i.e. 429) and `cancel` it; the loop thread adds submissions to the engine between steps, so new requests join the
running batch at the next step and finished ones leave it (continuous batching, no head-of-line blocking). Each
step's events go back to the submitting request through its `Sink` (an asyncio queue fed with
`loop.call_soon_threadsafe`).

Slots: every accepted choice holds one slot (counted by `num_in_flight`, bounded by `max_in_flight`) from `submit`
until it is released, exactly once, by `_release`: when the engine reports it finished (done, cancelled, stopped at
shutdown), when the engine rejects it, when it is cancelled before it reached the engine, or when the loop fails.
After every step, a choice the engine no longer tracks but never reported is released with an error (and logged),
so an engine bug costs one request, never a slot.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import torch

from redraft.decoding import DecodeConfig, StepEvent

from .metrics import ServingMetrics
from .trajectory import TrajectoryDelta, TrajectoryFeed

log = logging.getLogger("redraft.serving")


class QueueFull(Exception):
    """The server holds as many requests as it accepts (429)."""


class NotAccepting(Exception):
    """The loop is stopping or stopped after an engine failure (503)."""


@dataclass(frozen=True)
class Failure:
    """An error for one choice instead of events (engine rejected it, engine failure, shutdown)."""

    request_id: str
    status: int
    message: str


class Sink:
    """Where the loop thread delivers one HTTP request's events: an asyncio queue on the request's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        self._loop = loop or asyncio.get_running_loop()
        self.queue: asyncio.Queue[StepEvent | Failure | TrajectoryDelta] = asyncio.Queue()

    def put(self, item: StepEvent | Failure | TrajectoryDelta) -> None:
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass


@dataclass(frozen=True)
class Submission:
    request_id: str
    prompt: list[int]
    config: DecodeConfig
    sink: Sink


class EngineLoop:
    """max_in_flight: choices held at once (running + waiting); metrics: gauges and step times are recorded here."""

    def __init__(self, engine, max_in_flight: int, metrics: ServingMetrics):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.engine = engine
        self.max_in_flight = max_in_flight
        self.metrics = metrics
        self.error: str | None = None  # why the loop stopped, after an engine failure
        self._cond = threading.Condition()
        self._slots: dict[str, Submission] = {}  # accepted choices not released yet (see `_release`)
        self._inbox: list[Submission] = []
        self._cancels: set[str] = set()
        self._accepting = True
        self._cancel_all = False
        self._stopping = False
        self._active: dict[str, Submission] = {}  # loop thread only
        self._prefix_seen: dict[str, int] = {}  # loop thread only: prefix-cache counters already exported
        self._trajectories = TrajectoryFeed()  # loop thread only: rows that stream per-step trajectory events
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ HTTP side
    @property
    def num_in_flight(self) -> int:
        with self._cond:
            return len(self._slots)

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("EngineLoop.start: already started")
        self._thread = threading.Thread(target=self._run, name="redraft-engine-loop", daemon=True)
        self._thread.start()

    def submit(self, submissions: list[Submission]) -> None:
        """All or nothing: raises QueueFull when they do not fit, NotAccepting when stopping."""
        with self._cond:
            if not self._accepting:
                raise NotAccepting(self.error or "the server is shutting down")
            if len(self._slots) + len(submissions) > self.max_in_flight:
                raise QueueFull(f"the server is at capacity ({self.max_in_flight} requests in flight); retry later")
            ids = [s.request_id for s in submissions]
            if len(set(ids)) < len(ids) or any(rid in self._slots for rid in ids):
                raise ValueError(f"EngineLoop.submit: request ids must be unique and not in flight, got {ids}")
            self._slots.update((s.request_id, s) for s in submissions)
            self._inbox.extend(submissions)
            self._cond.notify()

    def cancel(self, request_ids: list[str]) -> None:
        """Stop these choices (a client went away); unknown or finished ids are ignored. A choice still in the inbox
        is released here; one the engine holds ends with the engine's next step."""
        ids = set(request_ids)
        with self._cond:
            unsent = [s for s in self._inbox if s.request_id in ids]
            self._inbox = [s for s in self._inbox if s.request_id not in ids]
            self._cancels |= ids - {s.request_id for s in unsent}
            self._cond.notify()
        for s in unsent:
            if self._release(s.request_id) is not None:
                self.metrics.cancelled.inc()

    def drain(self, timeout: float = 10.0, cancel_timeout: float = 10.0) -> None:
        """Refuse new work (NotAccepting), let in-flight choices finish for up to `timeout` s, then cancel the rest
        and wait (up to `cancel_timeout` s) until their requests got the cancellation. Blocking: call it from a
        worker thread (`asyncio.to_thread`) when an event loop is running."""
        idle = lambda: not self._slots or self._thread is None or not self._thread.is_alive()  # noqa: E731
        with self._cond:
            self._accepting = False
            if not self._cond.wait_for(idle, timeout=timeout):
                self._cancel_all = True
                self._cond.notify()
                self._cond.wait_for(idle, timeout=cancel_timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """`drain`, then end the loop thread."""
        self.drain(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    # ------------------------------------------------------------------------------------------ loop thread
    def _run(self) -> None:
        try:
            with torch.inference_mode():  # serving never needs autograd; cache tensors stay inference tensors
                while self._iterate():
                    pass
        except Exception as e:  # an engine bug: fail every request instead of hanging them
            log.exception("engine loop failed; the server stops accepting requests")
            self._fail_all(f"engine failure: {type(e).__name__}: {e}")

    def _iterate(self) -> bool:
        with self._cond:
            while not (self._inbox or self._cancels or self._stopping or self._cancel_all or self.engine.has_work()):
                self._cond.wait()
            adds, self._inbox = self._inbox, []
            cancels, self._cancels = self._cancels, set()
            stopping, cancel_all = self._stopping, self._cancel_all
            self._cancel_all = False
        for s in adds:
            self._add(s)
        if stopping or cancel_all:
            cancels |= set(self._active)
        for rid in cancels:
            if rid in self._active:
                self.engine.cancel(rid)
        if self.engine.has_work():
            self._step()
            return True
        return not stopping

    def _add(self, s: Submission) -> None:
        try:
            self.engine.add_request(s.prompt, s.config, request_id=s.request_id)
        except ValueError as e:
            self._release(s.request_id, Failure(s.request_id, 400, str(e)))
            return
        self._active[s.request_id] = s
        if s.config.trajectory:
            self._trajectories.watch(s.request_id, self.engine.rows[s.request_id].trajectory)

    def _step(self) -> None:
        start = time.perf_counter()
        events = self.engine.step()
        self.metrics.step_time.observe(time.perf_counter() - start)
        self.metrics.steps.inc()
        for delta in self._trajectories.collect():  # before the step's text events: a finish comes last
            s = self._active.get(delta.request_id)
            if s is not None:
                s.sink.put(delta)
        for e in events:
            s = self._active.get(e.request_id)
            if s is None:
                continue
            if not e.finished:
                s.sink.put(e)
                continue
            del self._active[e.request_id]
            self._trajectories.forget(e.request_id)
            if self._release(e.request_id, e) is not None and e.result.finish_reason == "cancelled":
                self.metrics.cancelled.inc()
        self._release_lost()
        self._export_prefix_counters()
        scheduler = self.engine.scheduler
        self.metrics.batch_size.set(scheduler.num_running)
        with self._cond:
            self.metrics.queue_depth.set(len(self._inbox) + len(scheduler.waiting))

    def _export_prefix_counters(self) -> None:
        """Add what the engine's prefix cache counted during the step to the /metrics counters."""
        stats = getattr(getattr(self.engine, "prefix_index", None), "stats", None)
        if stats is None:
            return
        now = stats()
        m = self.metrics
        for key, counter in (("lookups", m.prefix_lookups), ("hits", m.prefix_hits),
                             ("reused_tokens", m.prefix_reused_tokens), ("evictions", m.prefix_evictions)):
            delta = now[key] - self._prefix_seen.get(key, 0)
            if delta > 0:
                counter.inc(delta)
        self._prefix_seen = now

    def _release(self, request_id: str, last: StepEvent | Failure | None = None) -> Submission | None:
        """Free the choice's slot and deliver its last item (None: nobody listens any more). Exactly once per
        choice: returns its submission the first time, None after (or for an unknown id)."""
        with self._cond:
            s = self._slots.pop(request_id, None)
            self._cond.notify_all()
        if s is not None and last is not None:
            s.sink.put(last)
        return s

    def _release_lost(self) -> None:
        """A choice the engine no longer tracks that never got its finished event: release it with an error."""
        rows = getattr(self.engine, "rows", None)
        if rows is None:
            return
        for rid in [rid for rid in self._active if rid not in rows]:
            log.error("engine dropped request %s without a result; releasing its slot", rid)
            del self._active[rid]
            self._trajectories.forget(rid)
            self._release(rid, Failure(rid, 500, "internal error: the engine lost the request"))

    def _fail_all(self, message: str) -> None:
        with self._cond:
            self.error = message
            self._accepting = False
            pending = list(self._slots)
            self._active, self._inbox = {}, []
            self._trajectories = TrajectoryFeed()
        for rid in pending:
            self._release(rid, Failure(rid, 500, message))
