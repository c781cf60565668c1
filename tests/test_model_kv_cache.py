"""KV cache of committed blocks: cached forwards equal a full block-causal recompute (float32, <= 1e-5)."""

from __future__ import annotations

import pytest
import torch

from redraft.model import BlockLayout, KVCache, load_model

BL = 32


def _full(model, ids):
    pos = torch.arange(ids.shape[1])[None].expand_as(ids)
    with torch.no_grad():
        return model(ids, pos, BlockLayout(BL)).logits


def _ids(batch, length, seed=0):
    return torch.randint(0, 319, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_batch1_block_by_block_equals_recompute(parity_dir):
    model = load_model(parity_dir / "model")
    ids = _ids(1, 4 * BL)
    full = _full(model, ids)
    cache = KVCache.for_model(model, 1, capacity=8)  # small capacity: exercises growth
    with torch.no_grad():
        for b in range(4):
            out = model(ids[:, b * BL:(b + 1) * BL], layout=BlockLayout(BL), cache=cache)
            assert (out.logits - full[:, b * BL:(b + 1) * BL]).abs().max() <= 1e-5
            cache.commit(out.new_kv, [BL])
    assert cache.host_lengths == [4 * BL]
    assert cache.lengths.tolist() == [4 * BL]


def test_rows_at_different_blocks(parity_dir):
    model = load_model(parity_dir / "model")
    ids = _ids(3, 4 * BL, seed=1)
    full = _full(model, ids)
    cache = KVCache.for_model(model, 3)
    committed = [3 * BL, 0, BL]
    with torch.no_grad():
        pre = model(ids[:, :3 * BL], layout=BlockLayout(BL))
        cache.commit(pre.new_kv, committed)
        window = torch.stack([ids[r, c:c + BL] for r, c in enumerate(committed)])
        pos = torch.stack([torch.arange(c, c + BL) for c in committed])
        out = model(window, pos, BlockLayout(BL), cache=cache)
    for r, c in enumerate(committed):
        assert (out.logits[r] - full[r, c:c + BL]).abs().max() <= 1e-5


def test_commit_from_window_offsets_and_rows(parity_dir):
    """commit(starts=, rows=) stores a slice of a window into chosen rows (how engines commit a finished block)."""
    model = load_model(parity_dir / "model")
    ids = _ids(2, 2 * BL, seed=2)
    full = _full(model, ids)
    cache = KVCache.for_model(model, 2)
    with torch.no_grad():
        out = model(ids[:, :2 * BL], layout=BlockLayout(BL))
        # row 1 commits only its first block; row 0 commits both blocks, in two calls and out of order
        cache.commit(out.new_kv, [BL, BL], starts=[0, 0], rows=[1, 0])  # window row 0 -> cache row 1 and vice versa
    # cache row 0 now holds window row 1's first block: check by recomputing row 1's second block from cache row 0
    with torch.no_grad():
        nxt = model(ids[1:2, BL:], torch.arange(BL, 2 * BL)[None], BlockLayout(BL), cache=_single(cache, 0))
    assert (nxt.logits[0] - full[1, BL:]).abs().max() <= 1e-5


def _single(cache: KVCache, row: int) -> KVCache:
    c = KVCache(cache.num_layers, 1, cache.num_kv_heads, cache.head_dim, dtype=cache.dtype)
    c.copy_prefix_from(cache, row, 0, cache.host_lengths[row])
    return c


def test_select_drops_rows_and_add_rows(parity_dir):
    model = load_model(parity_dir / "model")
    ids = _ids(3, 2 * BL, seed=3)
    full = _full(model, ids)
    cache = KVCache.for_model(model, 3)
    with torch.no_grad():
        out = model(ids[:, :BL], layout=BlockLayout(BL))
        cache.commit(out.new_kv, [BL, BL, BL])
        cache.select([2, 0])  # row 1 finished
        assert cache.batch_size == 2
        out = model(ids[[2, 0], BL:], layout=BlockLayout(BL), cache=cache)
    assert (out.logits - full[[2, 0], BL:]).abs().max() <= 1e-5
    cache.add_rows(1)
    assert cache.host_lengths == [BL, BL, 0]
    with torch.no_grad():  # the new empty row computes its first block as if alone
        window = torch.cat([ids[[2, 0], BL:], ids[1:2, :BL]])
        pos = torch.stack([torch.arange(BL, 2 * BL)] * 2 + [torch.arange(BL)])
        out = model(window, pos, BlockLayout(BL), cache=cache)
    assert (out.logits[2] - full[1, :BL]).abs().max() <= 1e-5
    assert (out.logits[:2] - full[[2, 0], BL:]).abs().max() <= 1e-5


def test_window_of_several_blocks_with_padding(parity_dir):
    """A two-block window over a cache equals the recompute; padded window keys are invisible."""
    model = load_model(parity_dir / "model")
    ids = _ids(2, 3 * BL, seed=4)
    full = _full(model, ids)
    cache = KVCache.for_model(model, 2)
    with torch.no_grad():
        cache.commit(model(ids[:, :BL], layout=BlockLayout(BL)).new_kv, [BL, BL])
        window = ids[:, BL:].clone()
        valid = torch.ones_like(window, dtype=torch.bool)
        valid[1, BL:] = False  # row 1 only has one block in this window: the rest is padding
        window[1, BL:] = 0
        out = model(window, None, BlockLayout(BL, valid=valid), cache=cache)
    assert (out.logits[0] - full[0, BL:]).abs().max() <= 1e-5
    assert (out.logits[1, :BL] - full[1, BL:2 * BL]).abs().max() <= 1e-5


def test_key_limit_window_layout(parity_dir):
    """key_limit = window end makes the window bidirectional (the MBE layout) while the cache stays visible."""
    model = load_model(parity_dir / "model")
    ids = _ids(1, 3 * BL, seed=5)
    cache = KVCache.for_model(model, 1)
    with torch.no_grad():
        cache.commit(model(ids[:, :BL], layout=BlockLayout(BL)).new_kv, [BL])
        limit = torch.full((1, 2 * BL), 3 * BL)
        out = model(ids[:, BL:], None, BlockLayout(BL, key_limit=limit), cache=cache)
        # the same thing without a cache: an explicit bool mask, block 0 causal, blocks 1-2 one bidirectional window
        pos = torch.arange(3 * BL)
        mask = (pos[None, :] < torch.where(pos < BL, BL, 3 * BL)[:, None])
        ref = model(ids, pos[None], attn_mask=mask).logits
    assert (out.logits - ref[:, BL:]).abs().max() <= 1e-5


def test_cache_made_in_inference_mode_can_be_updated_outside(parity_dir):
    """Regression: in-place compaction of inference tensors outside inference mode used to raise."""
    model = load_model(parity_dir / "model")
    with torch.inference_mode():
        cache = KVCache.for_model(model, 2)
        out = model(_ids(2, BL), layout=BlockLayout(BL))
    cache.commit(out.new_kv, [BL, BL])
    cache.select([1])
    cache.add_rows(1)
    assert cache.host_lengths == [BL, 0]


def test_logits_index_gives_the_same_logits_for_the_chosen_positions(parity_dir):
    """The decode runner asks for the editable window's logits only (the LM head skips commit copies / prompts)."""
    model = load_model(parity_dir / "model")
    ids = _ids(2, 3 * BL, seed=5)
    index = torch.stack([torch.arange(BL, 2 * BL), torch.arange(2 * BL, 3 * BL)])
    with torch.no_grad():
        full = model(ids, layout=BlockLayout(BL)).logits
        part = model(ids, layout=BlockLayout(BL), logits_index=index)
    assert part.logits.shape == (2, BL, full.shape[-1])
    torch.testing.assert_close(part.logits, full.gather(1, index[:, :, None].expand(-1, -1, full.shape[-1])),
                               atol=1e-6, rtol=1e-6)
    assert part.new_kv[0][0].shape[2] == 3 * BL  # K/V still cover the whole window (commits need them)


def test_cuda_graph_runner_runs_post_eagerly_off_cuda(parity_dir):
    """Off CUDA the graph runner runs the model eagerly and applies `post` to the logits (what a graph captures)."""
    from redraft.model.cuda_graphs import CUDAGraphRunner

    model = load_model(parity_dir / "model")
    ids = _ids(2, BL)
    cache = KVCache.for_model(model, 2)
    with torch.no_grad():
        out, post = CUDAGraphRunner(model)(ids, None, BlockLayout(BL), cache=cache,
                                            post=lambda logits, k: logits.argmax(-1) + k, post_args=(torch.tensor(1),))
        plain = model(ids, None, BlockLayout(BL), cache=cache)
    assert torch.equal(out.logits, plain.logits) and torch.equal(post, plain.logits.argmax(-1) + 1)


def _committed(cache: KVCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every row's committed K/V (slots below its length), per layer: what attention can see."""
    return [(k[r, :, :n].clone(), v[r, :, :n].clone()) for k, v in zip(cache.k, cache.v)
            for r, n in enumerate(cache.host_lengths)]


def test_write_windows_then_advance_equals_commit(parity_dir):
    """The CUDA-graph commit (write each row's whole window at its length, then advance the lengths) leaves the same
    committed K/V as `commit`, over several steps with rows at different lengths and counts of 0, a block or more."""
    model = load_model(parity_dir / "model")
    ids = _ids(3, 6 * BL, seed=5)
    plain, graphed = KVCache.for_model(model, 3), KVCache.for_model(model, 3, capacity=8)
    steps = [[BL, 0, 2 * BL], [0, BL, BL], [2 * BL, BL, 0], [BL, 3 * BL, BL]]
    with torch.no_grad():
        for counts in steps:
            assert plain.host_lengths == graphed.host_lengths
            start = plain.host_lengths
            window = torch.stack([ids[r, s:s + 3 * BL] for r, s in enumerate(start)])
            pos = torch.stack([torch.arange(s, s + 3 * BL) for s in start])
            out = model(window, pos, BlockLayout(BL), cache=plain)
            plain.commit(out.new_kv, counts)
            graphed.reserve(max(start) + 3 * BL)
            graphed.write_windows(out.new_kv)
            assert graphed.host_lengths == start and graphed.lengths.tolist() == start  # lengths unchanged
            graphed.advance(counts)
    assert graphed.host_lengths == plain.host_lengths == [4 * BL, 5 * BL, 4 * BL]
    assert graphed.lengths.tolist() == plain.host_lengths
    for (k, v), (pk, pv) in zip(_committed(graphed), _committed(plain)):
        assert torch.equal(k, pk) and torch.equal(v, pv)


def test_write_windows_and_advance_refuse_what_does_not_fit(parity_dir):
    model = load_model(parity_dir / "model")
    cache = KVCache.for_model(model, 2, capacity=2 * BL)
    with torch.no_grad():
        out = model(_ids(2, 2 * BL), layout=BlockLayout(BL))
        cache.commit(out.new_kv, [BL, 0])
        with pytest.raises(ValueError, match=r"needs 96 slots, the storage has 64 \(reserve first\)"):
            cache.write_windows(out.new_kv)
        with pytest.raises(ValueError, match="3 window rows for a cache of 2 rows"):
            cache.check_window(3, BL)
        with pytest.raises(ValueError, match="do not fit"):
            cache.advance([2 * BL, 0])
        with pytest.raises(ValueError, match="same length"):
            cache.advance([BL], rows=[0, 1])
    assert cache.host_lengths == [BL, 0]  # nothing changed


def test_cuda_graph_runner_write_cache_stores_the_windows_of_padded_batches(parity_dir):
    """write_cache=True (eager here; captured in the graph on CUDA): each real row's window lands at its length,
    padding rows write only storage rows past the batch, the lengths stay for the caller's `advance`."""
    from redraft.model.cuda_graphs import CUDAGraphRunner

    model = load_model(parity_dir / "model")
    ids = _ids(3, 3 * BL, seed=6)
    cache = KVCache.for_model(model, 3)
    with torch.no_grad():
        cache.commit(model(ids[:, :2 * BL], layout=BlockLayout(BL)).new_kv, [2 * BL, 0, BL])
        before = _committed(cache)
        start = cache.host_lengths
        window = torch.stack([ids[r, s:s + BL] for r, s in enumerate(start)])
        runner = CUDAGraphRunner(model, buckets=(4,), capture=False)
        with pytest.raises(ValueError, match="needs a cache"):
            runner(window, None, BlockLayout(BL), write_cache=True)
        cache.reserve(max(start) + BL)
        out = runner(window, None, BlockLayout(BL), cache=cache, write_cache=True)
    assert cache.host_lengths == start and cache.batch_size == 3
    for (k, v), (pk, pv) in zip(_committed(cache), before):  # committed slots untouched
        assert torch.equal(k, pk) and torch.equal(v, pv)
    for i, (k, v) in enumerate(out.new_kv):
        for r, s in enumerate(start):
            assert torch.equal(cache._k[i][r, :, s:s + BL], k[r]) and torch.equal(cache._v[i][r, :, s:s + BL], v[r])
    cache.advance([BL, BL, 0])
    assert cache.host_lengths == [3 * BL, BL, BL]
