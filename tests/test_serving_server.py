"""The real server in a subprocess (uvicorn, loopback, tiny random checkpoint), driven by the official `openai`
client and raw HTTP: greedy parity with offline `generate` (also 32 requests in flight), streaming, n, stop,
seeds, extension fields, usage, /metrics, disconnects and 429."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import httpx
import openai
import pytest

import torch

from redraft.decoding import generate as _generate
from redraft.decoding import preset
from redraft.model import load_model
from redraft.model.tokenizer import load_tokenizer
from redraft.serving.testing import running_server

PROMPTS = [f"def f{i}(x):\n    return x {'+-*/%'[i % 5]} {i}" for i in range(32)]


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    with running_server(tiny_checkpoint, ["--max-batch-size", "32", "--model-name", "tiny", "--threads", "1"]) as s:
        yield s


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Offline references in this process: one torch thread (the server subprocess has its own)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def offline(tiny_checkpoint):
    return load_model(tiny_checkpoint), load_tokenizer(tiny_checkpoint)


def generate(*args, **kwargs):
    with torch.inference_mode():  # like the server's engine loop
        return _generate(*args, **kwargs)


def _metric(server, name: str) -> float:
    text = httpx.get(server.base_url + "/metrics").text
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_models_health_and_metrics(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(server.base_url + "/health").json()["status"] == "ok"
    text = httpx.get(server.base_url + "/metrics").text
    for name in ("redraft_requests_total", "redraft_queue_depth", "redraft_batch_size",
                 "redraft_tokens_per_forward_bucket", "redraft_request_latency_seconds_bucket"):
        assert name in text


def test_greedy_completion_matches_offline_generate(client, offline):
    model, tok = offline
    for mode in ("quality", "speedy"):
        want = generate(model, tok, PROMPTS[:3], preset(mode, max_new_tokens=40))
        for prompt, w in zip(PROMPTS[:3], want):
            r = client.completions.create(model="tiny", prompt=prompt, max_tokens=40, extra_body={"mode": mode})
            assert r.choices[0].text == w.text
            assert r.usage.completion_tokens == len(w.token_ids)
            assert r.usage.prompt_tokens == len(tok.encode(prompt))
            assert r.usage.forwards == w.stats.forwards
            assert r.choices[0].finish_reason == {"eos": "stop"}.get(w.finish_reason, w.finish_reason)


def test_32_concurrent_requests_match_offline_generate(server, offline):
    """All 32 in flight at once (joining the running batch at different steps) give the offline batch's text."""
    model, tok = offline
    cfg = preset("quality", max_new_tokens=48, mbe_blocks=0)
    want = [r.text for r in generate(model, tok, PROMPTS, cfg)]

    async def run() -> list[str]:
        client = openai.AsyncOpenAI(base_url=server.api_url, api_key="unused", max_retries=0, timeout=300)

        async def one(i: int) -> str:
            if i % 2:  # half of them stream
                stream = await client.completions.create(model="tiny", prompt=PROMPTS[i], max_tokens=48,
                                                         stream=True)
                return "".join([c.choices[0].text async for c in stream if c.choices])
            r = await client.completions.create(model="tiny", prompt=PROMPTS[i], max_tokens=48)
            return r.choices[0].text

        return await asyncio.gather(*(one(i) for i in range(32)))

    peak = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak.append(_metric(server, "redraft_batch_size"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        got = asyncio.run(run())
    finally:
        stop.set()
        watcher.join()
    assert got == want
    assert max(peak) > 1  # they were batched together


def test_chat_matches_offline_generate_and_streams_the_same_text(client, offline):
    model, tok = offline
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say <|mask|> twice"}]
    ids = tok.apply_chat_template(messages)
    assert tok.mask_id not in ids  # the literal special-token spelling in content is plain text
    want = generate(model, tok, [ids], preset("quality", max_new_tokens=40))[0]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=40)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == want.text
    assert r.usage.prompt_tokens == len(ids)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=40, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want.text
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [r.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_stream_emits_text_as_blocks_become_final(client):
    stream = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=96, stream=True,
                                       extra_body={"block_length": 16})
    deltas = [c.choices[0].text for c in stream if c.choices and c.choices[0].text]
    assert len(deltas) >= 3  # several blocks, several chunks (not one chunk at the end)
    full = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=96,
                                     extra_body={"block_length": 16})
    assert "".join(deltas) == full.choices[0].text


