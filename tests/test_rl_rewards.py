"""Rewards: task scorers, format regex, HumanEval-style code in the sandbox, the combined reward and registry."""

from __future__ import annotations

import pytest

from redraft.evaluation.tasks import Example, get_task
from redraft.rl.rewards import REWARDS, CodeReward, CombinedReward, RewardSpec, format_reward, task_reward


def test_task_reward_uses_the_task_scorer():
    ex = get_task("addition").examples(1, seed=0)[0]
    reward = task_reward("addition")
    assert reward("", f" {ex.answer}\n", ex) == 1.0
    assert reward("", ex.answer + "0", ex) == 0.0


def test_format_reward_and_bad_pattern():
    digits = format_reward(r"\d+")
    assert digits("", " 123 ", None) == 1.0 and digits("", "12a", None) == 0.0
    with pytest.raises(ValueError, match="pattern"):
        format_reward("(")


def test_combined_reward_weights_and_parts():
    ex = get_task("addition").examples(1, seed=1)[0]
    combined = CombinedReward.from_specs([RewardSpec("task", 1.0, {"task": "addition"}),
                                          RewardSpec("format", 0.5, {"pattern": r"\d+"}),
                                          RewardSpec("format", 0.25, {"pattern": r"9+"})])
    total, parts = combined.score(["p", "p"], [ex.answer, "x"], [ex, ex])
    assert sorted(parts) == ["format", "format_2", "task"]
    expected0 = 1.0 + 0.5 + (0.25 if set(ex.answer) == {"9"} else 0.0)
    assert total == [expected0, 0.0]


def my_reward(prompt: str, completion: str, sample) -> float:
    return float(len(completion))


def test_python_and_length_rewards():
    fn = RewardSpec("python", config={"function": "test_rl_rewards:my_reward"}).build()
    assert fn("", "abc", None) == 3.0
    factory = RewardSpec("python", config={"function": "redraft.rl.rewards:format_reward", "pattern": "a+"}).build()
    assert factory("", "aaa", None) == 1.0
    with pytest.raises(ValueError, match="package.module:name"):
        RewardSpec("python", config={"function": "nocolon"}).build()
    with pytest.raises(ValueError, match="cannot import"):
        RewardSpec("python", config={"function": "redraft.rl.rewards:nope"}).build()
    length = RewardSpec("length", config={"target": 4}).build()
    assert length("", " abcd ", None) == 0.0 and length("", "ab", None) == -0.5
    with pytest.raises(ValueError, match="target"):
        RewardSpec("length", config={"target": 0}).build()


def test_random_placebo_reward_is_deterministic_uninformative_and_validated():
    fn = RewardSpec("random", config={"p": 0.3, "seed": 1}).build()
    values = [fn("sort: 3 1 2", f"completion {i}", None) for i in range(4000)]
    assert set(values) == {0.0, 1.0} and abs(sum(values) / len(values) - 0.3) < 0.03
    assert [fn("sort: 3 1 2", f"completion {i}", None) for i in range(50)] == values[:50]  # same completion, same reward
    other = RewardSpec("random", config={"p": 0.3, "seed": 2}).build()
    assert [other("sort: 3 1 2", f"completion {i}", None) for i in range(50)] != values[:50]
    with pytest.raises(ValueError, match="p must be"):
        RewardSpec("random", config={"p": 1.5}).build()


def test_registry_is_extensible_and_errors_name_the_kind():
    assert {"task", "format", "code", "length", "python"} <= set(REWARDS)
    with pytest.raises(ValueError, match="reward kind"):
        RewardSpec("nope").build()
    with pytest.raises(ValueError, match="bad config"):
        RewardSpec("format", config={"regex": "x"}).build()
    with pytest.raises(ValueError, match="task must be one of"):
        RewardSpec("task", config={"task": "nope"}).build()


def test_code_reward_runs_humaneval_style_tests_in_the_sandbox():
    sample = Example([{"role": "user", "content": "add"}], "    return a + b\n",
                     {"key": "add", "prompt": "def add(a, b):\n", "entry_point": "add",
                      "test": "def check(f):\n    assert f(2, 3) == 5\n"})
    reward = CodeReward(timeout_s=10.0, workers=2)
    assert reward.score_batch(["", ""], ["    return a + b\n", "    return a - b\n"], [sample, sample]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="entry_point"):
        reward("", "x", Example([], "", {"key": "k", "test": ""}))
