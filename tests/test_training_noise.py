"""Noise operators of the M2T + T2T objective: rates, exclusions, the prompt untouched, special tokens never written,
a corruption never equal to the original token, loss weights, and config errors that name the field."""

from __future__ import annotations

import pytest
import torch

from redraft.training.masks import block_index
from redraft.training.noise import NoiseConfig, apply_noise, loss_weights, random_replacement, sample_mask_ratio

MASK_ID = 1
SPECIAL = (0, 1, 2, 3)  # pad, mask, eos, role markers: never written by T2T
VOCAB = 50
ALLOWED = torch.arange(len(SPECIAL), VOCAB)


def batch(bsz: int = 64, length: int = 128, prompt: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(len(SPECIAL), VOCAB, (bsz, length), generator=g)
    x0[:, prompt - 1] = 3  # a special token inside the prompt
    x0[:, -4:] = 2  # trained EOS padding
    pos = torch.arange(length).expand(bsz, length)
    eligible = pos >= prompt
    blk = block_index(pos, torch.zeros_like(x0), 16)
    return x0, eligible, blk


def noise(cfg: NoiseConfig, seed: int = 1, **kw):
    x0, eligible, blk = batch(**kw)
    out = apply_noise(x0, eligible, blk, cfg, MASK_ID, ALLOWED, torch.Generator().manual_seed(seed))
    return x0, eligible, blk, out


def test_mask_rate_matches_t_and_prompt_is_untouched():
    cfg = NoiseConfig(mask_ratio_min=0.3, mask_ratio_max=0.3, t2t_ratio=0.0, mtf_turns=1)
    x0, eligible, _, out = noise(cfg)
    rate = out.masked[eligible].float().mean().item()
    assert abs(rate - 0.3) < 0.02, rate
    assert not out.masked[~eligible].any() and not out.corrupted[~eligible].any()
    assert torch.equal(out.x_t[~eligible], x0[~eligible])
    assert (out.x_t[out.masked] == MASK_ID).all()
    assert torch.equal(out.x_t[~out.masked], x0[~out.masked])  # no T2T: everything else is x_0


def test_mask_ratio_is_constant_per_block_or_per_sequence():
    x0, eligible, blk = batch(bsz=8, length=64, prompt=0)
    g = torch.Generator().manual_seed(0)
    per_block = sample_mask_ratio(eligible, blk, NoiseConfig(mask_ratio_per="block"), g)
    for b in range(4):
        chunk = per_block[:, 16 * b:16 * (b + 1)]
        assert torch.equal(chunk, chunk[:, :1].expand_as(chunk))
    assert not torch.equal(per_block[:, :16], per_block[:, 16:32])
    per_seq = sample_mask_ratio(eligible, blk, NoiseConfig(mask_ratio_per="sequence"), g)
    assert torch.equal(per_seq, per_seq[:, :1].expand_as(per_seq))
    lo, hi = NoiseConfig().mask_ratio_min, NoiseConfig().mask_ratio_max
    assert ((per_block >= lo) & (per_block <= hi)).all()


def test_t2t_corrupts_only_visible_eligible_tokens_with_allowed_different_tokens():
    cfg = NoiseConfig(mask_ratio_min=0.2, mask_ratio_max=0.6, t2t_ratio=1.0, t2t_max_rate=0.4, mtf_turns=1)
    x0, eligible, _, out = noise(cfg, bsz=128)
    c = out.corrupted
    assert c.any()
    assert not (c & out.masked).any() and not (c & ~eligible).any()
    assert (out.x_t[c] != x0[c]).all(), "a corruption must never be the original token"
    assert (out.x_t[c] >= len(SPECIAL)).all(), "special tokens must never be written"
    assert torch.equal(out.keep, eligible & ~out.masked & ~c)
    # r ~ U[0, 0.4] per row: mean corruption rate of visible eligible tokens ~0.2, never far above 0.4 in a row
    visible = eligible & ~out.masked
    per_row = c.float().sum(1) / visible.float().sum(1)
    assert abs(per_row.mean().item() - 0.2) < 0.04, per_row.mean()
    assert per_row.max().item() < 0.55


def test_t2t_ratio_selects_rows():
    cfg = NoiseConfig(mask_ratio_min=0.1, mask_ratio_max=0.1, t2t_ratio=0.25, t2t_max_rate=0.5, mtf_turns=1)
    _, _, _, out = noise(cfg, bsz=400, length=64, prompt=0)
    rows = out.corrupted.any(1).float().mean().item()
    assert 0.15 < rows < 0.35, rows
    none = NoiseConfig(t2t_ratio=0.0, mtf_turns=1)
    assert not noise(none)[3].corrupted.any()


def test_random_replacement_is_uniform_over_allowed_minus_original():
    allowed = torch.tensor([4, 7, 9, 20, 33])
    x0 = torch.full((20000,), 9)
    got = random_replacement(x0, allowed, torch.Generator().manual_seed(0))
    counts = torch.bincount(got, minlength=40)
    assert counts[9] == 0 and counts[torch.tensor([4, 7, 20, 33])].min() > 4500
    assert counts.sum() == counts[allowed].sum()
    # an original outside the allowed set (a special token): every allowed token is possible
    got = random_replacement(torch.full((20000,), 2), allowed, torch.Generator().manual_seed(1))
    assert torch.bincount(got, minlength=40)[allowed].min() > 3600


def test_random_replacement_never_returns_the_original_for_every_token():
    x0 = ALLOWED.repeat(200)
    got = random_replacement(x0, ALLOWED, torch.Generator().manual_seed(3))
    assert (got != x0).all() and torch.isin(got, ALLOWED).all()


def test_loss_weights_and_elbo_scale():
    cfg = NoiseConfig(mask_ratio_min=0.25, mask_ratio_max=0.5, t2t_ratio=1.0, t2t_weight=2.0, keep_weight=0.1,
                      mtf_turns=1)
    _, eligible, _, out = noise(cfg)
    w, norm = loss_weights(out, eligible, cfg)
    assert torch.equal(w[out.masked], torch.ones_like(w[out.masked]))
    assert torch.equal(w[out.corrupted], torch.full_like(w[out.corrupted], 2.0))
    torch.testing.assert_close(w[out.keep], torch.full_like(w[out.keep], 0.1))
    assert (w[~eligible] == 0).all()
    torch.testing.assert_close(norm, w.sum())
    elbo = NoiseConfig(mask_ratio_min=0.25, mask_ratio_max=0.5, elbo_weight=True, t2t_ratio=0.0, mtf_turns=1)
    _, eligible, _, out = noise(elbo)
    w, norm = loss_weights(out, eligible, elbo)
    assert ((out.scale >= 2.0) & (out.scale <= 4.0)).all()
    torch.testing.assert_close(w[out.masked], out.scale[out.masked])
    assert norm.item() == eligible.sum().item()


@pytest.mark.parametrize("field,value", [("mask_ratio_min", -0.1), ("mask_ratio_max", 1.5), ("t2t_ratio", 2.0),
                                         ("mask_ratio_per", "token"), ("mtf_select", "best"), ("mtf_turns", 0),
                                         ("keep_weight", -1.0)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"noise.{field}"):
        NoiseConfig(**{field: value})


def test_too_small_allowed_set_is_rejected():
    x0, eligible, blk = batch(bsz=2, length=16, prompt=0)
    with pytest.raises(ValueError, match="allowed_ids"):
        apply_noise(x0, eligible, blk, NoiseConfig(), MASK_ID, torch.tensor([5]), torch.Generator().manual_seed(0))
