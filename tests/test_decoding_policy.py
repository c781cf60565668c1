"""The pure Draft-and-Edit rule (eq. 1-3): invariants, thresholds, fallback, editing switch, batching, no host sync."""

from __future__ import annotations

import pytest
import torch

from redraft.decoding import decide, greedy_top
from redraft.decoding.policy import repeated_ngram_end

MASK = 99


def _settings(b: int, tau_mask=0.7, tau_edit=0.5, k=1, editing=True):
    full = lambda v, dt: torch.full((b,), v, dtype=dt)  # noqa: E731
    return dict(mask_id=MASK, tau_mask=full(tau_mask, torch.float32), tau_edit=full(tau_edit, torch.float32),
                num_to_transfer=full(k, torch.long), editing=full(editing, torch.bool))


def _random_case(seed: int, b: int = 6, e: int = 16):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 20, (b, e), generator=g)
    tokens[torch.rand(b, e, generator=g) < 0.5] = MASK
    top = torch.randint(0, 20, (b, e), generator=g)
    prob = torch.rand(b, e, generator=g)
    frozen = torch.rand(b, e, generator=g) < 0.2
    return tokens, top, prob, frozen


@pytest.mark.parametrize("seed", range(5))
def test_frozen_positions_never_change_and_only_masks_are_filled(seed):
    tokens, top, prob, frozen = _random_case(seed)
    res = decide(tokens, top, prob, frozen, **_settings(tokens.shape[0], tau_mask=0.3, tau_edit=0.0, k=3))
    assert torch.equal(res.tokens[frozen], tokens[frozen])
    assert not (res.m2t & frozen).any() and not (res.t2t & frozen).any()
    assert (tokens[res.m2t] == MASK).all()
    assert (tokens[res.t2t] != MASK).all()
    assert not (res.m2t & res.t2t).any()
    changed = res.tokens != tokens
    assert not (changed & ~(res.m2t | res.t2t)).any()
    assert torch.equal(res.tokens[res.m2t | res.t2t], top[res.m2t | res.t2t])


def test_m2t_threshold_is_strict_and_fallback_fills_the_most_confident():
    tokens = torch.tensor([[MASK, MASK, MASK, MASK]])
    top = torch.tensor([[1, 2, 3, 4]])
    prob = torch.tensor([[0.7, 0.71, 0.2, 0.9]])
    res = decide(tokens, top, prob, torch.zeros_like(tokens, dtype=torch.bool), **_settings(1, tau_mask=0.7, k=2))
    assert res.m2t.tolist() == [[False, True, False, True]]  # 0.7 is not > 0.7
    # fewer than k clear the threshold: exactly k most confident masks instead
    res = decide(tokens, top, prob, torch.zeros_like(tokens, dtype=torch.bool), **_settings(1, tau_mask=0.8, k=3))
    assert res.m2t.tolist() == [[True, True, False, True]]
    # k larger than the number of masks: all of them
    one = torch.tensor([[5, MASK, 6, 7]])
    res = decide(one, top, prob, torch.zeros_like(one, dtype=torch.bool), **_settings(1, tau_mask=0.99, k=3))
    assert res.m2t.tolist() == [[False, True, False, False]]


def test_tau_edit_zero_is_full_editing_and_editing_false_is_off():
    tokens = torch.tensor([[1, 2, 3, MASK]])
    top = torch.tensor([[1, 5, 6, 7]])
    prob = torch.tensor([[0.9, 0.01, 0.6, 0.9]])
    frozen = torch.zeros_like(tokens, dtype=torch.bool)
    full = decide(tokens, top, prob, frozen, **_settings(1, tau_edit=0.0))
    assert full.t2t.tolist() == [[False, True, True, False]]  # same token never counts as an edit
    part = decide(tokens, top, prob, frozen, **_settings(1, tau_edit=0.5))
    assert part.t2t.tolist() == [[False, False, True, False]]
    off = decide(tokens, top, prob, frozen, **_settings(1, tau_edit=0.0, editing=False))
    assert not off.t2t.any() and off.m2t.tolist() == full.m2t.tolist()


