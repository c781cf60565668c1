"""GPU checks (skipped without CUDA): parity on the device, the grouped-matmul MoE path, the KV cache."""

from __future__ import annotations

import json

import pytest
import torch

from redraft.model import BlockLayout, KVCache, load_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def parity(parity_dir):
    return parity_dir  # on the device machine: REDRAFT_PARITY points at a copy inside the repo


def test_forward_parity_on_cuda(parity):
    from safetensors.torch import load_file

    model = load_model(parity / "model", device="cuda")
    expected = load_file(parity / "expected.safetensors")
    for case in json.loads((parity / "cases.json").read_text())["cases"]:
        if case["kind"] != "forward":
            continue
        ids = expected[case["input"]].reshape(1, -1).cuda()
        with torch.no_grad():
            out = model(ids, layout=BlockLayout(case["block_length"])).logits.cpu()
        ref = expected[case["logits"]].reshape(out.shape)
        assert (out - ref).abs().max() < 1e-4, case["name"]


def test_grouped_mm_moe_matches_loop_bf16():
    from redraft.model import LLaDA2MoeConfig
    from redraft.model.moe import MoE

    cfg = LLaDA2MoeConfig(hidden_size=256, num_experts=32, num_experts_per_tok=4, n_group=4, topk_group=2,
                          moe_intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=64)
    torch.manual_seed(0)
    moe = MoE(cfg).cuda().to(torch.bfloat16)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(3, 70, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        moe.experts.use_grouped_mm = False
        loop = moe(x)
        moe.experts.use_grouped_mm = True
        grouped = moe(x)
    assert (loop.float() - grouped.float()).abs().max() < 2e-2 * loop.float().abs().max()


def test_kv_cache_on_cuda(parity):
    model = load_model(parity / "model", device="cuda")
    ids = torch.randint(0, 319, (2, 64), device="cuda")
    with torch.no_grad():
        full = model(ids, layout=BlockLayout(32)).logits
        cache = KVCache.for_model(model, 2)
        cache.commit(model(ids[:, :32], layout=BlockLayout(32)).new_kv, [32, 32])
        out = model(ids[:, 32:], layout=BlockLayout(32), cache=cache).logits
    assert (out - full[:, 32:]).abs().max() < 1e-4


def test_cuda_graph_runner_matches_eager(parity):
    from redraft.model.cuda_graphs import CUDAGraphRunner

    model = load_model(parity / "model", device="cuda")
    runner = CUDAGraphRunner(model)  # default buckets: the 3 rows run padded to 4 (then 2 rows: exact)
    ids = torch.randint(0, 319, (3, 128), device="cuda")
    with torch.no_grad():
        full = model(ids, layout=BlockLayout(32)).logits
        cache = KVCache.for_model(model, 3, capacity=64, max_rows=4)
        for b in range(4):
            w = ids[:, 32 * b:32 * (b + 1)]
            out = runner(w, None, BlockLayout(32), cache=cache)
            assert (out.logits - full[:, 32 * b:32 * (b + 1)]).abs().max() < 1e-4
            out2 = runner(w, None, BlockLayout(32), cache=cache)  # replay of the same graph
            assert torch.equal(out.logits, out2.logits)
            cache.commit(out.new_kv, [32, 32, 32])
        assert runner.num_graphs >= 2  # capacity grew from 64 to 128: a new capture
        cache.select([2, 0])  # rows leave: compacted in place
        cache.truncate(0, 96)
        cache.truncate(1, 96)
        out = runner(ids[[2, 0], 96:], None, BlockLayout(32), cache=cache)
        assert (out.logits - full[[2, 0], 96:]).abs().max() < 1e-4


def _fp8_tolerance(ref: torch.Tensor) -> float:
    # activations are quantized per 1 x 128 group on the FP8 path (e4m3: ~2^-4 relative per element)
    return 0.08 * float(ref.float().abs().max())


def test_fp8_linear_on_cuda_matches_the_dequantized_reference():
    from redraft.model.fp8 import Fp8Linear

    torch.manual_seed(0)
    lin = torch.nn.Linear(512, 384, bias=True).cuda().to(torch.bfloat16)
    fp8 = Fp8Linear.from_linear(lin, (128, 128), torch.bfloat16)
    x = torch.randn(37, 512, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        ref = torch.nn.functional.linear(x.float(), fp8.weight.float(), fp8.bias.float())
        out = fp8(x)
    assert out.dtype == torch.bfloat16 and (out.float() - ref).abs().max() < _fp8_tolerance(ref)
    if torch.cuda.get_device_capability() >= (9, 0):
        assert fp8.fast.enabled is True, "blockwise scaled_mm did not run on a Hopper+ GPU"


def test_fp8_expert_bank_on_cuda_matches_the_dequantized_reference():
    from redraft.model import LLaDA2MoeConfig
    from redraft.model.fp8 import quantize_model
    from redraft.model.testing import random_model

    cfg = LLaDA2MoeConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=64, num_experts=16,
                          num_experts_per_tok=4, n_group=4, topk_group=2, moe_intermediate_size=128,
                          torch_dtype="bfloat16")
    model = quantize_model(random_model(cfg, seed=0, dtype=torch.bfloat16).cuda(), "fp8-all")
    moe = model.model.layers[1].mlp
    x = torch.randn(2, 70, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        fast = moe(x)
        for m in model.modules():
            if hasattr(m, "fast"):
                m.fast.enabled = False  # the dequantizing path: the reference
            if hasattr(m, "grouped"):
                m.grouped.enabled, grouped_state = False, m.grouped.enabled
        ref = moe(x)
        ids = torch.randint(0, 500, (2, 64), device="cuda")
        logits = model(ids, layout=BlockLayout(32)).logits
    assert (fast.float() - ref.float()).abs().max() < _fp8_tolerance(ref)
    assert torch.isfinite(logits).all()
    from redraft.model.fp8.grouped import triton

    if triton is not None:
        assert grouped_state is True, "the grouped triton FP8 kernel turned itself off"


def test_engine_on_cuda_equals_its_no_cache_run_and_the_official_tokens(parity):
    """The engine on CUDA (KV cache, CUDA graphs capturing forward + greedy policy) gives the same greedy tokens as
    its own no-cache run and the official ones, for every generate case, in float32."""
    from safetensors.torch import load_file

    from redraft.decoding import generate
    from redraft.decoding.conformance import config_from_official

    spec = json.loads((parity / "cases.json").read_text())
    expected = load_file(parity / "expected.safetensors")
    model = load_model(parity / "model", device="cuda", dtype=torch.float32)
    cases = [c for c in spec["cases"] if c["kind"] == "generate"]
    configs = [config_from_official(c["params"], spec["mask_id"]) for c in cases]
    prompts = [expected[c["prompt"]].flatten().tolist() for c in cases]
    for c, cfg, prompt in zip(cases, configs, prompts):
        want = expected[c["output"]].flatten().tolist()
        graphed = generate(model, None, [prompt], cfg)[0].token_ids
        assert graphed == generate(model, None, [prompt], cfg, use_cache=False)[0].token_ids, c["name"]
        assert graphed == want, c["name"]
    for L in {cfg.block_length for cfg in configs}:  # a batch of rows at different blocks
        group = [(p, cfg, c) for p, cfg, c in zip(prompts, configs, cases) if cfg.block_length == L]
        results = generate(model, None, [g[0] for g in group], [g[1] for g in group])
        for (_, _, c), res in zip(group, results):
            assert res.token_ids == expected[c["output"]].flatten().tolist(), c["name"]


def test_engine_step_graph_replays_forward_and_policy(parity):
    """CUDAGraphRunner with the greedy policy as `post`: a replay equals the eager forward + policy."""
    from redraft.decoding.policy import greedy_step
    from redraft.model.cuda_graphs import CUDAGraphRunner

    model = load_model(parity / "model", device="cuda", dtype=torch.float32)
    runner = CUDAGraphRunner(model)
    ids = torch.randint(0, 319, (2, 64), device="cuda")
    cache = KVCache.for_model(model, 2)
    with torch.no_grad():
        cache.commit(model(ids[:, :32], layout=BlockLayout(32)).new_kv, [32, 32])
        window = ids[:, 32:]
        tokens = window.clone()
        tokens[:, ::3] = 319
        args = (tokens, torch.zeros_like(tokens, dtype=torch.bool), torch.tensor([0.5, 0.9], device="cuda"),
                torch.tensor([0.5, 0.2], device="cuda"), torch.tensor([1, 2], device="cuda"),
                torch.tensor([True, False], device="cuda"))
        index = torch.arange(32, device="cuda")[None].expand(2, 32)
        post = lambda logits, *a: greedy_step(logits, *a, mask_id=319)  # noqa: E731
        for _ in range(2):  # capture, then replay
            out, decided = runner(window, None, BlockLayout(32), cache=cache, logits_index=index, post=post,
                                  post_args=args)
        eager = model(window, None, BlockLayout(32), cache=cache, logits_index=index)
        assert (out.logits - eager.logits).abs().max() < 1e-4
        assert torch.equal(decided, greedy_step(out.logits, *args, mask_id=319))
        assert runner.num_graphs == 1
        # the whole step's graph: forward, policy and the window's K/V written into the cache at each row's length
        cache.reserve(64)
        for _ in range(2):
            out, decided = runner(window, None, BlockLayout(32), cache=cache, logits_index=index, post=post,
                                  post_args=args, write_cache=True)
        assert runner.num_graphs == 2 and cache.host_lengths == [32, 32]
        for i, (k, v) in enumerate(out.new_kv):
            assert torch.equal(cache._k[i][:2, :, 32:64], k) and torch.equal(cache._v[i][:2, :, 32:64], v)
            assert (k - eager.new_kv[i][0]).abs().max() < 1e-4
        cache.advance([32, 0])
        assert cache.host_lengths == [64, 32] and cache.lengths.tolist() == [64, 32]
