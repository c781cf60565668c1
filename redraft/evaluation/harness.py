"""`evaluate`: decode each task's eval examples in batches through the decoding engine, score them, and report
score, tokens per forward, throughput and edit rates per task and seed."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from redraft.decoding.config import DecodeConfig, preset
from redraft.evaluation.report import EvalReport, Sample, TaskRun
from redraft.evaluation.tasks import Task, get_task

MODES = ("quality", "speedy", "no-edit")
# (model, tokenizer, prompts as token ids, one DecodeConfig per row) -> results with .token_ids .text
# .finish_reason .stats; the default is `redraft.decoding.generate`.
GenerateFn = Callable[[Any, Any, list[list[int]], list[DecodeConfig]], Sequence[Any]]
ProgressFn = Callable[[int, int], None]


def decode_config(mode: str = "quality", overrides: Mapping[str, Any] | None = None) -> DecodeConfig:
    """The DecodeConfig of a mode: "quality" (Q Mode), "speedy" (S Mode) or "no-edit" (Q Mode with T2T editing
    off: M2T only), with `overrides` (DecodeConfig field -> value) applied."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    base = preset("quality", editing=False) if mode == "no-edit" else preset(mode)
    return base.replace(**dict(overrides or {}))


def load(model_or_path: Any, tokenizer: Any = None, device: str = "cpu",
         quantization: str | None = None, adapter: str | os.PathLike | None = None) -> tuple[Any, Any, str]:
    """(model, tokenizer, name): loads a checkpoint directory / hub id (with a LoRA `adapter` merged in and
    `quantization`, as `generate --adapter` does: `redraft.model.lora.load_merged`), or passes a model object
    through."""
    if isinstance(model_or_path, (str, os.PathLike)):
        from redraft.model.lora import load_merged
        from redraft.model.tokenizer import load_tokenizer

        name = str(model_or_path) if adapter is None else f"{model_or_path} + adapter {adapter}"
        return (load_merged(model_or_path, adapter, device=device, quantization=quantization),
                tokenizer or load_tokenizer(model_or_path), name)
    if adapter is not None:
        raise ValueError(f"adapter {str(adapter)!r} is for a checkpoint path; a model object is used as given "
                         "(apply or merge the adapter into it first)")
    if tokenizer is None:
        raise ValueError("tokenizer must be given when model_or_path is a model object, got None")
    name = getattr(getattr(model_or_path, "config", None), "name_or_path", None) or type(model_or_path).__name__
    return model_or_path, tokenizer, str(name)


def _tasks(tasks: Sequence[str | Task]) -> list[Task]:
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t]
    if not tasks:
        raise ValueError("tasks must name at least one task, got none")
    return [get_task(t) if isinstance(t, str) else t for t in tasks]


def _check_int(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def completion_text(result: Any, tokenizer: Any) -> str:
    """The generated text without special tokens (eos, role end): the result's text cut at the first special token,
    or the token ids decoded without special tokens when the engine gave no text."""
    text = result.text
    if text is None:
        return tokenizer.decode(result.token_ids, skip_special_tokens=True)
    specials = [t for t in (getattr(tokenizer, "eos_token", None), "<|role_end|>", getattr(tokenizer, "mask_token", None))
                if t]
    cut = min((text.find(t) for t in specials if t in text), default=len(text))
    return text[:cut]


def task_config(base: DecodeConfig, task: Task, seed: int, overrides: Mapping[str, Any]) -> DecodeConfig:
    """Per-task settings: the task's generation budget unless max_new_tokens was overridden, its stop strings
    added, the seed set."""
    changes: dict[str, Any] = {"seed": seed, "stop": tuple(dict.fromkeys(base.stop + task.stop))}
    if "max_new_tokens" not in overrides:
        changes["max_new_tokens"] = task.max_new_tokens
    return base.replace(**changes)


def evaluate(model_or_path: Any, tasks: Sequence[str | Task], *, mode: str = "quality",
             overrides: Mapping[str, Any] | None = None, n: int = 20, seeds: Sequence[int] = (0,),
             batch_size: int = 16, tokenizer: Any = None, label: str | None = None, keep_samples: bool = True,
             progress: ProgressFn | None = None, generate_fn: GenerateFn | None = None,
             device: str = "cpu", config: DecodeConfig | None = None,
             quantization: str | None = None, adapter: str | os.PathLike | None = None) -> EvalReport:
    """Decode `n` eval-split examples of each task for each seed (examples and sampler seeded by it), `batch_size`
    prompts per engine call, and score them. Returns an EvalReport (see `TaskRun` for what each number means).

    Settings: the preset of `mode`, or `config` when given, with `overrides` applied; then per task its generation
    budget (unless max_new_tokens is overridden) and stop strings. progress(done, total) counts examples.
    quantization: per-block FP8 weights when loading a path ("fp8", "fp8-all"; see `redraft.load_model`).
    adapter: a LoRA adapter directory (PEFT layout) merged into the checkpoint at load (`redraft.model.lora`)."""
    _check_int("n", n, 1)
    _check_int("batch_size", batch_size, 1)
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed, got none")
    for s in seeds:
        _check_int("seed", s, 0)
    overrides = dict(overrides or {})
    base = decode_config(mode, overrides) if config is None else config.replace(**overrides)
    task_list = _tasks(tasks)
    model, tokenizer, name = load(model_or_path, tokenizer, device, quantization, adapter)
    import torch  # here, not at the top: the CLI imports this module (MODES) to build its parser

    if generate_fn is None:
        from redraft.decoding import generate as generate_fn
    total, done = n * len(seeds) * len(task_list), 0
    runs = []
    for task in task_list:
        for seed in seeds:
            examples = task.examples(n, seed=seed, split="eval")
            config = task_config(base, task, seed, overrides)
            results, elapsed = [], 0.0
            for start in range(0, n, batch_size):
                chunk = examples[start:start + batch_size]
                prompts = [task.prompt_ids(e, tokenizer) for e in chunk]
                t0 = time.perf_counter()
                with torch.inference_mode():  # evaluation needs no autograd
                    out = list(generate_fn(model, tokenizer, prompts, [config] * len(prompts)))
                elapsed += time.perf_counter() - t0
                if len(out) != len(prompts):
                    raise RuntimeError(f"engine returned {len(out)} results for {len(prompts)} prompts")
                results.extend(out)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            runs.append(_run(task, seed, examples, results, tokenizer, elapsed, keep_samples))
    return EvalReport(model=name, label=label or mode, config=_config_dict(base), n=n, seeds=seeds, runs=runs,
                      created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def _config_dict(config: DecodeConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def _run(task: Task, seed: int, examples: list, results: list, tokenizer: Any, elapsed: float,
         keep_samples: bool) -> TaskRun:
    completions = [completion_text(r, tokenizer) for r in results]
    scores = task.score_many(examples, completions)
    stats = [r.stats for r in results]
    samples = [Sample(e.key, c, e.answer, s, r.finish_reason, r.stats.forwards, r.stats.tokens, r.stats.t2t_edits)
               for e, c, s, r in zip(examples, completions, scores, results)] if keep_samples else []
    return TaskRun(task=task.name, seed=seed, n=len(examples), score=sum(scores) / len(scores),
                   forwards=sum(s.forwards for s in stats), tokens=sum(s.tokens for s in stats),
                   m2t_fills=sum(s.m2t_fills for s in stats), t2t_edits=sum(s.t2t_edits for s in stats),
                   mbe_edits=sum(s.mbe_edits for s in stats), generate_s=elapsed,
                   finish_reasons=dict(Counter(r.finish_reason for r in results)), samples=samples)
