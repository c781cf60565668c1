"""Issue 14, CLI: --help answers at once without importing torch and shows defaults; Ctrl-C exits 130 with one
line; non-UTF-8 arguments and prompt files are a clear error (exit 2); `generate -f FILE` and `-f -` (stdin)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redraft.cli import main

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cli(*args: str | bytes, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "redraft.cli", *args], capture_output=True, env=ENV, **kwargs)


def test_building_the_parser_imports_no_torch():
    code = ("import sys, redraft.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'fastapi', 'numpy', 'tokenizers', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("args", [["--help"], ["generate", "--help"], ["serve", "--help"]])
def test_help_is_fast(args):
    start = time.perf_counter()
    proc = _cli(*args)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0 and b"usage: redraft" in proc.stdout
    assert elapsed < 2.0, f"redraft {' '.join(args)} took {elapsed:.2f} s"  # ~0.1 s on an idle machine


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "TCP port (default: 8000)" in out and "(default: 32)" in out and "(default: None)" not in out
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.7 (quality), 0.5 (speedy))" in out


def test_non_utf8_argument_is_a_clear_error():
    proc = _cli("generate", b"sort: \xff\xfe 1 2")
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert "not valid UTF-8" in err and r"\xff\xfe" in err and "Traceback" not in err


def test_non_utf8_prompt_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "prompt.txt"
    bad.write_bytes(b"sort: \xff 1 2\n")
    assert main(["generate", "-f", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not valid UTF-8" in err and "0xff at offset 6" in err
    assert main(["generate", "-f", str(tmp_path / "missing.txt")]) == 2
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert main(["generate", "-f", str(empty)]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["generate", "a", "b", "-f", str(bad)]) == 2
    assert main(["generate"]) == 2
    assert "PROMPT argument or -f FILE" in capsys.readouterr().err


def test_generate_prompt_from_file_and_stdin(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    prompt = "def add(a, b):\n    return"
    flags = ["--max-new-tokens", "8", "--block-length", "4", "--max-post-steps", "2"]
    assert main(["generate", str(tiny_checkpoint), prompt, *flags]) == 0
    want = capsys.readouterr().out
    path = tmp_path / "prompt.txt"
    path.write_text(prompt + "\n")  # the final newline is dropped
    assert main(["generate", str(tiny_checkpoint), "-f", str(path), *flags]) == 0
    assert capsys.readouterr().out == want
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(prompt.encode())))
    assert main(["generate", str(tiny_checkpoint), "-f", "-", *flags]) == 0
    assert capsys.readouterr().out == want


@pytest.mark.parametrize("delay", [0.3, 0.4, 0.5, 2.0])  # 0.3-0.5 s: inside `import torch` (hung or aborted before it was shielded)
def test_ctrl_c_exits_130_with_one_line(tiny_checkpoint, delay):
    """SIGINT while importing torch and loading (0.5 s) or while decoding (2 s): exit 130, one line on stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "redraft.cli", "generate", str(tiny_checkpoint), "def f(",
                             "--max-new-tokens", "3000", "--block-length", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            # a shell's background job (`cmd &`) ignores SIGINT, and children inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert err.decode().splitlines() == ["redraft: interrupted"]
