"""Group-normalised advantages: mean_std, mean, rloo as defined; zero-variance groups marked."""

from __future__ import annotations

import pytest
import torch

from redraft.rl.advantages import group_advantages

REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [3.0, 1.0, 2.0, 2.0]])


def test_mean_std_is_standardised_per_group():
    adv, keep = group_advantages(REWARDS, "mean_std", eps=1e-6)
    std0 = (sum((r - 0.5) ** 2 for r in (1, 0, 0, 1)) / 3) ** 0.5  # Bessel-corrected
    torch.testing.assert_close(adv[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std0 + 1e-6))
    torch.testing.assert_close(adv[2], torch.tensor([1.0, -1.0, 0.0, 0.0]) / ((2 / 3) ** 0.5 + 1e-6))
    assert adv[1].tolist() == [0.0] * 4
    assert keep.tolist() == [[True] * 4, [False] * 4, [True] * 4]


def test_mean_and_rloo():
    adv, _ = group_advantages(REWARDS, "mean")
    torch.testing.assert_close(adv[2], torch.tensor([1.0, -1.0, 0.0, 0.0]))
    rloo, _ = group_advantages(REWARDS, "rloo")
    for p in range(3):
        for i in range(4):
            others = torch.cat([REWARDS[p, :i], REWARDS[p, i + 1:]])
            assert float(rloo[p, i]) == pytest.approx(float(REWARDS[p, i] - others.mean()))


def test_keep_all_when_not_skipping():
    _, keep = group_advantages(REWARDS, "mean", skip_zero_variance=False)
    assert bool(keep.all())


@pytest.mark.parametrize("kwargs,match", [({"method": "zscore"}, "method"), ({"eps": 0.0}, "eps")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(REWARDS, **kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="G must be >= 2"):
        group_advantages(torch.ones(3, 1))
    with pytest.raises(ValueError, match=r"\[P, G\]"):
        group_advantages(torch.ones(3))


def test_negative_scale_shrinks_only_negative_advantages():
    import pytest
    import torch

    from redraft.rl.advantages import group_advantages

    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    plain, keep = group_advantages(r, "mean")
    half, keep_half = group_advantages(r, "mean", negative_scale=0.5)
    assert torch.equal(keep, keep_half)
    assert torch.equal(half[plain > 0], plain[plain > 0])
    assert torch.allclose(half[plain < 0], 0.5 * plain[plain < 0])
    pos_only, _ = group_advantages(r, "mean", negative_scale=0.0)
    assert (pos_only >= 0).all() and torch.equal(pos_only[plain > 0], plain[plain > 0])
    with pytest.raises(ValueError, match="negative_scale"):
        group_advantages(r, "mean", negative_scale=1.5)
