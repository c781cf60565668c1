"""KV cache of committed blocks: per layer [B, H_kv, capacity, D]; row b holds positions 0..lengths[b]-1.

Rows may hold different lengths (rows at different blocks). `commit` appends keys/values that a forward already
computed (no extra forward); `select` drops finished rows; `add_rows` appends empty rows (continuous batching);
`copy_prefix_from` seeds rows from another cache (prefix reuse).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

KV = tuple[Tensor, Tensor]


class KVCache:
    def __init__(self, num_layers: int, batch_size: int, num_kv_heads: int, head_dim: int, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", capacity: int = 256):
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = torch.device(device)
        shape = (batch_size, num_kv_heads, max(capacity, 1), head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        self.host_lengths: list[int] = [0] * batch_size
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=self.device)

    @classmethod
    def for_model(cls, model, batch_size: int, capacity: int = 256) -> "KVCache":
        cfg = model.config
        p = next(model.parameters())
        return cls(cfg.num_hidden_layers, batch_size, cfg.num_key_value_heads, cfg.head_dim,
                   dtype=p.dtype, device=p.device, capacity=capacity)

    @property
    def batch_size(self) -> int:
        return len(self.host_lengths)

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    @property
    def width(self) -> int:
        """Number of cache slots a forward must look at (the longest row)."""
        return max(self.host_lengths, default=0)

    def layer(self, i: int) -> KV:
        w = self.width
        return self.k[i][:, :, :w], self.v[i][:, :, :w]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def _reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        new_cap = max(needed, 2 * self.capacity)
        for store in (self.k, self.v):
            for i, t in enumerate(store):
                grown = torch.zeros(t.shape[0], t.shape[1], new_cap, t.shape[3], dtype=t.dtype, device=t.device)
                grown[:, :, : t.shape[2]] = t
                store[i] = grown

    def _set_lengths(self, host: list[int]) -> None:
        self.host_lengths = host
        self.lengths = torch.tensor(host, dtype=torch.long, device=self.device)

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
        self._reserve(max(host))
        dev = self.device
        sb, st, db, dt = (torch.tensor(x, dtype=torch.long, device=dev) for x in (src_b, src_t, dst_b, dst_t))
        for i, (k, v) in enumerate(new_kv):
            self.k[i][db, :, dt] = k[sb, :, st].to(self.dtype)
            self.v[i][db, :, dt] = v[sb, :, st].to(self.dtype)
        self._set_lengths(host)

    def select(self, rows: Sequence[int]) -> None:
        """Keep only `rows`, in that order (drops finished rows; the cache shrinks to the longest kept row)."""
        rows = list(rows)
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        host = [self.host_lengths[r] for r in rows]
        cap = max(max(host, default=0), 1)
        self.k = [t.index_select(0, idx)[:, :, :cap].contiguous() for t in self.k]
        self.v = [t.index_select(0, idx)[:, :, :cap].contiguous() for t in self.v]
        self._set_lengths(host)

    def add_rows(self, n: int) -> None:
        """Append `n` empty rows."""
        if n <= 0:
            return
        for store in (self.k, self.v):
            for i, t in enumerate(store):
                pad = torch.zeros(n, *t.shape[1:], dtype=t.dtype, device=t.device)
                store[i] = torch.cat([t, pad], dim=0)
        self._set_lengths(self.host_lengths + [0] * n)

    def copy_prefix_from(self, other: "KVCache", src_row: int, dst_row: int, length: int) -> None:
        """Make row `dst_row` hold the first `length` positions of `other`'s row `src_row` (exact prefix reuse)."""
        if length > other.host_lengths[src_row]:
            raise ValueError(f"copy_prefix_from: source row holds {other.host_lengths[src_row]} < {length} positions")
        self._reserve(length)
        for i in range(self.num_layers):
            self.k[i][dst_row, :, :length] = other.k[i][src_row, :, :length]
            self.v[i][dst_row, :, :length] = other.v[i][src_row, :, :length]
        host = list(self.host_lengths)
        host[dst_row] = length
        self._set_lengths(host)

    def truncate(self, row: int, length: int) -> None:
        """Forget positions >= `length` of `row`."""
        host = list(self.host_lengths)
        host[row] = min(host[row], length)
        self._set_lengths(host)
