"""CUDA-graph replay of the model's cached forward: one captured graph per (batch, window, cache storage) shape.

A decode step at a real model's shape launches thousands of small kernels; on an H100 the host side (Python and
launches) costs several times the GPU work. `CUDAGraphRunner` has the model's call signature: for a cached window
forward on CUDA under no_grad it copies the inputs into static buffers and replays a captured graph; anything else
(CPU, training, explicit masks, no cache) runs the model eagerly. The cache is read over its whole capacity
(`static_cache=True`, masked by the per-row lengths), so nothing in the graph depends on host-side lengths; a
`KVCache` keeps its storage addresses while rows leave and join, and a new graph is captured when the storage
grows. Outputs are static buffers, valid until the next call.

`post` (optional) is a tensor function of the logits and `post_args` captured in the same graph (the decode step's
greedy policy, `redraft.decoding.policy.greedy_step`): the call then returns (output, post's result), and a step
launches one graph for forward and policy. `post` must be the same object from call to call (it is part of the key).

`write_cache=True` also stores the window's K/V in the cache inside the graph (`KVCache.write_windows`: each row's
window at its committed length, lengths unchanged); the caller then commits with `KVCache.advance(counts)`, a host
bookkeeping call, so the step's K/V commit launches no kernels of its own. The cache must have room for the window
(`reserve(max length + window)` before the call).

Batch-size buckets: a serving batch changes size whenever a request joins or finishes, and each new shape would cost
a capture. The runner pads the rows up to the next size in `buckets` (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128 by
default; beyond the largest, the exact size) with empty rows: cache length 0, a valid window of token 0 attending to
itself only, `post_args` zero-padded; their outputs are dropped. Every computation of a forward and of the greedy
policy is per row (GEMM rows, attention per row, routing per token), so a real row's result does not depend on the
padding rows beyond the GEMM shape (the same caveat as any batching on CUDA: kernels round by shape). The cache
grows its storage to the bucket's rows first, so the graph keeps reading fixed addresses. `capture=False` runs the
same padded path eagerly (dynamic cache): tests check on CPU, bit for bit under batch invariance, that padding and
slicing leave every real row unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .kv_cache import KVCache
from .masks import BlockLayout
from .modeling import LLaDA2MoeModelLM, ModelOutput

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128)


def bucket_for(rows: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket holding `rows` rows (`rows` itself beyond the largest bucket, or with no buckets)."""
    return min((b for b in buckets if b >= rows), default=rows)


def _pad_rows(t: Tensor, rows: int, fill: Tensor | int | float | bool = 0) -> Tensor:
    """t with rows appended along dim 0 up to `rows`; `fill` is a value or a tensor broadcast to one row."""
    extra = rows - t.shape[0]
    if extra <= 0:
        return t
    pad = t.new_empty((extra, *t.shape[1:]))
    pad.copy_(torch.as_tensor(fill, dtype=t.dtype, device=t.device).expand_as(pad))
    return torch.cat([t, pad])


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    ids: Tensor
    pos: Tensor
    key_limit: Tensor | None
    valid: Tensor | None
    logits_index: Tensor | None
    out: ModelOutput
    post_args: tuple[Tensor, ...] = ()
    post_out: Tensor | None = None


