"""Trainer checkpoints: a Hugging Face model folder (loadable by `load_model`) plus the exact-resume state.

Layout of `OUTPUT/checkpoints/step_00000100/`: config.json, model.safetensors (float32, exact; a LoRA run writes the
adapter instead: adapter_config.json + adapter_model.safetensors, PEFT layout), tokenizer files,
`trainer.json` (step, world size, config), `trainer_state_rank{r}.safetensors` + `.json` (optimiser state and noise
RNG of rank r, no pickle: see `resume_state.py`; sharded under FSDP2, so resume with the same world size), and
`COMPLETE`, written last: a folder without it is ignored.
The learning rate is a pure function of the step and the data order a pure function of (seed, step), so the step
restores both.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from redraft.model import LLaDA2MoeModelLM, save_model
from redraft.model.lora import adapter_state, is_lora, save_adapter
from redraft.model.tokenizer import Tokenizer

from .distributed import DistInfo, barrier, full_state, load_full_state, unwrap
from .resume_state import load_resume_state, save_resume_state

COMPLETE = "COMPLETE"


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step_{step:08d}"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    root = Path(output_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step_*") if (p / COMPLETE).exists()) if root.exists() else []
    return done[-1] if done else None


def export_model(model: nn.Module, config, directory: Path, tokenizer: Tokenizer, dtype: torch.dtype,
                 info: DistInfo, max_shard_bytes: int | None = None, base_model: str | None = None) -> None:
    """Write the (possibly sharded) model as a Hugging Face folder from rank 0 (collective: every rank calls it).
    A model with LoRA adapters writes its adapter only (PEFT layout, `base_model` recorded in its config)."""
    if is_lora(unwrap(model)):
        state = adapter_state(unwrap(model))
        if info.is_main:
            save_adapter(unwrap(model), directory, state=state, base_model=base_model, dtype=dtype)
            tokenizer.save(directory)
        barrier(info)
        return
    state = full_state(model)
    if info.is_main:
        plain = LLaDA2MoeModelLM(config)
        load_full_state(plain, state)
        save_model(plain.to(dtype), directory, max_shard_bytes=max_shard_bytes, tokenizer=tokenizer)
    barrier(info)


def save_checkpoint(output_dir: str | Path, step: int, model: nn.Module, config, optimizer: torch.optim.Optimizer,
                    gen: torch.Generator, tokenizer: Tokenizer, meta: dict[str, Any], info: DistInfo,
                    keep: int, base_model: str | None = None) -> Path:
    path = checkpoint_dir(output_dir, step)
    if info.is_main and path.exists():
        shutil.rmtree(path)
    barrier(info)
    export_model(model, config, path, tokenizer, torch.float32, info, base_model=base_model)
    save_resume_state(path, info.rank, optimizer, gen, step)
    barrier(info)
    if info.is_main:
        (path / "trainer.json").write_text(json.dumps({"step": step, "world_size": info.world_size, **meta},
                                                      indent=1, default=str))
        (path / COMPLETE).write_text("")
        done = sorted(p for p in path.parent.glob("step_*") if (p / COMPLETE).exists())
        for old in done[:-keep]:
            shutil.rmtree(old)
    barrier(info)
    return path


def load_trainer_state(path: Path, info: DistInfo, optimizer: torch.optim.Optimizer, gen: torch.Generator) -> int:
    """Restore this rank's optimiser and noise generator from checkpoint `path` in place; returns its step."""
    meta = json.loads((path / "trainer.json").read_text())
    if meta.get("world_size", 1) != info.world_size:
        raise ValueError(f"{path}: saved with world_size {meta.get('world_size')}, resuming with {info.world_size} "
                         "(the optimiser state is sharded per rank)")
    return load_resume_state(path, info.rank, optimizer, gen)
