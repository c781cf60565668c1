"""Tensor- and expert-parallel inference (issue 12): layout checks before any weight is read, the shard plan, the
vocab-parallel top reduce, and (spawned gloo ranks on CPU) TP/EP forwards equal to the single process within 1e-5,
sharded loading equal to cutting the loaded model, and `redraft conformance --tp 2 [--ep]` passing every case."""

from __future__ import annotations

import json

import pytest
import torch

from redraft.decoding.policy import greedy_top
from redraft.model import LLaDA2MoeConfig, load_model
from redraft.model.parallel import ParallelConfig, ParallelState, Piece, Shard, shard_plan
from redraft.model.parallel_launch import Rank, check_devices, launch


def _parity_config(parity_dir) -> LLaDA2MoeConfig:
    return LLaDA2MoeConfig.from_file(parity_dir / "model" / "config.json")


# ------------------------------------------------------------------------------------------------ no processes
@pytest.mark.parametrize("tp, ep, field", [(3, 1, "num_attention_heads"), (2, 3, "ep"), (8, 1, "num_attention_heads"),
                                           (0, 1, "tp")])
def test_layouts_that_do_not_fit_are_refused_naming_the_field(parity_dir, tp, ep, field):
    with pytest.raises(ValueError, match=field):
        ParallelConfig(tp, ep).check(_parity_config(parity_dir))


def test_vocab_and_intermediate_must_divide():
    cfg = LLaDA2MoeConfig(vocab_size=322, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=8, n_group=4,
                          topk_group=2, num_experts_per_tok=2, moe_intermediate_size=32)
    with pytest.raises(ValueError, match="vocab_size"):
        ParallelConfig(4).check(cfg)
    with pytest.raises(ValueError, match="moe_intermediate_size"):
        ParallelConfig(4).check(LLaDA2MoeConfig.from_dict({**cfg.to_dict(), "vocab_size": 320, "moe_intermediate_size": 30}))
    with pytest.raises(ValueError, match="num_experts"):
        ParallelConfig(4, 4).check(LLaDA2MoeConfig.from_dict({**cfg.to_dict(), "vocab_size": 320, "num_experts": 6,
                                                       "n_group": 3, "topk_group": 1}))


def test_device_checks():
    with pytest.raises(ValueError, match="mixes device types"):
        check_devices(ParallelConfig(2), "cpu,cuda")
    with pytest.raises(ValueError, match="CPU cores"):
        check_devices(ParallelConfig(1024), "cpu")
    assert check_devices(ParallelConfig(1024), "cpu", oversubscribe=True) == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            check_devices(ParallelConfig(2), "cuda")


