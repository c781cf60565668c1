"""Per-block FP8 weights (redraft.model.fp8): quantization error, the checkpoint layout (ours and one written by
hand in the Hugging Face layout), use_fp8_experts, malformed checkpoints, and batch invariance on CPU."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from redraft.model import BlockLayout, CheckpointError, LLaDA2MoeConfig, load_model, save_model
from redraft.model.fp8 import (FP8_MAX, Fp8Config, Fp8ExpertBank, Fp8Linear, dequantize_block_fp8, is_fp8,
                               quantize_block_fp8, quantize_model, scale_shape)
from redraft.model.invariant import RowTiles
from redraft.model.testing import random_model

F8 = torch.float8_e4m3fn


def _hand_quantize(w: torch.Tensor, bn: int, bk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An independent per-block quantizer (a loop over blocks), as a conversion script would write one."""
    n, k = w.shape
    nb, kb = -(-n // bn), -(-k // bk)
    q = torch.empty(n, k, dtype=F8)
    s = torch.empty(nb, kb, dtype=torch.float32)
    for i in range(nb):
        for j in range(kb):
            blk = w[i * bn:(i + 1) * bn, j * bk:(j + 1) * bk].float()
            amax = float(blk.abs().max())
            s[i, j] = amax / 448.0 if amax > 0 else 1.0
            q[i * bn:(i + 1) * bn, j * bk:(j + 1) * bk] = (blk / s[i, j]).to(F8)
    return q, s


@pytest.mark.parametrize("shape,block", [((256, 384), (128, 128)), ((200, 70), (128, 128)), ((3, 64, 48), (16, 32))])
def test_quantize_dequantize_error_per_block_is_within_the_e4m3_bound(shape, block):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(*shape, generator=g) * torch.logspace(-3, 1, shape[-1])  # blocks of very different ranges
    w[..., :block[0], :block[1]] = 0.0  # an all-zero block
    w.view(-1)[-1] = 1e4  # an outlier
    q, s = quantize_block_fp8(w, block)
    assert q.dtype == F8 and s.dtype == torch.float32 and tuple(s.shape) == scale_shape(shape, block)
    assert float((q.float().abs()).max()) <= FP8_MAX
    back = dequantize_block_fp8(q, s, block, torch.float32)
    *_, n, k = shape
    for i in range(0, n, block[0]):
        for j in range(0, k, block[1]):
            ref = w[..., i:i + block[0], j:j + block[1]]
            err = (back[..., i:i + block[0], j:j + block[1]] - ref).abs().amax(dim=(-2, -1))
            bound = ref.abs().amax(dim=(-2, -1)) * 2.0 ** -4
            assert (err <= bound).all(), (i, j, err, bound)
    assert torch.equal(back[..., :block[0], :block[1]], torch.zeros_like(back[..., :block[0], :block[1]]))
    # the independent loop quantizer gives the same bits
    q2, s2 = _hand_quantize(w.reshape(-1, k)[:n], *block)
    assert torch.equal(q.reshape(-1, k)[:n].view(torch.uint8), q2.view(torch.uint8)) and torch.equal(s.reshape(-1, s.shape[-1])[:s2.shape[0]], s2)


def test_fp8_config_is_validated():
    with pytest.raises(ValueError, match="weight_block_size"):
        Fp8Config(weight_block_size=(128, 0))
    with pytest.raises(ValueError, match="scope"):
        Fp8Config(scope="attention")
    with pytest.raises(ValueError, match="lm_head"):
        Fp8Config(lm_head=True)
    with pytest.raises(CheckpointError, match="quantization"):
        load_model("redraft/assets/tiny", quantization="int4")


def test_quantize_at_load_equals_quantizing_the_loaded_model_and_keeps_router_norms_embeddings(tiny_checkpoint):
    ref = load_model(tiny_checkpoint)
    q_load = load_model(tiny_checkpoint, quantization="fp8-all")
    q_after = quantize_model(load_model(tiny_checkpoint), "fp8-all")
    a, b = q_load.state_dict(), q_after.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)), k
    layer = q_load.model.layers[1]
    assert isinstance(layer.mlp.experts, Fp8ExpertBank) and isinstance(layer.attention.dense, Fp8Linear)
    assert isinstance(q_load.model.layers[0].mlp.gate_up_proj, Fp8Linear)
    assert layer.mlp.gate.weight.dtype == torch.float32 and q_load.lm_head.weight.dtype == torch.float32
    assert q_load.model.word_embeddings.weight.dtype == torch.float32
    experts = load_model(tiny_checkpoint, quantization="fp8")
    assert isinstance(experts.model.layers[1].mlp.experts, Fp8ExpertBank)
    assert not isinstance(experts.model.layers[1].attention.dense, Fp8Linear)
    ids = torch.randint(0, 500, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        r, e, f = ref(ids).logits, experts(ids).logits, q_load(ids).logits
    assert 0 < (r - e).abs().max() < 0.1 * r.abs().max() and 0 < (r - f).abs().max() < 0.1 * r.abs().max()


def test_fp8_save_load_round_trip_is_byte_exact(tiny_checkpoint, tmp_path):
    model = load_model(tiny_checkpoint, quantization=Fp8Config(scope="all", lm_head=True,
                                                                modules_to_not_convert=("layers.0.",)))
    assert not isinstance(model.model.layers[0].attention.dense, Fp8Linear)
    save_model(model, tmp_path / "a", max_shard_bytes=20_000)
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "fp8" and qc["weight_block_size"] == [128, 128] and qc["activation_scheme"] == "dynamic"
    assert "model.layers.0.attention.dense" in qc["modules_to_not_convert"] and "lm_head" not in qc["modules_to_not_convert"]
    again = load_model(tmp_path / "a")
    assert isinstance(again.lm_head, Fp8Linear) and isinstance(again.model.layers[1].mlp.experts, Fp8ExpertBank)
    save_model(again, tmp_path / "b", max_shard_bytes=20_000)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir()) and len(files) > 3
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    tensors = {}
    for f in (tmp_path / "a").glob("*.safetensors"):
        tensors.update(load_file(f))
    w = "model.layers.1.mlp.experts.0.gate_proj.weight"
    assert tensors[w].dtype == F8 and tensors[w + "_scale_inv"].dtype == torch.float32
    assert tensors["model.layers.1.mlp.gate.weight"].dtype == torch.float32


