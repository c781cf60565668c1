"""Trainer: loss decreases, exact resume, checkpoints load with `load_model` and decode."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from redraft.model import load_model
from redraft.model.testing import TINY_CONFIG
from redraft.training import Trainer, load_config
from redraft.training.config import config_from_dict

MODEL = {**TINY_CONFIG, "max_position_embeddings": 256}


def tiny_config(out: Path, **over) -> dict:
    raw = {
        "output_dir": str(out),
        "model": {k: v for k, v in MODEL.items() if k != "torch_dtype"},
        "data": {"seq_len": 64, "pad_multiple": 8, "stdlib": False, "tasks": {"reverse": 96, "addition": 96},
                 "task_eval_examples": 8, "tokenizer_vocab_size": 300},
        "noise": {"mtf_turns": 2, "mtf_ratio": 0.5, "t2t_ratio": 0.5},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "min_lr_ratio": 0.5},
        "steps": 24, "batch_size": 8, "micro_batch_size": 4, "block_length": 8,
        "log_every": 2, "eval_every": 12, "eval_batches": 1, "save_every": 12, "device": "cpu", "autocast": "none",
        "expert_bias_update_rate": 0.001,
    }
    for key, value in over.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


def losses(out: Path) -> list[tuple[int, float]]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in lines if "loss" in r]


def test_loss_decreases_on_tiny_synthetic_set(tmp_path):
    cfg = config_from_dict(tiny_config(tmp_path, steps=30, save_every=100, eval_every=100))
    Trainer(cfg).run()
    curve = [loss for _, loss in losses(tmp_path)]
    assert curve[-1] < 0.75 * curve[0], curve
    final = load_model(tmp_path / "final")
    assert final.config.vocab_size == TINY_CONFIG.get("vocab_size", final.config.vocab_size)


def test_exact_resume_matches_uninterrupted_run(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    Trainer(config_from_dict(tiny_config(full))).run()
    data = {"prepared": str(full / "data")}
    Trainer(config_from_dict(tiny_config(cut, data=data))).run(stop_after=14)  # "killed" after step 14
    assert [s for s, _ in losses(cut)][-1] == 14
    Trainer(config_from_dict(tiny_config(cut, data=data)), resume=True).run()  # resumes from step 12
    assert losses(cut) == losses(full)
    a, b = load_model(full / "final"), load_model(cut / "final")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("how", ["max_time_s", "SIGTERM"])
def test_early_stop_saves_a_checkpoint_and_resume_matches(tmp_path, monkeypatch, how):
    """A run stopped by max_time_s or by SIGTERM (a scheduler's preemption, `kill`) leaves a checkpoint at the step it
    stopped, and --resume finishes the same curve (how scripts/train_v2_both.sh cuts a long run into pieces)."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    over = dict(steps=4, save_every=100, eval_every=100, log_every=1)
    Trainer(config_from_dict(tiny_config(full, **over))).run()
    data = {"prepared": str(full / "data")}
    stopped_at = 1
    if how == "SIGTERM":
        stopped_at = 2
        step = Trainer.train_step

        def signalled(self, i):
            out = step(self, i)
            if i == stopped_at - 1:
                os.kill(os.getpid(), signal.SIGTERM)
            return out

        monkeypatch.setattr(Trainer, "train_step", signalled)
    else:
        over["max_time_s"] = 0.0
    summary = Trainer(config_from_dict(tiny_config(cut, data=data, **over))).run()
    monkeypatch.undo()
    from redraft.training.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(cut)
    assert summary["steps"] == stopped_at and ckpt is not None
    assert json.loads((ckpt / "trainer.json").read_text())["step"] == stopped_at
    records = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert records[-1] == {"step": stopped_at, "stopped": how}
    Trainer(config_from_dict(tiny_config(cut, data=data, **{k: v for k, v in over.items() if k != "max_time_s"})),
            resume=True).run()
    assert losses(cut) == losses(full)


def test_checkpoint_loads_and_decodes(tmp_path):
    cfg = config_from_dict(tiny_config(tmp_path, steps=12, save_every=6, eval_every=100))
    Trainer(cfg).run()
    ckpt = sorted((tmp_path / "checkpoints").glob("step_*"))[-1]
    assert (ckpt / "COMPLETE").exists()
    model = load_model(ckpt)
    decoding = pytest.importorskip("redraft.decoding")
    from redraft.model.tokenizer import load_tokenizer

    tok = load_tokenizer(ckpt)
    results = decoding.generate(model, tok, ["12+34="], decoding.preset("quality", max_new_tokens=16))
    assert isinstance(results[0].text, str)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="micro_batch_size"):
        config_from_dict(tiny_config(tmp_path, batch_size=6, micro_batch_size=4))
    with pytest.raises(ValueError, match="noise.t2t_max_rate"):
        config_from_dict(tiny_config(tmp_path, noise={"t2t_max_rate": 1.5}))
    with pytest.raises(ValueError, match="bogus"):
        config_from_dict({**tiny_config(tmp_path), "bogus": 1})
    with pytest.raises(ValueError, match="data.seq_len"):
        config_from_dict(tiny_config(tmp_path, block_schedule=[[0, 6]]))


