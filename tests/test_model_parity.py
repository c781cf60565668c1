"""Forward parity with the official implementation (../shared/parity), through the public loading API."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from redraft.model import BlockLayout, load_model


def _forward_cases(parity_dir):
    cases = json.loads((parity_dir / "cases.json").read_text())["cases"]
    return [c for c in cases if c["kind"] == "forward"]


def test_forward_cases_match_official(parity_dir):
    model = load_model(parity_dir / "model")
    expected = load_file(parity_dir / "expected.safetensors")
    cases = _forward_cases(parity_dir)
    assert cases, "no forward cases in cases.json"
    for case in cases:
        ids = expected[case["input"]].reshape(1, -1)
        ref = expected[case["logits"]].reshape(1, ids.shape[1], -1)
        pos = torch.arange(ids.shape[1])[None]
        with torch.no_grad():
            out = model(ids, pos, BlockLayout(case["block_length"])).logits
        assert out.dtype == torch.float32
        diff = (out - ref).abs().max().item()
        assert diff < 1e-4, f"{case['name']}: max abs diff {diff}"


def test_block_causal_differs_from_bidirectional(parity_dir):
    """The block layout matters: a block-causal forward is not the bidirectional one (guards a no-op mask)."""
    model = load_model(parity_dir / "model")
    ids = torch.randint(0, model.config.vocab_size - 1, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        causal = model(ids, layout=BlockLayout(32)).logits
        bidir = model(ids, layout=BlockLayout(64)).logits
        first_alone = model(ids[:, :32], layout=BlockLayout(32)).logits
    assert torch.allclose(causal[:, :32], first_alone, atol=1e-5)  # block 0 sees only itself
    assert (causal[:, :32] - bidir[:, :32]).abs().max() > 1e-3


def test_bf16_forward_close_to_fp32(parity_dir):
    model32 = load_model(parity_dir / "model")
    model16 = load_model(parity_dir / "model", dtype=torch.bfloat16)
    assert next(model16.parameters()).dtype == torch.bfloat16
    ids = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = model32(ids, layout=BlockLayout(8)).logits
        b = model16(ids, layout=BlockLayout(8)).logits
    assert b.dtype == torch.float32  # logits always float32
    agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    assert agree > 0.7, f"bf16 and fp32 top tokens agree on only {agree:.0%} of positions"


@pytest.mark.parametrize("tokens", [1, 7, 33])
def test_sorted_moe_dispatch_equals_reference(parity_dir, tokens):
    model = load_model(parity_dir / "model")
    moe = model.model.layers[1].mlp
    x = torch.randn(1, tokens, model.config.hidden_size, generator=torch.Generator().manual_seed(tokens))
    with torch.no_grad():
        assert torch.allclose(moe(x), moe.forward_reference(x), atol=1e-6)


def test_router_uses_expert_bias_for_selection_only(parity_dir):
    model = load_model(parity_dir / "model")
    gate = model.model.layers[1].mlp.gate
    x = torch.randn(16, model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        idx0, w0 = gate(x)
        gate.expert_bias.copy_(torch.zeros_like(gate.expert_bias))
        gate.expert_bias[0] = 10.0  # expert 0 is now always selected
        idx1, w1 = gate(x)
    assert (idx1 == 0).any(-1).all()
    scores = torch.sigmoid(x @ gate.weight.T)
    chosen = scores.gather(1, idx1)
    expected = chosen / chosen.sum(-1, keepdim=True) * gate.routed_scaling_factor
    assert torch.allclose(w1, expected, atol=1e-6)  # weights come from the unbiased scores
    assert torch.allclose(w1.sum(-1), torch.full((16,), gate.routed_scaling_factor), atol=1e-5)


def test_padded_expert_path_equals_loop(parity_dir):
    """The capture-safe padded batched-matmul path (used inside CUDA-graph capture) computes the same experts."""
    model = load_model(parity_dir / "model")
    moe = model.model.layers[2].mlp
    x = torch.randn(29, model.config.hidden_size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        idx, _ = moe.gate(x)
        order = idx.view(-1).argsort(stable=True)
        counts = torch.bincount(idx.view(-1), minlength=moe.num_experts)
        xs = x[order // moe.top_k]
        assert torch.allclose(moe.experts(xs, counts), moe.experts._padded(xs, counts), atol=1e-6)
        # an expert holds at most one row per token: a capacity of 29 rows is enough
        assert torch.allclose(moe.experts(xs, counts), moe.experts._padded(xs, counts, 29), atol=1e-6)
