"""Regression (issue 14): streaming clients that hang up after the first event must not leak in-flight slots.

Streamed requests alternating /v1/completions and /v1/chat/completions, four at a time against a server holding at
most four (batch 2 + queue 2), each dropped after its first `data:` line. Afterwards the server is idle: /health
reports in_flight 0, every accepted choice is counted as cancelled or finished, a new request is served (no 429),
and SIGTERM stops it at once (nothing left to drain)."""

from __future__ import annotations

import asyncio
import re
import time

import httpx

from redraft.serving.commands import DEFAULT_MODEL
from redraft.serving.testing import running_server, wait_idle


def _metric(base_url: str, name: str) -> float:
    text = httpx.get(base_url + "/metrics").text
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


async def _drop_after_first_event(client: httpx.AsyncClient, api_url: str, i: int) -> int:
    if i % 2:
        path, body = "/chat/completions", {"messages": [{"role": "user", "content": f"sort: {i} 1 2"}]}
    else:
        path, body = "/completions", {"prompt": f"def f{i}(x):"}
    body.update(model="tiny", max_tokens=256, stream=True)
    async with client.stream("POST", api_url + path, json=body, timeout=60) as r:
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                break
        return r.status_code


def test_dropped_streams_release_their_slots():
    # the bundled model (as in the report): its short chat answers make the race between a cancel and a joining
    # row frequent (4 of 4 runs leaked before the fix; the random checkpoint leaked in about 1 of 3)
    with running_server(DEFAULT_MODEL, ["--model-name", "tiny", "--max-batch-size", "2", "--max-queue", "2",
                                         "--threads", "1"]) as s:
        async def run() -> list[int]:
            limit = asyncio.Semaphore(4)
            async with httpx.AsyncClient() as client:
                async def one(i: int) -> int:
                    async with limit:
                        return await _drop_after_first_event(client, s.api_url, i)

                return await asyncio.gather(*(one(i) for i in range(20)))

        statuses = asyncio.run(run())
        accepted = statuses.count(200)
        assert accepted >= 4 and set(statuses) <= {200, 429}, statuses
        assert wait_idle(s.base_url, timeout=30) == 0
        cancelled = _metric(s.base_url, "redraft_cancelled_total")
        finished = _metric(s.base_url, "redraft_requests_total")
        assert cancelled + finished == accepted, (cancelled, finished, accepted)
        ok = httpx.post(s.api_url + "/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 4},
                        timeout=60)
        assert ok.status_code == 200, ok.text
        start = time.monotonic()
        assert s.stop(60) is not None
        assert time.monotonic() - start < 10
