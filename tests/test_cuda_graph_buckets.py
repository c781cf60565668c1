"""Batch-size buckets of `CUDAGraphRunner`: rows padded up to a bucket must leave every real row's forward, K/V and
policy decision unchanged. Checked on CPU with the padded path run eagerly (`capture=False`), bit for bit (the CPU
forward is batch invariant), so the padding, slicing and cache bookkeeping are tested where CI runs; the captured
replay itself is covered by tests/test_model_gpu.py on a GPU."""

from __future__ import annotations

import pytest
import torch

from redraft.decoding import DecodeConfig, Engine, generate
from redraft.decoding.policy import greedy_step
from redraft.decoding.testing import TINY_MASK_ID, tiny_model
from redraft.model import BlockLayout, KVCache
from redraft.model.cuda_graphs import CUDAGraphRunner, bucket_for

BL = 8


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=0)


def test_bucket_for():
    buckets = (1, 2, 4, 8, 16)
    assert [bucket_for(n, buckets) for n in (1, 2, 3, 5, 8, 9, 16, 17)] == [1, 2, 4, 8, 8, 16, 16, 17]
    assert bucket_for(5, ()) == 5
    with pytest.raises(ValueError, match="buckets"):
        CUDAGraphRunner(tiny_model(seed=0), buckets=(0, 4))


def _cache_with_rows(model, lengths: list[int]) -> KVCache:
    """A cache whose rows hold `lengths` committed positions of random tokens (one forward per row length)."""
    g = torch.Generator().manual_seed(1)
    cache = KVCache.for_model(model, len(lengths))
    width = max(lengths)
    ids = torch.randint(0, 400, (len(lengths), width), generator=g)
    with torch.no_grad():
        out = model(ids, None, BlockLayout(BL))
    cache.commit(out.new_kv, lengths)
    return cache


def test_padded_rows_leave_real_rows_unchanged(model):
    lengths = [2 * BL, BL, 3 * BL]  # 3 rows -> bucket 4
    cache = _cache_with_rows(model, lengths)
    g = torch.Generator().manual_seed(2)
    rows, width = len(lengths), 2 * BL
    ids = torch.randint(0, 400, (rows, width), generator=g)
    ids[:, BL + 3:] = TINY_MASK_ID
    pos = cache.lengths[:, None] + torch.arange(width)[None]
    end = cache.lengths[:, None] + width
    key_limit = torch.where(torch.arange(width)[None] < BL, cache.lengths[:, None] + BL, end)
    valid = torch.ones(rows, width, dtype=torch.bool)
    valid[1, BL + 5:] = False
    layout = BlockLayout(BL, key_limit=key_limit, valid=valid)
    index = (BL + torch.arange(BL))[None].expand(rows, BL)
    tokens = ids.gather(1, index)
    frozen = torch.zeros(rows, BL, dtype=torch.bool)
    settings = (torch.tensor([0.9, 0.5, 0.7]), torch.tensor([0.5, 0.0, 0.8]), torch.tensor([1, 2, 1]),
                torch.tensor([True, True, False]))
    post_args = (tokens, frozen, *settings)
    step = lambda logits, *a: greedy_step(logits, *a, mask_id=TINY_MASK_ID)  # noqa: E731
    runner = CUDAGraphRunner(model, buckets=(1, 2, 4, 8), capture=False)
    with torch.no_grad():
        want = model(ids, pos, layout, cache=cache, logits_index=index)
        want_post = step(want.logits, *post_args)
        got, got_post = runner(ids, pos, layout, cache=cache, logits_index=index, post=step, post_args=post_args)
    assert cache.batch_size == rows and cache.host_lengths == lengths  # the padding rows are gone again
    assert cache.max_rows >= 4
    assert torch.equal(got.logits, want.logits)
    assert torch.equal(got_post, want_post) and got_post.shape == (3, rows, BL)
    for (k, v), (wk, wv) in zip(got.new_kv, want.new_kv):
        assert torch.equal(k, wk) and torch.equal(v, wv)


