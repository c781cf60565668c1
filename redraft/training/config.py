"""`TrainConfig`: one flat-ish dataclass tree read from YAML or TOML, validated once at construction.

A config file may name a `base:` file (relative to itself) whose values it overrides (deep merge), and the CLI may
override any field with `--set section.field=value` (the value is parsed as YAML).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from redraft.model.lora import LoraSettings

from .data import DataConfig
from .noise import NoiseConfig

SCHEDULES = ("cosine", "wsd", "constant")
AUTOCAST = ("bf16", "none")
DEVICES = ("auto", "cpu", "cuda")
SAVE_DTYPES = ("float32", "bfloat16")
PARALLEL = ("fsdp", "ddp")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up, then cosine decay to `min_lr_ratio * lr`, or WSD (stable, then a linear decay over
    the last `decay_fraction` of the steps), or constant."""

    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    warmup_steps: int = 100
    schedule: str = "cosine"
    decay_fraction: float = 0.2
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("min_lr_ratio", "decay_fraction", "beta1", "beta2"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"optim.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if self.grad_clip < 0:
            raise ValueError(f"optim.grad_clip must be >= 0 (0 = off), got {self.grad_clip!r}")


@dataclass
class TrainConfig:
    """Everything a `redraft train` run needs. `model`: LLaDA2MoeConfig fields (vocab_size comes from the tokenizer)
    for a fresh model, ignored when `init_from` names a checkpoint. `block_schedule`: [[start_step, block_length],
    ...] (LLaDA2.0's warm-up/decay of block sizes); before its first entry, and without one, `block_length`.
    `lora`: train a LoRA adapter (PEFT) on the `init_from` model instead of every weight (see `lora_section`).
    `keep_host_memory`: on CPU, keep freed memory mapped between steps (`host_memory.keep_freed_memory`; ~1.5x
    faster on a 2-core VM, resident size never shrinks)."""

    output_dir: str = "runs/train"
    model: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    init_std: float = 0.02
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 1000
    batch_size: int = 32
    micro_batch_size: int = 32
    block_length: int = 32
    block_schedule: list[list[int]] = field(default_factory=list)
    seed: int = 0
    device: str = "auto"
    autocast: str = "bf16"
    compile: bool = False
    keep_host_memory: bool = True
    gradient_checkpointing: bool = False
    expert_bias_update_rate: float = 0.0
    log_every: int = 10
    eval_every: int = 200
    eval_batches: int = 4
    save_every: int = 500
    keep_checkpoints: int = 2
    save_dtype: str = "float32"
    parallel: str = "fsdp"
    max_time_s: float | None = None
    lora: LoraSettings | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "micro_batch_size", "block_length", "log_every", "eval_every",
                     "save_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of micro_batch_size "
                             f"({self.micro_batch_size})")
        if self.eval_batches < 0:
            raise ValueError(f"eval_batches must be >= 0, got {self.eval_batches!r}")
        for name, allowed in (("device", DEVICES), ("autocast", AUTOCAST), ("save_dtype", SAVE_DTYPES),
                              ("parallel", PARALLEL)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.expert_bias_update_rate < 0:
            raise ValueError(f"expert_bias_update_rate must be >= 0, got {self.expert_bias_update_rate!r}")
        for entry in self.block_schedule:
            if (not isinstance(entry, (list, tuple)) or len(entry) != 2 or not all(isinstance(v, int) for v in entry)
                    or entry[0] < 0 or entry[1] <= 0):
                raise ValueError(f"block_schedule entries must be [start_step >= 0, block_length > 0], got {entry!r}")
        starts = [e[0] for e in self.block_schedule]
        if starts != sorted(starts):
            raise ValueError(f"block_schedule must be sorted by start step, got {self.block_schedule!r}")
        for bl in [self.block_length] + [e[1] for e in self.block_schedule]:
            if bl < self.data.seq_len and self.data.seq_len % bl:
                raise ValueError(f"data.seq_len ({self.data.seq_len}) must be divisible by every block length "
                                 f"below it, got {bl}")

        if self.lora is not None:
            if not self.init_from:
                raise ValueError("lora: a LoRA run adapts a trained model: set init_from to its checkpoint")
            if self.expert_bias_update_rate:
                raise ValueError(f"lora: expert_bias_update_rate must be 0 (the base model is frozen), got "
                                 f"{self.expert_bias_update_rate!r}")

    def block_length_at(self, step: int) -> int:
        length = self.block_length
        for start, bl in self.block_schedule:
            if step >= start:
                length = bl
        return length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "noise": NoiseConfig, "optim": OptimConfig}


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    """Build and validate; unknown keys raise ValueError naming them."""
    if not isinstance(raw, dict):
        raise ValueError(f"a training config must be a mapping, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; known: {sorted(known)}")
    kwargs = dict(raw)
    for name, cls in _SECTIONS.items():
        section = kwargs.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{name} must be a mapping, got {section!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(section) - fields)
        if bad:
            raise ValueError(f"unknown field(s) {[f'{name}.{b}' for b in bad]}; known: {sorted(fields)}")
        kwargs[name] = cls(**section)
    kwargs["lora"] = lora_section(kwargs.get("lora"))
    return TrainConfig(**kwargs)


def lora_section(raw: Any) -> LoraSettings | None:
    """The optional `lora:` section: {r, alpha, dropout, targets} (absent or null: full fine-tuning; `{}`: the
    defaults)."""
    if raw is None or isinstance(raw, LoraSettings):
        return raw
    if not isinstance(raw, dict):
        raise ValueError(f"lora must be a mapping, got {raw!r}")
    fields = {f.name for f in dataclasses.fields(LoraSettings)}
    bad = sorted(set(raw) - fields)
    if bad:
        raise ValueError(f"unknown field(s) {[f'lora.{b}' for b in bad]}; known: {sorted(fields)}")
    return LoraSettings(**raw)


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML or TOML mapping, with its `base:` file (relative to it) merged underneath."""
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib  # Python >= 3.11

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: invalid TOML ({e})") from None
    elif path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: invalid YAML ({e})") from None
    else:
        raise ValueError(f"config file must end in .yaml, .yml or .toml, got {path.name!r}")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base is not None:
        data = merge(read_config_file(path.parent / base), data)
    return data


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_override(raw: dict[str, Any], assignment: str) -> dict[str, Any]:
    """`section.field=value` (value parsed as YAML) applied to a raw config mapping."""
    if "=" not in assignment:
        raise ValueError(f"--set expects key=value, got {assignment!r}")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ValueError(f"--set: bad key {key!r}")
    nested: Any = yaml.safe_load(value)
    for part in reversed(parts):
        nested = {part: nested}
    return merge(raw, nested)


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    raw = read_config_file(Path(path))
    for assignment in overrides or []:
        raw = apply_override(raw, assignment)
    return config_from_dict(raw)
