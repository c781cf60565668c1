"""Training data: the tokenizer sees only the train split, code-task eval modules stay out of CPT, digit splitting,
and a `--prepare-only` smoke run of the v2 recipe (its task mix, scaled down)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import redraft.training.data as data_mod
from redraft.evaluation.tasks import get_task
from redraft.training.data import DataConfig, build_corpus, is_code_eval_module, is_eval_name
from redraft.training.prepare import load_prepared

ROOT = Path(__file__).resolve().parents[1]


def _held_and_kept_names(tmp_path: Path, fraction: float) -> tuple[Path, Path]:
    """Two file paths under tmp_path: one held out at `fraction`, one kept for training."""
    held = kept = None
    for i in range(200):
        p = tmp_path / f"doc{i}.txt"
        if is_eval_name(str(p), fraction):
            held = held or p
        else:
            kept = kept or p
        if held and kept:
            return held, kept
    raise AssertionError("no held-out name found")


def test_tokenizer_is_trained_on_the_train_split_only(tmp_path):
    held, kept = _held_and_kept_names(tmp_path, 0.5)
    held.write_text("zqxjvw " * 400 + "the end\n")  # a word only the held-out file contains, very often
    kept.write_text("mbrgtk " * 400 + "the end\n")  # its twin in a train file
    cfg = DataConfig(stdlib=False, text_files=[str(held), str(kept)], cpt_eval_fraction=0.5,
                     tokenizer_vocab_size=320, seq_len=64, pad_multiple=8)
    corpus, tok = build_corpus(cfg)
    assert len(tok.encode(" mbrgtk")) == 1  # merged: the tokenizer saw the train file
    assert len(tok.encode(" zqxjvw")) > 3  # not merged: it never saw the held-out file
    assert corpus.recipe["held_out_files"] == [str(held)]
    trained_on = corpus.recipe["tokenizer"]["trained_on"]
    assert trained_on["files"] == 1 and trained_on["held_out_files_excluded"] == 1
    assert trained_on["task_split"] == "train"
    assert corpus.eval and corpus.train


def test_code_task_eval_modules_are_held_out_of_cpt(monkeypatch):
    """Every module code_syntax evaluates on is held out of the CPT corpus (never trained on as text)."""
    task = get_task("code_syntax")
    root = Path(task.stdlib)
    eval_modules = {e.meta["module"] for e in task.pool("eval")}
    train_modules = {e.meta["module"] for e in task.pool("train")}
    assert eval_modules and train_modules
    to_path = {".".join(p.relative_to(root).with_suffix("").parts): p for p in root.rglob("*.py")}
    assert all(is_code_eval_module(to_path[m].relative_to(root)) for m in eval_modules)
    assert not any(is_code_eval_module(to_path[m].relative_to(root)) for m in train_modules)
    # build a corpus over 3 eval and 3 train modules only (fast): the eval ones land in the held-out split
    files = sorted(to_path[m] for m in sorted(eval_modules)[:3] + sorted(train_modules)[:3])
    monkeypatch.setattr(data_mod, "stdlib_files", lambda max_bytes=None: (root, files))
    corpus, _ = build_corpus(DataConfig(stdlib=True, cpt_eval_fraction=0.0, tokenizer_vocab_size=400,
                                        seq_len=256, pad_multiple=32))
    held = set(corpus.recipe["held_out_files"])
    assert {f"stdlib/{to_path[m].relative_to(root)}" for m in sorted(eval_modules)[:3]} == held
    assert corpus.recipe["tokenizer"]["trained_on"]["files"] == 3


def test_split_digits_reaches_the_tokenizer():
    base = dict(stdlib=False, tasks={"addition": 300}, task_eval_examples=0, tokenizer_vocab_size=400, seq_len=64,
                pad_multiple=8)
    _, plain = build_corpus(DataConfig(**base))
    _, digits = build_corpus(DataConfig(**base, tokenizer_split_digits=True))
    assert len(digits.encode("123456+7890=")) == 12
    assert len(plain.encode("123456+7890=")) < 12
    assert digits.decode(digits.encode(" 40821+377=41198")) == " 40821+377=41198"
    with pytest.raises(ValueError, match="tokenizer_split_digits"):
        DataConfig(tokenizer_split_digits="yes")


def test_v2_recipe_prepare_only_smoke(tmp_path):
    """The v2 config prepares end to end (`redraft train --prepare-only`) with its task mix scaled down and a small
    text file in place of the stdlib and the Python docs."""
    raw = yaml.safe_load((ROOT / "configs" / "v2.yaml").read_text())
    assert raw["data"]["tokenizer_split_digits"] is True
    mix = raw["data"]["tasks"]
    assert {"addition_long", "sorting_long", "reverse_long", "code_exec"} <= set(mix)
    text = tmp_path / "doc.txt"
    text.write_text("The quick brown fox. 12 + 30 = 42.\n" * 50)
    raw["data"].update(stdlib=False, text_files=[str(text)], tokenizer_vocab_size=512, task_eval_examples=4,
                       tasks={name: 20 for name in mix})
    raw["output_dir"] = str(tmp_path / "run")
    config = tmp_path / "v2-small.yaml"
    config.write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "redraft.cli", "train", str(config), "--prepare-only"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["train_rows"] > 0 and summary["eval_rows"] > 0
    prepared = load_prepared(tmp_path / "run" / "data")
    sft = prepared.recipe["sft_examples"]
    assert {f"task/{name}" for name in mix} == set(sft)
    assert all(v == {"train": 20, "eval": 4} for v in sft.values()), sft
    assert prepared.recipe["tokenizer"]["split_digits"] is True
    assert len(prepared.tokenizer.encode("2025")) == 4


def test_v2_configs_load_and_twin_differs_only_in_the_editing_streams():
    from redraft.training import load_config

    main, twin = load_config(ROOT / "configs" / "v2.yaml"), load_config(ROOT / "configs" / "v2-m2t-only.yaml")
    assert twin.noise.t2t_ratio == 0 and twin.noise.keep_weight == 0 and twin.noise.mtf_turns == 1
    assert main.noise.uses_t2t and main.noise.uses_mtf
    a, b = main.to_dict(), twin.to_dict()
    assert {k for k in a if a[k] != b[k]} <= {"noise", "output_dir"}
    v1 = load_config(ROOT / "configs" / "tiny.yaml")
    tokens = lambda c: c.steps * c.batch_size * c.data.seq_len  # noqa: E731
    assert tokens(main) >= 3 * tokens(v1)
