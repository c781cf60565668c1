"""Model runner: builds one forward window per row, runs the model, decides the step, commits K/V. Owns the caches.

Window of a row (absolute positions [cache_blocks*L, (block+1)*L)):
  commit copies  [cache_blocks, edit_start): final tokens, block-causal (key_limit = own block end); their K/V are
                  committed after the forward, so the cache always equals a block-causal recompute on final tokens;
  editable window [edit_start, block]: key_limit = window end (bidirectional inside the window; with
                  mbe_blocks = 0 this is the current block alone, i.e. the official block-causal forward).
Rows are right-padded to the longest window (padding keys are invisible). One host sync per step: the `.tolist()`
of the decided window tokens and M2T/T2T masks. On CUDA (graphed steps) the graph holds the forward, the greedy
policy and the K/V write of the whole window; the commit after the sync only advances the rows' lengths.

Prefix reuse (optional `prefix_index`, see `PrefixIndex`): a joining row whose leading whole prompt blocks are
stored starts with their K/V copied from the store (its window then begins after them); after every join step the
rows' whole prompt blocks are offered to the store. A prompt block's K/V depend only on the tokens up to its end
(block-causal commit layout), so reuse is exact.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from redraft.model import BlockLayout, KVCache
from redraft.model.cuda_graphs import CUDAGraphRunner
from redraft.model.invariant import RowTiles

from .policy import decide, greedy_step
from .row import Row
from .sampling import top_tokens
from .vocab_parallel import parallel_top_tokens


@dataclass
class StepResult:
    """Host-side result per row: the editable window after the step and its M2T / T2T masks (0/1)."""

    windows: list[list[int]]
    m2t: list[list[int]]
    t2t: list[list[int]]


class PrefixIndex(Protocol):
    """Which store row (slot) holds K/V of a prompt prefix (e.g. `redraft.serving.prefix_cache.PrefixCache`)."""

    num_slots: int

    def lookup(self, tokens: list[int], block_length: int, max_blocks: int) -> tuple[int, int] | None:
        """(slot, whole blocks) of the longest stored prefix of `tokens`, at most `max_blocks` blocks."""

    def insert(self, tokens: list[int], block_length: int, num_blocks: int) -> int | None:
        """The slot to fill with the first `num_blocks` blocks' K/V, or None (nothing to store)."""


