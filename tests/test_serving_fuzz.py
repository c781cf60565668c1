"""Fuzz the real server (subprocess, raw HTTP): >= 1,000 malformed or hostile requests (random JSON, mutated valid
requests with huge numbers and wrong types, invalid UTF-8, truncated and deeply nested JSON, huge bodies, wrong
methods and content types). None may get a 5xx or crash the server, and it must still answer a valid request."""

from __future__ import annotations

import json
import random
from collections import Counter

import httpx
import pytest

from redraft.serving.testing import running_server

NUM_REQUESTS = 1200
TEMPLATES = {
    "/v1/completions": {"model": "tiny", "prompt": "def f(", "max_tokens": 2},
    "/v1/chat/completions": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
}
FIELDS = ["model", "prompt", "messages", "max_tokens", "temperature", "top_p", "seed", "stop", "n", "stream",
          "stream_options", "mode", "tau_mask", "tau_edit", "block_length", "max_post_steps", "mbe_blocks", "top_k",
          "editing", "logprobs", "echo", "user", "logit_bias", "max_completion_tokens", "response_format", "suffix"]
STRINGS = ["", " ", "tiny", "<|mask|>" * 50, "\u0000", "\ud800", "\udfff\ud800", "é" * 300, "🙂" * 100, "a" * 70_000,
           "NaN", "Infinity", "-1", "1e999", "../../etc/passwd", "%s%n", "\\", '"', "<role>SYSTEM</role>", "quality"]


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(12 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, 1, -1, 2, 7, 32, 2**31, 2**63, 2**64, -(2**63), 10**30, -(10**30), 10**300])
    if kind == 3:
        return rng.choice([0.0, -0.0, 0.5, 1.0, 1.5, -1e-9, 1e308, -1e308, 5e-324, 3.0, 2.0000001])
    if kind in (4, 5):
        return rng.choice(STRINGS)
    if kind == 6:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(1, 40)))
    if kind == 7:
        return [rng.randrange(-5, 600) for _ in range(rng.randrange(0, 8))]
    if kind in (8, 9):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return {rng.choice(FIELDS + ["role", "content", "type", "text", "x"]): random_value(rng, depth + 1)
            for _ in range(rng.randrange(0, 5))}


def mutated(rng: random.Random, path: str) -> dict:
    body = json.loads(json.dumps(TEMPLATES[path]))
    for _ in range(rng.randrange(1, 4)):
        action = rng.randrange(4)
        if action == 0 and body:
            body.pop(rng.choice(sorted(body)))
        elif action == 1 and path.endswith("chat/completions"):
            body["messages"] = [{rng.choice(["role", "content", "name", "x"]): random_value(rng)
                                 for _ in range(rng.randrange(0, 4))} for _ in range(rng.randrange(0, 3))]
        else:
            body[rng.choice(FIELDS)] = random_value(rng)
    return body


def as_json(method: str, url: str, body) -> dict:
    """JSON with escapes (httpx's `json=` cannot encode lone surrogates, which JSON can carry as \\ud800)."""
    return dict(method=method, url=url, content=json.dumps(body), headers={"content-type": "application/json"})


def hostile_request(rng: random.Random, i: int) -> dict:
    """Keyword arguments of httpx.Client.request for request i."""
    path = rng.choice(sorted(TEMPLATES))
    json_headers = {"content-type": "application/json"}
    kind = i % 10
    if kind in (0, 1, 2, 3):
        return as_json("POST", path, mutated(rng, path))
    if kind == 4:
        return as_json("POST", path, random_value(rng))
    if kind == 5:  # invalid UTF-8 / random bytes
        raw = json.dumps(mutated(rng, path)).encode()
        cut = rng.randrange(len(raw))
        junk = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", bytes(rng.randrange(256) for _ in range(8))])
        return dict(method="POST", url=path, content=raw[:cut] + junk + raw[cut:], headers=json_headers)
    if kind == 6:  # truncated or deeply nested JSON
        raw = json.dumps(mutated(rng, path)).encode()
        choice = rng.randrange(3)
        content = (raw[:rng.randrange(len(raw))] if choice == 0 else
                   b"[" * rng.choice([100, 10_000, 60_000]) if choice == 1 else
                   b'{"model":"tiny","prompt":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}")
        return dict(method="POST", url=path, content=content, headers=json_headers)
    if kind == 7:  # huge bodies and huge numbers
        choice = rng.randrange(3)
        content = (b'{"model":"tiny","prompt":"' + b"x" * rng.choice([70_000, 300_000]) + b'"}' if choice == 0 else
                   b'{"model":"tiny","prompt":"x","max_tokens":' + b"9" * rng.choice([20, 400, 5000]) + b"}"
                   if choice == 1 else b'{"model":"tiny","prompt":"x","temperature":1' + b"0" * 400 + b".5}")
        return dict(method="POST", url=path, content=content, headers=json_headers)
    if kind == 8:  # wrong content type / method / path
        choice = rng.randrange(4)
        if choice == 0:
            return dict(method="POST", url=path, content=json.dumps(TEMPLATES[path]),
                        headers={"content-type": rng.choice(["text/plain", "application/x-www-form-urlencoded",
                                                             "multipart/form-data", "application/json; charset=latin-1"])})
        if choice == 1:
            return dict(method=rng.choice(["GET", "PUT", "DELETE", "PATCH"]), url=path)
        if choice == 2:
            return dict(method="GET", url=rng.choice(["/v1/models/" + "x" * 300, "/v1/models/%ff", "/metrics?x=1",
                                                      "/v1/" + "a/" * 50, "/health/../v1/models"]))
        return dict(method="POST", url=path, content=b"", headers=json_headers)
    return as_json("POST", path, mutated(rng, path) | {"stream": True})


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    args = ["--model-name", "tiny", "--max-model-len", "48", "--default-max-tokens", "2", "--max-body-bytes", "65536",
            "--max-batch-size", "8", "--max-queue", "8", "--threads", "1"]
    with running_server(tiny_checkpoint, args) as s:
        yield s


@pytest.mark.slow  # ~6 min on 2 shared cores (valid mutants run generations); CI runs it
def test_hostile_requests_never_5xx_and_server_survives(server):
    rng = random.Random(1234)
    statuses: Counter[int] = Counter()
    bad = []
    with httpx.Client(base_url=server.base_url, timeout=httpx.Timeout(20.0, connect=5.0)) as http:
        for i in range(NUM_REQUESTS):
            kwargs = hostile_request(rng, i)
            try:
                r = http.request(**kwargs)
            except httpx.TimeoutException:
                statuses[-1] += 1  # a valid but slow request: the client gives up (and the server cancels it)
                continue
            statuses[r.status_code] += 1
            if r.status_code >= 500:
                bad.append((kwargs, r.status_code, r.text[:300]))
            elif r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
                err = r.json()["error"]
                assert set(err) == {"message", "type", "param", "code"}, (kwargs, r.text)
    print(f"fuzz: {NUM_REQUESTS} requests, statuses {dict(sorted(statuses.items()))}")
    assert not bad, bad[:3]
    assert server.process.poll() is None, server.log()[-3000:]
    assert sum(statuses.values()) == NUM_REQUESTS and statuses[-1] < NUM_REQUESTS // 50
    assert sum(n for s, n in statuses.items() if 400 <= s < 500) > NUM_REQUESTS // 2
    ok = httpx.post(server.api_url + "/completions", json=TEMPLATES["/v1/completions"], timeout=60)
    assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] in ("stop", "length")
    assert httpx.get(server.base_url + "/health").json()["status"] == "ok"
    assert "Traceback" not in server.log(), server.log()[-3000:]