@pytest.mark.parametrize("tp, ep", [(2, 1), (2, 2), (4, 1), (4, 2), (4, 4)])
def test_shard_plan_pieces_tile_every_tensor_exactly_once(parity_dir, tp, ep):
    """Across ranks the pieces of each cut tensor hold every element exactly once (KV heads: once per replica)."""
    model = load_model(parity_dir / "model", dtype=torch.float32)
    full = model.state_dict()
    plans = [shard_plan(Shard(model.config, ParallelConfig(tp, ep), r)) for r in range(tp)]
    assert all(set(p) == set(full) for p in plans)
    for name, tensor in full.items():
        pieces = [p[name] for p in plans]
        if all(pc is not None and pc.ranges is None for pc in pieces):
            continue
        count = torch.zeros(tensor.shape, dtype=torch.long)
        for pc in pieces:
            if pc is None:
                continue
            for a, b in pc.ranges:
                count.narrow(pc.dim, a, b - a).add_(1)
        expected = torch.ones_like(count)
        if name.endswith("query_key_value.weight"):  # KV heads are replicated when tp > num_key_value_heads
            cfg = model.config
            expected[cfg.num_attention_heads * cfg.head_dim:] = max(1, tp // cfg.num_key_value_heads)
        assert torch.equal(count, expected), name


def test_piece_take_concatenates_ranges():
    full = torch.arange(24).view(6, 4)
    assert Piece(0, ((0, 1), (4, 6))).take(full).tolist() == [[0, 1, 2, 3], [16, 17, 18, 19], [20, 21, 22, 23]]
    assert Piece(1, ((2, 4),)).shape([6, 4]) == [6, 2]


def test_reduce_top_on_one_rank_is_greedy_top(parity_dir):
    state = ParallelState(Shard(_parity_config(parity_dir), ParallelConfig(1), 0))
    logits = torch.randn(3, 5, 320) * 4
    forbid = torch.zeros(3, 320, dtype=torch.bool)
    forbid[:, 7] = True
    logits[0, 0, 7] = 100.0
    tok, prob = state.reduce_top(logits, forbid)
    want_tok, want_prob = greedy_top(logits.masked_fill(forbid[:, None], float("-inf")))
    assert torch.equal(tok, want_tok)
    torch.testing.assert_close(prob, want_prob)


# ------------------------------------------------------------------------------------------------ spawned ranks
def _forward_rank(rank: Rank, model_dir: str, tp: int, ep: int) -> dict:
    from redraft.model import BlockLayout, KVCache
    from redraft.model.parallel import apply_parallel
    from redraft.model.parallel_loading import load_sharded

    full = load_model(model_dir, dtype=torch.float32)
    config = ParallelConfig(tp, ep)
    sharded = load_sharded(model_dir, config, rank.rank, rank.group, dtype=torch.float32)
    cut = apply_parallel(load_model(model_dir, dtype=torch.float32), config, rank.group)
    same_weights = all(torch.equal(a, b) for a, b in zip(sharded.state_dict().values(), cut.state_dict().values()))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, full.config.vocab_size, (3, 40), generator=gen)
    valid = torch.ones(3, 40, dtype=torch.bool)
    valid[1, 29:] = False
    valid[2, 13:] = False
    layout = BlockLayout(8, valid=valid)
    diffs = {}
    with torch.inference_mode():
        want = full(ids, None, layout).logits
        for invariant in (False, True):
            got = sharded(ids, None, layout, batch_invariant=invariant).logits
            diffs[f"batched invariant={invariant}"] = float((got - want)[valid].abs().max())
        cache_full, cache_tp = KVCache.for_model(full, 3), KVCache.for_model(sharded, 3)
        for s in range(0, 40, 8):
            chunk = ids[:, s:s + 8]
            a = full(chunk, None, BlockLayout(8), cache=cache_full)
            b = sharded(chunk, None, BlockLayout(8), cache=cache_tp)
            cache_full.commit(a.new_kv, [8] * 3)
            cache_tp.commit(b.new_kv, [8] * 3)
            diffs[f"cached block {s // 8}"] = float((a.logits - b.logits).abs().max())
        with sharded.parallel.sharded_logits():
            local = sharded(ids, None, layout).logits
        tok, prob = sharded.parallel.reduce_top(local)
        want_tok, want_prob = greedy_top(want)
    return {"diffs": diffs, "scale": float(want[valid].abs().max()), "same_weights": same_weights, "local_width": local.shape[-1],
            "top_equal": bool(torch.equal(tok[valid], want_tok[valid])),
            "prob_diff": float((prob - want_prob)[valid].abs().max()), "kv_heads": cache_tp.num_kv_heads}


