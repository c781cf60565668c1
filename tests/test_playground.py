"""The playground (`GET /` of `redraft serve`) in headless Chromium: a prompt runs through the streaming API with
per-step trajectory events, the page's final text equals the API's answer, the replay slider works, and model text
that holds `<script>` stays text."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from torch import nn

from redraft.decoding import Engine
from redraft.evaluation.commands import resolve_model
from redraft.model import load_model
from redraft.model.tokenizer import load_tokenizer
from redraft.serving import create_app
from redraft.serving.testing import free_port

from _browser import browser  # noqa: F401  (fixture)

SCREENSHOT = os.environ.get("REDRAFT_PLAYGROUND_SCREENSHOT")  # also save the screenshot here (docs)
HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


class EchoModel(nn.Module):
    """The bundled model, forced to write `answer` (then eos) from position `start` on: a model that echoes
    hostile text, to check the page escapes what the model writes."""

    def __init__(self, inner: nn.Module, answer: list[int], start: int, eos: int):
        super().__init__()
        self.inner, self.answer, self.start, self.eos = inner, answer, start, eos

    @property
    def config(self):
        return self.inner.config

    def forward(self, input_ids, position_ids=None, layout=None, **kw):
        out = self.inner(input_ids, position_ids, layout, **kw)
        idx = kw.get("logits_index")
        pos = position_ids if idx is None else position_ids.gather(1, idx)
        rel = pos - self.start
        table = torch.tensor(self.answer + [self.eos], device=pos.device)
        target = table[rel.clamp(0, len(self.answer))]
        out.logits.scatter_(-1, target.unsqueeze(-1), 1e4)
        return out


class Server:
    """The app on a loopback port in a thread (uvicorn), for the browser."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def model_and_tokenizer():
    path = resolve_model(None)
    return load_model(path), load_tokenizer(path)


@pytest.fixture(scope="module")
def server(model_and_tokenizer):
    model, tok = model_and_tokenizer
    with Server(create_app(Engine(model, tok, max_batch_size=4), model_name="tiny")) as s:
        yield s


def _run_in_page(browser, url: str, prompt: str, chat: bool, max_tokens: int, mode: str = "quality"):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(1100, 1000)
    browser.get(url + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "model").text == "tiny")
    browser.execute_script(
        "document.getElementById('prompt').value = arguments[0];"
        "document.querySelector(`input[name=format][value=${arguments[1]}]`).checked = true;"
        "document.getElementById('max_tokens').value = arguments[2];"
        "document.getElementById('mode').value = arguments[3];", prompt, "chat" if chat else "raw", max_tokens, mode)
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, 300).until(lambda d: d.execute_script("return document.body.dataset.state") == "done")
    return browser.execute_script(
        "const c = document.querySelector('.rd-canvas'), s = document.querySelector('.rd-slider');"
        "return {answer: document.getElementById('answer').textContent, status: "
        "document.getElementById('status').textContent, error: document.getElementById('error').textContent,"
        "forwards: +document.getElementById('c-forwards').textContent, tpf: "
        "+document.getElementById('c-tpf').textContent, edits: "
        "+document.getElementById('c-edits').textContent, steps: +s.max, k: +s.value, scroll: c.scrollWidth,"
        "client: c.clientWidth, canvas: c.textContent, pwned: window.pwned === undefined ? null : window.pwned,"
        "injected: document.querySelectorAll('#view script, #view img, #answer *').length}")


def test_playground_runs_a_prompt_like_the_api(browser, server, tmp_path):  # noqa: F811
    page = _run_in_page(browser, server.url, "sort: 5 3 9 1 2 8", chat=True, max_tokens=64)
    api = httpx.post(server.url + "/v1/chat/completions", timeout=300, json={
        "model": "tiny", "messages": [{"role": "user", "content": "sort: 5 3 9 1 2 8"}], "max_tokens": 64,
        "mode": "quality"}).json()
    assert page["error"] == "" and page["status"].startswith("finished")
    assert page["answer"] == api["choices"][0]["message"]["content"]
    assert page["forwards"] == api["usage"]["forwards"]
    assert page["tpf"] == pytest.approx(api["usage"]["tpf"], abs=0.006)
    assert page["steps"] >= page["forwards"] > 0 and page["k"] == page["steps"]
    assert page["scroll"] <= page["client"]
    browser.save_screenshot(str(tmp_path / "playground.png"))
    if SCREENSHOT:
        browser.save_screenshot(SCREENSHOT)
    # replay: step 0 shows the masks again, step 1 one forward; the counters follow the slider
    for k in (0, 1):
        browser.execute_script("const s = document.querySelector('.rd-slider'); s.value = arguments[0];"
                               "s.dispatchEvent(new Event('input'));", k)
        canvas, forwards = browser.execute_script("return [document.querySelector('.rd-canvas').textContent,"
                                                  " +document.getElementById('c-forwards').textContent]")
        assert forwards == k and (k > 0 or "\u2591" in canvas)


def test_model_text_is_escaped(browser, model_and_tokenizer):  # noqa: F811
    model, tok = model_and_tokenizer
    prompt = "echo: " + HOSTILE
    answer = tok.encode(HOSTILE)
    echo = EchoModel(model, answer, start=len(tok.encode(prompt)), eos=tok.eos_id)
    with Server(create_app(Engine(echo, tok, max_batch_size=2), model_name="tiny")) as s:
        page = _run_in_page(browser, s.url, prompt, chat=False, max_tokens=len(answer) + 8)
    assert page["answer"] == HOSTILE  # the model wrote the markup; the page shows it as text
    assert page["pwned"] is None and page["injected"] == 0
    assert page["canvas"].count("<script>") == 2  # prompt and answer tokens, drawn as text


def test_playground_files_are_served(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and "redraft playground" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    for name in ("trajectory.js", "trajectory.css", "playground.js", "playground.css"):
        assert httpx.get(f"{server.url}/static/{name}").status_code == 200
    assert httpx.get(server.url + "/static/app.py").status_code == 404
    assert "/" not in httpx.get(server.url + "/openapi.json").json()["paths"]
