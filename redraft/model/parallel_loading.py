"""Sharded loading: each rank builds its part of the model and reads only its slices of the checkpoint.

The model is built on the meta device, cut to the rank's shapes (`parallel.shard_modules`), allocated once, and each
tensor's piece (`parallel.shard_plan`) is read from the safetensors file with plain file reads: a piece along dim 0
is one contiguous byte range read straight into the parameter; a piece along a later dim (row-parallel columns)
is read in bounded chunks of whole rows and its columns copied out. Other ranks' tensors (routed experts under
expert parallel) are never read.

Why not `safe_open(...).get_slice`: it maps the file, and a column slice touches every page of the tensor, so the
process's resident set grows by the whole tensor (file-backed pages count in RSS); with plain reads the peak stays
at the shard plus one chunk (`benchmarks/load_memory.py --tp`).
"""

from __future__ import annotations

import math
import os

import torch

from .config import LLaDA2MoeConfig
from .loading import (CheckpointError, _read_into, _shards, check_complete, checkpoint_entries, read_safetensors_header,
                      resolve_checkpoint)
from .modeling import LLaDA2MoeModelLM
from .parallel import ParallelConfig, Piece, Shard, shard_modules, shard_plan

CHUNK_BYTES = 4 << 20  # rows read at a time for a column slice
_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_DTYPE_STR = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def read_config(path_or_hub_id: str | os.PathLike) -> tuple[object, LLaDA2MoeConfig]:
    root = resolve_checkpoint(path_or_hub_id)
    if not (root / "config.json").exists():
        raise CheckpointError(f"{root}: no config.json")
    try:
        return root, LLaDA2MoeConfig.from_file(root / "config.json")
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def resolve_dtype(dtype: torch.dtype | str | None, cfg: LLaDA2MoeConfig) -> torch.dtype:
    if isinstance(dtype, str):
        dtype = getattr(torch, _DTYPE_NAMES.get(dtype, dtype), None)
    if dtype is not None and dtype not in _DTYPE_STR:
        raise CheckpointError(f"dtype must be one of float32, bfloat16, float16, got {dtype}")
    return dtype or cfg.dtype


def load_sharded(path_or_hub_id: str | os.PathLike, config: ParallelConfig, rank: int, group=None,
                 dtype: torch.dtype | str | None = None, device: torch.device | str = "cpu") -> LLaDA2MoeModelLM:
    """Rank `rank`'s part of a checkpoint as a parallel model (eval mode, `model.parallel` set). Every rank of
    `group` calls it; the layout is checked against config.json before any weight is read."""
    root, cfg = read_config(path_or_hub_id)
    config.check(cfg)
    dtype = resolve_dtype(dtype, cfg)
    shard = Shard(cfg, config, rank)
    with torch.device("meta"):
        model = LLaDA2MoeModelLM(cfg)
    model = model.to(dtype=dtype)
    shard_modules(model, shard, group)
    model = model.to_empty(device=torch.device(device))
    targets = model.state_dict(keep_vars=True)
    plan = shard_plan(shard)
    headers = {file: read_safetensors_header(file) for file in _shards(root)}
    loaded: set[str] = set()
    for file, f, data_start, name, entry, src_dtype in checkpoint_entries(headers, plan):
        loaded.add(name)
        piece = plan[name]
        if piece is None:
            continue  # another rank's expert
        shape = list(entry["shape"])
        target = targets[name]
        if piece.shape(shape) != list(target.shape):
            raise CheckpointError(f"{file.name}: tensor {name!r} has shape {tuple(shape)}, which does not "
                                  f"fit this config.json (rank {rank} expects a piece of {tuple(target.shape)})")
        with torch.no_grad():
            read_piece(f, data_start + entry["data_offsets"][0], shape, src_dtype, piece, target.data)
    check_complete(root, [k for k, p in plan.items() if p is not None and k not in loaded])
    model.reset_non_persistent_buffers()
    model.config.torch_dtype = _DTYPE_STR[dtype]
    return model.eval()


def read_piece(f, offset: int, shape: list[int], src_dtype: torch.dtype, piece: Piece, target: torch.Tensor) -> None:
    """Read `piece` of the tensor stored at byte `offset` of open file `f` (shape, dtype) into `target`."""
    dim = piece.dim
    ranges = piece.ranges if piece.ranges is not None else ((0, shape[dim] if shape else 1),)
    outer = math.prod(shape[:dim])
    n = shape[dim] if shape else 1
    inner = math.prod(shape[dim + 1:])
    size = torch.empty((), dtype=src_dtype).element_size()
    width = sum(b - a for a, b in ranges)
    direct = target.device.type == "cpu" and target.is_contiguous()
    if target.is_contiguous():
        out = target.view(outer, width, inner)
    else:
        out = torch.empty(outer, width, inner, dtype=target.dtype, device=target.device)
    if outer == 1:  # each range is one contiguous byte run
        col = 0
        for a, b in ranges:
            dst = out[0, col:col + b - a]
            if direct:
                _read_into(f, offset + a * inner * size, dst, src_dtype, [b - a, inner])
            else:
                tmp = torch.empty(b - a, inner, dtype=target.dtype)
                _read_into(f, offset + a * inner * size, tmp, src_dtype, [b - a, inner])
                dst.copy_(tmp)
            col += b - a
    else:  # column slices: whole rows in bounded chunks
        rows = max(1, CHUNK_BYTES // max(1, n * inner * size))
        buf = torch.empty(min(rows, outer), n, inner, dtype=src_dtype)
        for o in range(0, outer, rows):
            k = min(rows, outer - o)
            chunk = buf[:k]
            _read_into(f, offset + o * n * inner * size, chunk, src_dtype, [k, n, inner])
            col = 0
            for a, b in ranges:
                out[o:o + k, col:col + b - a].copy_(chunk[:, a:b])
                col += b - a
    if not target.is_contiguous():
        target.copy_(out.view(target.shape))