def _hand_written(src, dst, block, quantize, config_update):
    """Copy checkpoint `src` to `dst`, quantizing the tensors `quantize(name)` selects with the loop quantizer."""
    shutil.copytree(src, dst)
    tensors = load_file(src / "model.safetensors")
    out = {}
    for name, t in tensors.items():
        if name.endswith(".weight") and t.dim() == 2 and "layernorm" not in name and quantize(name):
            out[name], out[name[:-len("weight")] + "weight_scale_inv"] = _hand_quantize(t, *block)
        else:
            out[name] = t
    save_file(out, dst / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(config_update)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst, out


def test_checkpoint_in_the_hf_block_fp8_layout_written_by_hand_loads(tiny_checkpoint, tmp_path):
    block = (16, 32)
    path, written = _hand_written(
        tiny_checkpoint, tmp_path / "hf", block,
        lambda n: ".experts." in n or "attention." in n,
        {"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3",
                                 "weight_block_size": list(block)}})
    model = load_model(path)
    assert isinstance(model.model.layers[1].mlp.experts, Fp8ExpertBank)
    assert isinstance(model.model.layers[0].attention.query_key_value, Fp8Linear)
    assert not isinstance(model.model.layers[0].mlp.gate_up_proj, Fp8Linear)
    state = model.state_dict()
    for name, t in written.items():
        assert state[name].dtype == t.dtype and torch.equal(state[name].view(torch.uint8), t.view(torch.uint8)), name
    bank = model.model.layers[2].mlp.experts
    gate_up, down = bank.expert_weights(3, torch.float32)
    pre = "model.layers.2.mlp.experts.3."
    want = torch.cat([dequantize_block_fp8(written[pre + p + ".weight"], written[pre + p + ".weight_scale_inv"], block,
                                           torch.float32) for p in ("gate_proj", "up_proj")])
    assert torch.equal(gate_up, want)
    # close to the unquantized model
    ref = load_model(tiny_checkpoint)
    ids = torch.randint(0, 500, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ref(ids).logits, model(ids).logits
    assert (a - b).abs().max() < 0.1 * a.abs().max()


def test_use_fp8_experts_flag_is_honoured(tiny_checkpoint, tmp_path):
    path, _ = _hand_written(tiny_checkpoint, tmp_path / "uni", (128, 128), lambda n: ".experts." in n,
                            {"use_fp8_experts": True})
    model = load_model(path)
    assert is_fp8(model) and isinstance(model.model.layers[1].mlp.experts, Fp8ExpertBank)
    assert not any(isinstance(m, Fp8Linear) for m in model.modules())  # the rest stays in the model dtype
    save_model(model, tmp_path / "again")
    cfg = json.loads((tmp_path / "again" / "config.json").read_text())
    assert cfg["use_fp8_experts"] is True and cfg["quantization_config"]["weight_block_size"] == [128, 128]
    # the flag with unquantized tensors is a contradiction
    shutil.copytree(tiny_checkpoint, tmp_path / "liar")
    cfg = json.loads((tmp_path / "liar" / "config.json").read_text())
    (tmp_path / "liar" / "config.json").write_text(json.dumps({**cfg, "use_fp8_experts": True}))
    with pytest.raises(CheckpointError, match="no tensor of the checkpoint is float8"):
        load_model(tmp_path / "liar")


def _fp8_dir(tiny_checkpoint, tmp_path):
    model = load_model(tiny_checkpoint, quantization="fp8")
    return save_model(model, tmp_path / "ok")


def _edit(directory, tensors=None, config=None):
    if tensors is not None:
        state = load_file(directory / "model.safetensors")
        tensors(state)
        save_file(state, directory / "model.safetensors")
    if config is not None:
        cfg = json.loads((directory / "config.json").read_text())
        config(cfg)
        (directory / "config.json").write_text(json.dumps(cfg))


SCALE = "model.layers.1.mlp.experts.2.up_proj.weight_scale_inv"


@pytest.mark.parametrize("case,match", [
    ("missing_scale", f"no block scale: tensor '{SCALE}' is missing"),
    ("scale_shape", f"tensor '{SCALE}' has shape \\(2, 1\\)"),
    ("block_size", "tensor 'model.layers.1.mlp.experts.0.gate_proj.weight_scale_inv' has shape .* needs \\(2, 2\\)"),
    ("bad_block", "weight_block_size must be two positive ints"),
    ("quant_method", "quant_method 'gptq' is not supported"),
    ("static", "activation_scheme 'static' is not supported"),
    ("no_config", "is float8 but config.json declares no FP8 layout"),
    ("orphan_scale", "'model.layers.1.attention.dense.weight_scale_inv' is an FP8 block scale, but its weight"),
    ("half_module", "tensor 'model.layers.1.mlp.experts.5.down_proj.weight' is not float8"),
    ("float8_router", "'model.layers.1.mlp.gate.weight' is float8, but redraft keeps this tensor"),
    ("scale_dtype", f"tensor '{SCALE}' is BF16; FP8 block scales must be F32"),
])
def test_malformed_fp8_checkpoints_raise_one_clear_error_naming_the_tensor(tiny_checkpoint, tmp_path, case, match):
    d = _fp8_dir(tiny_checkpoint, tmp_path)
    edits = {
        "missing_scale": dict(tensors=lambda s: s.pop(SCALE)),
        "scale_shape": dict(tensors=lambda s: s.__setitem__(SCALE, torch.ones(2, 1))),
        "block_size": dict(config=lambda c: c["quantization_config"].__setitem__("weight_block_size", [16, 32])),
        "bad_block": dict(config=lambda c: c["quantization_config"].__setitem__("weight_block_size", [128])),
        "quant_method": dict(config=lambda c: c["quantization_config"].__setitem__("quant_method", "gptq")),
        "static": dict(config=lambda c: c["quantization_config"].__setitem__("activation_scheme", "static")),
        "no_config": dict(config=lambda c: c.pop("quantization_config")),
        "orphan_scale": dict(tensors=lambda s: s.__setitem__("model.layers.1.attention.dense.weight_scale_inv",
                                                             torch.ones(1, 1))),
        "half_module": dict(tensors=lambda s: s.__setitem__(
            "model.layers.1.mlp.experts.5.down_proj.weight",
            s["model.layers.1.mlp.experts.5.down_proj.weight"].float())),
        "float8_router": dict(tensors=lambda s: s.__setitem__("model.layers.1.mlp.gate.weight",
                                                              s["model.layers.1.mlp.gate.weight"].to(F8))),
        "scale_dtype": dict(tensors=lambda s: s.__setitem__(SCALE, s[SCALE].bfloat16())),
    }
    _edit(d, **edits[case])
    with pytest.raises(CheckpointError, match=match):
        load_model(d)


BL = 16
CFG = LLaDA2MoeConfig(vocab_size=512, hidden_size=256, intermediate_size=256, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=64, num_experts=16,
                      num_experts_per_tok=2, n_group=4, topk_group=2, moe_intermediate_size=128,
                      num_shared_experts=1, first_k_dense_replace=1, max_position_embeddings=1024,
                      torch_dtype="float32")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batch_invariance_holds_with_fp8_weights(dtype):
    model = quantize_model(random_model(CFG, seed=0, head_std=1.0, dtype=dtype), "fp8-all")
    moe = model.model.layers[1].mlp
    x = torch.randn(4, 40, CFG.hidden_size, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        together = moe(x, RowTiles())
        for r in range(x.shape[0]):
            for n in (8, 24, 40):
                assert torch.equal(moe(x[r:r + 1, :n], RowTiles()), together[r:r + 1, :n])
        lengths = [37, 64, 5]
        g = torch.Generator().manual_seed(2)
        seqs = [torch.randint(0, 500, (n,), generator=g) for n in lengths]
        ids = torch.zeros(3, 64, dtype=torch.long)
        valid = torch.zeros(3, 64, dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, :len(s)], valid[i, :len(s)] = s, True
        batched = model(ids, torch.arange(64)[None].expand(3, -1), BlockLayout(BL, valid=valid)).logits
        for i, s in enumerate(seqs):
            width = -(-len(s) // BL) * BL
            w = torch.zeros(1, width, dtype=torch.long)
            w[0, :len(s)] = s
            alone = model(w, torch.arange(width)[None],
                          BlockLayout(BL, valid=torch.arange(width)[None] < len(s))).logits[0, :len(s)]
            assert torch.equal(batched[i, :len(s)], alone), f"row {i}"


def test_quantize_and_inspect_verbs(tiny_checkpoint, tmp_path, capsys):
    from redraft.cli import main

    dst = tmp_path / "q"
    assert main(["quantize", str(tiny_checkpoint), str(dst), "--scope", "all", "--exclude", "layers.2."]) == 0
    model = load_model(dst)
    assert isinstance(model.model.layers[1].attention.dense, Fp8Linear)
    assert not isinstance(model.model.layers[2].attention.dense, Fp8Linear)
    assert (dst / "tokenizer.json").exists()
    assert main(["quantize", str(tiny_checkpoint), str(tiny_checkpoint)]) == 2  # in place: refused
    capsys.readouterr()
    assert main(["inspect", str(dst), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "F8_E4M3" in info["dtypes"] and info["fp8_all_bytes"] < info["fp8_experts_bytes"]
    assert main(["inspect", "--shape", "mini", "--json"]) == 0
    mini = json.loads(capsys.readouterr().out)
    assert 15e9 < mini["parameters"] < 17e9 and mini["fp8_experts_bytes"] < 0.55 * mini["bytes"]


@pytest.mark.slow
def test_fp8_gpu_benchmark_runs_at_the_tiny_shape_on_cpu(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fp8_gpu.py"
    spec = importlib.util.spec_from_file_location("fp8_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "r.json"
    assert bench.main(["--shape", "tiny", "--device", "cpu", "--batch", "1", "--iters", "1", "--cache", "32",
                       "--scopes", "fp8", "--moonshot", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["shape"], r["weights"]) for r in rows] == [("tiny", "bf16"), ("tiny", "fp8"), ("tiny-flash", "fp8")]
    assert rows[1]["weight_bytes"] < rows[0]["weight_bytes"] and all(r["ms_per_forward"] > 0 for r in rows)


GROUPED_SCRIPT = r"""
import torch
from redraft.model.fp8.blocks import dequantize_block_fp8, quantize_block_fp8
from redraft.model.fp8.grouped import grouped_fp8_matmul, row_tiles
torch.manual_seed(0)
q, s = quantize_block_fp8(torch.randn(3, 256, 384) * 0.05)
x = torch.randn(40, 384)
counts = [17, 0, 23]
out = grouped_fp8_matmul(x, row_tiles(counts, x.device), q, s)
deq = dequantize_block_fp8(q, s, (128, 128), torch.float32)
ref = torch.cat([x[:17] @ deq[0].T, x[17:] @ deq[2].T])
err = float((out - ref).abs().max())
assert err < 1e-4, err
print("ok", err)
"""


def test_grouped_triton_kernel_matches_the_reference_in_the_interpreter():
    """The grouped FP8 expert kernel's indexing (row tiles per expert, block scales, partial tiles), run by
    triton's CPU interpreter in float32 (skipped where triton is not installed, as in CPU-only installs)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", GROUPED_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_serving_and_eval_load_with_quantization(tiny_checkpoint):
    from redraft.cli import build_parser
    from redraft.evaluation.harness import load as eval_load
    from redraft.serving.settings import ServerSettings
    from redraft.serving.state import build_engine

    engine, _ = build_engine(tiny_checkpoint, ServerSettings(quantization="fp8"))
    assert isinstance(engine.model.model.layers[1].mlp.experts, Fp8ExpertBank)
    with pytest.raises(ValueError, match="ServerSettings.quantization"):
        ServerSettings(quantization="int8")
    model, _, _ = eval_load(str(tiny_checkpoint), quantization="fp8-all")
    assert isinstance(model.model.layers[1].attention.dense, Fp8Linear)
    parser = build_parser()
    for argv in (["generate", "x", "--quantization", "fp8"], ["chat", "--quantization", "fp8"],
                 ["serve", "--quantization", "fp8-all"], ["eval", "--quantization", "fp8"],
                 ["bench", "--quantization", "fp8"]):
        assert parser.parse_args(argv).quantization == argv[-1]
