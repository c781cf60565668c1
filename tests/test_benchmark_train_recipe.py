"""benchmarks/train_recipe_speed.py on a tiny recipe: every variant runs in its own process, the table and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from redraft.training import Trainer
from redraft.training.config import config_from_dict

from test_training_trainer import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def test_recipe_speed_runs_variants_side_by_side(tmp_path):
    raw = tiny_config(tmp_path / "run", steps=4, batch_size=4, micro_batch_size=4, log_every=1)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    Trainer(config_from_dict({**raw, "output_dir": str(tmp_path / "prep")})).load_data()  # prepares prep/data
    data = tmp_path / "prep" / "data"
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/train_recipe_speed.py"), "--config",
                           str(tmp_path / "tiny.yaml"), "--data", str(data), "--set", "batch_size=4",
                           "--set", "micro_batch_size=4", "--variant", "keep_host_memory=false", "--variant", "",
                           "--warmup", "1", "--steps", "1", "--repeat", "1", "--json", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["table"]] == ["keep_host_memory=false", "(recipe)"]
    assert all(r["tok_per_s"] > 0 for r in result["table"]) and result["table"][0]["ratio"] == 1.0
    # the allocator setting changes no number
    assert result["table"][0]["mean_loss"] == result["table"][1]["mean_loss"]
    assert "vs first" in proc.stdout


def test_recipe_speed_names_missing_data(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/train_recipe_speed.py"), "--data",
                           str(tmp_path / "nothing")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and "--prepare-only" in proc.stderr
