"""`Generation`: one HTTP request's choices in flight on the `EngineLoop`, seen from the request's event loop.

It submits the choices, yields (choice index, event) as the engine finalises blocks, and always leaves the engine
clean: whatever way the request ends (finished, client gone, server error, task cancelled), unfinished choices are
cancelled. A client disconnect is noticed while waiting (the ASGI `http.disconnect` message), not only when the next
write fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redraft.decoding import GenerationResult, StepEvent

from .errors import APIError
from .loop import EngineLoop, Failure, NotAccepting, QueueFull, Sink, Submission
from .metrics import ServingMetrics
from .params import Job
from .responses import finish_reason
from .trajectory import TrajectoryDelta

Receive = Callable[[], Awaitable[dict[str, Any]]]


class ClientGone(Exception):
    """The client disconnected before the response was complete."""


class Generation:
    def __init__(self, loop: EngineLoop, job: Job, request_id: str, receive: Receive, metrics: ServingMetrics,
                 endpoint: str):
        self.loop = loop
        self.job = job
        self.metrics = metrics
        self.endpoint = endpoint
        self.ids = [f"{request_id}-{i}" for i in range(len(job.prompts))]
        self.results: list[GenerationResult | None] = [None] * len(self.ids)
        self.started = time.perf_counter()
        self._index = {rid: i for i, rid in enumerate(self.ids)}
        self._receive = receive
        self._open = set(self.ids)  # submitted choices not finished yet
        self._sink: Sink | None = None
        self._first_text = False
        self._closed = False

    def submit(self) -> None:
        """Hand the choices to the engine loop: 429 when the server is full, 503 when it is stopping."""
        self._sink = Sink()
        subs = [Submission(rid, p, c, self._sink) for rid, p, c in zip(self.ids, self.job.prompts, self.job.configs)]
        try:
            self.loop.submit(subs)
        except QueueFull as e:
            raise APIError(429, str(e), code="queue_full") from None
        except NotAccepting as e:
            raise APIError(503, str(e), code="unavailable") from None

    async def events(self) -> AsyncIterator[tuple[int, StepEvent | TrajectoryDelta]]:
        """(choice index, event) until every choice finished (TrajectoryDelta items only for requests that asked
        for trajectory events). Raises ClientGone, or APIError for a failed choice (503 when the server cancelled
        it while shutting down)."""
        assert self._sink is not None, "submit() first"
        watcher = asyncio.ensure_future(self._wait_disconnect())
        try:
            while self._open:
                get = asyncio.ensure_future(self._sink.queue.get())
                done, _ = await asyncio.wait({get, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    raise ClientGone()
                item = get.result()
                index = self._index[item.request_id]
                if isinstance(item, Failure):
                    self._open.discard(item.request_id)
                    raise APIError(item.status, item.message, code="engine_error" if item.status >= 500 else None)
                if isinstance(item, TrajectoryDelta):
                    yield index, item
                    continue
                if item.text and not self._first_text:
                    self._first_text = True
                    self.metrics.ttft.observe(time.perf_counter() - self.started)
                if item.finished:
                    self._record(index, item.result)
                    if item.result.finish_reason == "cancelled":
                        raise APIError(503, "the request was cancelled: the server is shutting down",
                                       code="cancelled")
                yield index, item
        finally:
            watcher.cancel()
            self.close()

    async def collect(self) -> list[GenerationResult]:
        async for _ in self.events():
            pass
        return [r for r in self.results if r is not None]

    def close(self) -> None:
        """Cancel whatever has not finished; record the request's latency when all of it finished (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._open:
            self.loop.cancel(sorted(self._open))
            self._open.clear()
        elif all(r is not None for r in self.results):
            self.metrics.latency.observe(time.perf_counter() - self.started)
            self.metrics.prompt_tokens.inc(self.job.prompt_tokens)

    def _record(self, index: int, result: GenerationResult) -> None:
        self.results[index] = result
        self._open.discard(self.ids[index])
        self.metrics.requests.inc(endpoint=self.endpoint, finish_reason=finish_reason(result))
        self.metrics.generation_tokens.inc(len(result.token_ids))
        self.metrics.row_forwards.inc(result.stats.forwards)
        if result.stats.forwards:
            self.metrics.tpf.observe(result.stats.tpf)

    async def _wait_disconnect(self) -> None:
        while True:
            message = await self._receive()
            if message.get("type") == "http.disconnect":
                return

