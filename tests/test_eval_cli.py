"""End-to-end `redraft eval` / `redraft bench` on a tiny random checkpoint through the real decoding engine."""

from __future__ import annotations

import json

import pytest

from redraft.cli import main

FAST = ["--set", "max_new_tokens=8", "--set", "block_length=8", "--set", "max_post_steps=1"]


@pytest.fixture(scope="module")
def engine_available():
    try:
        from redraft.decoding import generate  # noqa: F401
    except ImportError as e:
        pytest.skip(f"decoding engine not available: {e}")


def test_eval_cli_end_to_end(engine_available, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "ev"
    rc = main(["eval", str(tiny_checkpoint), "--tasks", "addition,sorting", "--mode", "speedy", "--n", "2",
               "--seeds", "0,1", "--out", str(out), *FAST])
    assert rc == 0
    js = json.loads((out / "eval.json").read_text())
    assert js["config"]["tau_mask"] == 0.5 and js["config"]["block_length"] == 8 and js["seeds"] == [0, 1]
    assert set(js["summary"]) == {"addition", "sorting"} and len(js["runs"]) == 4
    for run in js["runs"]:
        assert run["n"] == 2 and run["forwards"] > 0 and len(run["samples"]) == 2
    assert "| addition |" in (out / "eval.md").read_text()
    assert "| sorting |" in capsys.readouterr().out


def test_eval_cli_bad_input_exit_code(engine_available, tiny_checkpoint, tmp_path, capsys):
    assert main(["eval", str(tiny_checkpoint), "--set", "tau_mask=3", "--out", str(tmp_path)]) == 2
    assert "tau_mask" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_cli_end_to_end(engine_available, tiny_checkpoint, tmp_path):
    out = tmp_path / "bench"
    rc = main(["bench", str(tiny_checkpoint), "--tasks", "addition,reverse", "--n", "2", "--tau-mask", "0.5,0.9",
               "--tau-edit", "0.5", "--out", str(out), *FAST])
    assert rc == 0
    js = json.loads((out / "bench.json").read_text())
    names = {p["name"] for p in js["points"]}
    assert {"quality", "speedy", "no-edit", "quality+mbe1", "m0.5/e0.5", "m0.9/off"} <= names
    assert js["pareto"] and all(p["tpf"] > 0 for p in js["points"])
    md = (out / "bench.md").read_text()
    assert "## tau_mask x tau_edit sweep" in md and "![speed/score Pareto plot](pareto.png)" in md
    from matplotlib.image import imread

    assert imread(out / "pareto.png").shape[1] > 600
