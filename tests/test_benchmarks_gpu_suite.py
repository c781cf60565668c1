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


TINY_ARGS = ["--shape", "tiny", "--device", "cpu", "--batch", "1,2", "--prompt", "32", "--steps", "2", "--warmup", "1",
             "--forward-iters", "1", "--no-fp8"]


def test_a_failing_batch_size_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    """One shot on a lent device: an out-of-memory at one batch size must not lose the other rows or the sections
    after it; the exit status says a section failed."""
    suite = _suite()
    real = suite.engine_steps

    def engine_steps(model, batch, *args, **kwargs):
        if batch == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(suite, "engine_steps", engine_steps)
    rc = suite.main(TINY_ARGS + ["--tests", "off", "--out", str(tmp_path)])
    assert rc == 2
    result = json.loads((tmp_path / "gpu_suite_cpu_tiny.json").read_text())
    first, second = result["rows"]
    assert first["batch"] == 1 and "out of memory (simulated)" in first["error"]
    assert "engine_steps" in first["traceback"]
    assert second["batch"] == 2 and second["step_ms_median"] > 0
    assert result["complete"] and result["failed"] == ["rows[batch 1]"]
    table = (tmp_path / "gpu_suite_cpu_tiny.md").read_text()
    assert "| 1 | FAILED: RuntimeError: CUDA out of memory (simulated) |" in table and "\n| 2 | " in table


def test_a_run_cut_short_leaves_what_it_measured(tmp_path, monkeypatch):
    """The JSON is rewritten after every batch size: a run killed at a device command's time limit keeps its rows."""
    suite = _suite()

    class Killed(BaseException):  # like the SIGKILL at a time limit: nothing in the suite catches it
        pass

    def fp8_section(*args, **kwargs):
        raise Killed()

    monkeypatch.setattr(suite, "fp8_section", fp8_section)
    with pytest.raises(Killed):
        suite.main([a for a in TINY_ARGS if a != "--no-fp8"] + ["--tests", "off", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "gpu_suite_cpu_tiny.json").read_text())
    assert result["complete"] is False and [r["batch"] for r in result["rows"]] == [1, 2]
    assert "fp8" not in result and "Partial result" in (tmp_path / "gpu_suite_cpu_tiny.md").read_text()


def test_sections_past_the_time_budget_are_skipped_and_said_so(tmp_path):
    suite = _suite()
    rc = suite.main(TINY_ARGS + ["--tests", "on", "--budget-s", "0.000001", "--out", str(tmp_path)])
    assert rc == 0
    result = json.loads((tmp_path / "gpu_suite_cpu_tiny.json").read_text())
    assert result["complete"] and "time budget" in result["rows"]["skipped"]
    assert "time budget" in result["gpu_tests"]["skipped"]
    with pytest.raises(ValueError, match="--budget-s must be positive"):
        suite.main(TINY_ARGS + ["--budget-s", "0", "--out", str(tmp_path)])


@pytest.mark.slow
def test_gpu_suite_runs_the_gpu_tests_in_a_subprocess(tmp_path):
    """(i) on CPU: every GPU test is collected and skips (no CUDA), and the counts come back from the JUnit XML."""
    suite = _suite()
    result = suite.gpu_tests(tmp_path / "t.xml", timeout_s=300)
    assert result["counts"]["tests"] >= 8 and result["counts"]["skipped"] == result["counts"]["tests"]
    assert "error" not in result


def test_gpu_check_script_runs_the_suite_into_out(tmp_path):
    """scripts/gpu_check.sh, the one device command, on CPU: the package report, the suite's files under $OUT, the
    log, and the suite's exit status as its own."""
    import os
    import subprocess

    repo = BENCH.parent
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    script = ["bash", str(repo / "scripts" / "gpu_check.sh")]
    proc = subprocess.run(script + TINY_ARGS + ["--batch", "1", "--tests", "off"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    log = (tmp_path / "gpu_check.log").read_text()
    assert "torch 2." in log and "safetensors" in log and "gpu_suite.py exit status 0" in log
    assert json.loads((tmp_path / "gpu_suite_cpu_tiny.json").read_text())["complete"]
    bad = subprocess.run(script + ["--shape", "nonesuch"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "exit status 2" in (tmp_path / "gpu_check.log").read_text()
