"""Prefix reuse through the engine hook (`Engine(prefix_index=PrefixCache(...))`): outputs equal decoding without
reuse (greedy and seeded sampling, several block lengths, MBE, requests joining a running batch), the reused K/V
equal a recompute, and reuse really happened (counters, shorter join windows)."""

from __future__ import annotations

import pytest
import torch

from redraft.decoding import DecodeConfig, Engine
from redraft.decoding.testing import TINY_MASK_ID, RecordingModel, tiny_model
from redraft.serving.prefix_cache import PrefixCache

SYSTEM = [(7 * i + 3) % 400 + 10 for i in range(40)]  # a shared "system prompt" of 40 tokens


def _prompts() -> list[list[int]]:
    tails = [[5, 6, 7], [9] * 11, [], [1, 2, 3, 4, 5, 6, 7, 8], [300 + i for i in range(13)], [42]]
    return [SYSTEM + t for t in tails] + [SYSTEM[:20] + [77, 78, 79], SYSTEM[:8] + [1]]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: threads only contend on a shared CPU
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3)


def _run(model, prompts, configs, prefix: PrefixCache | None, joins: list[int]) -> dict[int, list[int]]:
    """Add prompts in waves (`joins[i]`: the step at which prompt i is added) and step until done."""
    engine = Engine(model, max_batch_size=16, mask_id=TINY_MASK_ID, prefix_index=prefix)
    ids, out, step = {}, {}, 0
    with torch.inference_mode():
        while len(out) < len(prompts):
            for i, p in enumerate(prompts):
                if joins[i] == step:
                    ids[engine.add_request(p, configs[i])] = i
            for e in engine.step():
                if e.finished:
                    out[ids[e.request_id]] = e.result.token_ids
            step += 1
            assert step < 10_000
    return out


CONFIGS = {
    "greedy-L8": DecodeConfig(block_length=8, max_new_tokens=16, tau_mask=0.6, tau_edit=0.4, max_post_steps=3,
                              eos_ids=(0,)),
    "greedy-L4-mbe": DecodeConfig(block_length=4, max_new_tokens=12, tau_mask=0.6, tau_edit=0.3, mbe_blocks=1,
                                  max_post_steps=3, eos_ids=(0,)),
    "sampled-L8": DecodeConfig(block_length=8, max_new_tokens=16, temperature=0.9, top_k=50, max_post_steps=3,
                               eos_ids=(0,)),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_outputs_with_prefix_reuse_equal_outputs_without(model, name):
    prompts = _prompts()
    cfgs = [CONFIGS[name].replace(seed=i) if CONFIGS[name].temperature else CONFIGS[name] for i in range(len(prompts))]
    joins = [0, 2, 2, 5, 9, 9, 14, 14]  # later requests join a running batch and find earlier prompts stored
    want = _run(model, prompts, cfgs, None, joins)
    prefix = PrefixCache(num_slots=4)
    got = _run(model, prompts, cfgs, prefix, joins)
    assert got == want
    assert prefix.hits >= 5 and prefix.reused_tokens >= 5 * 8


def test_reuse_shortens_the_join_window_and_cached_kv_equal_a_recompute(model):
    cfg = DecodeConfig(block_length=8, max_new_tokens=8, eos_ids=(0,))
    prompts = [SYSTEM + [5, 6, 7], SYSTEM + [1, 2]]
    runs = {}
    for reuse in (False, True):
        rec = RecordingModel(model)
        prefix = PrefixCache(num_slots=2) if reuse else None
        engine = Engine(rec, max_batch_size=4, mask_id=TINY_MASK_ID, prefix_index=prefix)
        with torch.inference_mode():
            engine.add_request(prompts[0], cfg)
            engine.run_until_done()
            n_calls = len(rec.calls)
            engine.add_request(prompts[1], cfg)
            engine.step()  # the second request's join step
            cache = engine.runner.cache(8)
            kv = [(k[0, :, :40].clone(), v[0, :, :40].clone()) for k, v in zip(cache.k, cache.v)]
            result = engine.run_until_done()
        join = rec.calls[n_calls]
        runs[reuse] = (join, kv, list(result.values())[0].token_ids, prefix)
    (join_plain, kv_plain, out_plain, _), (join_reuse, kv_reuse, out_reuse, prefix) = runs[False], runs[True]
    assert join_plain.ids.shape[1] == 48 and join_plain.cache_lengths is None  # the whole prompt + first block
    assert join_reuse.ids.shape[1] == 8 and join_reuse.cache_lengths == [40]  # only the first decode block
    assert int(join_reuse.positions[0, 0]) == 40
    torch.testing.assert_close(join_reuse.logits[0, :8], join_plain.logits[0, 40:48], rtol=1e-5, atol=1e-5)
    for (k1, v1), (k2, v2) in zip(kv_plain, kv_reuse):
        torch.testing.assert_close(k2, k1, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(v2, v1, rtol=1e-5, atol=1e-5)
    assert out_reuse == out_plain
    assert (prefix.hits, prefix.reused_tokens, prefix.inserts) == (1, 40, 1)


def test_no_reuse_without_a_cache_and_for_short_prompts(model):
    prefix = PrefixCache(num_slots=2)
    engine = Engine(model, mask_id=TINY_MASK_ID, use_cache=False, prefix_index=prefix)
    cfg = DecodeConfig(block_length=8, max_new_tokens=8, eos_ids=(0,))
    with torch.inference_mode():
        for _ in range(2):
            engine.add_request(SYSTEM, cfg)
            engine.run_until_done()
    assert prefix.lookups == 0 and len(prefix) == 0
    prefix = PrefixCache(num_slots=2)
    engine = Engine(model, mask_id=TINY_MASK_ID, prefix_index=prefix)
    with torch.inference_mode():
        for _ in range(2):
            engine.add_request(SYSTEM[:7], cfg)  # shorter than one block: nothing to share
            engine.run_until_done()
    assert prefix.lookups == 2 and prefix.hits == 0 and len(prefix) == 0
