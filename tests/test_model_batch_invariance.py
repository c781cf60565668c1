"""Batch invariance on CPU, bit for bit: a row's logits never depend on the other rows of its forward.

Two CPU kernels round differently depending on the batch: BLAS for matrices with a few rows (an expert picked by
few tokens) and SDPA for different key counts (rows padded to the longest cache or window). `GEMM_ROW_TILE` and
`ragged_key_groups` remove both; these tests compare with `torch.equal`, not a tolerance. Rows are run as the engine
runs them: windows padded to whole blocks (the dense layers then see matrices of 8+ rows, where BLAS is invariant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from redraft.model import BlockLayout, KVCache, LLaDA2MoeConfig
from redraft.model.moe import GEMM_ROW_TILE
from redraft.model.testing import random_model

BL = 16
CFG = LLaDA2MoeConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_experts=16,
                      num_experts_per_tok=2, n_group=4, topk_group=2, moe_intermediate_size=128,
                      num_shared_experts=1, first_k_dense_replace=1, max_position_embeddings=1024,
                      torch_dtype="float32")


def _model():
    return random_model(CFG, seed=0, head_std=1.0)


def test_the_blas_premise_small_row_counts_round_differently():
    """Documents why the padding exists: without it, rows of small matrices differ from the same rows in big ones.
    (If a future BLAS stops doing this, the test still passes; the invariance tests below are the contract.)"""
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(256, 256, generator=g), torch.randn(64, 256, generator=g)
    big = F.linear(x, w)
    for m in range(1, 40):
        padded = -(-m // GEMM_ROW_TILE) * GEMM_ROW_TILE
        assert torch.equal(F.linear(x[:padded], w)[:m], big[:m])


def test_moe_token_output_does_not_depend_on_other_tokens():
    model = _model()
    moe = model.model.layers[1].mlp
    x = torch.randn(6, 40, CFG.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        together = moe(x)
        for r in range(x.shape[0]):
            for n in (8, 16, 24, 40):  # few tokens per expert alone, many together
                assert torch.equal(moe(x[r:r + 1, :n]), together[r:r + 1, :n])


def _ids(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, CFG.vocab_size - 1, (n,), generator=torch.Generator().manual_seed(seed))


def _padded(ids: torch.Tensor, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor, BlockLayout]:
    """A window of `count` tokens from `start`, padded to whole blocks the way the engine pads its windows."""
    width = -(-count // BL) * BL
    window = torch.zeros(1, width, dtype=torch.long)
    window[0, :count] = ids[start:start + count]
    valid = torch.arange(width)[None] < count
    return window, torch.arange(start, start + width)[None], BlockLayout(BL, valid=valid)


def _alone(model, ids: torch.Tensor, committed: int, window: int) -> torch.Tensor:
    """The row by itself: commit its first `committed` tokens, then run `window` tokens over that cache."""
    cache = KVCache.for_model(model, 1)
    with torch.no_grad():
        if committed:
            w, pos, layout = _padded(ids, 0, committed)
            cache.commit(model(w, pos, layout).new_kv, [committed])
        w, pos, layout = _padded(ids, committed, window)
        return model(w, pos, layout, cache=cache).logits[0, :window]


def test_rows_with_different_caches_and_padded_windows_match_their_solo_runs():
    model = _model()
    rows = [(_ids(200, s), committed, window) for s, (committed, window) in
            enumerate([(5 * BL, BL), (0, BL), (9 * BL + 3, 2 * BL), (2 * BL, 7), (5 * BL, BL)])]  # rows 0, 4: one group
    width = max(w for _, _, w in rows)
    cache = KVCache.for_model(model, len(rows))
    with torch.no_grad():
        for i, (ids, committed, _) in enumerate(rows):  # prefill row by row into the shared cache
            if committed:
                w, pos, layout = _padded(ids, 0, committed)
                cache.commit(model(w, pos, layout).new_kv, [committed], rows=[i])
        window = torch.zeros(len(rows), width, dtype=torch.long)
        pos = torch.zeros(len(rows), width, dtype=torch.long)
        valid = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, (ids, committed, w) in enumerate(rows):
            window[i, :w] = ids[committed:committed + w]
            pos[i] = torch.arange(committed, committed + width)
            valid[i, :w] = True
        batched = model(window, pos, BlockLayout(BL, valid=valid), cache=cache).logits
    for i, (ids, committed, w) in enumerate(rows):
        alone = _alone(model, ids, committed, w)
        assert torch.equal(batched[i, :w], alone), f"row {i}"
        assert torch.isfinite(batched[i]).all()  # padding queries stay finite too


def test_join_prefill_of_prompts_of_different_lengths_matches_solo():
    model = _model()
    lengths = [37, 64, 5]
    ids = torch.zeros(3, 64, dtype=torch.long)
    valid = torch.zeros(3, 64, dtype=torch.bool)
    seqs = [_ids(n, 10 + i) for i, n in enumerate(lengths)]
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        valid[i, :len(s)] = True
    pos = torch.arange(64)[None].expand(3, -1)
    with torch.no_grad():
        batched = model(ids, pos, BlockLayout(BL, valid=valid)).logits
        for i, s in enumerate(seqs):
            w, p, layout = _padded(s, 0, len(s))
            alone = model(w, p, layout).logits[0, :len(s)]
            assert torch.equal(batched[i, :len(s)], alone), f"row {i}"
