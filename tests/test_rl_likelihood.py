"""Block-level ELBO (eq. 5): vectorised terms vs separate block-causal forwards, shared masks, ratio exactly 1."""

from __future__ import annotations

import copy

import pytest
import torch

from redraft.model import BlockLayout
from redraft.model.config import LLaDA2MoeConfig
from redraft.model.testing import TINY_CONFIG, random_model
from redraft.rl.likelihood import (ElboConfig, SequenceBatch, block_terms, gauss_legendre, noise_level, normalizer,
                                   sequence_logp)

MASK_ID = 63
BLOCK = 4


@pytest.fixture(scope="module")
def model():
    cfg = LLaDA2MoeConfig(**{**TINY_CONFIG, "vocab_size": 64})
    return random_model(cfg, seed=0, head_std=1.0)


def make_batch(seed: int = 0) -> SequenceBatch:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, MASK_ID, (3, 19), generator=gen)
    # prompts end inside a block (5, 7) and on a block boundary (4); rows of different lengths (padding)
    return SequenceBatch(ids, torch.tensor([5, 7, 4]), torch.tensor([19, 13, 10]), torch.tensor([11, 22, 33]))


def blockwise_terms(model, batch: SequenceBatch, cfg: ElboConfig) -> torch.Tensor:
    """ℓ_{n,b} with one plain block-causal forward per (row, level, block): clean blocks < b, then noisy block b."""
    bsz = batch.input_ids.shape[0]
    nb = batch.num_blocks(cfg.block_length)
    out = torch.zeros(bsz, cfg.num_levels, nb)
    for n in range(cfg.num_levels):
        noised = noise_level(batch, n, cfg, MASK_ID)
        for r in range(bsz):
            length = int(batch.lengths[r])
            for b in range(nb):
                lo, hi = b * cfg.block_length, min((b + 1) * cfg.block_length, length)
                if lo >= hi:
                    continue
                ids = torch.cat([batch.input_ids[r, :lo], noised.x_t[r, lo:hi]])[None]
                logits = model(ids, layout=BlockLayout(cfg.block_length)).logits[0, lo:hi]
                logp = logits.log_softmax(-1).gather(-1, batch.input_ids[r, lo:hi, None])[:, 0]
                out[r, n, b] = (logp * noised.masked[r, lo:hi]).sum() * noised.scale[r]
    return out


@pytest.mark.parametrize("masking,levels", [("exact_k", "gauss_legendre"), ("bernoulli", "stratified")])
def test_vectorised_terms_equal_blockwise_forwards(model, masking, levels):
    cfg = ElboConfig(block_length=BLOCK, masking=masking, levels=levels)
    batch = make_batch()
    with torch.no_grad():
        fast = block_terms(model, batch, cfg, MASK_ID).terms
        slow = blockwise_terms(model, batch, cfg)
    assert fast.shape == slow.shape == (3, 3, 5)
    assert bool((slow != 0).any())
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)
    # blocks without response tokens (prompt-only, padding) contribute nothing
    assert float(fast[2, :, 0].abs().sum()) == 0.0 and float(fast[2, :, 3:].abs().sum()) == 0.0


def test_prompt_and_padding_never_masked_and_exact_k_counts():
    batch = make_batch()
    cfg = ElboConfig(block_length=BLOCK)
    nodes, _ = gauss_legendre(3)
    m = batch.lengths - batch.prompt_lens
    for n in range(3):
        noised = noise_level(batch, n, cfg, MASK_ID)
        assert not bool((noised.masked & ~batch.response_mask).any())
        expected = torch.clamp(torch.round(nodes[n] * m.double()), min=1).long()
        assert noised.masked.sum(1).tolist() == expected.tolist()
        assert bool((noised.x_t[noised.masked] == MASK_ID).all())
        assert torch.equal(noised.x_t[~noised.masked], batch.input_ids[~noised.masked])
        torch.testing.assert_close(noised.scale, m.double() / expected.double())


def test_same_seed_same_mask_for_any_policy_and_batch_order(model):
    batch = make_batch()
    for levels in ("gauss_legendre", "stratified"):
        cfg = ElboConfig(block_length=BLOCK, levels=levels, masking="bernoulli")
        for n in range(cfg.num_levels):
            a = noise_level(batch, n, cfg, MASK_ID)
            sub = noise_level(batch.select([2, 0]), n, cfg, MASK_ID)  # another batch composition and padding
            for new_row, old_row in ((0, 2), (1, 0)):
                width = int(batch.lengths[old_row])
                assert torch.equal(sub.masked[new_row, :width], a.masked[old_row, :width])
                assert float(sub.t[new_row]) == float(a.t[old_row])
    other = SequenceBatch(batch.input_ids, batch.prompt_lens, batch.lengths, batch.mask_seeds + 1)
    cfg = ElboConfig(block_length=BLOCK)
    assert not torch.equal(noise_level(other, 1, cfg, MASK_ID).masked, noise_level(batch, 1, cfg, MASK_ID).masked)


def test_ratio_is_exactly_one_when_theta_equals_theta_old(model):
    batch = make_batch(1)
    cfg = ElboConfig(block_length=BLOCK)
    norm = normalizer(batch, cfg)
    old_model = copy.deepcopy(model)
    with torch.no_grad():
        old = sequence_logp(block_terms(old_model, batch, cfg, MASK_ID), norm)
        new = sequence_logp(block_terms(model, batch, cfg, MASK_ID), norm)
    ratio = (new - old).exp()
    assert torch.equal(ratio, torch.ones(3))


def test_gauss_legendre_defaults_and_stratified_levels():
    t, w = gauss_legendre(3)
    torch.testing.assert_close(t, torch.tensor([0.5 - 0.15**0.5, 0.5, 0.5 + 0.15**0.5], dtype=torch.float64))
    torch.testing.assert_close(w, torch.tensor([5 / 18, 8 / 18, 5 / 18], dtype=torch.float64))
    batch = make_batch()
    cfg = ElboConfig(block_length=BLOCK, levels="stratified", num_levels=4)
    for n in range(4):
        lv = noise_level(batch, n, cfg, MASK_ID)
        assert bool(((lv.t >= n / 4) & (lv.t < (n + 1) / 4)).all())
        assert bool((lv.weight == 0.25).all())


def test_normalizers():
    batch = make_batch()
    tok = normalizer(batch, ElboConfig(block_length=BLOCK, normalizer="token"))
    assert tok.tolist() == [14.0, 6.0, 6.0]
    blk = normalizer(batch, ElboConfig(block_length=BLOCK, normalizer="block"))
    assert blk.tolist() == [4.0, 3.0, 2.0]  # blocks 1-4, 1-3, 1-2
    assert normalizer(batch, ElboConfig(normalizer="none")).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("field,value", [("levels", "uniform"), ("masking", "topk"), ("normalizer", "seq"),
                                         ("num_levels", 0), ("block_length", -1), ("elbo_weight", 1)])
def test_bad_config_raises_naming_field(field, value):
    with pytest.raises(ValueError, match=f"elbo.{field}"):
        ElboConfig(**{field: value})


def test_bad_batch_raises():
    with pytest.raises(ValueError, match="lengths"):
        SequenceBatch(torch.zeros(2, 5, dtype=torch.long), torch.tensor([1, 1]), torch.tensor([6, 5]),
                      torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="mask_seeds"):
        SequenceBatch(torch.zeros(2, 5, dtype=torch.long), torch.tensor([1, 1]), torch.tensor([5, 5]),
                      torch.tensor([0]))