@pytest.mark.slow
@pytest.mark.parametrize("tp, ep", [(2, 1), (2, 2), (4, 2)])
def test_parallel_forward_equals_single_process(parity_dir, tp, ep):
    out = launch(_forward_rank, ParallelConfig(tp, ep), (str(parity_dir / "model"), tp, ep), oversubscribe=True)
    assert out["same_weights"], "load_sharded and apply_parallel disagree"
    # 1e-5 relative to the largest logit: the parity head spreads logits to |l| ~ 10-20, where float32's spacing is
    # ~1e-6 and splitting each GEMM's reduction over ranks reorders its sums (a few ulps through 3 layers)
    assert all(d < 1e-5 * max(1.0, out["scale"]) for d in out["diffs"].values()), out
    cfg = _parity_config(parity_dir)
    assert out["local_width"] == cfg.vocab_size // tp
    assert out["kv_heads"] == max(1, cfg.num_key_value_heads // tp)
    assert out["top_equal"] and out["prob_diff"] < 1e-5, out


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--tp", "2"], ["--tp", "2", "--ep"]])
def test_conformance_cli_parallel_passes_every_case(parity_dir, flags, capsys):
    from redraft.cli import main

    num_cases = len(json.loads((parity_dir / "cases.json").read_text())["cases"])
    assert main(["conformance", str(parity_dir), *flags]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"{num_cases} passed, 0 failed", lines


@pytest.mark.slow
def test_conformance_tp4_forward_cases(parity_dir):
    from redraft.decoding.parallel_run import run_conformance_parallel

    lines: list[str] = []
    passed, failed = run_conformance_parallel(parity_dir, ParallelConfig(4), emit=lines.append, oversubscribe=True,
                                              kinds=("forward",))
    assert failed == 0 and passed >= 1, lines


def test_bad_layout_fails_before_any_process_starts(parity_dir, capsys):
    from redraft.cli import main

    assert main(["conformance", str(parity_dir), "--tp", "3"]) != 0
    assert "num_attention_heads (4) is not a multiple of tp (3)" in capsys.readouterr().err


@pytest.mark.parametrize("tp, ep, rank", [(2, 1, 1), (4, 4, 2), (4, 2, 3)])
def test_load_sharded_reads_each_rank_piece(parity_dir, tp, ep, rank):
    """One rank's shard loads without a process group (collectives run only in forwards) and holds exactly the
    plan's pieces of the full checkpoint, in bfloat16 too (converted while reading)."""
    from redraft.model.parallel_loading import load_sharded

    full = load_model(parity_dir / "model", dtype=torch.float32).state_dict()
    config = ParallelConfig(tp, ep)
    plan = shard_plan(Shard(_parity_config(parity_dir), config, rank))
    for dtype in (torch.float32, torch.bfloat16):
        model = load_sharded(parity_dir / "model", config, rank, dtype=dtype)
        state = model.state_dict()
        assert set(state) == {k for k, p in plan.items() if p is not None}
        for name, value in state.items():
            assert torch.equal(value, plan[name].take(full[name]).to(dtype)), name
        assert model.parallel.kv_heads == max(1, 2 // tp)


@pytest.mark.slow
def test_generate_parallel_equals_single_process(parity_dir):
    """`generate_parallel` (the API under `redraft generate --tp`) on a batch of rows of different lengths, EP
    layout: the same tokens, finish reasons and forward counts as one process."""
    from redraft.decoding import generate
    from redraft.decoding.conformance import config_from_official
    from redraft.decoding.parallel_run import generate_parallel
    from safetensors.torch import load_file

    spec = json.loads((parity_dir / "cases.json").read_text())
    tensors = load_file(str(parity_dir / "expected.safetensors"))
    cases = [c for c in spec["cases"] if c["kind"] == "generate"][:4]
    prompts = [tensors[c["prompt"]].flatten().tolist() for c in cases]
    configs = [config_from_official(c["params"], spec["mask_id"]) for c in cases]
    configs = [c for c in configs if c.block_length == configs[0].block_length]
    prompts = prompts[:len(configs)]
    model = load_model(parity_dir / "model", dtype=torch.float32)
    want = generate(model, None, prompts, configs)
    got = generate_parallel(parity_dir / "model", prompts, configs, ParallelConfig(2, 2), dtype=torch.float32,
                            use_tokenizer=False)
    assert [g.token_ids for g in got] == [w.token_ids for w in want]
    assert [g.stats.forwards for g in got] == [w.stats.forwards for w in want]


def test_one_rank_layout_needs_no_process_group_and_changes_nothing(parity_dir):
    from redraft.model import BlockLayout
    from redraft.model.parallel import apply_parallel

    full = load_model(parity_dir / "model", dtype=torch.float32)
    one = apply_parallel(load_model(parity_dir / "model", dtype=torch.float32), ParallelConfig(1))
    ids = torch.arange(40)[None] % 300
    with torch.inference_mode():
        assert torch.equal(one(ids, None, BlockLayout(8)).logits, full(ids, None, BlockLayout(8)).logits)
    assert one.parallel.kv_heads == full.config.num_key_value_heads
