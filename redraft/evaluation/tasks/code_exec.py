"""Plain code task scored by execution: write the body of a small list function from its header and docstring.

Each problem is a spec (filter, map, aggregate) over a list of ints, e.g. "Return the sum of x * 3 over the items x
of xs that are greater than 5." The reference body is one `return` line; the completion is run in the sandbox
against hidden tests (HumanEval-style `check(candidate)`, so the RL `code` reward runs it too). The surface (function
argument and loop variable names) varies, the split key is the spec alone: an eval spec is never seen in training
under any names.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from redraft.evaluation.sandbox import SandboxConfig, SandboxResult
from redraft.evaluation.tasks.base import Example, Task, user
from redraft.evaluation.tasks.code_syntax import CODE_STOP
from redraft.evaluation.tasks.humaneval import run_programs

ARG_NAMES = ("xs", "nums", "values", "items", "data")
VAR_NAMES = ("x", "n", "v")


@dataclass(frozen=True)
class Part:
    """One filter or map: a short id (used in names and keys), a phrase, a code template over `{v}`, its meaning."""

    id: str
    phrase: str
    code: str
    fn: Callable[[int], int | bool]


def _filters() -> list[Part | None]:
    out: list[Part | None] = [None,
                              Part("even", "that are even", "{v} % 2 == 0", lambda x: x % 2 == 0),
                              Part("odd", "that are odd", "{v} % 2 == 1", lambda x: x % 2 == 1)]
    out += [Part(f"gt{k}", f"that are greater than {k}", f"{{v}} > {k}", lambda x, k=k: x > k) for k in range(10)]
    out += [Part(f"lt{k}", f"that are less than {k}", f"{{v}} < {k}", lambda x, k=k: x < k) for k in range(1, 10)]
    out += [Part(f"div{k}", f"that are divisible by {k}", f"{{v}} % {k} == 0", lambda x, k=k: x % k == 0)
            for k in range(3, 6)]
    return out


def _maps() -> list[Part | None]:
    out: list[Part | None] = [None,
                              Part("sq", "{v} * {v}", "{v} * {v}", lambda x: x * x),
                              Part("neg", "-{v}", "-{v}", lambda x: -x)]
    out += [Part(f"times{k}", f"{{v}} * {k}", f"{{v}} * {k}", lambda x, k=k: x * k) for k in range(2, 6)]
    out += [Part(f"plus{k}", f"{{v}} + {k}", f"{{v}} + {k}", lambda x, k=k: x + k) for k in range(1, 10)]
    return out


FILTERS = tuple(_filters())
MAPS = tuple(_maps())
AGGREGATES = ("sum", "count", "max", "min", "list", "sorted")


@dataclass(frozen=True)
class Spec:
    """A problem: keep the items passing `filter`, apply `map`, aggregate. `count` ignores the map (map is None)."""

    filter: Part | None
    map: Part | None
    aggregate: str

    @property
    def id(self) -> str:
        return f"{self.aggregate}_{self.map.id if self.map else 'id'}_{self.filter.id if self.filter else 'all'}"

    def run(self, xs: Sequence[int]) -> int | list[int]:
        kept = [x for x in xs if self.filter is None or self.filter.fn(x)]
        mapped = [int(self.map.fn(x)) if self.map else x for x in kept]
        if self.aggregate == "sum":
            return sum(mapped)
        if self.aggregate == "count":
            return len(kept)
        if self.aggregate == "max":
            return max(mapped, default=0)
        if self.aggregate == "min":
            return min(mapped, default=0)
        return mapped if self.aggregate == "list" else sorted(mapped)

    def docstring(self, arg: str, v: str) -> str:
        what = self.map.phrase.format(v=v) if self.map else v
        items = f"the items {v} of {arg}" + (f" {self.filter.phrase}" if self.filter else "")
        if self.aggregate == "count":
            return f"Return the number of {items}."
        if self.aggregate == "sum":
            return f"Return the sum of {what} over {items}."
        if self.aggregate in ("max", "min"):
            word = "largest" if self.aggregate == "max" else "smallest"
            return f"Return the {word} {what} over {items}, or 0 if there is none."
        order = "in increasing order" if self.aggregate == "sorted" else "in their order"
        return f"Return the list of {what} over {items}, {order}."

    def body(self, arg: str, v: str) -> str:
        expr = self.map.code.format(v=v) if self.map else v
        cond = f" if {self.filter.code.format(v=v)}" if self.filter else ""
        gen = f"{expr} for {v} in {arg}{cond}"
        plain = self.map is None and self.filter is None
        if self.aggregate == "count":
            return f"len({arg})" if plain else f"sum(1 for {v} in {arg}{cond})"
        if self.aggregate == "sum":
            return f"sum({arg})" if plain else f"sum({gen})"
        if self.aggregate in ("max", "min"):
            return f"{self.aggregate}({arg}, default=0)" if plain else f"{self.aggregate}(({gen}), default=0)"
        if self.aggregate == "list":
            return f"list({arg})" if plain else f"[{gen}]"
        return f"sorted({arg})" if plain else f"sorted({gen})"


def all_specs() -> list[Spec]:
    """Every problem spec, in a fixed order (count takes no map)."""
    return [Spec(f, m, a) for a in AGGREGATES for f in FILTERS for m in (MAPS if a != "count" else (None,))]


# Fixed hidden inputs before the random ones: empty, nothing passes a "greater than" filter (and the largest item is
# negative), nothing passes a "less than" filter, mixed parities and signs with repeats, and one singleton per value
# around the thresholds (so "greater than 5" and "greater than 3" are told apart).
EDGE_INPUTS = ([], [-7, -3, -1], [15, 12, 20], [4, -6, 9, 4, 0, 13]) + tuple([k] for k in range(-1, 11))


def hidden_inputs(spec_id: str, num_random: int) -> list[list[int]]:
    """Hidden test inputs of a spec (deterministic): EDGE_INPUTS, then `num_random` lists of 1-8 ints in [-9, 20]."""
    rng = random.Random(f"code_exec|tests|{spec_id}")
    return [list(xs) for xs in EDGE_INPUTS] + [
        [rng.randint(-9, 20) for _ in range(rng.randint(1, 8))] for _ in range(num_random)]


@dataclass
class CodeExec(Task):
    """`def name(arg):` + docstring -> a body; 1.0 if prompt + completion passes the hidden tests in the sandbox.

    Split on the spec (`Spec.id`); the key adds the surface names (argument, loop variable), so train holds each train
    spec under up to 15 surfaces. The reference answer is a one-line `return`.
    """

    num_random_tests: int = 6
    timeout_s: float = 10.0
    workers: int | None = None
    sandbox: SandboxConfig | None = field(default=None)
    name = "code_exec"
    chat = False
    max_new_tokens = 48
    stop = CODE_STOP

    def __post_init__(self) -> None:
        if not isinstance(self.num_random_tests, int) or isinstance(self.num_random_tests, bool) \
                or self.num_random_tests < 0:
            raise ValueError(f"num_random_tests must be an int >= 0, got {self.num_random_tests!r}")
        self.sandbox = self.sandbox or SandboxConfig(timeout_s=self.timeout_s, cpu_s=self.timeout_s)
        self._specs = all_specs()

    def config_id(self) -> str:
        return f"random_tests={self.num_random_tests}"

    def _sample(self, rng: random.Random) -> Example:
        spec = rng.choice(self._specs)
        arg, v = rng.choice(ARG_NAMES), rng.choice(VAR_NAMES)
        entry = spec.id
        prompt = f'def {entry}({arg}):\n    """{spec.docstring(arg, v)}"""\n'
        answer = f"    return {spec.body(arg, v)}\n"
        cases = [(xs, spec.run(xs)) for xs in hidden_inputs(spec.id, self.num_random_tests)]
        test = "def check(candidate):\n" + "".join(
            f"    assert candidate({xs!r}) == {want!r}, {xs!r}\n" for xs, want in cases)
        return Example(user(prompt), answer,
                       {"key": f"{spec.id}|{arg}|{v}", "split_key": spec.id, "prompt": prompt, "test": test,
                        "entry_point": entry})

    def run(self, examples: Sequence[Example], completions: Sequence[str]) -> list[SandboxResult]:
        """Sandbox results (status, reason, output) for each (example, completion), in parallel."""
        return run_programs(self.sandbox, self.workers, examples, completions)

    def score(self, example: Example, completion: str) -> float:
        return self.score_many([example], [completion])[0]

    def score_many(self, examples: Sequence[Example], completions: Sequence[str]) -> list[float]:
        if len(examples) != len(completions):
            raise ValueError(f"completions has {len(completions)} items, examples has {len(examples)}")
        empty = [not c.strip() for c in completions]
        results = self.run([e for e, x in zip(examples, empty) if not x],
                           [c for c, x in zip(completions, empty) if not x])
        it = iter(results)
        return [0.0 if x else (1.0 if next(it).passed else 0.0) for x in empty]
