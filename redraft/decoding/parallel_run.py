"""Tensor-/expert-parallel versions of the decoding entry points: each spawns (or, under torchrun, joins) `tp` ranks
that load their shard of the checkpoint and run the ordinary single-process code on it (SPMD: same inputs, same
engine, same policy on every rank; the model's hooks do the communication). Rank 0's result comes back.

    run_conformance_parallel("../shared/parity", ParallelConfig(tp=2, ep=2))
    generate_parallel("path/to/ckpt", ["prompt"], DecodeConfig(), ParallelConfig(tp=2))
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from redraft.model.parallel import ParallelConfig
from redraft.model.parallel_launch import Rank, is_main_process, launch
from redraft.model.parallel_loading import load_sharded, read_config

from .config import DecodeConfig
from .results import GenerationResult


def _conformance_rank(rank: Rank, directory: str, config: ParallelConfig, kinds: tuple[str, ...] | None):
    from .conformance import model_dir, run_conformance

    root = Path(directory)
    spec = json.loads((root / "cases.json").read_text())
    model = load_sharded(model_dir(root, spec), config, rank.rank, rank.group, dtype=torch.float32,
                         device=rank.device)
    lines: list[str] = []
    run_conformance(root, emit=lines.append, model=model, kinds=kinds)
    return lines


def run_conformance_parallel(directory: str | Path, config: ParallelConfig, emit: Callable[[str], None] = print,
                             device: str = "cpu", oversubscribe: bool = False,
                             kinds: Sequence[str] | None = None) -> tuple[int, int]:
    """`run_conformance` on `config.tp` ranks (each holding its shard); emits rank 0's lines. Returns (passed,
    failed). kinds: only cases of these kinds (e.g. ("forward",)); None = all. The layout is checked against the
    checkpoint's config.json before any process starts."""
    from .conformance import model_dir

    root = Path(directory)
    spec_file = root / "cases.json"
    if not spec_file.exists():
        raise FileNotFoundError(f"no cases.json in {root}")
    _, cfg = read_config(model_dir(root, json.loads(spec_file.read_text())))
    config.check(cfg)
    lines = launch(_conformance_rank, config, (str(root), config, tuple(kinds) if kinds else None), device,
                   oversubscribe)
    if is_main_process():  # under torchrun every rank returns; rank 0 reports
        for line in lines:
            emit(line)
    passed, failed = (int(w) for w in lines[-1].replace(",", "").split()[::2])
    return passed, failed


def _generate_rank(rank: Rank, path: str, prompts, configs, config: ParallelConfig, dtype, use_tokenizer, kwargs):
    from redraft.model.tokenizer import load_tokenizer

    from .generate import generate

    model = load_sharded(path, config, rank.rank, rank.group, dtype=dtype, device=rank.device)
    tokenizer = load_tokenizer(path) if use_tokenizer else None
    return generate(model, tokenizer, prompts, configs, **kwargs)


def generate_parallel(path: str | Path, prompts: str | Sequence[str] | Sequence[Sequence[int]],
                      config: DecodeConfig | Sequence[DecodeConfig] | None, parallel: ParallelConfig, *,
                      dtype: torch.dtype | str | None = None, device: str = "cpu", oversubscribe: bool = False,
                      use_tokenizer: bool = True, **kwargs) -> list[GenerationResult]:
    """`redraft.decoding.generate` on a checkpoint cut over `parallel.tp` ranks (see `generate` for the rest)."""
    _, cfg = read_config(path)
    parallel.check(cfg)
    if isinstance(prompts, str):
        prompts = [prompts]
    args = (str(path), list(prompts), config, parallel, dtype, use_tokenizer, kwargs)
    return launch(_generate_rank, parallel, args, device, oversubscribe)


def _stream_rank(rank: Rank, path: str, prompt_ids: list[int], config: DecodeConfig, parallel: ParallelConfig,
                 dtype):
    from redraft.model.tokenizer import load_tokenizer

    from .commands import print_stats, stream_to_stdout
    from .engine import Engine

    model = load_sharded(path, parallel, rank.rank, rank.group, dtype=dtype, device=rank.device)
    engine = Engine(model, load_tokenizer(path), max_batch_size=1)
    engine.add_request(prompt_ids, config)
    if not rank.is_main:  # the same steps, silently
        engine.run_until_done()
        return None
    result = stream_to_stdout(engine)
    print_stats(result)
    return result.token_ids


def stream_generate_parallel(path: str | Path, prompt_ids: Sequence[int], config: DecodeConfig,
                             parallel: ParallelConfig, *, dtype: torch.dtype | str | None = None, device: str = "cpu",
                             oversubscribe: bool = False) -> list[int]:
    """`redraft generate --tp N`: rank 0 prints the text as it becomes final and the stats; returns the ids."""
    _, cfg = read_config(path)
    parallel.check(cfg)
    return launch(_stream_rank, parallel, (str(path), list(prompt_ids), config, parallel, dtype), device,
                  oversubscribe)