def test_repo_configs_load_and_twin_differs_only_in_the_editing_streams():
    root = Path(__file__).resolve().parents[1] / "configs"
    main, twin = load_config(root / "tiny.yaml"), load_config(root / "tiny-m2t-only.yaml")
    assert twin.noise.t2t_ratio == 0 and twin.noise.keep_weight == 0 and twin.noise.mtf_turns == 1
    assert main.noise.uses_t2t and main.noise.uses_mtf
    a, b = main.to_dict(), twin.to_dict()
    differ = {k for k in a if a[k] != b[k]}
    assert differ <= {"noise", "output_dir"}, differ


def test_task_configs_reach_the_task_and_bad_fields_are_named():
    import pytest

    from redraft.training.data import DataConfig, task_messages

    cfg = DataConfig(stdlib=False, tasks={"sorting": 4}, task_configs={"sorting": {"max_value": 20, "min_len": 9,
                                                                                     "max_len": 9}})
    msgs = task_messages("sorting", 4, 0, "train", cfg.task_configs["sorting"])
    assert all(len(m[-1]["content"].split()) == 9 for m in msgs)
    with pytest.raises(ValueError, match="data.task_configs.sorting: max_valu"):
        DataConfig(stdlib=False, tasks={"sorting": 4}, task_configs={"sorting": {"max_valu": 3}})
    with pytest.raises(ValueError, match="not in data.tasks"):
        DataConfig(stdlib=False, tasks={"sorting": 4}, task_configs={"reverse": {}})


def lora_config(out: Path, base: Path, **over) -> dict:
    raw = tiny_config(out, init_from=str(base), expert_bias_update_rate=0.0, steps=12, save_every=6, eval_every=6,
                      optim={"lr": 1e-2}, lora={"r": 4, "alpha": 8})
    raw["data"] = {**raw["data"], "tokenizer_path": str(base)}
    raw.pop("model")
    for key, value in over.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


def test_lora_run_trains_only_the_adapter_and_resumes_exactly(tiny_checkpoint, tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    from redraft.model.lora import load_adapter

    full, cut = tmp_path / "full", tmp_path / "cut"
    trainer = Trainer(config_from_dict(lora_config(full, tiny_checkpoint)))
    summary = trainer.run()
    optimised = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert summary["trainable_parameters"] == sum(p.numel() for p in optimised) < summary["parameters"] // 10
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    assert all(".lora_" in names[id(p)] for p in optimised)
    assert (full / "final" / "adapter_config.json").exists() and not (full / "final" / "model.safetensors").exists()
    curve = [loss for _, loss in losses(full)]
    assert curve[-1] < curve[0], curve
    # the adapter moved the model; the base stayed as it was
    base = load_model(tiny_checkpoint, dtype=torch.float32)
    ids = torch.arange(1, 33)[None]
    adapted = load_adapter(load_model(tiny_checkpoint, dtype=torch.float32), full / "final")
    assert (adapted(ids).logits - base(ids).logits).abs().max() > 1e-3

    data = {"prepared": str(full / "data")}
    Trainer(config_from_dict(lora_config(cut, tiny_checkpoint, data=data))).run(stop_after=8)
    Trainer(config_from_dict(lora_config(cut, tiny_checkpoint, data=data)), resume=True).run()  # from step 6
    assert losses(cut) == losses(full)
    a = load_file(str(full / "final" / "adapter_model.safetensors"))
    b = load_file(str(cut / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_config_errors_name_the_field(tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="init_from"):
        config_from_dict(tiny_config(tmp_path, expert_bias_update_rate=0.0, lora={"r": 4}))
    with pytest.raises(ValueError, match="expert_bias_update_rate"):
        config_from_dict({**lora_config(tmp_path, tiny_checkpoint), "expert_bias_update_rate": 0.01})
    with pytest.raises(ValueError, match="lora.rank"):
        config_from_dict(lora_config(tmp_path, tiny_checkpoint, lora={"rank": 4}))
    with pytest.raises(ValueError, match="lora.targets"):
        config_from_dict(lora_config(tmp_path, tiny_checkpoint, lora={"targets": ["experts"]}))
