"""benchmarks/gpu_suite.py runs end to end on CPU at the tiny shape (the GPU run is the same code)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _suite():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("gpu_suite", BENCH / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_suite_runs_on_cpu_at_the_tiny_shape(tmp_path):
    suite = _suite()
    rc = suite.main(["--shape", "tiny", "--device", "cpu", "--batch", "1,2", "--prompt", "32", "--steps", "3",
                     "--warmup", "1", "--forward-iters", "1", "--out", str(tmp_path)])
    assert rc == 0
    result = json.loads((tmp_path / "gpu_suite_cpu_tiny.json").read_text())
    assert [r["batch"] for r in result["rows"]] == [1, 2]
    for r in result["rows"]:
        assert r["forward_ms"] > 0 and r["step_ms_median"] > 0 and r["step_ms_p90"] >= r["step_ms_median"]
        assert r["steps"] == 3 and r["rows_min"] == r["batch"]  # every request still decoding while timed
        assert r["gpu_ms"] is None and r["peak_memory_gib"] is None  # CPU: no device split, no device memory
        s, q = r["projected_tok_s"]["S"], r["projected_tok_s"]["Q"]
        assert abs(s - r["batch"] * 5.34 / (r["step_ms_median"] / 1000)) < 1e-6 * s and q < s
    assert "skipped" in result["fp8"] or "rows" in result["fp8"]
    table = (tmp_path / "gpu_suite_cpu_tiny.md").read_text()
    assert "| batch | forward ms |" in table and "projection" in table


def test_gpu_suite_refuses_cuda_without_a_device(monkeypatch):
    import torch

    suite = _suite()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device"):
        suite.main(["--device", "cuda"])


@pytest.mark.slow
def test_gpu_suite_exactness_section_on_cpu(parity_dir, monkeypatch):
    """(g) on the device the suite runs on (CPU here): engine tokens == no-cache tokens == official, per case."""
    suite = _suite()
    monkeypatch.setattr(suite, "PARITY", parity_dir)
    result = suite.exactness("cpu")
    assert len(result["cases"]) == 13 and result["all_equal"] and result["all_official"]