@pytest.mark.parametrize("seed", range(4))
def test_batched_result_equals_per_row_results_with_per_row_settings(seed):
    tokens, top, prob, frozen = _random_case(seed, b=5)
    g = torch.Generator().manual_seed(100 + seed)
    st = dict(mask_id=MASK, tau_mask=torch.rand(5, generator=g), tau_edit=torch.rand(5, generator=g) * 0.5,
              num_to_transfer=torch.randint(1, 5, (5,), generator=g),
              editing=torch.tensor([True, False, True, True, False]))
    batched = decide(tokens, top, prob, frozen, **st)
    for i in range(5):
        row = {k: (v[i:i + 1] if torch.is_tensor(v) else v) for k, v in st.items()}
        single = decide(tokens[i:i + 1], top[i:i + 1], prob[i:i + 1], frozen[i:i + 1], **row)
        for a, b in zip(batched, single):
            assert torch.equal(a[i:i + 1], b)


def test_decide_makes_no_host_sync(monkeypatch):
    tokens, top, prob, frozen = _random_case(0)

    def refuse(*_a, **_k):
        raise AssertionError("host sync in the policy")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    b = tokens.shape[0]
    decide(tokens, top, prob, frozen, **_settings(b), previous=torch.full_like(tokens, -1),
           stutter_ngram=torch.full((b,), 2), max_ngram=2)


def test_oscillation_guard_refuses_restoring_the_previous_token():
    tokens = torch.tensor([[4, 4]])
    top = torch.tensor([[3, 5]])
    prob = torch.tensor([[0.9, 0.9]])
    previous = torch.tensor([[3, -1]])
    res = decide(tokens, top, prob, torch.zeros_like(tokens, dtype=torch.bool), **_settings(1), previous=previous)
    assert res.t2t.tolist() == [[False, True]]


def test_stutter_guard_keeps_the_most_confident_fill():
    # filling would give 1 2 1 2 (a repeated 2-gram ending at position 3); position 3 is not the most confident
    tokens = torch.tensor([[1, 2, 1, MASK, MASK]])
    top = torch.tensor([[1, 2, 1, 2, 7]])
    prob = torch.tensor([[0.0, 0.0, 0.0, 0.8, 0.95]])
    frozen = torch.tensor([[True, True, True, False, False]])
    st = _settings(1, tau_mask=0.5)
    plain = decide(tokens, top, prob, frozen, **st)
    assert plain.m2t.tolist() == [[False, False, False, True, True]]
    guarded = decide(tokens, top, prob, frozen, **st, stutter_ngram=torch.tensor([2]), max_ngram=2)
    assert guarded.m2t.tolist() == [[False, False, False, False, True]]
    assert repeated_ngram_end(torch.tensor([[1, 2, 1, 2]]), torch.tensor([2]), 2, MASK).tolist() == \
        [[False, False, False, True]]


def test_greedy_top_matches_softmax():
    logits = torch.randn(3, 4, 50) * 4
    tok, p = greedy_top(logits)
    sm = logits.softmax(-1)
    assert torch.equal(tok, sm.argmax(-1))
    torch.testing.assert_close(p, sm.max(-1).values)
    # wide logits (exp in the subnormal range) and forbidden (-inf) tokens: still the softmax's top value
    wide = torch.randn(2, 8, 300) * 60
    wide[0, :, 5] = float("-inf")
    tok, p = greedy_top(wide)
    sm = wide.double().softmax(-1)
    assert torch.equal(tok, sm.argmax(-1))
    torch.testing.assert_close(p.double(), sm.max(-1).values, rtol=1e-6, atol=0)


def test_greedy_step_is_greedy_top_then_decide():
    """`greedy_step` (the policy part a CUDA graph captures with the forward) is exactly greedy_top + decide."""
    from redraft.decoding.policy import greedy_step

    g = torch.Generator().manual_seed(3)
    B, E, V, mask = 4, 12, 50, 49
    logits = torch.randn(B, E, V, generator=g) * 3
    tokens = torch.randint(0, V, (B, E), generator=g)
    tokens[torch.rand(B, E, generator=g) < 0.5] = mask
    frozen = torch.rand(B, E, generator=g) < 0.2
    tau_mask, tau_edit = torch.tensor([0.1, 0.5, 0.9, 0.3]), torch.tensor([0.2, 0.6, 1.01, 0.0])
    ntt, editing = torch.tensor([1, 2, 1, 3]), torch.tensor([True, True, False, True])
    top, prob = greedy_top(logits)
    want = decide(tokens, top, prob, frozen, mask_id=mask, tau_mask=tau_mask, tau_edit=tau_edit,
                  num_to_transfer=ntt, editing=editing)
    got = greedy_step(logits, tokens, frozen, tau_mask, tau_edit, ntt, editing, mask_id=mask)
    assert torch.equal(got, torch.stack([want.tokens, want.m2t.long(), want.t2t.long()]))
