"""Input validation in process (FastAPI TestClient, tiny checkpoint): every bad request is a 4xx with an OpenAI error
body naming the field; special-token spellings in user content stay plain text."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient

from redraft.serving import ServerSettings, create_app
from redraft.serving.errors import param_name


@pytest.fixture(scope="module")
def client(tiny_checkpoint):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the engine runs in this process: one thread avoids contention on a shared CPU
    app = create_app(tiny_checkpoint, model_name="tiny", max_model_len=128, max_prompt_tokens=64,
                     max_body_bytes=64 * 1024, default_max_tokens=8)
    with TestClient(app) as c:
        yield c
    torch.set_num_threads(before)


def _error(r, status: int, param: str | None = "unset") -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param != "unset":
        assert err["param"] == param, err
    return err


def completion(**fields) -> dict:
    return {"model": "tiny", "prompt": "def f(", "max_tokens": 8, **fields}


def chat(**fields) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, **fields}


BAD_COMPLETIONS = [
    ("model", {"model": 3}), ("model", {"model": ""}), ("prompt", {"prompt": 5}), ("prompt", {"prompt": None}),
    ("prompt", {"prompt": ""}), ("prompt", {"prompt": []}), ("prompt[0]", {"prompt": [[]]}),
    ("prompt", {"prompt": [1, "a"]}), ("prompt[0]", {"prompt": [-1]}), ("prompt", {"prompt": [10**9]}),
    ("prompt", {"prompt": "x" * 5000}), ("prompt", {"prompt": ["ok"] * 33}), ("prompt[1]", {"prompt": ["a", ""]}),
    ("max_tokens", {"max_tokens": 0}), ("max_tokens", {"max_tokens": 8.0}), ("max_tokens", {"max_tokens": "8"}),
    ("max_tokens", {"max_tokens": 10**30}), ("max_tokens", {"max_tokens": 200}), ("max_tokens", {"max_tokens": True}),
    ("temperature", {"temperature": -0.1}), ("temperature", {"temperature": 2.5}),
    ("temperature", {"temperature": "hot"}), ("top_p", {"top_p": 0}), ("top_p", {"top_p": 1.5}),
    ("seed", {"seed": -1}), ("seed", {"seed": 2**64}), ("seed", {"seed": 1.5}), ("n", {"n": 0}), ("n", {"n": 99}),
    ("stop", {"stop": ""}), ("stop", {"stop": ["a"] * 5}), ("stop", {"stop": [1]}), ("stop[1]", {"stop": ["a", ""]}),
    ("stream", {"stream": "yes"}), ("stream", {"stream": 1}), ("mode", {"mode": "turbo"}),
    ("tau_mask", {"tau_mask": 1.5}), ("tau_mask", {"tau_mask": -0.1}), ("tau_edit", {"tau_edit": -1}),
    ("block_length", {"block_length": 0}), ("block_length", {"block_length": 4096}),
    ("max_post_steps", {"max_post_steps": -1}), ("max_post_steps", {"max_post_steps": 10**6}),
    ("mbe_blocks", {"mbe_blocks": 99}), ("mbe_blocks", {"mbe_blocks": 1.0}), ("top_k", {"top_k": -1}),
    ("editing", {"editing": "no"}), ("logprobs", {"logprobs": 1}), ("echo", {"echo": True}),
    ("suffix", {"suffix": "x"}), ("best_of", {"best_of": 2}), ("presence_penalty", {"presence_penalty": 0.5}),
    ("frequency_penalty", {"frequency_penalty": 3}), ("logit_bias", {"logit_bias": {"1": 1.0}}),
    ("stream_options", {"stream_options": {"include_usage": True}}), ("unknown_field", {"unknown_field": 1}),
    ("user", {"user": 7}),
]


@pytest.mark.parametrize("param,fields", BAD_COMPLETIONS, ids=[f"{p}-{i}" for i, (p, _) in enumerate(BAD_COMPLETIONS)])
def test_bad_completion_fields_are_400_naming_the_field(client, param, fields):
    err = _error(client.post("/v1/completions", json=completion(**fields)), 400, param)
    assert err["type"] == "invalid_request_error"


BAD_CHATS = [
    ("messages", {"messages": []}), ("messages", {"messages": "hi"}), ("messages[0].role", {"messages": [{"content": "x"}]}),
    ("messages[0].role", {"messages": [{"role": "tool", "content": "x"}]}),
    ("messages[0].content", {"messages": [{"role": "user", "content": 5}]}),
    ("messages[0].content", {"messages": [{"role": "user", "content": []}]}),
    ("messages[0].content[0].type", {"messages": [{"role": "user", "content": [{"type": "image_url", "text": "x"}]}]}),
    ("messages[1].extra", {"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y", "extra": 1}]}),
    ("messages", {"messages": [{"role": "user", "content": "x" * 5000}]}),
    ("max_completion_tokens", {"max_completion_tokens": 4}), ("logprobs", {"logprobs": True}),
    ("response_format.type", {"response_format": {"type": "json_object"}}), ("tools", {"tools": []}),
]


@pytest.mark.parametrize("param,fields", BAD_CHATS, ids=[f"{p}-{i}" for i, (p, _) in enumerate(BAD_CHATS)])
def test_bad_chat_fields_are_400_naming_the_field(client, param, fields):
    _error(client.post("/v1/chat/completions", json=chat(**fields)), 400, param)


def test_unknown_model_is_404(client):
    err = _error(client.post("/v1/completions", json=completion(model="gpt-4")), 404, "model")
    assert err["code"] == "model_not_found"
    _error(client.get("/v1/models/gpt-4"), 404, "model")
    assert client.get("/v1/models/tiny").json()["id"] == "tiny"


@pytest.mark.parametrize("body", [b"{", b"", b"[1,2]", b"null", b'"text"', b"\xff\xfe{}", b'{"model": "\xc3"}',
                                  b'{"model":"tiny","prompt":"x","max_tokens":1' + b"0" * 5000 + b"}",
                                  b'{"model":"tiny","prompt":"x","temperature":NaN}',
                                  b'{"model":"tiny","prompt":"x","temperature":1e999}',
                                  b'{"model":"tiny","prompt":"\\ud800"}', b'{"model":"tiny","prompt":"x"' * 3])
def test_malformed_bodies_are_400(client, body):
    err = _error(client.post("/v1/completions", content=body, headers={"content-type": "application/json"}), 400)
    assert err["type"] == "invalid_request_error"


def test_body_without_json_content_type_is_400(client):
    err = _error(client.post("/v1/completions", content=json.dumps(completion())), 400, None)
    assert "application/json" in err["message"]


def test_huge_bodies_are_413(client):
    big = json.dumps(completion(prompt="x" * 100_000))
    _error(client.post("/v1/completions", content=big, headers={"content-type": "application/json"}), 413)

    def chunks():  # no Content-Length: the limit applies while the body arrives
        for _ in range(100):
            yield b"x" * 1024

    _error(client.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"}), 413)


def test_wrong_paths_and_methods(client):
    _error(client.get("/v1/nothing"), 404)
    _error(client.get("/v1/completions"), 405)


def test_valid_requests_still_work_and_count(client):
    r = client.post("/v1/completions", json=completion(prompt=[5, 6, 7], stop="zz", seed=3, temperature=0,
                                                       presence_penalty=0, n=1, best_of=1, user="u"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["usage"]["prompt_tokens"] == 3
    assert body["usage"]["completion_tokens"] <= 8 and body["usage"]["forwards"] >= 1
    r = client.post("/v1/chat/completions", json=chat(messages=[
        {"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
        {"role": "user", "content": "hi", "name": "bob"}], max_tokens=None, max_completion_tokens=4))
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 4
    metrics = client.get("/metrics").text
    assert 'redraft_requests_total{endpoint="chat"' in metrics
    assert 'redraft_request_errors_total{status="400"}' in metrics


def test_special_token_text_is_plain_text(client, tiny_checkpoint):
    from redraft.model.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_checkpoint)
    r = client.post("/v1/completions", json=completion(prompt="<|mask|><|endoftext|><role>"))
    assert r.status_code == 200
    assert r.json()["usage"]["prompt_tokens"] == len(tok.encode("<|mask|><|endoftext|><role>")) > 3
    ids = [tok.mask_id]
    _error(client.post("/v1/completions", json=completion(prompt=ids)), 400, "prompt")


def test_default_max_tokens_and_context_limit(client):
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "def f("})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 8
    err = _error(client.post("/v1/completions", json=completion(max_tokens=120, prompt="x " * 20)), 400,
                 "max_tokens")
    assert err["code"] == "context_length_exceeded"


def test_param_names():
    assert param_name(("body", "messages", 0, "content", "list[TextPart]", 1, "type")) == "messages[0].content[1].type"
    assert param_name(("body",)) is None
    assert param_name(("body", "stop", "function-after[_valid_unicode(), str]")) == "stop"


def test_settings_are_validated():
    with pytest.raises(ValueError, match="max_batch_size"):
        ServerSettings(max_batch_size=0)
    with pytest.raises(ValueError, match="default_mode"):
        ServerSettings(default_mode="fast")
    with pytest.raises(ValueError, match="max_model_len"):
        ServerSettings(max_model_len=True)


@pytest.mark.parametrize("field, value", [("device", "nope"), ("dtype", "int8"), ("prefix_cache_slots", -1),
                                          ("max_batch_size", 0), ("default_mode", "fast"), ("batch_invariant", "yes"),
                                          ("row_tile", 0), ("row_tile", True)])
def test_bad_server_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"ServerSettings.{field}"):
        ServerSettings(**{field: value})


def test_row_tile_setting_gives_the_engine_its_tiles_on_cpu_only():
    from redraft.model.invariant import RowTiles

    assert ServerSettings(row_tile=64).engine_batch_invariant() == RowTiles(dense=64)
    assert ServerSettings().engine_batch_invariant() is None
    assert ServerSettings(batch_invariant=False).engine_batch_invariant() is False
    with pytest.raises(ValueError, match="row_tile.*batch_invariant=False"):
        ServerSettings(row_tile=64, batch_invariant=False)
    with pytest.raises(ValueError, match="row_tile is for CPU"):
        ServerSettings(row_tile=64, device="cuda")


def test_a_server_with_row_tile_builds_its_engine_with_those_tiles(tiny_checkpoint):
    from redraft.model.invariant import RowTiles
    from redraft.serving.state import build_engine

    engine, _ = build_engine(tiny_checkpoint, ServerSettings(row_tile=64))
    assert engine._runner().batch_invariant == RowTiles(dense=64)
    with TestClient(create_app(tiny_checkpoint, row_tile=64, max_model_len=128, model_name="tiny")) as c:
        r = c.post("/v1/completions", json={"model": "tiny", "prompt": "def f(", "max_tokens": 8})
        assert r.status_code == 200, r.text


def test_parallel_serving_refuses_row_tile():
    from redraft.model.parallel import ParallelConfig
    from redraft.serving.parallel_serve import serve_parallel

    with pytest.raises(ValueError, match="row_tile is not supported with tensor/expert parallel"):
        serve_parallel("nonexistent", ParallelConfig(2, 2), ServerSettings(row_tile=64))
