"""Tests for the evaluation task generators: determinism, disjoint splits, exact scoring, validation."""

from __future__ import annotations

import ast

import pytest

from redraft.evaluation.tasks import Example, get_task, list_tasks, split_of
from redraft.evaluation.tasks.code_syntax import extract_functions, stdlib_split
from redraft.evaluation.tasks.sudoku import all_solutions, count_solutions, is_solved

SYNTHETIC = ["addition", "sorting", "sudoku4", "reverse", "addition_long", "sorting_long", "reverse_long"]


@pytest.fixture(scope="module")
def code_task():
    return get_task("code_syntax")


def _task(name, code_task):
    return code_task if name == "code_syntax" else get_task(name)


def test_registry_lists_all_tasks():
    assert set(SYNTHETIC + ["code_syntax", "code_exec", "humaneval"]) == set(list_tasks())


@pytest.mark.parametrize("name", SYNTHETIC + ["code_syntax", "code_exec"])
def test_examples_deterministic_distinct_and_split(name, code_task):
    task = _task(name, code_task)
    a = task.examples(40, seed=3, split="eval")
    assert a == task.examples(40, seed=3, split="eval")
    assert a != task.examples(40, seed=4, split="eval")
    assert len({e.key for e in a}) == 40
    train = task.examples(100, seed=3, split="train")
    # train and eval never share a problem, whatever the seeds
    for seed in range(3):
        evals = {e.key for e in task.examples(40, seed=seed, split="eval")}
        assert not evals & {e.key for e in train}
    split = (lambda e: stdlib_split(e.meta["module"])) if name == "code_syntax" else (
        lambda e: split_of(name, e.split_key))
    assert all(split(e) == "eval" for e in a)
    assert all(split(e) == "train" for e in train)
    assert not {e.split_key for e in a} & {e.split_key for e in train}


@pytest.mark.parametrize("name", SYNTHETIC + ["code_syntax", "code_exec"])
def test_reference_answer_scores_one(name, code_task):
    task = _task(name, code_task)
    examples = task.examples(30, seed=0, split="eval")
    assert all(isinstance(e, Example) and e.messages and e.messages[-1]["role"] == "user" for e in examples)
    assert task.score_many(examples, [e.answer for e in examples]) == [1.0] * 30
    # surrounding whitespace tolerated
    assert task.score_many(examples, ["  \n" + e.answer + "\n " for e in examples]) == [1.0] * 30
    assert task.score_many(examples, [""] * 30) == [0.0] * 30


@pytest.mark.parametrize("name", SYNTHETIC)
def test_exact_scoring_rejects_near_misses(name):
    task = get_task(name)
    e = task.examples(5, seed=1, split="eval")[0]
    assert task.score(e, e.answer + "0") == 0.0
    assert task.score(e, e.answer.replace(" ", "  ", 1) if " " in e.answer else "x" + e.answer) == 0.0


def test_addition_content_and_digits():
    task = get_task("addition", digits=3, min_digits=3)
    for e in task.examples(50, seed=0, split="train"):
        a, b = e.meta["a"], e.meta["b"]
        assert 100 <= a <= 999 and 100 <= b <= 999
        assert e.messages[0]["content"] == f"{a}+{b}=" and e.answer == str(a + b)


def test_sorting_and_reverse_content():
    for e in get_task("sorting").examples(30, seed=0):
        assert e.answer.split() == sorted(e.key.split(), key=int)
    for e in get_task("reverse", unit="words").examples(30, seed=0):
        assert e.answer.split() == e.key.split()[::-1]
    for e in get_task("reverse").examples(30, seed=0):
        assert all(len(tok) == 1 for tok in e.key.split())
        assert e.answer == e.key[::-1]


def test_sudoku_puzzles_uniquely_solvable():
    assert len(all_solutions()) == 288
    task = get_task("sudoku4")
    for e in task.examples(60, seed=0, split="eval"):
        puzzle, solution = tuple(e.meta["puzzle"]), tuple(e.meta["solution"])
        assert count_solutions(puzzle, limit=5) == 1
        assert is_solved(solution)
        assert all(p in (0, s) for p, s in zip(puzzle, solution))
        assert task.min_clues <= sum(1 for v in puzzle if v)
    assert count_solutions((0,) * 16, limit=1000) == 288


def test_code_syntax_scores_by_parsing(code_task):
    e = code_task.examples(1, seed=0, split="eval")[0]
    assert code_task.chat is False and e.meta["prompt"].startswith("def ")
    assert code_task.score(e, "    return 1\n") == 1.0
    assert code_task.score(e, "    return (1\n") == 0.0
    assert code_task.score(e, "return 1") == 0.0  # body must be indented
    ast.parse(e.meta["prompt"] + e.answer)


def test_code_exec_runs_hidden_tests():
    task = get_task("code_exec")
    by_id = {e.split_key: e for e in task.examples(1500, seed=0, split="train")}
    e = next(e for k, e in by_id.items() if k.startswith("max_id_gt"))
    arg = e.meta["prompt"].split("(")[1].split(")")[0]
    threshold = int(e.split_key.removeprefix("max_id_gt"))
    other = (threshold + 2) % 10
    assert task.chat is False and e.meta["prompt"].startswith("def max_id_gt")
    assert f"of {arg} that are greater than {threshold}, or 0 if there is none." in e.meta["prompt"]
    completions = [e.answer,
                   f"    return max({arg}, default=0)\n",  # ignores the filter: fails the singleton/negative tests
                   f"    return max((x for x in {arg} if x > {other}), default=0)\n",  # wrong threshold
                   "    while True:\n        pass\n",  # never returns: stopped by the sandbox's time limit
                   "    return max(\n"]  # does not parse
    task.sandbox = type(task.sandbox)(timeout_s=2.0, cpu_s=2.0)
    assert task.score_many([e] * 5, completions) == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_extract_functions_skips_long_and_decorated():
    src = "@d\ndef a():\n    return 1\n\ndef b(x):\n    '''doc'''\n    return x\n\ndef c():\n" + "    x = 1\n" * 9
    assert extract_functions(src, max_body_lines=3, max_body_chars=200) == [("def b(x):\n", "    return x\n")]


def test_bad_input_raises_value_error_naming_field():
    with pytest.raises(ValueError, match="task"):
        get_task("nope")
    with pytest.raises(ValueError, match="bogus"):
        get_task("addition", bogus=1)
    with pytest.raises(ValueError, match="min_digits"):
        get_task("addition", digits=2, min_digits=3)
    with pytest.raises(ValueError, match="unit"):
        get_task("reverse", unit="bytes")
    with pytest.raises(ValueError, match="max_clues"):
        get_task("sudoku4", max_clues=16)
    task = get_task("addition")
    with pytest.raises(ValueError, match="split"):
        task.examples(3, seed=0, split="test")
    with pytest.raises(ValueError, match="n must"):
        task.examples(-1, seed=0)
    with pytest.raises(ValueError, match="n="):
        get_task("addition", digits=1).examples(100, seed=0, split="eval")  # only 100 problems exist in total
