"""`RLConfig`: everything a `redraft rl` run needs, read from YAML or TOML and validated once at construction.

Sections: rollout (`RolloutConfig`), elbo (`ElboConfig`), loss (`LossConfig`), advantages (`AdvantageConfig`),
optim (the trainer's `OptimConfig`); `rewards` is a list of {kind, weight, config} (`RewardSpec`). A config file may
name a `base:` file whose values it overrides; `--set section.field=value` overrides any field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from redraft.model.lora import LoraSettings
from redraft.training.config import OptimConfig, apply_override, lora_section, read_config_file

from .advantages import AdvantageConfig
from .likelihood import ElboConfig
from .loss import LossConfig
from .rewards import RewardSpec
from .rollout import RolloutConfig

DEVICES = ("auto", "cpu", "cuda")
PARALLEL = ("ddp", "fsdp")


def _rl_optim() -> OptimConfig:
    return OptimConfig(lr=1e-5, weight_decay=0.0, warmup_steps=0, schedule="constant", grad_clip=1.0)


@dataclass
class RLConfig:
    """init_from: the policy's starting checkpoint (HF layout). reference_from: the KL reference (default
    init_from; loaded only when loss.kl_coef > 0). lora: train a LoRA adapter on init_from (see `LoraSettings`;
    checkpoints then hold the adapter). task / task_config: the synthetic task whose train split gives the
    prompts and whose eval split gives held-out accuracy. train_pool: distinct train prompts drawn once (seed).
    steps: rollout iterations; prompts_per_step P (each sampled rollout.group_size times); epochs: optimisation
    passes per rollout batch; group_noise: the G samples of a prompt share their ELBO mask seed (coupled noise:
    aligned positions are masked alike, so shared tokens cancel between positive and negative advantages instead of
    adding variance; off = a seed per row); minibatch_size: rows per optimiser step (0 = all rows of the batch);
    micro_batch_size: rows per forward. eval_size / eval_seed / eval_every: greedy held-out accuracy (eval_sampled:
    also at the rollout temperature, logged with a `_sampled` suffix). keep_host_memory: on CPU, keep freed memory
    mapped between steps (`redraft.host_memory`)."""

    init_from: str = ""
    output_dir: str = "runs/rl"
    reference_from: str | None = None
    task: str = "addition"
    task_config: dict[str, Any] = field(default_factory=dict)
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec("task")])
    train_pool: int = 2000
    prompts_per_step: int = 8
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    elbo: ElboConfig = field(default_factory=ElboConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    advantages: AdvantageConfig = field(default_factory=AdvantageConfig)
    optim: OptimConfig = field(default_factory=_rl_optim)
    steps: int = 100
    epochs: int = 1
    group_noise: bool = True
    minibatch_size: int = 0
    micro_batch_size: int = 16
    eval_size: int = 128
    eval_seed: int = 0
    eval_every: int = 10
    eval_sampled: bool = False
    save_every: int = 10
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"
    keep_host_memory: bool = True
    parallel: str = "ddp"
    max_time_s: float | None = None
    lora: LoraSettings | None = None

    def __post_init__(self) -> None:
        if not self.init_from:
            raise ValueError("init_from must name the starting checkpoint (an HF-layout folder), got ''")
        for name in ("train_pool", "prompts_per_step", "steps", "epochs", "micro_batch_size", "eval_every",
                     "save_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("minibatch_size", "eval_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.prompts_per_step > self.train_pool:
            raise ValueError(f"prompts_per_step ({self.prompts_per_step}) must be <= train_pool ({self.train_pool})")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.parallel not in PARALLEL:
            raise ValueError(f"parallel must be one of {PARALLEL}, got {self.parallel!r}")
        if self.elbo.block_length != self.rollout.block_length:
            raise ValueError(f"elbo.block_length ({self.elbo.block_length}) must equal rollout.block_length "
                             f"({self.rollout.block_length}): the likelihood uses the decoding blocks")
        if not any(spec.kind == "task" for spec in self.rewards):
            raise ValueError("rewards must include a 'task' reward (its score is the logged accuracy)")
        for spec in self.reward_specs():
            spec.build()  # a bad kind or config fails now, not after the first rollout

    def reward_specs(self) -> list[RewardSpec]:
        """The reward terms with the run's task filled in where a 'task' term names none."""
        out = []
        for spec in self.rewards:
            if spec.kind == "task" and "task" not in spec.config:
                spec = RewardSpec("task", spec.weight, {"task": self.task, **self.task_config, **spec.config})
            out.append(spec)
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"rollout": RolloutConfig, "elbo": ElboConfig, "loss": LossConfig, "advantages": AdvantageConfig,
             "optim": OptimConfig}


def _section(name: str, cls, raw: Any, default: Any) -> Any:
    if raw is None:
        return default
    if not isinstance(raw, dict):
        raise ValueError(f"{name} must be a mapping, got {raw!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(raw) - known)
    if bad:
        raise ValueError(f"unknown field(s) {[f'{name}.{b}' for b in bad]}; known: {sorted(known)}")
    return cls(**{**(dataclasses.asdict(default) if default is not None else {}), **raw})


def config_from_dict(raw: dict[str, Any]) -> RLConfig:
    """Build and validate; unknown keys raise ValueError naming them."""
    if not isinstance(raw, dict):
        raise ValueError(f"an RL config must be a mapping, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(RLConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; known: {sorted(known)}")
    kwargs = dict(raw)
    for name, cls in _SECTIONS.items():
        default = _rl_optim() if name == "optim" else cls()
        kwargs[name] = _section(name, cls, kwargs.get(name), default)
    if "rewards" in kwargs:
        specs = kwargs["rewards"]
        if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
            raise ValueError(f"rewards must be a list of {{kind, weight, config}} mappings, got {specs!r}")
        for s in specs:
            bad = sorted(set(s) - {"kind", "weight", "config"})
            if bad or "kind" not in s:
                raise ValueError(f"rewards entry {s!r}: needs 'kind', allows only kind/weight/config")
        kwargs["rewards"] = [RewardSpec(s["kind"], float(s.get("weight", 1.0)), dict(s.get("config") or {}))
                             for s in specs]
    kwargs["lora"] = lora_section(kwargs.get("lora"))
    return RLConfig(**kwargs)


def load_config(path: str | Path, overrides: list[str] | None = None) -> RLConfig:
    raw = read_config_file(Path(path))
    for assignment in overrides or []:
        raw = apply_override(raw, assignment)
    return config_from_dict(raw)
