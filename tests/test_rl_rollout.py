"""Rollouts through the real decoding engine: the typed record, per-row seeds, EOS padding, minibatch selection."""

from __future__ import annotations

import pytest
import torch

from redraft.decoding.results import DecodeStats, GenerationResult
from redraft.evaluation.tasks import get_task
from redraft.model import load_model
from redraft.model.tokenizer import load_tokenizer
from redraft.rl.rewards import CombinedReward, RewardSpec
from redraft.rl.rollout import RolloutConfig, collect_rollouts, response_row


@pytest.fixture(scope="module")
def policy(tiny_checkpoint):
    return load_model(tiny_checkpoint), load_tokenizer(tiny_checkpoint)


def run(policy, seeds, group_size=3):
    model, tok = policy
    task = get_task("addition", digits=2)
    samples = task.examples(2, seed=0)
    reward = CombinedReward.from_specs([RewardSpec("task", 1.0, {"task": "addition", "digits": 2}),
                                        RewardSpec("length", 0.1, {"target": 3})])
    cfg = RolloutConfig(group_size=group_size, max_new_tokens=8, block_length=4, temperature=1.0)
    return collect_rollouts(model, tok, [task.prompt_ids(s, tok) for s in samples], samples, reward, cfg,
                            seeds=seeds, mask_seeds=[s + 100 for s in seeds])


def test_rollout_record_shapes_and_consistency(policy):
    batch = run(policy, list(range(6)))
    b = 6
    seq = batch.sequences
    assert seq.input_ids.shape[0] == b and batch.num_rows == b
    for name in ("response_lens", "group", "seeds", "rewards", "advantages", "keep", "tpf", "forwards"):
        assert getattr(batch, name).shape == (b,), name
    assert batch.group.tolist() == [0, 0, 0, 1, 1, 1]
    assert batch.seeds.tolist() == list(range(6)) and seq.mask_seeds.tolist() == list(range(100, 106))
    assert len(batch.completions) == len(batch.finish_reasons) == len(batch.samples) == b
    assert batch.samples[0] is batch.samples[2] and batch.samples[3] is not batch.samples[0]
    assert bool((seq.lengths - seq.prompt_lens >= batch.response_lens).all())
    assert sorted(batch.reward_parts) == ["length", "task"]
    torch.testing.assert_close(batch.rewards, batch.reward_parts["task"] + 0.1 * batch.reward_parts["length"])
    for g in range(2):  # advantages are normalised within each prompt's group
        assert abs(float(batch.advantages[3 * g:3 * g + 3].sum())) < 1e-4
    assert bool((batch.tpf > 0).all())
    # rows are prompt + response as generated
    model, tok = policy
    for r in range(b):
        p = int(seq.prompt_lens[r])
        assert seq.input_ids[r, :p].tolist() == tok.apply_chat_template(batch.samples[r].messages)
    sub = batch.select([4, 1])
    assert sub.group.tolist() == [1, 0] and sub.completions == [batch.completions[4], batch.completions[1]]
    assert sub.sequences.input_ids.shape[1] == int(sub.sequences.lengths.max())


def test_same_seeds_same_rollouts_other_seeds_differ(policy):
    a, b, c = run(policy, list(range(6))), run(policy, list(range(6))), run(policy, list(range(50, 56)))
    assert torch.equal(a.sequences.input_ids, b.sequences.input_ids) and a.completions == b.completions
    assert a.completions != c.completions


def test_response_row_pads_with_eos_to_block_end_after_a_stop():
    res = GenerationResult("r", [5, 6, 2], None, "eos", DecodeStats())
    assert response_row([1, 1, 1], res, frozenset({2, 3}), 9, 4, True) == [1, 1, 1, 5, 6, 2, 9, 9]
    assert response_row([1, 1, 1], res, frozenset({2, 3}), 9, 4, False) == [1, 1, 1, 5, 6, 2]
    cut = GenerationResult("r", [5, 6, 7], None, "length", DecodeStats())
    assert response_row([1], cut, frozenset({2}), 9, 4, True) == [1, 5, 6, 7]


@pytest.mark.parametrize("kwargs,match", [({"group_size": 1}, "group_size"), ({"temperature": 0.0}, "temperature"),
                                          ({"mode": "fast"}, "preset name"), ({"decode": {"tau": 1}}, "tau")])
def test_bad_rollout_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RolloutConfig(**kwargs)
