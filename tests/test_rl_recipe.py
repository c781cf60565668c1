"""The EBPO recipe end to end on a tiny random checkpoint: metrics, HF checkpoints, exact resume, config errors, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from redraft.model import load_model
from redraft.rl.config import RLConfig, config_from_dict, load_config
from redraft.rl.recipe import EBPORecipe


def raw_config(init_from, out) -> dict:
    return {"init_from": str(init_from), "output_dir": str(out), "task": "addition",
            "task_config": {"digits": 2},
            # the random model never answers correctly: a length term gives the groups reward variance
            "rewards": [{"kind": "task"}, {"kind": "length", "weight": 1.0, "config": {"target": 4}}],
            "train_pool": 16, "prompts_per_step": 2, "steps": 2, "epochs": 2, "minibatch_size": 3,
            "micro_batch_size": 2, "eval_size": 2, "eval_every": 2, "save_every": 1, "device": "cpu",
            "rollout": {"group_size": 3, "max_new_tokens": 8, "block_length": 4, "temperature": 1.0},
            "elbo": {"block_length": 4, "num_levels": 2}, "optim": {"lr": 1e-3}}


@pytest.mark.slow
def test_recipe_runs_logs_saves_and_resumes_exactly(tiny_checkpoint, tmp_path):
    straight = EBPORecipe(config_from_dict(raw_config(tiny_checkpoint, tmp_path / "a")))
    summary = straight.run()
    assert summary["steps"] == 2
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    for key in ("reward", "accuracy", "clip_frac", "ratio_mean", "ratio_min", "ratio_max", "rollout_tpf", "loss",
                "grad_norm"):
        assert key in records[1], key
    assert records[1]["optimizer_steps"] == 4  # 2 epochs x ceil(6 rows / minibatch 3)
    assert "eval_accuracy" in records[0] and "eval_accuracy" in records[2]
    final = load_model(tmp_path / "a" / "final")
    start = load_model(tiny_checkpoint)
    assert any(not torch.equal(p, q) for p, q in zip(final.parameters(), start.parameters()))

    killed = EBPORecipe(config_from_dict(raw_config(tiny_checkpoint, tmp_path / "b")))
    killed.run(stop_after=1)
    resumed = EBPORecipe(config_from_dict(raw_config(tiny_checkpoint, tmp_path / "b")), resume=True)
    resumed.run()
    again = load_model(tmp_path / "b" / "final")
    for (name, p), q in zip(final.named_parameters(), again.parameters()):
        assert torch.equal(p, q), name
    resumed_records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed_records] == [0, 1, 2]
    assert resumed_records[2]["reward"] == records[2]["reward"]


@pytest.mark.parametrize("change,match", [
    ({"init_from": ""}, "init_from"), ({"steps": 0}, "steps"), ({"prompts_per_step": 99}, "prompts_per_step"),
    ({"elbo": {"block_length": 8}}, "elbo.block_length"), ({"rewards": [{"kind": "format"}]}, "'task' reward"),
    ({"rewards": [{"kind": "task"}, {"kind": "nope"}]}, "reward kind"), ({"loss": {"clip_low": 2}}, "loss.clip_low"),
    ({"rollout": {"group_sz": 2}}, "rollout.group_sz"), ({"bogus": 1}, "bogus"), ({"parallel": "tp"}, "parallel"),
    ({"advantages": {"method": "z"}}, "advantages.method")])
def test_bad_config_raises_naming_field(tmp_path, change, match):
    raw = {**raw_config("ckpt", tmp_path), **change}
    with pytest.raises(ValueError, match=match):
        config_from_dict(raw)


def test_config_file_with_base_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("init_from: ckpt\nsteps: 5\nrollout: {group_size: 4}\n")
    (tmp_path / "run.toml").write_text('base = "base.yaml"\nsteps = 7\n[loss]\nclip_high = 0.3\n')
    cfg = load_config(tmp_path / "run.toml", ["rollout.temperature=0.5"])
    assert isinstance(cfg, RLConfig)
    assert (cfg.steps, cfg.rollout.group_size, cfg.rollout.temperature, cfg.loss.clip_high) == (7, 4, 0.5, 0.3)
    assert cfg.reward_specs()[0].config == {"task": "addition"}


def test_shipped_configs_load():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "configs" / "rl").glob("*.yaml")):
        assert load_config(path).init_from, path


def test_cli_registers_rl_verb():
    from redraft.cli import build_parser

    args = build_parser().parse_args(["rl", "x.yaml", "--resume", "--set", "steps=3"])
    assert args.resume and args.overrides == ["steps=3"] and callable(args.func)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["fsdp"])  # DDP shares the code path but for the wrapping
def test_two_processes_give_the_single_process_gradient(tiny_checkpoint, tmp_path, parallel):
    import shutil
    import subprocess
    import sys

    import yaml

    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not available")
    raw = {**raw_config(tiny_checkpoint, tmp_path / "one"), "steps": 1, "minibatch_size": 0, "eval_size": 0,
           "epochs": 1, "parallel": parallel}
    (tmp_path / "rl.yaml").write_text(yaml.safe_dump(raw))
    norms = []
    for name, launcher in (("one", [sys.executable, "-m", "redraft.cli"]),
                           ("two", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                    "-m", "redraft.cli"])):
        out = tmp_path / name
        subprocess.run(launcher + ["rl", str(tmp_path / "rl.yaml"), "--set", f"output_dir={out}"], check=True,
                       capture_output=True, timeout=300)
        last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        norms.append(last["grad_norm"])
    assert norms[0] == pytest.approx(norms[1], rel=1e-5)


@pytest.mark.slow
def test_ebpo_with_lora_trains_the_adapter_only(tiny_checkpoint, tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    raw = {**raw_config(tiny_checkpoint, tmp_path / "lora"), "steps": 1, "epochs": 1, "eval_size": 0,
           "lora": {"r": 4, "alpha": 8}}
    recipe = EBPORecipe(config_from_dict(raw))
    recipe.run()
    optimised = {id(p) for group in recipe.optimizer.param_groups for p in group["params"]}
    names = [n for n, p in recipe.model.named_parameters() if id(p) in optimised]
    assert names and all(".lora_" in n for n in names)
    final = tmp_path / "lora" / "final"
    assert (final / "adapter_config.json").exists() and not (final / "model.safetensors").exists()
    tensors = load_file(str(final / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in tensors.items())  # B moved off zero
    trained = {n.replace(".base_layer", ""): p for n, p in recipe.model.named_parameters() if ".lora_" not in n}
    base = dict(load_model(tiny_checkpoint, dtype=torch.float32).named_parameters())
    assert trained.keys() == base.keys() and all(torch.equal(trained[n], base[n]) for n in base)  # base frozen
