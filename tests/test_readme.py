"""The README's examples do what it says (issue 14): the Python API example prints the output shown under it, and
`redraft results` runs without arguments on the bundled model and its twin."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from redraft.cli import build_parser
from redraft.evaluation.commands import resolve_model, resolve_twin

REPO = Path(__file__).resolve().parents[1]


def _section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    return text[text.index(f"## {title}\n"):].split("\n## ", 1)[0]


def test_python_api_example_prints_what_the_readme_shows():
    section = _section("Python API")
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"it prints:\n\n```text\n(.*?)```", section, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout == shown


def test_results_defaults_to_the_bundled_model_and_its_twin():
    args = build_parser().parse_args(["results"])
    assert args.model is None and args.twin is None
    assert (Path(resolve_model(None)) / "config.json").exists()
    assert (Path(resolve_twin(None)) / "config.json").exists()
    assert "| `redraft results [MODEL TWIN]` |" in _section("Command line")
