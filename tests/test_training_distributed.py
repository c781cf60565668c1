"""Two processes under torchrun on CPU (gloo) with FSDP2 (`fully_shard`; torch >= 2.6 supports it on CPU), and DDP:
the run completes, rank 0 writes a loadable model, the loss falls, and an exact resume from a sharded checkpoint
(per-rank optimiser shards in safetensors) reproduces the uninterrupted loss curve."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from redraft.model import load_model

pytestmark = pytest.mark.slow

CONFIG = {
    "model": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 256, "first_k_dense_replace": 1,
              "num_experts": 4, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
              "moe_intermediate_size": 16, "num_shared_experts": 1},
    "data": {"seq_len": 64, "pad_multiple": 8, "stdlib": False, "tasks": {"reverse": 96, "addition": 96},
             "task_eval_examples": 8, "tokenizer_vocab_size": 300},
    "noise": {"mtf_turns": 2, "mtf_ratio": 0.5, "t2t_ratio": 0.5},
    "optim": {"lr": 3.0e-3, "warmup_steps": 2, "min_lr_ratio": 0.5},
    "steps": 16, "batch_size": 8, "micro_batch_size": 2, "block_length": 8, "log_every": 2, "eval_every": 8,
    "eval_batches": 1, "save_every": 8, "device": "cpu", "autocast": "none",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(config: Path, *extra: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "redraft.training", str(config), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def curve(out: Path) -> list[tuple]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r.get("loss"), r.get("eval_loss")) for r in rows]


@pytest.mark.parametrize("parallel", ["fsdp", "ddp"])
def test_two_process_run_and_exact_resume(tmp_path, parallel):
    full, cut = tmp_path / "full", tmp_path / "cut"
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "output_dir": str(full), "parallel": parallel}))
    torchrun(config)

    summary = json.loads((full / "final" / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 16
    losses = [loss for _, loss, _ in curve(full) if loss is not None]
    assert losses[-1] < 0.9 * losses[0], losses
    model = load_model(full / "final")
    assert model.config.num_hidden_layers == 2
    ckpt = full / "checkpoints" / "step_00000008"
    assert json.loads((ckpt / "trainer.json").read_text())["world_size"] == 2
    assert {p.name for p in ckpt.glob("trainer_state_rank*")} == {
        f"trainer_state_rank{r}.{ext}" for r in (0, 1) for ext in ("json", "safetensors")}

    # "killed" right after the step-8 checkpoint: the same folder without the later work, resumed by both ranks
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "final")
    torchrun(config, "--resume", "--set", f"output_dir={cut}")
    assert curve(cut) == curve(full)
    a, b = load_model(full / "final").state_dict(), load_model(cut / "final").state_dict()
    for name, value in a.items():
        assert value.equal(b[name]), name
