"""scripts/train_v2_both.sh end to end on two tiny recipes: sequential mode trains the main model, then its twin,
packs both, and a second call leaves finished runs alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from redraft.model import load_model

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

RECIPE = {
    "model": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 256, "first_k_dense_replace": 1,
              "num_experts": 4, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
              "moe_intermediate_size": 16, "num_shared_experts": 1},
    "data": {"seq_len": 64, "pad_multiple": 8, "stdlib": False, "tasks": {"reverse": 48, "addition": 48},
             "task_eval_examples": 8, "tokenizer_vocab_size": 300},
    "noise": {"mtf_turns": 2, "mtf_ratio": 0.5, "t2t_ratio": 0.5},
    "steps": 3, "batch_size": 4, "micro_batch_size": 4, "block_length": 8, "log_every": 1, "eval_every": 100,
    "save_every": 2, "device": "cpu", "autocast": "none",
}


def script(tmp_path: Path, main: Path, twin: Path, data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEQUENTIAL": "1", "MAIN_CONFIG": str(main), "TWIN_CONFIG": str(twin), "DATA": str(data),
           "OUT": str(tmp_path / "logs"), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", "scripts/train_v2_both.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_sequential_runs_both_then_skips_finished_runs(tmp_path):
    main, twin, data = tmp_path / "main.yaml", tmp_path / "twin.yaml", tmp_path / "data"
    main.write_text(yaml.safe_dump({**RECIPE, "output_dir": str(tmp_path / "main")}))
    twin.write_text(yaml.safe_dump({**RECIPE, "output_dir": str(tmp_path / "twin"),
                                    "noise": {"mtf_turns": 1, "t2t_ratio": 0.0, "keep_weight": 0.0}}))
    prep = subprocess.run([sys.executable, "-m", "redraft.training", str(main), "--prepare-only", "--set",
                           f"data.prepared={data}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr[-2000:]

    first = script(tmp_path, main, twin, data)
    assert first.returncode == 0 and "both finished" in first.stdout, first.stdout[-2000:] + first.stderr[-2000:]
    for name in ("main", "twin"):
        assert load_model(tmp_path / name / "final").config.hidden_size == 32
    assert list((tmp_path / "logs").glob("part_*"))
    main_log = (tmp_path / "logs" / "main.log").read_text()
    assert "step=3" in main_log

    again = script(tmp_path, main, twin, data)  # both finished: nothing is trained again
    assert again.returncode == 0 and "both finished" in again.stdout
    assert (tmp_path / "logs" / "main.log").read_text() == main_log
