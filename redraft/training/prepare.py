"""Prepared data folders: the tokenizer, packed train/eval rows and the recipe, written once and reused.

Preparing on one machine and training on another (a GPU box with another Python, hence another standard library)
keeps the exact corpus: the folder holds `tokenizer.json`, `tokenizer_config.json`, `train.npz`, `eval.npz` and
`recipe.json` (every source file with its sha256, task counts, row and token counts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redraft.model.tokenizer import Tokenizer

from .data import DataConfig, build_corpus, shuffled
from .packing import PackedRows, pack

FILES = ("tokenizer.json", "tokenizer_config.json", "train.npz", "eval.npz", "recipe.json")


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    train: PackedRows
    eval: PackedRows
    recipe: dict[str, Any]


def prepare_data(cfg: DataConfig, out_dir: str | Path, tokenizer: Tokenizer | None = None) -> PreparedData:
    """Build the corpus, pack both splits into rows of `cfg.seq_len` (segments shuffled with `cfg.seed`), save."""
    out = Path(out_dir)
    corpus, tokenizer = build_corpus(cfg, tokenizer)
    train = pack(shuffled(corpus.train, cfg.seed), cfg.seq_len, tokenizer.eos_id)
    held = pack(shuffled(corpus.eval, cfg.seed + 1), cfg.seq_len, tokenizer.eos_id)
    if len(train) == 0:
        raise ValueError("data: no training rows (enable data.stdlib, data.tasks, data.text_files or data.jsonl)")
    recipe = {**corpus.recipe, "train_rows": len(train), "eval_rows": len(held),
              "train_tokens_eligible": train.num_eligible(), "eval_tokens_eligible": held.num_eligible(),
              "train_fill": float((train.segment_ids >= 0).mean())}
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out)
    train.save(out / "train.npz")
    held.save(out / "eval.npz")
    (out / "recipe.json").write_text(json.dumps(recipe, indent=1))
    return PreparedData(tokenizer, train, held, recipe)


def load_prepared(path: str | Path) -> PreparedData:
    from redraft.model.tokenizer import load_tokenizer

    root = Path(path)
    missing = [f for f in FILES if not (root / f).exists()]
    if missing:
        raise ValueError(f"data.prepared: {root} lacks {missing} (write it with `redraft train CONFIG --prepare-only`)")
    return PreparedData(load_tokenizer(root), PackedRows.load(root / "train.npz"), PackedRows.load(root / "eval.npz"),
                        json.loads((root / "recipe.json").read_text()))
