"""Rewards: a reward is a plain function `(prompt, completion, sample) -> float`; a registry builds them by name.

`prompt` is the prompt text, `completion` the decoded response (special tokens removed), `sample` the task's
`Example` (reference answer, meta). Built-in kinds:
  task:   the evaluation task's exact scorer, `get_task(name, **config).score(sample, completion)` (the accuracy);
  format: 1.0 when the stripped completion fully matches a regular expression (e.g. digits only), else 0.0;
  code:   HumanEval-style: prompt + completion + meta["test"] + check(meta["entry_point"]) run in the sandbox,
          1.0 if it passes. Code rewards score a whole batch in parallel (`score_batch`);
  length: −|len(completion) − target| / scale (brevity shaping);
  random: a placebo control, 1.0 with probability p from a hash of (seed, prompt, completion), whatever the
          completion says (does a gain come from the reward's information or from the updates alone?);
  python: any importable function "package.module:name" (or a factory called with the config).
To add a reward: write the function and name it with kind "python" in the config, or pass
`(name, weight, fn)` terms to `CombinedReward` from Python.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

RewardFn = Callable[[str, str, Any], float]


def task_reward(task: str, **task_config: Any) -> RewardFn:
    """The evaluation task's scorer as a reward (1.0 exact match, else 0.0 for the synthetic tasks)."""
    from redraft.evaluation.tasks import get_task

    scorer = get_task(task, **task_config)

    def reward(prompt: str, completion: str, sample: Any) -> float:
        return float(scorer.score(sample, completion))

    reward.__name__ = f"task_{task}"
    return reward


def format_reward(pattern: str = r"\S+") -> RewardFn:
    """1.0 when the stripped completion fully matches `pattern` (a Python regular expression), else 0.0."""
    try:
        compiled = re.compile(pattern, re.DOTALL)
    except re.error as e:
        raise ValueError(f"format reward: pattern {pattern!r} is not a valid regular expression ({e})") from None

    def reward(prompt: str, completion: str, sample: Any) -> float:
        return 1.0 if compiled.fullmatch(completion.strip()) else 0.0

    reward.__name__ = "format"
    return reward


@dataclass
class CodeReward:
    """HumanEval-style tests in the sandbox: `sample.meta` holds "test" and "entry_point"; the program is the
    prompt (meta["prompt"] when present, else the prompt text) + completion + tests + check(entry_point)."""

    timeout_s: float = 10.0
    workers: int | None = None

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"code reward: timeout_s must be > 0, got {self.timeout_s!r}")

    def program(self, prompt: str, completion: str, sample: Any) -> str:
        meta = getattr(sample, "meta", None) or {}
        for key in ("test", "entry_point"):
            if key not in meta:
                raise ValueError(f"code reward: sample.meta has no {key!r} (HumanEval-style samples need it)")
        head = meta.get("prompt", prompt)
        return f"{head}{completion}\n\n{meta['test']}\n\ncheck({meta['entry_point']})\n"

    def _config(self):
        from redraft.evaluation.sandbox import SandboxConfig

        return SandboxConfig(timeout_s=self.timeout_s, cpu_s=self.timeout_s)

    def __call__(self, prompt: str, completion: str, sample: Any) -> float:
        return self.score_batch([prompt], [completion], [sample])[0]

    def score_batch(self, prompts: Sequence[str], completions: Sequence[str], samples: Sequence[Any]) -> list[float]:
        from redraft.evaluation.sandbox import SandboxPool

        sources = [self.program(p, c, s) for p, c, s in zip(prompts, completions, samples)]
        with SandboxPool(self._config(), self.workers) as pool:
            return [1.0 if r.passed else 0.0 for r in pool.run(sources)]