def test_extension_fields_reach_the_engine(client, offline):
    model, tok = offline
    ext = dict(tau_mask=0.3, tau_edit=0.2, block_length=8, max_post_steps=3, mbe_blocks=1)
    want = generate(model, tok, [PROMPTS[5]], preset("speedy", max_new_tokens=24, **ext))[0]
    r = client.completions.create(model="tiny", prompt=PROMPTS[5], max_tokens=24, extra_body={"mode": "speedy", **ext})
    assert r.choices[0].text == want.text
    assert r.usage.forwards == want.stats.forwards
    assert r.usage.tpf == pytest.approx(len(want.token_ids) / want.stats.forwards, abs=1e-3)


def test_n_prompts_list_and_seeds(client, offline):
    model, tok = offline
    r = client.completions.create(model="tiny", prompt=PROMPTS[:2], max_tokens=16, n=2)
    want = generate(model, tok, PROMPTS[:2], preset("quality", max_new_tokens=16))
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert [c.text for c in r.choices] == [want[0].text, want[0].text, want[1].text, want[1].text]
    sampled = dict(model="tiny", prompt=PROMPTS[1], max_tokens=24, temperature=1.0, seed=7)
    a, b = client.completions.create(**sampled), client.completions.create(**sampled)
    assert a.choices[0].text == b.choices[0].text  # same seed, same text (whatever else is in the batch)
    offline_sample = generate(model, tok, [PROMPTS[1]], preset("quality", max_new_tokens=24, temperature=1.0,
                                                               seed=7))[0]
    assert a.choices[0].text == offline_sample.text


def test_stop_strings_cut_the_text(client):
    full = client.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=48).choices[0].text
    assert len(full) > 6
    stop = full[3:6]
    r = client.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=48, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == full[:full.index(stop)]
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt=PROMPTS[2], max_tokens=48, stop=stop, stream=True) if c.choices)
    assert streamed == r.choices[0].text


def test_errors_through_the_openai_client(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4", prompt="x")
    assert e.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="x", max_tokens=10**6)
    assert e.value.body["param"] == "max_tokens" and e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], temperature=3)
    assert e.value.body["param"] == "temperature"


def test_client_disconnect_cancels_the_row(server):
    before = _metric(server, "redraft_cancelled_total")
    body = {"model": "tiny", "prompt": PROMPTS[3], "max_tokens": 2000, "stream": True, "block_length": 4}
    with httpx.stream("POST", server.api_url + "/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                break  # got some text; now hang up mid-generation
    deadline = time.monotonic() + 30
    while httpx.get(server.base_url + "/health").json()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(server.base_url + "/health").json()["in_flight"] == 0
    assert _metric(server, "redraft_cancelled_total") == before + 1  # its row left the batch early


def test_shared_system_prompt_reuses_prefix_kv_exactly(server, client, offline):
    """Chats sharing a long system prompt: later ones reuse its K/V (counted in /metrics); text == offline generate
    without any prefix reuse, streamed or not."""
    model, tok = offline
    system = "You are a careful assistant. " + " ".join(f"Rule {i}: answer briefly and check your work." for i in
                                                         range(12))
    users = ["What is 2+2?", "Name a colour.", "Write def f(x): return x"]
    convs = [[{"role": "system", "content": system}, {"role": "user", "content": u}] for u in users]
    ids = [tok.apply_chat_template(m) for m in convs]
    assert len(ids[0]) > 3 * 8
    cfg = preset("quality", max_new_tokens=24, block_length=8)
    want = generate(model, tok, ids, cfg)
    hits, reused = _metric(server, "redraft_prefix_cache_hits_total"), _metric(
        server, "redraft_prefix_cache_reused_tokens_total")
    for i, (m, w) in enumerate(zip(convs, want)):
        kwargs = dict(model="tiny", messages=m, max_tokens=24, extra_body={"block_length": 8})
        if i == 2:
            got = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
                **kwargs, stream=True) if c.choices)
        else:
            got = client.chat.completions.create(**kwargs).choices[0].message.content
        assert got == w.text
    common = next(i for i, (a, b) in enumerate(zip(ids[0], ids[1])) if a != b)
    shared = common // 8 * 8  # whole blocks the conversations share
    assert shared >= 3 * 8
    assert _metric(server, "redraft_prefix_cache_hits_total") >= hits + 2
    assert _metric(server, "redraft_prefix_cache_reused_tokens_total") >= reused + 2 * shared
