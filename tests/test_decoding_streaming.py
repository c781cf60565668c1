"""Streaming and stop strings with a real tokenizer: each row's text comes once, in order, and adds up to the result."""

from __future__ import annotations

from collections import defaultdict

import pytest

from redraft.decoding import DecodeConfig, Engine, generate


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    from redraft.model import load_model
    from redraft.model.tokenizer import load_tokenizer

    return load_model(tiny_checkpoint), load_tokenizer(tiny_checkpoint)


def _cfg(**kw) -> DecodeConfig:
    return DecodeConfig(**{**dict(tau_mask=0.6, tau_edit=0.3, block_length=8, max_new_tokens=40, max_post_steps=3,
                                  eos_early_stop=False), **kw})


@pytest.mark.parametrize("mbe", [0, 1])
def test_stream_yields_each_rows_text_once_in_order(loaded, mbe):
    model, tok = loaded
    prompts = ["def load(self):", "import json\n", "class Decoder:"]
    configs = [_cfg(mbe_blocks=mbe, max_new_tokens=24), _cfg(mbe_blocks=mbe, max_new_tokens=17),
               _cfg(mbe_blocks=mbe, max_new_tokens=24, tau_mask=0.9)]
    engine = Engine(model, tok)
    texts, ids, finished = defaultdict(str), defaultdict(list), {}
    for events in engine.stream([tok.encode(p) for p in prompts], configs):
        for e in events:
            assert e.request_id not in finished, "event after the row finished"
            texts[e.request_id] += e.text
            ids[e.request_id] += e.new_token_ids
            if e.finished:
                finished[e.request_id] = e.result
    assert len(finished) == 3
    for rid, res in finished.items():
        assert ids[rid] == res.token_ids
        assert texts[rid] == res.text == tok.decode(res.token_ids, skip_special_tokens=True)
    alone = generate(model, tok, prompts[0], configs[0])[0]
    assert finished["0"].token_ids == alone.token_ids


def test_stop_string_cuts_the_text_and_ends_the_row(loaded):
    model, tok = loaded
    prompt = "def load(self):"
    free = generate(model, tok, prompt, _cfg(max_new_tokens=48))[0]
    text = free.text
    assert len(text) > 12
    stop = text[8:11]
    start = text.find(stop)
    res = generate(model, tok, prompt, _cfg(max_new_tokens=48, stop=(stop, "\x00never")))[0]
    assert res.finish_reason == "stop"
    assert res.text == text[:start]
    assert free.token_ids[:len(res.token_ids)] == res.token_ids
    assert len(tok.decode(res.token_ids, skip_special_tokens=True)) > start
    # streamed text never shows the stop string, not even its first characters
    engine = Engine(model, tok)
    streamed = "".join(e.text for events in engine.stream([tok.encode(prompt)], _cfg(max_new_tokens=48, stop=(stop,)))
                       for e in events)
    assert streamed == res.text


def test_stop_strings_need_a_tokenizer(loaded):
    model, tok = loaded
    with pytest.raises(ValueError, match="stop"):
        Engine(model, None, mask_id=tok.mask_id).add_request([1, 2], _cfg(stop=("x",)))


class _CountingTokenizer:
    """The real tokenizer, counting decode calls."""

    def __init__(self, tok):
        self.tok, self.decodes = tok, 0

    def decode(self, ids, **kw):
        self.decodes += 1
        return self.tok.decode(ids, **kw)

    def __getattr__(self, name):
        return getattr(self.tok, name)


@pytest.mark.parametrize("stop", [(), ("\x00never",)])
def test_text_is_decoded_only_when_more_of_a_row_became_final(loaded, stop):
    """A step that only fills or edits inside the window adds no final text: the engine decodes a row's text once per
    block that leaves the window (and at its end), not every step, and streams the same text as before."""
    model, tok = loaded
    counting = _CountingTokenizer(tok)
    configs = [_cfg(max_new_tokens=40, tau_mask=0.9, stop=stop), _cfg(max_new_tokens=24, stop=stop)]
    prompts = [tok.encode("def load(self):"), tok.encode("import json\n")]
    engine = Engine(model, counting)
    texts, finished, steps = defaultdict(str), {}, 0
    for events in engine.stream(prompts, configs):
        steps += 1
        for e in events:
            texts[e.request_id] += e.text
            if e.finished:
                finished[e.request_id] = e.result
    blocks = sum(-(-(len(p) + c.max_new_tokens) // c.block_length) for p, c in zip(prompts, configs))
    forwards = sum(r.stats.forwards for r in finished.values())
    assert counting.decodes <= blocks + len(prompts) < forwards  # per final block, not per step
    for rid, res in finished.items():
        assert texts[rid] == res.text == tok.decode(res.token_ids, skip_special_tokens=True)
        assert res.token_ids == generate(model, tok, [prompts[int(rid)]], configs[int(rid)])[0].token_ids