def length_reward(target: int, scale: float | None = None) -> RewardFn:
    """−|len(stripped completion) − target| / scale characters (scale defaults to target): a brevity shaping term."""
    if not isinstance(target, int) or target < 1:
        raise ValueError(f"length reward: target must be an int >= 1, got {target!r}")
    denom = float(scale if scale is not None else target)
    if not denom > 0:
        raise ValueError(f"length reward: scale must be > 0, got {scale!r}")

    def reward(prompt: str, completion: str, sample: Any) -> float:
        return -abs(len(completion.strip()) - target) / denom

    return reward


def random_reward(p: float = 0.5, seed: int = 0) -> RewardFn:
    """Placebo control: 1.0 with probability p, 0.0 otherwise, decided by a hash of (seed, prompt, completion), so
    the same completion always gets the same reward and the reward carries no information about correctness."""
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"random reward: p must be a number in [0, 1], got {p!r}")

    def reward(prompt: str, completion: str, sample: Any) -> float:
        digest = hashlib.blake2b(f"{seed}\x00{prompt}\x00{completion}".encode(), digest_size=8).digest()
        return 1.0 if int.from_bytes(digest, "little") / 2.0 ** 64 < p else 0.0

    return reward


def python_reward(function: str, **kwargs: Any) -> RewardFn:
    """Any importable reward, "package.module:name": the function itself, or `name(**kwargs)` when kwargs are given
    (a factory). The way to add a reward from a config file without touching this module."""
    module_name, sep, attr = function.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"python reward: function must look like 'package.module:name', got {function!r}")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"python reward: cannot import {function!r} ({e})") from None
    fn = obj(**kwargs) if kwargs else obj
    if not callable(fn):
        raise ValueError(f"python reward: {function!r} is not callable")
    return fn


REWARDS: Mapping[str, Callable[..., RewardFn]] = MappingProxyType({
    "task": task_reward, "format": format_reward, "code": CodeReward, "length": length_reward,
    "python": python_reward, "random": random_reward})


@dataclass(frozen=True)
class RewardSpec:
    """One term of the total reward: `kind` from REWARDS, its keyword config, and its weight."""

    kind: str
    weight: float = 1.0
    config: dict[str, Any] = field(default_factory=dict)

    def build(self) -> RewardFn:
        if self.kind not in REWARDS:
            raise ValueError(f"reward kind must be one of {sorted(REWARDS)}, got {self.kind!r}")
        try:
            return REWARDS[self.kind](**self.config)
        except TypeError as e:
            raise ValueError(f"reward {self.kind!r}: bad config {self.config!r} ({e})") from None


class CombinedReward:
    """Σ_k weight_k · reward_k, with each term's values kept for logging (term names: kind, kind_1, ...)."""

    def __init__(self, terms: Sequence[tuple[str, float, RewardFn]]):
        if not terms:
            raise ValueError("rewards: at least one reward term is needed")
        self.terms = list(terms)

    @classmethod
    def from_specs(cls, specs: Sequence[RewardSpec]) -> "CombinedReward":
        names: list[str] = []
        for spec in specs:
            names.append(spec.kind if spec.kind not in names else f"{spec.kind}_{len(names)}")
        return cls([(n, s.weight, s.build()) for n, s in zip(names, specs)])

    def score(self, prompts: Sequence[str], completions: Sequence[str],
              samples: Sequence[Any]) -> tuple[list[float], dict[str, list[float]]]:
        """(total reward per row, {term name: values per row})."""
        if not len(prompts) == len(completions) == len(samples):
            raise ValueError(f"rewards: {len(prompts)} prompts, {len(completions)} completions, "
                             f"{len(samples)} samples")
        parts: dict[str, list[float]] = {}
        for name, _, fn in self.terms:
            batch = getattr(fn, "score_batch", None)
            values = batch(prompts, completions, samples) if batch else [
                fn(p, c, s) for p, c, s in zip(prompts, completions, samples)]
            parts[name] = [float(v) for v in values]
        total = [sum(w * parts[name][i] for name, w, _ in self.terms) for i in range(len(prompts))]
        return total, parts
