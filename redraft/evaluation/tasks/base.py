"""Task protocol, the Example record, exact scoring and the hash-based train/eval split shared by all tasks."""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

SPLITS = ("train", "eval")
# Fraction of each task's problem space reserved for evaluation (by a stable hash of the problem key).
EVAL_FRACTION = 0.2
# Rejection sampling gives up after this many draws per requested example (plus a constant).
_DRAWS_PER_EXAMPLE = 200


@dataclass(frozen=True)
class Example:
    """One prompt with its exact reference reply.

    messages: chat messages for the prompt (a single user message for plain, non-chat tasks).
    answer: the exact reference assistant reply / completion (training uses it as the target).
    meta: task-specific data for scoring; always holds "key" (the problem id: examples of one call have distinct
        keys), "split_key" (the task's notion of "the same problem": every problem sharing it lands in the same split,
        e.g. both `a+b` and `b+a` for addition) and, for plain tasks, "prompt" (the raw prompt text).
    """

    messages: list[dict[str, str]]
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return str(self.meta["key"])

    @property
    def split_key(self) -> str:
        """The key the train/eval split is taken on (what "unseen" means for the task); the problem key if unset."""
        return str(self.meta.get("split_key", self.meta["key"]))


def normalize(text: str) -> str:
    """Scoring is exact up to surrounding whitespace: strip it, compare the rest byte for byte."""
    return text.strip()


def split_of(task_name: str, key: str, eval_fraction: float = EVAL_FRACTION) -> str:
    """Stable split ("train"/"eval") of a problem: a blake2b hash of (task name, key), same on every machine."""
    digest = hashlib.blake2b(f"{task_name}\x00{key}".encode(), digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") / 2.0**64
    return "eval" if bucket < eval_fraction else "train"


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def check_count(n: int, seed: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")


class Task(ABC):
    """A seeded, exactly scored task. Subclasses set `name` and `chat` and implement `_sample`.

    `examples(n, seed, split)` is deterministic in (task config, n, seed, split); train and eval examples never share
    a split key (`Example.split_key`, the task's notion of "the same problem"), because each split key belongs to
    exactly one split by a stable hash (see `split_of`). Examples within one call have distinct problem keys.
    """

    name: ClassVar[str]
    chat: ClassVar[bool] = True
    # decoding defaults for this task: generation budget and stop strings (plain code tasks stop at a new top-level
    # statement, the usual HumanEval convention)
    max_new_tokens: ClassVar[int] = 32
    stop: ClassVar[tuple[str, ...]] = ()

    def examples(self, n: int, seed: int, split: str = "train") -> list[Example]:
        check_count(n, seed)
        check_split(split)
        rng = random.Random(f"{self.name}|{self.config_id()}|{split}|{seed}")
        out: list[Example] = []
        seen: set[str] = set()
        budget = _DRAWS_PER_EXAMPLE * n + 1000
        while len(out) < n:
            if budget == 0:
                raise ValueError(
                    f"n={n} is more than task {self.name!r} ({self.config_id()}) can produce distinct {split} "
                    f"examples for; lower n or enlarge the problem space")
            budget -= 1
            example = self._sample(rng)
            if example.key in seen or split_of(self.name, example.split_key) != split:
                continue
            seen.add(example.key)
            out.append(example)
        return out

    @abstractmethod
    def _sample(self, rng: random.Random) -> Example:
        """Draw one problem (any split); `examples` filters by split and removes duplicates."""

    def config_id(self) -> str:
        """Text identifying the task's configuration (part of the sampling seed)."""
        return ""

    def score(self, example: Example, completion: str) -> float:
        """1.0 if the completion equals the reference answer up to surrounding whitespace, else 0.0."""
        return 1.0 if normalize(completion) == normalize(example.answer) else 0.0

    def score_many(self, examples: Sequence[Example], completions: Sequence[str]) -> list[float]:
        """Score a batch (tasks with expensive scoring, e.g. HumanEval, parallelise this)."""
        if len(examples) != len(completions):
            raise ValueError(f"completions has {len(completions)} items, examples has {len(examples)}")
        return [self.score(e, c) for e, c in zip(examples, completions)]

    def prompt_ids(self, example: Example, tokenizer: Any) -> list[int]:
        """Token ids of the prompt: the chat template for chat tasks, the raw meta["prompt"] text otherwise."""
        if self.chat:
            return list(tokenizer.apply_chat_template(example.messages, add_generation_prompt=True))
        return list(tokenizer.encode(example.meta["prompt"]))


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]
