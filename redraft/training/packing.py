"""Packed rows: segments (documents, chat examples) laid side by side in fixed-length rows, stored as numpy arrays.

Each segment keeps its own positions (0..n-1) and a segment id within its row; `masks.packed_dual_stream_mask` keeps
segments from attending to each other. Padding at the end of a row has segment id -1 and is never trained.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .objective import TrainBatch


@dataclass(frozen=True)
class Segment:
    """One training sequence: token ids and, per token, whether it is trained and noised (False for the prompt)."""

    ids: Sequence[int]
    eligible: Sequence[bool]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.eligible):
            raise ValueError(f"segment: {len(self.ids)} ids but {len(self.eligible)} eligible flags")
        if not self.ids:
            raise ValueError("segment: empty")


@dataclass
class PackedRows:
    """N rows of length L: input_ids int32, position_ids int32, segment_ids int16 (-1 = padding), eligible bool."""

    input_ids: np.ndarray
    position_ids: np.ndarray
    segment_ids: np.ndarray
    eligible: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    def batch(self, rows: np.ndarray | Sequence[int]) -> TrainBatch:
        rows = np.asarray(rows, dtype=np.int64)
        return TrainBatch(input_ids=torch.from_numpy(self.input_ids[rows].astype(np.int64)),
                          position_ids=torch.from_numpy(self.position_ids[rows].astype(np.int64)),
                          segment_ids=torch.from_numpy(self.segment_ids[rows].astype(np.int64)),
                          eligible=torch.from_numpy(self.eligible[rows]))

    def save(self, path: str | Path) -> None:
        """Compressed .npz; ids and positions as uint16 when they fit (a GPU box gets the file over a small link)."""
        small = int(self.input_ids.max(initial=0)) < 2**16 and self.seq_len <= 2**16
        dtype = np.uint16 if small else np.int32
        np.savez_compressed(path, input_ids=self.input_ids.astype(dtype), position_ids=self.position_ids.astype(dtype),
                            segment_ids=self.segment_ids, eligible=self.eligible)

    @classmethod
    def load(cls, path: str | Path) -> "PackedRows":
        with np.load(path) as f:
            return cls(f["input_ids"].astype(np.int32), f["position_ids"].astype(np.int32), f["segment_ids"],
                       f["eligible"])

    def num_eligible(self) -> int:
        return int(self.eligible.sum())


def pack(segments: Iterable[Segment], seq_len: int, pad_id: int) -> PackedRows:
    """Greedy in-order packing: a segment goes into the current row if it fits, else the row is closed (padded).

    Segments longer than `seq_len` raise (split documents first, see `data.chunk_document`).
    """
    if seq_len <= 0:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    rows: list[tuple[list[int], list[int], list[int], list[bool]]] = []
    cur: tuple[list[int], list[int], list[int], list[bool]] = ([], [], [], [])
    num_segments = 0

    def close() -> None:
        nonlocal cur, num_segments
        if cur[0]:
            pad = seq_len - len(cur[0])
            rows.append((cur[0] + [pad_id] * pad, cur[1] + list(range(pad)), cur[2] + [-1] * pad,
                         cur[3] + [False] * pad))
        cur = ([], [], [], [])
        num_segments = 0

    for seg in segments:
        n = len(seg.ids)
        if n > seq_len:
            raise ValueError(f"segment of {n} tokens is longer than seq_len={seq_len}")
        if len(cur[0]) + n > seq_len:
            close()
        cur[0].extend(int(i) for i in seg.ids)
        cur[1].extend(range(n))
        cur[2].extend([num_segments] * n)
        cur[3].extend(bool(e) for e in seg.eligible)
        num_segments += 1
    close()
    if not rows:
        return PackedRows(np.zeros((0, seq_len), np.int32), np.zeros((0, seq_len), np.int32),
                          np.zeros((0, seq_len), np.int16), np.zeros((0, seq_len), bool))
    ids, pos, seg, eli = (np.array(col) for col in zip(*rows))
    return PackedRows(ids.astype(np.int32), pos.astype(np.int32), seg.astype(np.int16), eli.astype(bool))


def concat(parts: Sequence[PackedRows]) -> PackedRows:
    parts = [p for p in parts if len(p)]
    if not parts:
        raise ValueError("no rows to concatenate")
    return PackedRows(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                        ("input_ids", "position_ids", "segment_ids", "eligible")))