class ModelRunner:
    """cuda_graphs: route cached window forwards (not the joining ones) through `CUDAGraphRunner` (None = when the
    model is on CUDA). Its outputs are static buffers: a step reads its logits and commits its K/V before the next
    forward, which `run` does. batch_invariant: see `Engine` (None = on CPU only)."""

    def __init__(self, model, mask_id: int, use_cache: bool = True, prefix_index: PrefixIndex | None = None,
                 cuda_graphs: bool | None = None, batch_invariant: bool | RowTiles | None = None):
        self.model = model
        self.mask_id = mask_id
        self.use_cache = use_cache
        self.device = next(model.parameters()).device
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs=True needs a model on CUDA, got device {self.device}")
        self.batch_invariant = self.device.type == "cpu" if batch_invariant is None else batch_invariant
        self.cuda_graphs = (self.device.type == "cuda" and use_cache and cuda_graphs is not False
                            and not self.batch_invariant)
        self.cached_forward = CUDAGraphRunner(model) if self.cuda_graphs else model
        self.caches: dict[int, KVCache] = {}  # one per block length (one running batch each)
        self.prefix_index = prefix_index if use_cache else None
        self.prefix_store: KVCache | None = None  # row = slot of `prefix_index`
        self._greedy_step = functools.partial(greedy_step, mask_id=mask_id)  # one object: a CUDA-graph key

    def cache(self, block_length: int) -> KVCache | None:
        if not self.use_cache:
            return None
        if block_length not in self.caches:
            self.caches[block_length] = KVCache.for_model(self.model, 0)
        return self.caches[block_length]

    def keep_rows(self, block_length: int, rows: list[int]) -> None:
        """Keep only these cache rows, in this order (finished rows leave)."""
        cache = self.cache(block_length)
        if cache is not None and rows != list(range(cache.batch_size)):
            cache.select(rows)

    @torch.inference_mode()
    def run(self, rows: list[Row], had_mask: list[bool], prefill: bool) -> StepResult:
        """One forward over `rows` (all rows of the batch, in cache order; or newly joining rows when `prefill`)."""
        L = rows[0].block_length
        dev, mask_id = self.device, self.mask_id
        cache = self.cache(L)
        reused = self._reuse_prefixes(rows, L) if prefill and cache is not None else None
        if prefill and cache is not None:
            offset = cache.batch_size
            if reused is None:
                cache.add_rows(len(rows))
        start = [r.cache_blocks * L for r in rows]
        edit = [r.edit_start * L for r in rows]
        end = [(r.block + 1) * L for r in rows]
        num_copy = [e - s for s, e in zip(start, edit)]
        num_edit = [e - s for s, e in zip(edit, end)]
        width, e_width = max(e - s for s, e in zip(start, end)), max(num_edit)

        ids = torch.tensor([r.canvas[s:e] + [mask_id] * (width - (e - s)) for r, s, e in zip(rows, start, end)],
                           dtype=torch.long, device=dev)
        as_t = lambda xs: torch.tensor(xs, dtype=torch.long, device=dev)  # noqa: E731
        start_t, copy_t, end_t = as_t(start), as_t(num_copy), as_t(end)
        steps = torch.arange(width, device=dev)
        positions = start_t[:, None] + steps[None]
        own_block_end = (positions // L + 1) * L
        key_limit = torch.where(steps[None] < copy_t[:, None], own_block_end, end_t[:, None])
        valid = positions < end_t[:, None]
        layout = BlockLayout(L, key_limit=key_limit, valid=valid)
        # the editable window of each row: [B, E]; logits only there (not for commit copies or a joining prompt)
        e_steps = torch.arange(e_width, device=dev)
        idx = (copy_t[:, None] + e_steps[None]).clamp(max=width - 1)
        tokens = ids.gather(1, idx)
        e_pos = positions.gather(1, idx)
        prompt_len = as_t([r.prompt_len for r in rows])
        e_valid = e_steps[None] < as_t(num_edit)[:, None]
        frozen = ~e_valid | ((e_pos < prompt_len[:, None]) & (tokens != mask_id))
        cfgs = [r.config for r in rows]
        f32 = lambda xs: torch.tensor(xs, dtype=torch.float32, device=dev)  # noqa: E731
        settings = (f32([c.tau_mask for c in cfgs]), f32([c.tau_edit for c in cfgs]),
                    as_t([c.num_to_transfer for c in cfgs]), torch.tensor([c.editing for c in cfgs], device=dev))
        # plain greedy rows (the common case): the policy is one tensor function of the logits (`greedy_step`),
        # captured with the forward in one CUDA graph on CUDA
        # a tensor-parallel rank keeps its logits vocab-sharded: the general path reduces the top tokens across ranks
        parallel = getattr(self.model, "parallel", None)
        plain_greedy = parallel is None and all(c.temperature == 0 and not c.forbid_mask_token
                                                and not c.oscillation_guard and not c.stutter_ngram for c in cfgs)
        post = self._greedy_step if plain_greedy else None
        graphed = self.cuda_graphs and not prefill and cache is not None
        with parallel.sharded_logits() if parallel is not None else contextlib.nullcontext():
            if graphed:  # the graph also stores the window's K/V in the cache; `_commit` then only advances
                cache.reserve(cache.width + width)
                out = self.cached_forward(ids, positions, layout, cache=cache, logits_index=idx, post=post,
                                          post_args=(tokens, frozen, *settings) if post is not None else (),
                                          write_cache=True)
                out, decided = out if post is not None else (out, None)
            else:
                out = self.model(ids, positions, layout, cache=reused if prefill else cache, logits_index=idx,
                                 batch_invariant=self.batch_invariant)
                decided = post(out.logits, tokens, frozen, *settings) if post is not None else None
        if decided is not None:
            host = decided.tolist()  # the step's one sync
        else:
            host = self._decide_general(rows, cfgs, out.logits, tokens, frozen, settings, edit, end, e_width,
                                        num_edit)
        result = StepResult(*([row[:n] for row, n in zip(part, num_edit)] for part in host))
        if reused is not None:  # the joining rows' cache rows were built aside: move them into the batch
            self._commit(rows, reused, out.new_kv, num_copy, result, had_mask, 0)
            cache.add_rows(len(rows))
            for i in range(len(rows)):
                cache.copy_prefix_from(reused, i, offset + i, reused.host_lengths[i])
        elif cache is not None:
            self._commit(rows, cache, out.new_kv, num_copy, result, had_mask, offset if prefill else 0,
                         written=graphed)
        if prefill and cache is not None:
            self._store_prefixes(rows, cache, offset)
        return result

    def _decide_general(self, rows: list[Row], cfgs, logits: Tensor, tokens: Tensor, frozen: Tensor,
                        settings: tuple[Tensor, ...], edit: list[int], end: list[int], e_width: int,
                        num_edit: list[int]) -> list:
        """Top tokens (greedy or sampled, optional never-emit-mask) and eq. 3 with the oscillation guard and the
        stutter rule; returns the host lists [new window, M2T, T2T] (the step's one sync)."""
        dev, mask_id = self.device, self.mask_id
        parallel = getattr(self.model, "parallel", None)
        as_t = lambda xs: torch.tensor(xs, dtype=torch.long, device=dev)  # noqa: E731
        forbid = None
        if any(c.forbid_mask_token for c in cfgs):
            forbid = torch.zeros(len(rows), self.model.config.vocab_size, dtype=torch.bool, device=dev)
            forbid[:, mask_id] = torch.tensor([c.forbid_mask_token for c in cfgs], device=dev)
        sampling = ([c.temperature for c in cfgs], [c.top_k for c in cfgs], [c.top_p for c in cfgs],
                    [r.generator for r in rows], num_edit, forbid)
        top, prob = (top_tokens(logits, *sampling) if parallel is None
                     else parallel_top_tokens(parallel, logits, *sampling))
        previous = None
        if any(r.previous is not None for r in rows):
            previous = torch.tensor([(r.previous[a:b] if r.previous is not None else [-1] * (b - a))
                                     + [-1] * (e_width - (b - a)) for r, a, b in zip(rows, edit, end)],
                                    dtype=torch.long, device=dev)
        max_ngram = max(c.stutter_ngram for c in cfgs)
        tau_mask, tau_edit, num_to_transfer, editing = settings
        res = decide(tokens, top, prob, frozen, mask_id=mask_id, tau_mask=tau_mask, tau_edit=tau_edit,
                     num_to_transfer=num_to_transfer, editing=editing, previous=previous,
                     stutter_ngram=as_t([c.stutter_ngram for c in cfgs]) if max_ngram else None,
                     max_ngram=max_ngram)
        return torch.stack([res.tokens, res.m2t.long(), res.t2t.long()]).tolist()  # the step's one sync

    def _reuse_prefixes(self, rows: list[Row], L: int) -> KVCache | None:
        """Cache rows for joining rows, seeded with their stored prompt prefixes (None: no prefix stored)."""
        if self.prefix_index is None:
            return None
        hits = [self.prefix_index.lookup(r.prompt, L, r.first_block) for r in rows]
        if self.prefix_store is None or not any(hits):
            return None
        reused = KVCache.for_model(self.model, len(rows), capacity=rows[0].prompt_len)
        for i, (r, hit) in enumerate(zip(rows, hits)):
            if hit is not None:
                slot, blocks = hit
                reused.copy_prefix_from(self.prefix_store, slot, i, blocks * L)
                r.cache_blocks = blocks
        return reused

    def _store_prefixes(self, rows: list[Row], cache: KVCache, offset: int) -> None:
        """Offer the joined rows' whole prompt blocks (committed by this join step) to the prefix store."""
        if self.prefix_index is None:
            return
        L = rows[0].block_length
        for i, r in enumerate(rows):
            if r.first_block == 0 or r.cache_blocks < r.first_block:
                continue
            slot = self.prefix_index.insert(r.prompt, L, r.first_block)
            if slot is None:
                continue
            if self.prefix_store is None:
                self.prefix_store = KVCache.for_model(self.model, self.prefix_index.num_slots,
                                                      capacity=r.first_block * L)
            self.prefix_store.copy_prefix_from(cache, offset + i, slot, r.first_block * L)

    def _commit(self, rows: list[Row], cache: KVCache, new_kv: list[tuple[Tensor, Tensor]], num_copy: list[int],
                result: StepResult, had_mask: list[bool], offset: int, written: bool = False) -> None:
        """Commit the copies; with mbe_blocks = 0 also the current block when this step ends it (no mask at the
        start, no edit: the forward ran on its final tokens with the block-causal layout). written: the forward
        already stored the windows in the cache (`write_cache`), so only the lengths advance."""
        L = rows[0].block_length
        counts = []
        for r, n, mask, t2t in zip(rows, num_copy, had_mask, result.t2t):
            ends_now = not mask and not any(t2t)
            counts.append(n + (L if ends_now and r.config.mbe_blocks == 0 else 0))
        cache_rows = [offset + i for i in range(len(rows))]
        if written:
            cache.advance(counts, rows=cache_rows)
        else:
            cache.commit(new_kv, counts, rows=cache_rows)
        for r, c in zip(rows, counts):
            r.cache_blocks += c // L
