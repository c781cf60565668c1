"""The opt-in per-step SSE extension (`"trajectory": true`, `redraft.trajectory` events): off by default, the
events replay to exactly the answer the engine returned, and concurrent requests share the engine's steps."""

from __future__ import annotations

import json
import re
import threading

import httpx
import pytest
import torch

from redraft.decoding import Trajectory, TrajectoryStep
from redraft.decoding import generate as _generate
from redraft.decoding import preset
from redraft.model import load_model
from redraft.model.tokenizer import load_tokenizer
from redraft.serving.testing import running_server

PROMPT = "def area(r):\n    return"


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    with running_server(tiny_checkpoint, ["--max-batch-size", "8", "--model-name", "tiny", "--threads", "1"]) as s:
        yield s


def _sse(server, path: str, body: dict) -> list[tuple[str | None, object]]:
    """(event name, parsed data) of every SSE event of one streamed request."""
    events = []
    with httpx.stream("POST", server.base_url + path, json=body, timeout=300) as r:
        assert r.status_code == 200, r.read()
        for raw in r.read().decode().split("\n\n"):
            if not raw.strip():
                continue
            name = re.search(r"^event: (.*)$", raw, re.M)
            data = "".join(line[6:] for line in raw.split("\n") if line.startswith("data: "))
            events.append((name.group(1) if name else None, data if data == "[DONE]" else json.loads(data)))
    return events


def _replay(events, index: int = 0) -> tuple[dict, list[int]]:
    """The start event and the canvas after every step event of one choice."""
    mine = [d for n, d in events if n == "redraft.trajectory" and d["index"] == index]
    start = mine[0]
    assert start["type"] == "start" and mine[-1]["type"] == "end"
    traj = Trajectory(start["prompt_len"], start["block_length"], start["mask_id"], start["canvas"])
    for d in mine[1:-1]:
        assert d["type"] == "steps"
        traj.steps += [TrajectoryStep(s["block"], s["forward"], [tuple(x) for x in s["filled"]],
                                      [tuple(x) for x in s["edited"]], s["final_blocks"]) for s in d["steps"]]
    return mine[-1], traj.canvases()[-1]


def test_off_by_default_and_only_with_stream(server):
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 24, "stream": True}
    assert all(name is None for name, _ in _sse(server, "/v1/completions", body))
    r = httpx.post(server.base_url + "/v1/completions", json={**body, "stream": False, "trajectory": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "trajectory"
    r = httpx.post(server.base_url + "/v1/completions", json={**body, "trajectory": "yes"})
    assert r.status_code in (400, 422)


def test_events_replay_to_the_answer(server, tiny_checkpoint):
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 40, "block_length": 8, "mode": "speedy",
            "stream": True, "trajectory": True, "n": 2, "temperature": 0.8, "seed": 3}
    events = _sse(server, "/v1/completions", body)
    assert events[-1] == (None, "[DONE]")
    model, tok = load_model(tiny_checkpoint), load_tokenizer(tiny_checkpoint)
    for index in (0, 1):
        text = "".join(d["choices"][0]["text"] for n, d in events[:-1]
                       if n is None and d["choices"] and d["choices"][0]["index"] == index)
        end, canvas = _replay(events, index)
        start = next(d for n, d in events if n == "redraft.trajectory" and d["index"] == index)
        answer = canvas[start["prompt_len"]:end["end"]]
        with torch.inference_mode():
            want = _generate(model, tok, [tok.encode(PROMPT)], preset(
                "speedy", max_new_tokens=40, block_length=8, temperature=0.8, seed=3 + index,
                eos_ids=tuple(tok.stop_ids)))[0]
        assert answer == want.token_ids and text == want.text
        assert end["stats"]["forwards"] == want.stats.forwards
        assert end["stats"]["t2t_edits"] == want.stats.t2t_edits
        # a choice's finish chunk comes before its end event, after its last step event
        finish = next(k for k, (n, d) in enumerate(events[:-1]) if n is None and d["choices"]
                      and d["choices"][0]["index"] == index and d["choices"][0]["finish_reason"])
        mine = [k for k, (n, d) in enumerate(events) if n and d["index"] == index]
        assert mine[-2] < finish < mine[-1]


def test_concurrent_requests_are_rows_of_one_batch(server):
    """Several playground tabs = several requests in flight = rows of the same engine steps."""
    def steps_total() -> float:
        text = httpx.get(server.base_url + "/metrics").text
        return float(re.search(r"^redraft_engine_steps_total (\S+)$", text, re.M).group(1))

    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 64,
            "stream": True, "trajectory": True, "block_length": 16}
    before = steps_total()
    results = [None] * 3
    barrier = threading.Barrier(3)

    def tab(i: int) -> None:
        barrier.wait()
        results[i] = _sse(server, "/v1/chat/completions", body)

    threads = [threading.Thread(target=tab, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ends = [[d for n, d in r if n == "redraft.trajectory" and d["type"] == "end"][0] for r in results]
    forwards = [e["stats"]["forwards"] for e in ends]
    assert len({json.dumps(_replay(r)[1]) for r in results}) == 1  # same greedy answer in every tab
    assert steps_total() - before < sum(forwards)  # shared steps: the rows ran in one batch
