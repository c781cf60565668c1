"""Batch invariance on CPU, bit for bit: a row's logits never depend on the other rows of its forward.

Two kinds of CPU kernels round differently depending on the batch: BLAS GEMMs (kernel, blocking and thread split
are chosen from the row count) and SDPA for different key counts (rows padded to the longest cache or window).
`redraft.model.invariant` (fixed-shape row tiles) and `ragged_key_groups` remove both; these tests compare with
`torch.equal`, not a tolerance. The first test checks the premise on the machine it runs on, so a BLAS that breaks
it is reported as such rather than as a model bug.
"""

from __future__ import annotations

import pytest
import torch

from redraft.model import BlockLayout, KVCache, LLaDA2MoeConfig
from redraft.model.invariant import RowTiles, tiled_linear
from redraft.model.testing import random_model

BL = 16
CFG = LLaDA2MoeConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_experts=16,
                      num_experts_per_tok=2, n_group=4, topk_group=2, moe_intermediate_size=128,
                      num_shared_experts=1, first_k_dense_replace=1, max_position_embeddings=1024,
                      torch_dtype="float32")
# decode_speed's CPU shape at 3 layers: wide enough that plain GEMMs are not batch invariant on a 2-core Xeon
WIDE = LLaDA2MoeConfig(vocab_size=2048, hidden_size=256, intermediate_size=1024, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=64, num_experts=16,
                       num_experts_per_tok=2, n_group=4, topk_group=2, moe_intermediate_size=256,
                       num_shared_experts=1, first_k_dense_replace=1, max_position_embeddings=1024,
                       torch_dtype="float32")


