"""EBPO loss (eq. 4): clipped-gradient behaviour, per-level backward == all-at-once autograd, k3 KL."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from redraft.model.config import LLaDA2MoeConfig
from redraft.model.testing import TINY_CONFIG, random_model
from redraft.rl.likelihood import ElboConfig, SequenceBatch, block_terms, normalizer, sequence_logp
from redraft.rl.loss import LossConfig, clipped_surrogate, ebpo_backward, ebpo_loss, is_clipped, k3

MASK_ID = 63
ELBO = ElboConfig(block_length=4)


@pytest.fixture(scope="module")
def model():
    cfg = LLaDA2MoeConfig(**{**TINY_CONFIG, "vocab_size": 64})
    return random_model(cfg, seed=1, head_std=0.5)


def make_batch(rows: int = 4, seed: int = 0) -> SequenceBatch:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, MASK_ID, (rows, 14), generator=gen)
    lengths = torch.tensor([14, 11, 9, 13][:rows])
    return SequenceBatch(ids, torch.tensor([5, 3, 4, 6][:rows]), lengths, torch.arange(rows) + 100)


def logp_of(model, batch) -> torch.Tensor:
    return sequence_logp(block_terms(model, batch, ELBO, MASK_ID), normalizer(batch, ELBO))


def grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def perturbed(model, seed: int, scale: float = 0.02):
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return other


def test_clipped_surrogate_values_and_indicator():
    cfg = LossConfig()
    log_ratio = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5, 1.1]))
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, 2.0])
    j = clipped_surrogate(log_ratio, adv, cfg)
    torch.testing.assert_close(j, torch.tensor([1.28, -1.5, 0.5, -0.8, 2.2]))
    assert is_clipped(log_ratio.exp(), adv, cfg).tolist() == [True, False, False, True, False]


def test_k3_is_nonnegative_and_zero_at_equality():
    d = torch.linspace(-3, 3, 13)
    assert bool((k3(d) >= 0).all())
    assert float(k3(torch.zeros(1))) == 0.0


@pytest.mark.parametrize("ratio,adv,clipped", [(1.5, 1.0, True), (0.5, -1.0, True), (0.5, 1.0, False),
                                               (1.5, -1.0, False), (1.1, 0.7, False)])
def test_gradient_zero_where_clipped_else_autograd_of_unclipped(model, ratio, adv, clipped):
    batch = make_batch(rows=1)
    with torch.no_grad():
        logp = logp_of(model, batch)
    old = logp - math.log(ratio)  # makes ρ = ratio at the current parameters
    a, w = torch.tensor([adv]), torch.ones(1)
    model.zero_grad(set_to_none=True)
    stats = ebpo_backward(model, batch, old, a, w, ELBO, LossConfig(), MASK_ID)
    got = grads(model)
    assert stats.clipped == int(clipped)
    assert stats.ratio_min == pytest.approx(ratio, rel=1e-5)
    if clipped:
        assert all(float(g.abs().max()) == 0.0 for g in got)
        return
    model.zero_grad(set_to_none=True)
    (-(logp_of(model, batch) - old).exp() * a).sum().backward()  # the unclipped form ρÂ
    want = grads(model)
    assert max(float(g.abs().max()) for g in want) > 0
    for g, h in zip(got, want):
        torch.testing.assert_close(g, h, atol=1e-6, rtol=1e-4)
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("kl_coef", [0.0, 0.1])
def test_per_level_backward_equals_all_at_once_autograd(model, kl_coef):
    batch = make_batch()
    old_model, ref_model = perturbed(model, 1, 0.05), perturbed(model, 2, 0.05)
    with torch.no_grad():
        old, ref = logp_of(old_model, batch), logp_of(ref_model, batch)
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5])
    w = torch.full((4,), 0.25)
    cfg = LossConfig(kl_coef=kl_coef)
    model.zero_grad(set_to_none=True)
    stats = ebpo_backward(model, batch, old, adv, w, ELBO, cfg, MASK_ID, ref_logp=ref)
    fast = grads(model)
    model.zero_grad(set_to_none=True)
    loss = ebpo_loss(model, batch, old, adv, w, ELBO, cfg, MASK_ID, ref_logp=ref)
    loss.backward()
    slow = grads(model)
    model.zero_grad(set_to_none=True)
    assert stats.loss == pytest.approx(float(loss.detach()), rel=1e-5, abs=1e-7)
    assert 0 < stats.clipped < 4  # both kinds of rows are in the comparison
    assert max(float(g.abs().max()) for g in slow) > 0
    for g, h in zip(fast, slow):
        torch.testing.assert_close(g, h, atol=1e-6, rtol=1e-4)


def test_ratio_one_on_first_step_and_kl_needs_reference(model):
    batch = make_batch()
    with torch.no_grad():
        old = logp_of(model, batch)
    stats = ebpo_backward(model, batch, old, torch.ones(4), torch.full((4,), 0.25), ELBO, LossConfig(), MASK_ID)
    model.zero_grad(set_to_none=True)
    assert stats.ratio_min == stats.ratio_max == 1.0 and stats.clipped == 0
    with pytest.raises(ValueError, match="ref_logp"):
        ebpo_backward(model, batch, old, torch.ones(4), torch.ones(4), ELBO, LossConfig(kl_coef=0.1), MASK_ID)


@pytest.mark.parametrize("field,value", [("clip_low", 1.0), ("clip_low", -0.1), ("clip_high", -0.5),
                                         ("kl_coef", -1.0)])
def test_bad_loss_config_raises_naming_field(field, value):
    with pytest.raises(ValueError, match=f"loss.{field}"):
        LossConfig(**{field: value})
