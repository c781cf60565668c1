"""Synthetic verifiable chat tasks: multi-digit addition, sorting small ints, and reversing letters or words.

Each task splits train/eval on a key that names the problem up to the task's symmetry, so that no eval problem is a
trivial rewrite of a train problem (docs/evaluation.md, "What unseen means"):
addition on the unordered pair {a, b}; sorting on the multiset of values (every permutation of one input shares its
answer); reverse on the unordered pair {sequence, its reverse} (the answer of one is the prompt of the other).
The `*_long` variants are the same tasks with longer inputs (graded, for the v2 model and the C1 claim).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from redraft.evaluation.tasks.base import Example, Task, user

# Short, single-token-friendly words for the "words" flavour of the reverse task.
WORDS = (
    "cat", "dog", "sun", "red", "map", "cup", "box", "hat", "pen", "sky", "sea", "owl", "fig", "jam", "oak",
    "ice", "bee", "fox", "ink", "egg", "bus", "toy", "key", "net", "leg", "arm", "gem", "pig", "rug", "van",
)
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _positive_int(name: str, value: int, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _range(lo_name: str, lo: int, hi_name: str, hi: int, minimum: int = 1) -> None:
    _positive_int(lo_name, lo, minimum)
    _positive_int(hi_name, hi, minimum)
    if lo > hi:
        raise ValueError(f"{lo_name}={lo} must be <= {hi_name}={hi}")


@dataclass
class Addition(Task):
    """`a+b=` -> `a+b` in decimal. Each operand has between min_digits and digits digits (no leading zeros)."""

    digits: int = 4
    min_digits: int = 1
    name = "addition"

    def __post_init__(self) -> None:
        _range("min_digits", self.min_digits, "digits", self.digits)

    def config_id(self) -> str:
        return f"digits={self.min_digits}-{self.digits}"

    def _operand(self, rng: random.Random) -> int:
        d = rng.randint(self.min_digits, self.digits)
        return rng.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1)

    def _sample(self, rng: random.Random) -> Example:
        a, b = self._operand(rng), self._operand(rng)
        key = f"{a}+{b}"
        split_key = f"{min(a, b)}+{max(a, b)}"  # a+b and b+a are the same problem
        return Example(user(f"{key}="), str(a + b), {"key": key, "split_key": split_key, "a": a, "b": b})


@dataclass
class Sorting(Task):
    """`sort: 5 2 9 1` -> `1 2 5 9`: a list of min_len..max_len ints in [0, max_value], space separated."""

    min_len: int = 3
    max_len: int = 8
    max_value: int = 9
    name = "sorting"

    def __post_init__(self) -> None:
        _range("min_len", self.min_len, "max_len", self.max_len)
        _positive_int("max_value", self.max_value)

    def config_id(self) -> str:
        return f"len={self.min_len}-{self.max_len},max={self.max_value}"

    def _sample(self, rng: random.Random) -> Example:
        values = [rng.randint(0, self.max_value) for _ in range(rng.randint(self.min_len, self.max_len))]
        key = " ".join(map(str, values))
        answer = " ".join(map(str, sorted(values)))
        # every permutation of the same multiset has the same answer: split on the multiset (= the sorted list)
        return Example(user(f"sort: {key}"), answer, {"key": key, "split_key": answer, "values": values})


@dataclass
class Reverse(Task):
    """`reverse: a b c` -> `c b a`. Every output token depends on a distant input token and the output positions
    are strongly coupled, which is where one-shot parallel decoding fails and token editing helps.

    unit: "letters" (space-separated lowercase letters) or "words" (from a fixed list of short words).
    """

    min_len: int = 3
    max_len: int = 8
    unit: str = "letters"
    name = "reverse"

    def __post_init__(self) -> None:
        _range("min_len", self.min_len, "max_len", self.max_len)
        if self.unit not in ("letters", "words"):
            raise ValueError(f"unit must be 'letters' or 'words', got {self.unit!r}")

    def config_id(self) -> str:
        return f"len={self.min_len}-{self.max_len},unit={self.unit}"

    def _sample(self, rng: random.Random) -> Example:
        vocab = LETTERS if self.unit == "letters" else WORDS
        items = [rng.choice(vocab) for _ in range(rng.randint(self.min_len, self.max_len))]
        key = " ".join(items)
        answer = " ".join(reversed(items))
        # the answer of `reverse: x` is the prompt of `reverse: reversed(x)`: split on the unordered pair
        return Example(user(f"reverse: {key}"), answer, {"key": key, "split_key": min(key, answer), "unit": self.unit})


@dataclass
class AdditionLong(Addition):
    """Addition of 3-6 digit operands (carries over many digits); meant for a digit-level tokenizer."""

    digits: int = 6
    min_digits: int = 3
    name = "addition_long"


@dataclass
class SortingLong(Sorting):
    """Sorting 16-24 ints in [0, 20]: outputs long enough for the unmasking threshold to matter."""

    min_len: int = 16
    max_len: int = 24
    max_value: int = 20
    name = "sorting_long"
    max_new_tokens = 96  # up to 24 two-digit numbers: 72 tokens with digit-level tokens


@dataclass
class ReverseLong(Reverse):
    """Reversing 16-24 letters."""

    min_len: int = 16
    max_len: int = 24
    name = "reverse_long"
    max_new_tokens = 64
