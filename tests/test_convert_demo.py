"""benchmarks/convert_vs_scratch.py end to end at its test shape: AR tokenizer + transformers Qwen3 trained causally,
`redraft convert`, both diffusion arms through the real trainer; checks the output's structure (not the result)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "convert_vs_scratch.py"


def _module():
    spec = importlib.util.spec_from_file_location("convert_vs_scratch", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_convert_vs_scratch_pipeline_at_the_test_shape(tmp_path, capsys):
    demo = _module()
    out, png = tmp_path / "result.json", tmp_path / "curve.png"
    assert demo.main(["--shape", "test", "--work-dir", str(tmp_path / "work"), "--json", str(out),
                      "--plot", str(png), "--scratch-lr", "3e-3"]) == 0
    result = json.loads(out.read_text())
    shape = demo.SHAPES["test"]
    # the AR phase: a transformers Qwen3, trained causally, then `redraft convert` (mask row added: vocab + 1)
    assert result["ar"]["model_type"].startswith("qwen3") and result["ar"]["steps"] == shape.ar_steps
    assert result["ar"]["tokens"] == shape.ar_steps * shape.ar_batch * shape.seq_len
    assert result["converted_config"]["converted_from"] == "qwen3"
    assert result["converted_config"]["vocab_size"] == result["data"]["vocab_size"]
    assert (tmp_path / "work" / "converted" / "model.safetensors").exists()
    # both arms: the same architecture, eval at step 0 and every eval_every steps, scratch longer by the AR tokens
    conv, scratch = result["converted"], result["scratch"]
    assert conv["parameters"] == scratch["parameters"]
    assert conv["steps"] == shape.diffusion_steps and scratch["tokens"] >= conv["tokens"] + result["ar"]["tokens"]
    for arm in (conv, scratch):
        steps = [p["step"] for p in arm["curve"]]
        assert steps[0] == 0 and steps[-1] == arm["steps"] and steps == sorted(steps)
        assert all(p["tokens"] == p["step"] * shape.diffusion_batch * shape.seq_len for p in arm["curve"])
        assert all(p["eval_loss"] > 0 for p in arm["curve"])
    # the block-size warm-up reached the trainer: both runs logged the scheduled block lengths
    for name in ("converted_arm", "scratch_arm"):
        logged = [json.loads(line) for line in (tmp_path / "work" / name / "metrics.jsonl").read_text().splitlines()]
        assert len({r["block_length"] for r in logged if "block_length" in r}) > 1
    # the learning-rate check: one more scratch arm, as long, at the other rate; the best scratch arm is named
    (swept,) = result["scratch_lr_sweep"]
    assert swept["lr"] == 3e-3 and swept["steps"] == scratch["steps"] and len(swept["curve"]) == len(scratch["curve"])
    summary = result["summary"]
    assert summary["best_scratch"]["lr"] in (3e-3, shape.diffusion_lr)
    assert set(summary) == {"per_diffusion_token", "total_tokens", "time_s", "best_scratch"}
    assert summary["total_tokens"]["converted_total_tokens"] == result["ar"]["tokens"] + conv["tokens"]
    assert png.stat().st_size > 0 and "per diffusion token" in capsys.readouterr().out
