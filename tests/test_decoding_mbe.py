"""Multi-Block Editing: k = 0 is the official rule; k >= 1 edits finished blocks and the K/V cache stays exact."""

from __future__ import annotations

import pytest
import torch

from redraft.decoding import DecodeConfig, generate
from redraft.decoding.testing import TINY_MASK_ID, RecordingModel, tiny_model
from redraft.model import BlockLayout

MASK = TINY_MASK_ID


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=0)


def _prompt(n: int, seed: int = 0) -> list[int]:
    return [(seed * 131 + i * 37 + 5) % 500 for i in range(n)]


def _cfg(k: int, **kw) -> DecodeConfig:
    base = dict(tau_mask=0.6, tau_edit=0.3, block_length=8, max_new_tokens=40, max_post_steps=3, mask_id=MASK,
                mbe_blocks=k, trajectory=True)
    return DecodeConfig(**{**base, **kw})


def test_mbe_zero_is_the_default_official_rule(model):
    prompt = _prompt(11)
    a = generate(model, None, [prompt], _cfg(0))[0]
    b = generate(model, None, [prompt], _cfg(0, trajectory=False).replace(mbe_blocks=0))[0]
    c = generate(model, None, [prompt], _cfg(0), use_cache=False)[0]
    assert a.token_ids == b.token_ids == c.token_ids and a.stats.mbe_edits == 0
    for step in a.trajectory.steps:
        assert all(pos >= step.block * 8 for pos, _, _ in step.edited)


@pytest.mark.parametrize("k", [1, 2])
def test_a_finished_block_is_edited_after_a_later_block_was_decoded(model, k):
    res = generate(model, None, [_prompt(11, s) for s in range(3)], _cfg(k))
    late_edits = []
    for r in res:
        for i, step in enumerate(r.trajectory.steps):
            for pos, old, new in step.edited:
                if pos < step.block * 8:  # an earlier block, edited while block `step.block` is decoded
                    assert pos >= (step.block - k) * 8  # only the last k finished blocks are editable
                    late_edits.append((pos, old, new))
        assert r.stats.mbe_edits == sum(pos < st.block * 8 for st in r.trajectory.steps for pos, _, _ in st.edited)
    assert late_edits, "no finished block was ever edited"
    assert any(r.token_ids != generate(model, None, [_prompt(11, s)], _cfg(0))[0].token_ids
               for s, r in enumerate(res))


@pytest.mark.parametrize("k", [1, 2])
def test_cached_kv_equals_a_recompute_on_the_final_tokens(model, k):
    """Every cached forward's logits equal a from-scratch forward over (final tokens of the committed blocks +
    the same window, same layout): no stale keys from blocks edited after they were first decoded. Logits here
    reach |30|, so the bound is 1e-5 absolute plus 1e-6 relative (float32 rounding); a stale key moves them by far
    more, which the second half checks by recomputing with a pre-MBE-edit token."""
    rec = RecordingModel(model)
    prompts = [_prompt(11, 0), _prompt(3, 1)]
    results = generate(rec, None, prompts, _cfg(k))
    finals = [r.trajectory.canvases()[-1] for r in results]
    assert any(r.stats.mbe_edits for r in results)
    late = [[(pos, old) for st in r.trajectory.steps for pos, old, _ in st.edited if pos < st.block * 8]
            for r in results]
    checked = stale_checked = 0
    with torch.inference_mode():
        for call in rec.calls:
            if call.cache_lengths is None:
                continue  # the joining forward reads no cache
            for b, cached in enumerate(call.cache_lengths):
                final = finals[b]  # both rows stay in the batch in order (same canvas length)
                width = int(call.layout.valid[b].sum())
                window = call.ids[b, :width].tolist()
                ids = torch.tensor([final[:cached] + window])
                pos = torch.arange(cached + width)[None]
                assert torch.equal(pos[0, cached:], call.positions[b, :width])
                limit = torch.cat([(torch.arange(cached) // 8 + 1) * 8, call.layout.key_limit[b, :width]])[None]
                ref = model(ids, pos, BlockLayout(8, key_limit=limit)).logits[0, cached:]
                torch.testing.assert_close(call.logits[b, :width], ref, atol=1e-5, rtol=1e-6)
                checked += 1
                stale = [(p, old) for p, old in late[b] if p < cached and final[p] != old]
                if stale:
                    ids[0, stale[0][0]] = stale[0][1]
                    wrong = model(ids, pos, BlockLayout(8, key_limit=limit)).logits[0, cached:]
                    assert (call.logits[b, :width] - wrong).abs().max() > 1e-3
                    stale_checked += 1
    assert checked > 10 and stale_checked > 0


def test_mbe_streams_only_blocks_that_left_the_window(model):
    from redraft.decoding import Engine

    engine = Engine(model, mask_id=MASK)
    engine.add_request(_prompt(11), _cfg(2))
    got: list[int] = []
    result = None
    while engine.has_work():
        for e in engine.step():
            got += e.new_token_ids
            assert len(got) % 8 == 5 or e.finished  # final blocks only (prompt 11 -> the first block holds 5)
            result = e.result or result
    assert got == result.token_ids
