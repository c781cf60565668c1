"""KV cache of committed blocks: per layer [B, H_kv, capacity, D]; row b holds positions 0..lengths[b]-1.

Rows may hold different lengths (rows at different blocks). `commit` appends keys/values that a forward already
computed (no extra forward), or `write_windows` stores a whole window on the device and `advance` commits part of it
(the CUDA-graph step); `select` drops finished rows; `add_rows` appends empty rows (continuous batching);
`copy_prefix_from` seeds rows from another cache (prefix reuse).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import torch
from torch import Tensor

KV = tuple[Tensor, Tensor]


def _same_mode(method):
    """Run a mutating method in inference mode when the storage was made in inference mode (in-place updates of
    inference tensors are refused outside it), so callers may mix `torch.inference_mode` and `torch.no_grad`."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        ctx = torch.inference_mode() if self._k[0].is_inference() else contextlib.nullcontext()
        with ctx:
            return method(self, *args, **kwargs)

    return wrapper


class KVCache:
    """Per-layer key/value storage [rows, H_kv, capacity, D] whose first `batch_size` rows are the live batch.

    Storage addresses stay fixed while rows leave (`select` compacts in place) or join (`add_rows` reuses free
    rows), and capacity only grows, so a captured CUDA graph can keep reading the same memory.
    """

    def __init__(self, num_layers: int, batch_size: int, num_kv_heads: int, head_dim: int, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", capacity: int = 256,
                 max_rows: int | None = None):
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = torch.device(device)
        rows = max(batch_size, max_rows or 0, 1)
        shape = (rows, num_kv_heads, max(capacity, 1), head_dim)
        self._k = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        self._v = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        self._lengths = torch.zeros(rows, dtype=torch.long, device=self.device)
        self.host_lengths: list[int] = [0] * batch_size

    @classmethod
    def for_model(cls, model, batch_size: int, capacity: int = 256, max_rows: int | None = None) -> "KVCache":
        cfg = model.config
        p = next(model.parameters())
        parallel = getattr(model, "parallel", None)  # a tensor-parallel rank caches its own KV heads only
        num_kv_heads = parallel.kv_heads if parallel is not None else cfg.num_key_value_heads
        return cls(cfg.num_hidden_layers, batch_size, num_kv_heads, cfg.head_dim,
                   dtype=p.dtype, device=p.device, capacity=capacity, max_rows=max_rows)

    @property
    def batch_size(self) -> int:
        return len(self.host_lengths)

    @property
    def max_rows(self) -> int:
        return self._k[0].shape[0]

    @property
    def capacity(self) -> int:
        return self._k[0].shape[2]

    @property
    def k(self) -> list[Tensor]:
        n = self.batch_size
        return [t[:n] for t in self._k]

    @property
    def v(self) -> list[Tensor]:
        n = self.batch_size
        return [t[:n] for t in self._v]

    @property
    def lengths(self) -> Tensor:
        """[B] committed length per row (a view of fixed storage)."""
        return self._lengths[: self.batch_size]

    @property
    def width(self) -> int:
        """Number of cache slots a forward must look at (the longest row)."""
        return max(self.host_lengths, default=0)

    def layer(self, i: int, full: bool = False) -> KV:
        """Cached (k, v) of layer i for the live rows: the first `width` slots, or all `capacity` slots (static
        shapes for graph capture; slots past a row's length are masked by `lengths`)."""
        n, w = self.batch_size, (self.capacity if full else self.width)
        return self._k[i][:n, :, :w], self._v[i][:n, :, :w]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._k + self._v)

    @_same_mode
    def reserve(self, capacity: int, rows: int | None = None) -> None:
        """Grow storage to at least `capacity` slots and `rows` rows (a no-op when already that large)."""
        rows = max(rows or 0, self.max_rows)
        if capacity <= self.capacity and rows <= self.max_rows:
            return
        new_cap = max(capacity, 2 * self.capacity) if capacity > self.capacity else self.capacity
        for store in (self._k, self._v):
            for i, t in enumerate(store):
                grown = torch.zeros(rows, t.shape[1], new_cap, t.shape[3], dtype=t.dtype, device=t.device)
                grown[: t.shape[0], :, : t.shape[2]] = t
                store[i] = grown
        if rows > self._lengths.shape[0]:
            lengths = torch.zeros(rows, dtype=torch.long, device=self.device)
            lengths[: self._lengths.shape[0]] = self._lengths
            self._lengths = lengths

    @_same_mode
    def _set_lengths(self, host: list[int]) -> None:
        self.host_lengths = host
        if host:
            self._lengths[: len(host)].copy_(torch.tensor(host, dtype=torch.long), non_blocking=True)

    @_same_mode
    def commit(self, new_kv: Sequence[KV], counts: Sequence[int], starts: Sequence[int] | None = None,
               rows: Sequence[int] | None = None) -> None:
        """Append window positions [starts[i], starts[i]+counts[i]) of `new_kv` row i to cache row rows[i].

        new_kv: per layer (k, v) of shape [N, H_kv, W, D] as returned by the model for its window.
        rows: cache rows the N window rows belong to (default 0..N-1).
        """
        n = len(counts)
        rows = list(range(n)) if rows is None else list(rows)
        starts = [0] * n if starts is None else list(starts)
        if len(rows) != n or len(starts) != n:
            raise ValueError("commit: counts, starts and rows must have the same length")
        host = list(self.host_lengths)
        src_b, src_t, dst_b, dst_t = [], [], [], []
        for i, (r, c, s) in enumerate(zip(rows, counts, starts)):
            if c <= 0:
                continue
            src_b += [i] * c
            src_t += range(s, s + c)
            dst_b += [r] * c
            dst_t += range(host[r], host[r] + c)
            host[r] += c
        if not src_b:
            return
        self.reserve(max(host))
        dev = self.device
        sb, st, db, dt = (torch.tensor(x, dtype=torch.long).to(dev, non_blocking=True)
                          for x in (src_b, src_t, dst_b, dst_t))
        for i, (k, v) in enumerate(new_kv):
            self._k[i][db, :, dt] = k[sb, :, st].to(self.dtype)
            self._v[i][db, :, dt] = v[sb, :, st].to(self.dtype)
        self._set_lengths(host)

    def check_window(self, rows: int, width: int) -> None:
        """Raise ValueError unless a window of `rows` x `width` positions fits after every row's length (host-side
        numbers only: a graph replay's write is checked before it runs)."""
        if rows != self.batch_size:
            raise ValueError(f"write_windows: {rows} window rows for a cache of {self.batch_size} rows")
        longest = max(self.host_lengths, default=0)
        if longest + width > self.capacity:
            raise ValueError(f"write_windows: a {width}-position window after length {longest} needs "
                             f"{longest + width} slots, the storage has {self.capacity} (reserve first)")

    @_same_mode
    def write_windows(self, new_kv: Sequence[KV]) -> None:
        """Store every live row's whole window (k, v) [B, H_kv, W, D] in its slots [length, length + W), lengths
        unchanged: device work only (fixed shapes, no host read), so a CUDA graph captures it with the forward.
        `advance` then commits the first positions of each window. Slots at or past a row's length are masked out
        of attention and written again before they are committed, so the rest of the window does no harm there."""
        k0 = new_kv[0][0]
        n, w = k0.shape[0], k0.shape[2]
        self.check_window(n, w)
        slots = self._lengths[:n, None] + torch.arange(w, device=self.device)[None]
        rows = torch.arange(n, device=self.device)[:, None]
        for i, (k, v) in enumerate(new_kv):
            self._k[i][rows, :, slots] = k.transpose(1, 2).to(self.dtype)
            self._v[i][rows, :, slots] = v.transpose(1, 2).to(self.dtype)

    @_same_mode
    def advance(self, counts: Sequence[int], rows: Sequence[int] | None = None) -> None:
        """Commit the first counts[i] positions of the window that `write_windows` stored in row rows[i] (default
        0..N-1): the same cache as `commit(new_kv, counts, rows=rows)` would give, without copying K/V again."""
        rows = list(range(len(counts))) if rows is None else list(rows)
        if len(rows) != len(counts):
            raise ValueError("advance: counts and rows must have the same length")
        host = list(self.host_lengths)
        for r, c in zip(rows, counts):
            host[r] += c
        if max(host, default=0) > self.capacity:
            raise ValueError(f"advance: {max(host)} positions do not fit the {self.capacity} slots written")
        self._set_lengths(host)

    @_same_mode
    def select(self, rows: Sequence[int]) -> None:
        """Keep only `rows`, in that order (drops finished rows); compacts in place, storage stays put."""
        rows = list(rows)
        if rows == list(range(len(rows))) and len(rows) <= self.batch_size:
            self._set_lengths(self.host_lengths[: len(rows)])
            return
        host = [self.host_lengths[r] for r in rows]
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        w = max(max(host, default=0), 1)
        for store in (self._k, self._v):
            for t in store:
                t[: len(rows), :, :w] = t[:, :, :w].index_select(0, idx)
        self._set_lengths(host)

    @_same_mode
    def add_rows(self, n: int) -> None:
        """Append `n` empty rows (reusing free storage rows when there are any)."""
        if n <= 0:
            return
        self.reserve(self.capacity, self.batch_size + n)
        self._set_lengths(self.host_lengths + [0] * n)

    @_same_mode
    def copy_prefix_from(self, other: "KVCache", src_row: int, dst_row: int, length: int) -> None:
        """Make row `dst_row` hold the first `length` positions of `other`'s row `src_row` (exact prefix reuse)."""
        if length > other.host_lengths[src_row]:
            raise ValueError(f"copy_prefix_from: source row holds {other.host_lengths[src_row]} < {length} positions")
        self.reserve(length)
        for i in range(self.num_layers):
            self._k[i][dst_row, :, :length] = other._k[i][src_row, :, :length]
            self._v[i][dst_row, :, :length] = other._v[i][src_row, :, :length]
        host = list(self.host_lengths)
        host[dst_row] = length
        self._set_lengths(host)

    @_same_mode
    def truncate(self, row: int, length: int) -> None:
        """Forget positions >= `length` of `row`."""
        host = list(self.host_lengths)
        host[row] = min(host[row], length)
        self._set_lengths(host)