def test_padding_needs_matching_cache_rows(model):
    cache = _cache_with_rows(model, [BL, BL])
    runner = CUDAGraphRunner(model, buckets=(4,), capture=False)
    with torch.no_grad(), pytest.raises(ValueError, match="cache holds 2 rows"):
        runner(torch.zeros(3, BL, dtype=torch.long), torch.zeros(3, BL, dtype=torch.long), BlockLayout(BL),
               cache=cache)


def test_engine_through_bucketed_runner_gives_the_same_tokens(model):
    """The engine's graph path (here eager, padded to buckets) decodes rows joining and leaving (batch sizes 5, 3,
    ... padded to 8 and 4) exactly like the plain CPU engine."""
    cfgs = [DecodeConfig(tau_mask=0.7, tau_edit=0.5, block_length=BL, max_new_tokens=n, mask_id=TINY_MASK_ID,
                         max_post_steps=3) for n in (8, 24, 16, 40, 32)]
    prompts = [[(s * 131 + i * 37 + 5) % 500 for i in range(n)] for s, n in enumerate((5, 11, 8, 19, 3))]
    want = generate(model, None, prompts, cfgs)
    engine = Engine(model, max_batch_size=5, mask_id=TINY_MASK_ID)
    runner = engine._runner()
    runner.cuda_graphs = True  # route cached window forwards through the (eager) bucketed runner
    runner.cached_forward = CUDAGraphRunner(model, buckets=(1, 2, 4, 8), capture=False)
    calls = []
    inner = runner.cached_forward._run
    runner.cached_forward._run = lambda ids, *a: calls.append(ids.shape[0]) or inner(ids, *a)
    request_ids = [engine.add_request(p, c) for p, c in zip(prompts, cfgs)]
    results = engine.run_until_done()
    got = [results[r] for r in request_ids]
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    assert [r.stats.forwards for r in got] == [r.stats.forwards for r in want]
    assert calls and set(calls) <= {1, 2, 4, 8} and 8 in calls  # every graphed forward ran at a bucket size


def test_engine_graph_path_gives_the_official_tokens(parity_dir):
    """The engine's graph path (forward + policy + K/V write in one call, the commit an `advance` of the lengths;
    here eager and padded to buckets) decodes every official generate case to the official tokens, in batches of
    rows at different blocks. (The tiny random model above writes one token everywhere, whatever its cache holds;
    the parity model's tokens depend on every committed key.)"""
    import json

    from safetensors.torch import load_file

    from redraft.decoding.conformance import config_from_official
    from redraft.model import load_model

    spec = json.loads((parity_dir / "cases.json").read_text())
    expected = load_file(parity_dir / "expected.safetensors")
    model = load_model(parity_dir / "model")
    cases = [c for c in spec["cases"] if c["kind"] == "generate"]
    by_length: dict[int, list] = {}
    for c in cases:
        cfg = config_from_official(c["params"], spec["mask_id"])
        by_length.setdefault(cfg.block_length, []).append((c, cfg))
    advanced = []
    for group in by_length.values():
        engine = Engine(model, max_batch_size=len(group), mask_id=spec["mask_id"])
        runner = engine._runner()
        runner.cuda_graphs = True
        runner.cached_forward = CUDAGraphRunner(model, buckets=(1, 2, 4, 8, 16), capture=False)
        commit = runner._commit
        runner._commit = lambda *a, **k: advanced.append(k.get("written")) or commit(*a, **k)
        ids = [engine.add_request(expected[c["prompt"]].flatten().tolist(), cfg) for c, cfg in group]
        results = engine.run_until_done()
        for (c, _), r in zip(group, ids):
            assert results[r].token_ids == expected[c["output"]].flatten().tolist(), c["name"]
    assert True in advanced  # the graphed steps committed by advancing
