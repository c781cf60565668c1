"""Training data: CPT on source files, SFT on chat JSONL and the synthetic tasks; tokenised, packed, recorded.

- **CPT** (no prompt): each document is `encode(text) + [EOS]`, cut into chunks of at most `seq_len` tokens; every
  chunk is its own segment (positions from 0, blocks from 0) and every token is trained.
- **SFT**: the prompt is the chat template of all messages but the last, with the generation prompt; the response is
  the last message's content, followed by EOS padding up to a multiple of `pad_multiple` (at least one EOS). Prompt
  tokens are neither noised nor trained; the response and all its EOS are (the model learns to stop).
- **Packing**: segments are shuffled and packed side by side into rows of `seq_len` with a document-aware mask
  (`masks.packed_dual_stream_mask`), so segments never attend to each other.
- The standard-library corpus is the sorted list of `*.py` files under `sysconfig.get_paths()["stdlib"]`, without
  `site-packages` and test folders; `recipe.json` records every file with its sha256 and the Python version.
- **Held out** (eval loss only, never trained on): a stable `cpt_eval_fraction` of the CPT files by a hash of their
  name, plus every stdlib module the code tasks evaluate on (`code_syntax.stdlib_split`), so eval functions are never
  seen as source text. The BPE tokenizer is trained on the train split only (train files + train task examples);
  `recipe.json` lists the held-out files and what the tokenizer was trained on.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import random
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redraft.model.tokenizer import Tokenizer

from .packing import Segment

EXCLUDED_DIRS = ("site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__")


@dataclass
class DataConfig:
    """Where the data comes from and how it is cut.

    stdlib: use the Python standard library's source as the CPT corpus. text_files: extra CPT files (globs).
    tasks: synthetic task name -> number of train-split examples. task_configs: task name -> its config fields
    (e.g. {"sorting": {"max_value": 20}}; default: the task's defaults). task_eval_examples: eval-split examples per
    task.
    jsonl: chat JSONL files ({"messages": [...]}, the last message is the target). prepared: a folder written by
    `prepare_data` (tokenizer + rows + recipe) to use instead of building from sources.
    tokenizer_split_digits: train the BPE with one token per decimal digit (see `train_bpe_tokenizer`).
    """

    seq_len: int = 256
    pad_multiple: int = 32
    stdlib: bool = True
    stdlib_max_file_bytes: int = 200_000
    text_files: list[str] = field(default_factory=list)
    tasks: dict[str, int] = field(default_factory=dict)
    task_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_eval_examples: int = 100
    jsonl: list[str] = field(default_factory=list)
    cpt_eval_fraction: float = 0.02
    tokenizer_vocab_size: int = 4096
    tokenizer_split_digits: bool = False
    tokenizer_path: str | None = None
    seed: int = 0
    prepared: str | None = None

    def __post_init__(self) -> None:
        for name in ("seq_len", "pad_multiple", "stdlib_max_file_bytes"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"data.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.seq_len % self.pad_multiple:
            raise ValueError(f"data.seq_len ({self.seq_len}) must be a multiple of data.pad_multiple "
                             f"({self.pad_multiple})")
        if not isinstance(self.tokenizer_split_digits, bool):
            raise ValueError(f"data.tokenizer_split_digits must be true or false, got {self.tokenizer_split_digits!r}")
        if not 0.0 <= self.cpt_eval_fraction < 1.0:
            raise ValueError(f"data.cpt_eval_fraction must be in [0, 1), got {self.cpt_eval_fraction!r}")
        for name, n in self.tasks.items():
            if not isinstance(n, int) or n < 0:
                raise ValueError(f"data.tasks.{name} must be a non-negative int, got {n!r}")
        for name, conf in self.task_configs.items():
            if name not in self.tasks:
                raise ValueError(f"data.task_configs.{name}: {name!r} is not in data.tasks ({sorted(self.tasks)})")
            if not isinstance(conf, dict):
                raise ValueError(f"data.task_configs.{name} must be a mapping of task fields, got {conf!r}")
            from redraft.evaluation.tasks import get_task

            try:
                get_task(name, **conf)
            except (TypeError, ValueError) as e:
                raise ValueError(f"data.task_configs.{name}: {e}") from None


# ------------------------------------------------------------------------------------------------ corpora
def stdlib_files(max_file_bytes: int | None = None) -> tuple[Path, list[Path]]:
    """(stdlib root, sorted .py files under it) without site-packages and test folders."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in EXCLUDED_DIRS for part in rel.parts[:-1]):
            continue
        if max_file_bytes is not None and path.stat().st_size > max_file_bytes:
            continue
        files.append(path)
    return root, files


def file_record(path: Path, root: Path | None = None) -> dict[str, Any]:
    data = path.read_bytes()
    name = str(path.relative_to(root)) if root else str(path)
    return {"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def is_eval_name(name: str, fraction: float) -> bool:
    """Stable held-out choice by a hash of the name (same on every machine)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < fraction


def is_code_eval_module(rel_path: Path) -> bool:
    """True for a stdlib file (path relative to the stdlib root) whose module the code tasks evaluate on."""
    from redraft.evaluation.tasks.code_syntax import stdlib_split

    return stdlib_split(".".join(rel_path.with_suffix("").parts)) == "eval"


def chunk_document(ids: Sequence[int], seq_len: int) -> Iterator[Segment]:
    """Cut a CPT document into segments of at most `seq_len` tokens, all trained."""
    for start in range(0, len(ids), seq_len):
        piece = list(ids[start:start + seq_len])
        yield Segment(piece, [True] * len(piece))


def cpt_segments(texts: Iterable[str], tokenizer: Tokenizer, seq_len: int) -> Iterator[Segment]:
    for text in texts:
        ids = tokenizer.encode(text) + [tokenizer.eos_id]
        yield from chunk_document(ids, seq_len)


def sft_segment(messages: Sequence[dict[str, str]], tokenizer: Tokenizer, pad_multiple: int) -> Segment:
    """Prompt = chat template of messages[:-1] with the generation prompt; response = messages[-1] content + EOS
    padding to a multiple of `pad_multiple` (at least one EOS)."""
    if len(messages) < 2:
        raise ValueError(f"SFT example needs at least 2 messages (prompt and target), got {len(messages)}")
    if messages[-1].get("role") != "assistant":
        raise ValueError(f"SFT example: the last message must have role 'assistant', got {messages[-1].get('role')!r}")
    prompt = tokenizer.apply_chat_template(list(messages[:-1]), add_generation_prompt=True)
    response = tokenizer.encode(messages[-1]["content"])
    total = math.ceil((len(prompt) + len(response) + 1) / pad_multiple) * pad_multiple
    response += [tokenizer.eos_id] * (total - len(prompt) - len(response))
    return Segment(prompt + response, [False] * len(prompt) + [True] * len(response))


def read_chat_jsonl(path: str | Path) -> Iterator[list[dict[str, str]]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None
            messages = record.get("messages") if isinstance(record, dict) else None
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise ValueError(f"{path}:{lineno}: expected an object with a 'messages' list")
            yield messages


def task_messages(name: str, n: int, seed: int, split: str,
                  config: dict[str, Any] | None = None) -> list[list[dict[str, str]]]:
    """Chat examples (prompt messages + the reference answer as the assistant turn) of a synthetic task."""
    from redraft.evaluation.tasks import get_task

    return [list(ex.messages) + [{"role": "assistant", "content": ex.answer}]
            for ex in get_task(name, **(config or {})).examples(n, seed, split=split)]


# ------------------------------------------------------------------------------------------------ building
@dataclass
class Corpus:
    """Segments of both splits plus the recipe that records where they came from."""

    train: list[Segment]
    eval: list[Segment]
    recipe: dict[str, Any]


def tokenizer_corpus(cfg: DataConfig, texts: Sequence[str]) -> Iterator[str]:
    """What the BPE is trained on: `texts` (the caller passes the train files only) and train-split task examples."""
    yield from texts
    for name in sorted(cfg.tasks):
        for messages in task_messages(name, min(cfg.tasks[name], 2000), cfg.seed, "train",
                                      cfg.task_configs.get(name)):
            yield "\n".join(m["content"] for m in messages)


def build_corpus(cfg: DataConfig, tokenizer: Tokenizer | None = None) -> tuple[Corpus, Tokenizer]:
    """Read every source, train (or load) the tokenizer, tokenise into segments of both splits."""
    records: list[dict[str, Any]] = []
    texts: dict[str, str] = {}
    held_names: set[str] = set()
    if cfg.stdlib:
        root, files = stdlib_files(cfg.stdlib_max_file_bytes)
        for path in files:
            rec = file_record(path, root)
            records.append({**rec, "source": "stdlib"})
            texts[f"stdlib/{rec['path']}"] = path.read_text(encoding="utf-8", errors="replace")
            if is_code_eval_module(path.relative_to(root)):
                held_names.add(f"stdlib/{rec['path']}")
    for pattern in cfg.text_files:
        matches = sorted(Path().glob(pattern)) if not Path(pattern).is_absolute() else sorted(
            Path("/").glob(pattern.lstrip("/")))
        if not matches:
            raise ValueError(f"data.text_files: pattern {pattern!r} matches no file")
        for path in matches:
            records.append({**file_record(path), "source": "text_files"})
            texts[str(path)] = path.read_text(encoding="utf-8", errors="replace")
    held_names.update(name for name in texts if is_eval_name(name, cfg.cpt_eval_fraction))
    train_texts = [text for name, text in texts.items() if name not in held_names]
    if tokenizer is not None:
        tokenizer_source = "given"
    elif cfg.tokenizer_path:
        from redraft.model.tokenizer import load_tokenizer

        tokenizer, tokenizer_source = load_tokenizer(cfg.tokenizer_path), f"loaded from {cfg.tokenizer_path}"
    else:
        from redraft.model.tokenizer import train_bpe_tokenizer

        tokenizer = train_bpe_tokenizer(tokenizer_corpus(cfg, train_texts), cfg.tokenizer_vocab_size,
                                        split_digits=cfg.tokenizer_split_digits)
        tokenizer_source = "trained"
    train: list[Segment] = []
    held: list[Segment] = []
    for name, text in texts.items():
        target = held if name in held_names else train
        target.extend(cpt_segments([text], tokenizer, cfg.seq_len))
    dropped = 0
    sft: dict[str, dict[str, int]] = {}
    sources: list[tuple[str, str, list[list[dict[str, str]]]]] = []
    for name in sorted(cfg.tasks):
        conf = cfg.task_configs.get(name)
        sources.append((f"task/{name}", "train", task_messages(name, cfg.tasks[name], cfg.seed, "train", conf)))
        if cfg.task_eval_examples:
            sources.append((f"task/{name}", "eval", task_messages(name, cfg.task_eval_examples, cfg.seed, "eval",
                                                                  conf)))
    for path in cfg.jsonl:
        sources.append((f"jsonl/{path}", "train", list(read_chat_jsonl(path))))
    for source, split, examples in sources:
        kept = 0
        for messages in examples:
            seg = sft_segment(messages, tokenizer, cfg.pad_multiple)
            if len(seg.ids) > cfg.seq_len:
                dropped += 1
                continue
            (train if split == "train" else held).append(seg)
            kept += 1
        sft.setdefault(source, {})[split] = kept
    recipe = {
        "python": platform.python_version(),
        "stdlib_root": sysconfig.get_paths()["stdlib"] if cfg.stdlib else None,
        "excluded_dirs": list(EXCLUDED_DIRS),
        "files": records,
        "files_sha256": hashlib.sha256("".join(r["sha256"] for r in records).encode()).hexdigest(),
        "held_out_files": sorted(held_names),
        "tokenizer": {"source": tokenizer_source, "split_digits": cfg.tokenizer_split_digits,
                      "trained_on": {"files": len(train_texts), "held_out_files_excluded": len(held_names),
                                     "task_examples_per_task": {name: min(cfg.tasks[name], 2000) for name in
                                                                sorted(cfg.tasks)}, "task_split": "train"}
                      if tokenizer_source == "trained" else None},
        "sft_examples": sft,
        "sft_dropped_longer_than_seq_len": dropped,
        "config": asdict(cfg),
        "vocab_size": tokenizer.vocab_size,
    }
    return Corpus(train=train, eval=held, recipe=recipe), tokenizer


def shuffled(segments: Sequence[Segment], seed: int) -> list[Segment]:
    order = list(range(len(segments)))
    random.Random(seed).shuffle(order)
    return [segments[i] for i in order]