def _model(cfg: LLaDA2MoeConfig = CFG):
    return random_model(cfg, seed=0, head_std=1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tile", [8, 32])
def test_the_premise_a_fixed_shape_gemm_gives_a_row_the_same_bits_anywhere(dtype, tile):
    """A row's result of `tiled_linear` does not depend on its neighbours or its place among the rows, for row
    counts that are and are not tile multiples (what every batch-invariance test below rests on)."""
    g = torch.Generator().manual_seed(0)
    for k, n in [(128, 256), (256, 1024), (1024, 256), (256, 6144)]:
        w, x = torch.randn(n, k, generator=g).to(dtype), torch.randn(300, k, generator=g).to(dtype)
        bias = torch.randn(n, generator=g).to(dtype)
        ref = tiled_linear(x, w, bias, tile)
        for m in (1, 3, tile - 1, tile, tile + 5, 64, 100, 257):
            rows = torch.randperm(300, generator=g)[:m]
            assert torch.equal(tiled_linear(x[rows], w, bias, tile), ref[rows]), (k, n, m)
        assert torch.allclose(ref.float(), torch.nn.functional.linear(x, w, bias).float(), rtol=2e-2, atol=2e-2 * k ** 0.5)


def test_row_tiles_are_validated():
    with pytest.raises(ValueError, match="row tiles"):
        RowTiles(dense=0)


def test_moe_token_output_does_not_depend_on_other_tokens():
    model = _model()
    moe = model.model.layers[1].mlp
    x = torch.randn(6, 40, CFG.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        together = moe(x, RowTiles())
        for r in range(x.shape[0]):
            for n in (8, 16, 24, 40):  # few tokens per expert alone, many together
                assert torch.equal(moe(x[r:r + 1, :n], RowTiles()), together[r:r + 1, :n])
        assert torch.allclose(moe(x), together, atol=1e-5)  # the fast path computes the same function


def _ids(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, min(CFG.vocab_size, WIDE.vocab_size) - 1, (n,), generator=torch.Generator().manual_seed(seed))


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


@pytest.mark.parametrize("cfg", [CFG, WIDE], ids=["small", "wide"])
def test_rows_with_different_caches_and_padded_windows_match_their_solo_runs(cfg):
    model = _model(cfg)
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


@pytest.mark.parametrize("cfg", [CFG, WIDE], ids=["small", "wide"])
def test_join_prefill_of_prompts_of_different_lengths_matches_solo(cfg):
    model = _model(cfg)
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


def test_batch_invariant_forward_computes_the_plain_forward_and_refuses_what_it_cannot_do():
    model = _model(WIDE)
    ids = _ids(64, 3)[None]
    layout = BlockLayout(BL)
    with torch.no_grad():
        fast = model(ids, layout=layout, batch_invariant=False).logits
        exact = model(ids, layout=layout).logits  # the default on CPU
        tiles = model(ids, layout=layout, batch_invariant=RowTiles(dense=16, expert=16)).logits
    assert torch.allclose(fast, exact, atol=1e-4, rtol=1e-4) and torch.allclose(tiles, exact, atol=1e-4, rtol=1e-4)
    # with grad (training-style calls) the tiled path stays differentiable and gives the same gradients
    model.zero_grad()
    model(ids, layout=layout, batch_invariant=True).logits.square().mean().backward()
    tiled_grad = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model(ids, layout=layout, batch_invariant=False).logits.square().mean().backward()
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(tiled_grad[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)
    mask = torch.ones(64, 64, dtype=torch.bool)
    with pytest.raises(ValueError, match="batch_invariant"):
        model(ids, attn_mask=mask, batch_invariant=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_premise_a_batched_gemm_gives_a_tile_the_bits_of_its_own_gemm(dtype):
    """`torch.bmm` over [tiles, T, K] (each tile against its own weight) gives every tile the bits of a plain
    fixed-shape GEMM of that tile, whatever the number of tiles and the other tiles' contents: what the batched
    expert path (`ExpertBank._tiled`) rests on."""
    g = torch.Generator().manual_seed(1)
    for k, n in [(256, 128), (64, 256), (256, 512), (1024, 512)]:
        w = torch.randn(16, n, k, generator=g).to(dtype)
        for tiles in (1, 2, 5, 16, 37):
            x = torch.randn(tiles, 8, k, generator=g).to(dtype)
            experts = torch.randint(0, 16, (tiles,), generator=g)
            out = torch.bmm(x, w.index_select(0, experts).transpose(1, 2))
            for t in range(tiles):
                assert torch.equal(out[t], torch.mm(x[t], w[experts[t]].t())), (k, n, tiles, t)


@pytest.mark.parametrize("gather_max", [1 << 22, 0])
def test_tiled_expert_path_gives_the_loops_bits(monkeypatch, gather_max):
    """`ExpertBank._tiled` (one padded buffer, one activation for all tiles; batched GEMMs over the tiles, or one
    GEMM per tile when the weight gather would be large) equals the per-expert `tiled_swiglu` loop bit for bit, in
    float32 and bfloat16."""
    import redraft.model.moe as moe_module
    from redraft.model.invariant import tiled_swiglu

    monkeypatch.setattr(moe_module, "TILE_GATHER_MAX", gather_max)
    monkeypatch.setattr(moe_module.ExpertBank, "_batched_tiles_pay",
                        lambda self, n: n * self.gate_up_proj[0].numel() <= moe_module.TILE_GATHER_MAX)
    for dtype in (torch.float32, torch.bfloat16):
        model = _model(WIDE).to(dtype)
        moe = model.model.layers[1].mlp
        x = torch.randn(70, WIDE.hidden_size, generator=torch.Generator().manual_seed(5)).to(dtype)
        with torch.no_grad():
            idx, _ = moe.gate(x)
            order = idx.view(-1).argsort(stable=True)
            counts = torch.bincount(idx.view(-1), minlength=moe.num_experts).tolist()
            xs = x[order // moe.top_k]
            bank = moe.experts
            loop, start = [], 0
            for e, n in enumerate(counts):
                if n:
                    loop.append(tiled_swiglu(xs[start:start + n], bank.gate_up_proj[e], bank.down_proj[e], 8))
                    start += n
            assert torch.equal(bank._tiled(xs, counts, 8), torch.cat(loop)), dtype
            # few experts with rows (no full-bank tiles), and one expert with many tiles
            few = [0] * len(counts)
            few[3], few[7] = 3, len(xs) - 3
            want = torch.cat([tiled_swiglu(xs[:3], bank.gate_up_proj[3], bank.down_proj[3], 8),
                              tiled_swiglu(xs[3:], bank.gate_up_proj[7], bank.down_proj[7], 8)])
            assert torch.equal(bank._tiled(xs, few, 8), want), dtype


def test_plain_forwards_build_no_key_groups(monkeypatch):
    """`ragged_key_groups` (a host sync per forward) runs only for batch-invariant forwards, never for plain ones
    (the CUDA default)."""
    import redraft.model.modeling as modeling

    calls = []
    real = modeling.ragged_key_groups
    monkeypatch.setattr(modeling, "ragged_key_groups", lambda *a: calls.append(1) or real(*a))
    model = _model()
    ids = _ids(40, 4)[None]
    valid = torch.arange(48)[None] < 40
    window = torch.zeros(1, 48, dtype=torch.long)
    window[0, :40] = ids
    with torch.no_grad():
        model(window, torch.arange(48)[None], BlockLayout(BL, valid=valid), batch_invariant=False)
        assert calls == []
        model(window, torch.arange(48)[None], BlockLayout(BL, valid=valid))  # CPU default: invariant
        assert calls == [1]


def test_batched_expert_tiles_only_for_16_bit_weights_and_small_gathers():
    from redraft.model.moe import TILE_GATHER_MAX, ExpertBank

    bank = ExpertBank(16, 256, 64, top_k=2)
    per_tile = bank.gate_up_proj[0].numel()
    assert not bank._batched_tiles_pay(16)  # float32: one GEMM per tile
    bank = bank.to(torch.bfloat16)
    assert bank._batched_tiles_pay(16)
    assert not bank._batched_tiles_pay(TILE_GATHER_MAX // per_tile + 1)
