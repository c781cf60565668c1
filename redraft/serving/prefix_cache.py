"""`PrefixCache`: which stored K/V row holds the longest block-aligned prefix of a prompt (tensor-free bookkeeping).

Prompts that share a prefix (a system prompt, few-shot examples) share the K/V of their *full* prompt blocks: a
prompt block's keys and values depend only on the tokens of that block and the blocks before it (the block-causal
commit layout), so they are a pure function of the token prefix and the block length. The engine's runner keeps
the K/V in a store of `num_slots` cache rows; this index maps prefixes to those rows:

  * chain hash per block: h_j = hash((h_{j-1}, tokens of block j)), seeded with the block length, so one lookup
    walks the prompt's blocks once and finds the longest stored prefix;
  * a hit is verified token by token (a hash collision can never reuse wrong K/V);
  * least-recently-used slots are recycled when the store is full.

It implements the `PrefixIndex` protocol of `redraft.decoding.runner`; the runner calls it from the engine loop
thread only. Counters (`lookups`, `hits`, `reused_tokens`, `inserts`, `evictions`) are plain ints for /metrics.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class _Entry:
    block_length: int
    tokens: tuple[int, ...]        # the stored prefix: whole blocks
    hashes: tuple[int, ...]        # chain hash after each of its blocks


def _chain(tokens: Sequence[int], block_length: int, num_blocks: int) -> list[int]:
    """Chain hashes of the first `num_blocks` blocks of `tokens`."""
    out, h = [], hash(("redraft-prefix", block_length))
    for j in range(num_blocks):
        h = hash((h, tuple(tokens[j * block_length:(j + 1) * block_length])))
        out.append(h)
    return out


class PrefixCache:
    """Index of `num_slots` stored prefixes (slot = a row of the runner's K/V store).

    min_blocks: shortest prefix worth storing or reusing, in blocks (>= 1).
    """

    def __init__(self, num_slots: int, min_blocks: int = 1):
        for name, v in (("num_slots", num_slots), ("min_blocks", min_blocks)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"PrefixCache.{name} must be an integer >= 1, got {v!r}")
        self.num_slots = num_slots
        self.min_blocks = min_blocks
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # slot -> entry, least recently used first
        self._index: dict[int, int] = {}  # chain hash -> slot holding that prefix
        self.lookups = 0
        self.hits = 0
        self.reused_tokens = 0
        self.inserts = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, tokens: Sequence[int], block_length: int, max_blocks: int) -> tuple[int, int] | None:
        """(slot, blocks) of the longest stored prefix of `tokens` with at most `max_blocks` whole blocks, or None.

        A hit counts as reuse: the caller copies `blocks * block_length` positions of that slot."""
        _check(block_length, max_blocks)
        self.lookups += 1
        n = min(max_blocks, len(tokens) // block_length)
        if n < self.min_blocks:
            return None
        hashes = _chain(tokens, block_length, n)
        for j in range(n, self.min_blocks - 1, -1):
            slot = self._index.get(hashes[j - 1])
            if slot is None:
                continue
            entry = self._entries[slot]
            size = j * block_length
            if entry.block_length == block_length and entry.tokens[:size] == tuple(tokens[:size]):
                self._entries.move_to_end(slot)
                self.hits += 1
                self.reused_tokens += size
                return slot, j
        return None

    def insert(self, tokens: Sequence[int], block_length: int, num_blocks: int) -> int | None:
        """Reserve a slot for the first `num_blocks` whole blocks of `tokens`; the caller must then fill that slot
        with their K/V. None when there is nothing to store (too short, or already stored)."""
        _check(block_length, num_blocks)
        num_blocks = min(num_blocks, len(tokens) // block_length)
        if num_blocks < self.min_blocks:
            return None
        size = num_blocks * block_length
        hashes = _chain(tokens, block_length, num_blocks)
        held = self._index.get(hashes[-1])
        if held is not None and self._entries[held].tokens[:size] == tuple(tokens[:size]):
            self._entries.move_to_end(held)
            return None
        if len(self._entries) < self.num_slots:
            slot = next(s for s in range(self.num_slots) if s not in self._entries)
        else:
            slot = next(iter(self._entries))
            self._evict(slot)
        self._entries[slot] = _Entry(block_length, tuple(tokens[:size]), tuple(hashes))
        for h in hashes:
            self._index[h] = slot  # the newest holder of a prefix serves it
        self.inserts += 1
        return slot

    def _evict(self, slot: int) -> None:
        entry = self._entries.pop(slot)
        self.evictions += 1
        for h in entry.hashes:
            if self._index.get(h) != slot:
                continue
            other = next((s for s, e in reversed(self._entries.items()) if h in e.hashes), None)
            if other is None:
                del self._index[h]
            else:
                self._index[h] = other

    def stats(self) -> dict[str, int]:
        return {"lookups": self.lookups, "hits": self.hits, "reused_tokens": self.reused_tokens,
                "inserts": self.inserts, "evictions": self.evictions, "entries": len(self._entries)}


def _check(block_length: int, blocks: int) -> None:
    if not isinstance(block_length, int) or block_length < 1:
        raise ValueError(f"block_length must be an integer >= 1, got {block_length!r}")
    if not isinstance(blocks, int) or blocks < 0:
        raise ValueError(f"number of blocks must be an integer >= 0, got {blocks!r}")
