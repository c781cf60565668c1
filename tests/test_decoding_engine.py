"""The engine vs the official recompute-everything loop; batch independence, rows leaving, stops, seeds, stats."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from redraft.decoding import DecodeConfig, Engine, generate
from redraft.decoding.testing import TINY_MASK_ID, RecordingModel, tiny_model

_spec = importlib.util.spec_from_file_location(
    "_baseline_decoder", Path(__file__).resolve().parents[1] / "benchmarks" / "_baseline_decoder.py")
baseline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(baseline)

MASK = TINY_MASK_ID
POST = 3  # the random model keeps editing: a small post-step cap keeps the tests fast


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=0)


def _prompt(n: int, seed: int = 0) -> list[int]:
    return [(seed * 131 + i * 37 + 5) % 500 for i in range(n)]


def _official(model, prompt, cfg: DecodeConfig, eos_id=None):
    ids, forwards = baseline.official_generate(
        model, prompt, mask_id=MASK, gen_length=cfg.max_new_tokens, block_length=cfg.block_length,
        threshold=cfg.tau_mask, editing_threshold=cfg.tau_edit, max_post_steps=cfg.max_post_steps,
        num_to_transfer=cfg.num_to_transfer, eos_id=eos_id, eos_early_stop=cfg.eos_early_stop, editing=cfg.editing)
    return ids, forwards


CONFIGS = [
    DecodeConfig(tau_mask=0.7, tau_edit=0.5, block_length=16, max_new_tokens=48, mask_id=MASK, max_post_steps=6),
    DecodeConfig(tau_mask=0.5, tau_edit=0.0, block_length=16, max_new_tokens=40, mask_id=MASK, max_post_steps=3),
    DecodeConfig(tau_mask=0.9, tau_edit=0.2, block_length=8, max_new_tokens=30, mask_id=MASK, max_post_steps=POST,
                 num_to_transfer=2),
    DecodeConfig(tau_mask=0.3, tau_edit=0.0, editing=False, block_length=8, max_new_tokens=24, mask_id=MASK,
                 max_post_steps=POST),
]


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("ci", range(len(CONFIGS)))
def test_engine_equals_the_official_loop(model, ci, use_cache):
    cfg = CONFIGS[ci]
    for n in (5, cfg.block_length, 21):
        prompt = _prompt(n, ci)
        want, want_forwards = _official(model, prompt, cfg)
        got = generate(model, None, [prompt], cfg, use_cache=use_cache)[0]
        assert got.token_ids == want
        assert got.stats.forwards == want_forwards
        assert got.finish_reason == "length"


def test_greedy_row_never_depends_on_its_batch(model):
    cfg = DecodeConfig(tau_mask=0.6, tau_edit=0.3, block_length=16, max_new_tokens=64, mask_id=MASK,
                       max_post_steps=POST)
    prompt = _prompt(13, 7)
    alone = generate(model, None, [prompt], cfg)[0].token_ids
    others = [
        (_prompt(3, 1), cfg.replace(tau_mask=0.9, max_new_tokens=16)),
        (_prompt(40, 2), cfg.replace(tau_edit=0.0, max_post_steps=2)),
        (_prompt(17, 3), cfg.replace(temperature=0.9, seed=4, top_k=20)),
        (_prompt(29, 4), cfg.replace(mbe_blocks=1, max_new_tokens=96)),
        (_prompt(8, 5), cfg.replace(block_length=8, num_to_transfer=3)),
    ]
    prompts = [p for p, _ in others[:2]] + [prompt] + [p for p, _ in others[2:]]
    configs = [c for _, c in others[:2]] + [cfg] + [c for _, c in others[2:]]
    batched = generate(model, None, prompts, configs)
    assert batched[2].token_ids == alone
    for (p, c), res in zip(others, batched[:2] + batched[3:]):
        if c.temperature == 0:
            assert res.token_ids == generate(model, None, [p], c)[0].token_ids


def test_finished_rows_leave_the_forward_batch(model):
    rec = RecordingModel(model)
    engine = Engine(rec, mask_id=MASK)
    short = DecodeConfig(tau_mask=0.5, block_length=8, max_new_tokens=8, mask_id=MASK, max_post_steps=POST)
    engine.add_request(_prompt(6), short)
    engine.add_request(_prompt(9), short.replace(max_new_tokens=48))
    results = engine.run_until_done()
    assert len(results["0"].token_ids) == 8 and len(results["1"].token_ids) == 48
    sizes = [c.ids.shape[0] for c in rec.calls]
    assert sizes[0] == 2 and sizes[-1] == 1
    first_single = sizes.index(1)
    assert all(s == 1 for s in sizes[first_single:])
    assert results["0"].stats.forwards == first_single
    assert engine.runner.caches[8].batch_size == 0  # everything left at the end
    assert not engine.has_work()


def test_eos_inside_the_prompt_does_not_stop_a_row(model):
    cfg = DecodeConfig(tau_mask=0.6, block_length=8, max_new_tokens=24, mask_id=MASK, max_post_steps=POST)
    prompt = _prompt(11, 3)
    free = generate(model, None, [prompt], cfg)[0].token_ids
    eos = next(t for t in range(500) if t not in free)
    with_eos = generate(model, None, [prompt + [eos]], cfg.replace(eos_ids=(eos,), eos_early_stop=True))[0]
    want, _ = _official(model, prompt + [eos], cfg.replace(eos_early_stop=True), eos_id=eos)
    assert with_eos.token_ids == want and len(want) == 24 and with_eos.finish_reason == "length"


def test_eos_in_the_output_cuts_and_stops_early(model):
    cfg = DecodeConfig(tau_mask=0.6, block_length=8, max_new_tokens=64, mask_id=MASK, max_post_steps=POST)
    prompt = _prompt(11, 3)
    free = generate(model, None, [prompt], cfg)[0].token_ids
    eos = free[12]  # a token decoded in the second block
    cut = free.index(eos)
    res = generate(model, None, [prompt], cfg.replace(eos_ids=(eos,), eos_early_stop=True))[0]
    want, want_forwards = _official(model, prompt, cfg.replace(eos_early_stop=True), eos_id=eos)
    assert res.token_ids == want == free[:cut + 1]
    assert res.finish_reason == "eos" and res.stats.forwards == want_forwards


def test_max_new_tokens_not_a_multiple_of_the_block(model):
    for n in (1, 7, 30):
        cfg = DecodeConfig(block_length=8, max_new_tokens=n, mask_id=MASK, max_post_steps=POST)
        res = generate(model, None, [_prompt(5)], cfg)[0]
        assert len(res.token_ids) == n and res.finish_reason == "length" and MASK not in res.token_ids


def test_per_row_seeds_are_reproducible_whatever_the_batch(model):
    cfg = DecodeConfig(tau_mask=0.5, block_length=8, max_new_tokens=32, temperature=0.8, top_p=0.9, seed=11,
                       mask_id=MASK, max_post_steps=POST)
    prompt = _prompt(10, 1)
    a = generate(model, None, [prompt], cfg)[0].token_ids
    assert generate(model, None, [prompt], cfg)[0].token_ids == a
    batch = generate(model, None, [_prompt(20, 2), prompt, _prompt(4, 3)],
                     [cfg.replace(seed=1), cfg, cfg.replace(temperature=0.0)])
    assert batch[1].token_ids == a
    assert generate(model, None, [prompt], cfg.replace(seed=12))[0].token_ids != a
    greedy = generate(model, None, [prompt], cfg.replace(temperature=0.0))[0].token_ids
    assert greedy != a


def test_stats_and_trajectory_are_consistent(model):
    rec = RecordingModel(model)
    cfg = DecodeConfig(tau_mask=0.5, tau_edit=0.0, block_length=8, max_new_tokens=32, mask_id=MASK,
                       max_post_steps=POST, trajectory=True)
    prompt = _prompt(6)
    res = generate(rec, None, [prompt], cfg)[0]
    s, traj = res.stats, res.trajectory
    assert s.forwards == len(rec.calls) == sum(st.forward for st in traj.steps)
    assert s.tokens == len(res.token_ids) == 32
    assert s.tpf == pytest.approx(32 / s.forwards)
    assert s.m2t_fills == sum(len(st.filled) for st in traj.steps) >= 32
    assert s.t2t_edits == sum(len(st.edited) for st in traj.steps) and s.mbe_edits == 0
    assert s.t2t_edits > 0 and s.wall_time > 0 and s.tokens_per_s > 0
    final = traj.canvases()[-1]
    assert final[len(prompt):len(prompt) + 32] == res.token_ids
    for st in traj.steps:
        for pos, old, new in st.edited:
            assert old != new and old != MASK and pos >= len(prompt)
    d = s.as_dict()
    assert d["tokens"] == 32 and d["tpf"] == s.tpf


def test_issue14_row_cancelled_while_another_joins_still_finishes(model):
    """Regression (issue 14): a running row cancelled in the step where a waiting row joins the batch was dropped
    from the batch without a finished event, so the server never released its slot."""
    engine = Engine(model, mask_id=MASK, max_batch_size=2)
    cfg = DecodeConfig(block_length=8, max_new_tokens=64, mask_id=MASK, max_post_steps=POST)
    first = engine.add_request(_prompt(5), cfg)
    engine.step()  # first joins and runs
    engine.cancel(first)
    second = engine.add_request(_prompt(7, 1), cfg)
    finished = {e.request_id: e.result for e in engine.step() if e.finished}  # a join step (second joins)
    results = {**finished, **engine.run_until_done()}
    assert results[first].finish_reason == "cancelled"
    assert results[second].finish_reason == "length"
    assert not engine.has_work() and not engine.rows


def test_cancel_returns_a_result_and_bad_input_names_the_field(model):
    engine = Engine(model, mask_id=MASK)
    cfg = DecodeConfig(block_length=8, max_new_tokens=64, mask_id=MASK, max_post_steps=POST)
    rid = engine.add_request(_prompt(5), cfg)
    engine.step()
    engine.cancel(rid)
    results = engine.run_until_done()
    assert results[rid].finish_reason == "cancelled"
    with pytest.raises(ValueError, match="prompt_ids"):
        engine.add_request([], DecodeConfig(mask_id=MASK, max_post_steps=POST))
    with pytest.raises(ValueError, match="prompt_ids"):
        engine.add_request([600], DecodeConfig(mask_id=MASK, max_post_steps=POST))
    with pytest.raises(ValueError, match="tau_mask"):
        DecodeConfig(tau_mask=1.5)
    with pytest.raises(ValueError, match="num_to_transfer"):
        DecodeConfig(block_length=4, num_to_transfer=5)


def test_cuda_graphs_option(model):
    with pytest.raises(ValueError, match="cuda_graphs"):
        Engine(model, mask_id=MASK, cuda_graphs=True)
    with pytest.raises(ValueError, match="cuda_graphs"):
        Engine(model, mask_id=MASK, cuda_graphs="yes")
    assert not Engine(model, mask_id=MASK)._runner().cuda_graphs  # None: off on CPU


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_give_the_same_tokens_on_gpu():
    gpu = tiny_model(seed=0).cuda()
    cfgs = [CONFIGS[1], CONFIGS[1].replace(tau_mask=0.8, mbe_blocks=1)]
    prompts = [_prompt(5), _prompt(21, 1)]
    eager = generate(gpu, None, prompts, cfgs, cuda_graphs=False)
    graphs = generate(gpu, None, prompts, cfgs, cuda_graphs=True)
    assert [r.token_ids for r in eager] == [r.token_ids for r in graphs]


def test_batch_invariant_option(model):
    assert Engine(model, mask_id=MASK)._runner().batch_invariant  # None: on for a model on CPU
    assert not Engine(model, mask_id=MASK, batch_invariant=False)._runner().batch_invariant
    with pytest.raises(ValueError, match="batch_invariant"):
        Engine(model, mask_id=MASK, batch_invariant="yes")
    cfg = DecodeConfig(tau_mask=0.6, tau_edit=0.3, block_length=16, max_new_tokens=32, mask_id=MASK,
                       max_post_steps=POST)
    prompts = [_prompt(13, 7), _prompt(30, 8)]
    plain = generate(model, None, prompts, cfg, batch_invariant=False)
    exact = generate(model, None, prompts, cfg)
    assert [len(r.token_ids) for r in exact] == [32, 32]
    # the tiled (batch-invariant) GEMMs and the plain ones agree to rounding; on this model the tokens are the same
    assert [r.token_ids for r in plain] == [r.token_ids for r in exact]
    counts = lambda r: (r.stats.forwards, r.stats.m2t_fills, r.stats.t2t_edits)  # noqa: E731
    assert [counts(r) for r in plain] == [counts(r) for r in exact]


def test_row_tiles_option_sets_the_tiles_and_keeps_rows_invariant(model, monkeypatch):
    """Engine(batch_invariant=RowTiles(dense=64)): every token-wise GEMM runs on 64-row tiles, and each row of a batch
    still gets the tokens of its solo run (under the same tiles)."""
    import redraft.model.invariant as inv
    from redraft.model.invariant import RowTiles

    tiles = RowTiles(dense=64)
    assert Engine(model, mask_id=MASK, batch_invariant=tiles)._runner().batch_invariant == tiles
    seen = set()
    real = inv.tiled_linear

    def spy(x, weight, bias=None, tile=None):
        seen.add(tile)
        return real(x, weight, bias, tile)

    monkeypatch.setattr(inv, "tiled_linear", spy)
    cfg = DecodeConfig(tau_mask=0.6, tau_edit=0.3, block_length=16, max_new_tokens=32, mask_id=MASK,
                       max_post_steps=POST)
    prompts = [_prompt(13, 7), _prompt(30, 8), _prompt(5, 9)]
    batch = generate(model, None, prompts, cfg, batch_invariant=tiles)
    assert seen == {64}
    solo = [generate(model, None, [p], cfg, batch_invariant=tiles)[0].token_ids for p in prompts]
    assert [r.token_ids for r in batch] == solo and all(len(t) == 32 for t in solo)
    with pytest.raises(ValueError, match="RowTiles"):
        Engine(model, mask_id=MASK, batch_invariant=64)
