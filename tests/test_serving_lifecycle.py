"""Server lifecycle in a subprocess: bounded queue (429), graceful shutdown that finishes in-flight requests, and
one that cancels them cleanly (an error event and [DONE], a 503 body) when they outlast the shutdown timeout."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from redraft.serving.testing import running_server, start_server, wait_idle

LONG = {"model": "tiny", "prompt": "def long(", "max_tokens": 3000, "block_length": 2, "stream": True}


def _first_text(lines) -> None:
    for line in lines:
        if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
            return
    raise AssertionError("stream ended before any text")


def test_full_queue_gives_429_then_recovers(tiny_checkpoint):
    with running_server(tiny_checkpoint, ["--model-name", "tiny", "--max-batch-size", "1", "--max-queue", "0",
                                         "--threads", "1"]) as s:
        with httpx.stream("POST", s.api_url + "/completions", json=LONG, timeout=60) as r:
            lines = r.iter_lines()
            _first_text(lines)
            busy = httpx.post(s.api_url + "/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 4})
            assert busy.status_code == 429
            assert busy.json()["error"]["type"] == "rate_limit_error"
            assert busy.headers["retry-after"] == "1"
        # the long request's client hung up: its row is cancelled and the slot frees
        ok = None
        for _ in range(100):
            ok = httpx.post(s.api_url + "/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 4},
                            timeout=60)
            if ok.status_code != 429:
                break
            threading.Event().wait(0.1)
        assert ok.status_code == 200, ok.text
        assert wait_idle(s.base_url) == 0


@pytest.mark.parametrize("finish", [True, False], ids=["finishes", "cancels"])
def test_graceful_shutdown(tiny_checkpoint, finish):
    timeout = "60" if finish else "1"
    server = start_server(tiny_checkpoint, ["--model-name", "tiny", "--shutdown-timeout", timeout, "--threads", "1"])
    try:
        body = dict(LONG, max_tokens=32, block_length=8) if finish else LONG
        plain = {}

        def non_streaming() -> None:
            r = httpx.post(server.api_url + "/completions", json=dict(body, stream=False), timeout=120)
            plain["status"], plain["body"] = r.status_code, r.json()

        with httpx.stream("POST", server.api_url + "/completions", json=body, timeout=120) as r:
            lines = r.iter_lines()
            _first_text(lines)
            worker = threading.Thread(target=non_streaming)
            worker.start()
            for _ in range(200):  # until the non-streaming request is in flight too (a fixed wait races on busy CPUs)
                if plain or httpx.get(server.base_url + "/health").json()["in_flight"] >= 2:
                    break
                threading.Event().wait(0.05)
            server.process.terminate()  # SIGTERM: graceful shutdown
            rest = [x for x in lines if x]
        worker.join(120)
        assert server.process.wait(60) is not None
        events = [json.loads(x[6:]) for x in rest if x.startswith("data: {")]
        assert rest[-1] == "data: [DONE]"
        if finish:
            assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
            assert plain["status"] == 200 and plain["body"]["choices"][0]["finish_reason"] in ("stop", "length")
        else:
            assert events[-1]["error"]["code"] == "cancelled"
            assert plain["status"] == 503 and plain["body"]["error"]["code"] == "cancelled"
        assert "Traceback" not in server.log()
    finally:
        server.stop()