class CUDAGraphRunner:
    """Drop-in for `model(...)` that replays CUDA graphs for cached window forwards.

    buckets: batch sizes the rows are padded up to (None or (): exact shapes only). capture: False runs the padded
    path eagerly (any device; for tests). post_row_dim: the dimension of `post`'s result that indexes rows."""

    def __init__(self, model: LLaDA2MoeModelLM, max_graphs: int = 128,
                 buckets: tuple[int, ...] | None = DEFAULT_BUCKETS, capture: bool = True, post_row_dim: int = 1):
        if buckets is not None and (not buckets or any(int(b) <= 0 for b in buckets)):
            raise ValueError(f"buckets must be positive row counts, got {buckets!r}")
        self.model = model
        self.config = model.config
        self.max_graphs = max_graphs
        self.buckets = tuple(sorted(int(b) for b in buckets)) if buckets is not None else ()
        self.capture = capture
        self.post_row_dim = post_row_dim  # the dimension of `post`'s result that indexes rows (greedy_step: 1)
        self._graphs: dict[tuple, _Captured] = {}
        self._pool = None

    def __getattr__(self, name):  # parameters(), eval(), ... of the wrapped model
        return getattr(self.__dict__["model"], name)

    @property
    def num_graphs(self) -> int:
        return len(self._graphs)

    def __call__(self, input_ids: Tensor, position_ids: Tensor | None = None, layout: BlockLayout | None = None, *,
                 attn_mask: Tensor | None = None, cache: KVCache | None = None,
                 logits_index: Tensor | None = None, post: Callable[..., Tensor] | None = None,
                 post_args: tuple[Tensor, ...] = (),
                 write_cache: bool = False) -> ModelOutput | tuple[ModelOutput, Tensor]:
        if write_cache and cache is None:
            raise ValueError("write_cache=True needs a cache to write the window's K/V into")
        graphable = not (cache is None or attn_mask is not None or layout is None or torch.is_grad_enabled()
                         or self.model.training)
        if not graphable or (self.capture and not input_ids.is_cuda):
            out = self.model(input_ids, position_ids, layout, attn_mask=attn_mask, cache=cache,
                             logits_index=logits_index)
            if write_cache:
                cache.write_windows(out.new_kv)
            return out if post is None else (out, post(out.logits, *post_args))
        if position_ids is None:
            position_ids = cache.lengths[:, None] + torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        rows = input_ids.shape[0]
        padded = bucket_for(rows, self.buckets)
        if padded == rows:
            return self._run(input_ids, position_ids, layout, cache, logits_index, post, post_args, write_cache)
        return self._run_padded(rows, padded, input_ids, position_ids, layout, cache, logits_index, post, post_args,
                                write_cache)

    def _run_padded(self, rows: int, padded: int, input_ids: Tensor, position_ids: Tensor, layout: BlockLayout,
                    cache: KVCache, logits_index: Tensor | None, post: Callable[..., Tensor] | None,
                    post_args: tuple[Tensor, ...], write_cache: bool) -> ModelOutput | tuple[ModelOutput, Tensor]:
        """Run `rows` rows as a `padded`-row batch (see the module docstring) and return the real rows' outputs."""
        if cache.batch_size != rows:
            raise ValueError(f"the cache holds {cache.batch_size} rows, the window {rows}")
        width = input_ids.shape[1]
        cache.reserve(cache.capacity, padded)  # before any capture: storage addresses settle at the bucket size
        host = list(cache.host_lengths)
        steps = torch.arange(width, device=input_ids.device)
        ids = _pad_rows(input_ids, padded)
        pos = _pad_rows(position_ids, padded, steps)
        key_limit = _pad_rows(layout.key_limit, padded, width) if layout.key_limit is not None else None
        valid = _pad_rows(layout.valid, padded, True) if layout.valid is not None else None
        index = _pad_rows(logits_index, padded) if logits_index is not None else None
        args = tuple(_pad_rows(a, padded) if a.dim() else a for a in post_args)
        cache._set_lengths(host + [0] * (padded - rows))  # the padding rows: empty
        try:
            res = self._run(ids, pos, BlockLayout(layout.block_length, key_limit=key_limit, valid=valid), cache,
                            index, post, args, write_cache)
        finally:
            cache._set_lengths(host)
        out, post_out = res if post is not None else (res, None)
        out = ModelOutput(logits=out.logits[:rows], new_kv=[(k[:rows], v[:rows]) for k, v in out.new_kv])
        return out if post is None else (out, post_out.narrow(self.post_row_dim, 0, rows))

    def _run(self, input_ids: Tensor, position_ids: Tensor, layout: BlockLayout, cache: KVCache,
             logits_index: Tensor | None, post: Callable[..., Tensor] | None,
             post_args: tuple[Tensor, ...], write_cache: bool) -> ModelOutput | tuple[ModelOutput, Tensor]:
        """Replay (capturing first if new) the graph of this exact shape; eagerly when `capture` is off."""
        if not self.capture:
            out = self.model(input_ids, position_ids, layout, cache=cache, logits_index=logits_index)
            if write_cache:
                cache.write_windows(out.new_kv)
            return out if post is None else (out, post(out.logits, *post_args))
        key = (tuple(input_ids.shape), cache.capacity, cache.max_rows, cache._k[0].data_ptr(), layout.block_length,
               layout.key_limit is not None, layout.valid is not None,
               None if logits_index is None else tuple(logits_index.shape),
               post, tuple((tuple(a.shape), a.dtype) for a in post_args), write_cache)
        cap = self._graphs.get(key)
        if cap is None:
            if len(self._graphs) >= self.max_graphs:
                self._graphs.clear()  # storage moved on; old graphs refer to freed buffers
            cap = self._capture(input_ids, position_ids, layout, cache, logits_index, post, post_args, write_cache)
        elif write_cache:
            cache.check_window(input_ids.shape[0], input_ids.shape[1])  # a replay writes without looking
            self._graphs[key] = cap
        for static, value in zip(cap.post_args, post_args):
            static.copy_(value)
        cap.ids.copy_(input_ids)
        cap.pos.copy_(position_ids)
        if cap.key_limit is not None:
            cap.key_limit.copy_(layout.key_limit)
        if cap.valid is not None:
            cap.valid.copy_(layout.valid)
        if cap.logits_index is not None:
            cap.logits_index.copy_(logits_index)
        cap.graph.replay()
        return cap.out if post is None else (cap.out, cap.post_out)

    def _capture(self, input_ids: Tensor, position_ids: Tensor, layout: BlockLayout, cache: KVCache,
                 logits_index: Tensor | None, post: Callable[..., Tensor] | None = None,
                 post_args: tuple[Tensor, ...] = (), write_cache: bool = False) -> _Captured:
        ids, pos = input_ids.clone(), position_ids.clone()
        index = logits_index.clone() if logits_index is not None else None
        key_limit = layout.key_limit.clone() if layout.key_limit is not None else None
        valid = layout.valid.clone() if layout.valid is not None else None
        static_layout = BlockLayout(layout.block_length, key_limit=key_limit, valid=valid)

        static_post = tuple(a.clone() for a in post_args)

        def run() -> tuple[ModelOutput, Tensor | None]:
            out = self.model(ids, pos, static_layout, cache=cache, static_cache=True, logits_index=index)
            if write_cache:
                cache.write_windows(out.new_kv)
            return out, (post(out.logits, *static_post) if post is not None else None)

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside the graph (allocator, lazy init)
                run()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out, post_out = run()
        self._pool = graph.pool()
        return _Captured(graph, ids, pos, key_limit, valid, index, out, static_post, post_out)
