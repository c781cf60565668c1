"""CLI skeleton: the verbs are listed and `inspect` describes a checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

from redraft.cli import main


def test_help_lists_verbs(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "inspect" in out


def test_inspect_json(parity_dir, capsys):
    assert main(["inspect", str(parity_dir / "model"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model_type"] == "llada2_moe"
    assert info["parameters"] == 214576 and info["bytes"] == 214576 * 4
    assert info["dtypes"] == ["F32"] and info["moe_layers"] == 2 and info["experts"] == 8


def test_inspect_bad_path_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "redraft.cli", "inspect", str(tmp_path / "nope")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "no such directory" in proc.stderr and "Traceback" not in proc.stderr
