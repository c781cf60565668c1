"""benchmarks/engine_host_time.py, decode_host_memory.py and row_tiles.py run (tiny settings) and write their JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_engine_host_time_benchmark_runs(tmp_path):
    out = tmp_path / "host.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "engine_host_time.py"), "--batch", "2",
                           "--new", "16", "--repeat", "1", "--baseline", str(ROOT), "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert set(result["rows"]) == {"after_b2", "before_b2"}
    row = result["rows"]["after_b2"]
    assert row["steps"] > 0 and 0 < row["news_ms_mean"] < row["step_ms_mean"] and 0 < row["news_share"] < 1
    assert result["identical_tokens_before_after"] is True
    assert "identical tokens before/after: True" in done.stdout


def test_decode_host_memory_benchmark_runs(tmp_path):
    out = tmp_path / "dhm.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "decode_host_memory.py"), "--batch", "2",
                           "--threads", "1", "--new", "16", "--repeat", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    row = json.loads(out.read_text())["rows"]["b2_t1"]
    assert row["same_tokens"] is True and row["default_ms"] > 0 and row["keep_ms"] > 0
    assert "speed-up" in done.stdout


def test_row_tiles_benchmark_runs_and_checks_batch_invariance(tmp_path):
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import row_tiles

    out = tmp_path / "rt.json"
    threads = torch.get_num_threads()
    try:
        assert row_tiles.main(["--tiles", "32,64", "--batch", "1,2", "--threads", "1", "--new", "16", "--repeat", "1",
                               "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # the benchmark sets the thread count of this (the test) process
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"t1_b1", "t1_b2"}
    for row in rows.values():
        assert row["rows_equal_solo"] is True and set(row["step_ms"]) == {"32", "64"} and row["speedup"]["64"] > 0
