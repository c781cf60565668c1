"""GPU checks (skipped without CUDA): parity on the device, the grouped-matmul MoE path, the KV cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from redraft.model import BlockLayout, KVCache, load_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def parity(parity_dir_any):
    return parity_dir_any


@pytest.fixture(scope="module")
def parity_dir_any():
    # the device machine gets the parity files inside the repo (REDRAFT_PARITY), elsewhere ../shared/parity
    path = Path(os.environ.get("REDRAFT_PARITY", Path(__file__).resolve().parents[2] / "shared" / "parity"))
    if not (path / "cases.json").exists():
        pytest.skip(f"parity vectors not found at {path}")
    return path


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
