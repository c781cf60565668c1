"""Checkpoint loading and saving in the Hugging Face layout (config.json + safetensors, single or sharded).

Loading builds the model on the meta device, allocates it once on the target device, and reads every tensor from
the safetensors file straight into its parameter (plain file reads, no mmap and no intermediate state dict), so
peak memory stays close to the checkpoint's size. No pickle anywhere.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Container, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import torch

from .config import LLaDA2MoeConfig
from .modeling import LLaDA2MoeModelLM

if TYPE_CHECKING:
    from .fp8.config import Fp8Config

SAFE_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
               "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
               "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
_HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file, tensor or field."""


def resolve_checkpoint(path_or_hub_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local directory as is; otherwise a Hugging Face hub id, downloaded (or found in the local hub cache)."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path}: expected a checkpoint directory (config.json + *.safetensors), got a file")
    name = str(path_or_hub_id)
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise CheckpointError(f"{name}: no such directory, and not a hub id of the form 'org/name'")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=name, revision=revision, allow_patterns=_HUB_FILES))
    except Exception as e:  # network, auth, missing repo: all reported as one clear error
        raise CheckpointError(f"{name}: could not resolve hub id through huggingface_hub ({type(e).__name__}: {e})") from None


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """(tensor entries, byte offset of the data section); checks that the file holds every byte it declares."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file (no header)")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise CheckpointError(f"{path}: truncated or corrupt safetensors file (header of {n} bytes, file {size})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: corrupt safetensors header") from None
    header.pop("__metadata__", None)
    data_start = 8 + n
    end = max((int(e["data_offsets"][1]) for e in header.values()), default=0)
    if data_start + end > size:
        last = max(header, key=lambda k: header[k]["data_offsets"][1])
        raise CheckpointError(f"{path}: truncated safetensors file: tensor {last!r} ends at byte {data_start + end}, "
                              f"file has {size}")
    return header, data_start


def _shards(root: Path) -> list[Path]:
    index = root / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: no 'weight_map' object")
        files = sorted(set(weight_map.values()))
        for f in files:
            if not (root / f).exists():
                raise CheckpointError(f"{index}: lists shard {f!r}, which is missing")
        return [root / f for f in files]
    single = root / "model.safetensors"
    if single.exists():
        return [single]
    found = sorted(root.glob("*.safetensors"))
    if not found:
        raise CheckpointError(f"{root}: no model.safetensors and no model.safetensors.index.json")
    return found


def _read_into(f, offset: int, target: torch.Tensor, src_dtype: torch.dtype, shape: list[int]) -> None:
    f.seek(offset)
    if src_dtype == target.dtype and target.is_contiguous() and target.device.type == "cpu":
        buf = target.view(torch.uint8).reshape(-1).numpy()
        if f.readinto(memoryview(buf)) != buf.nbytes:
            raise CheckpointError(f"{f.name}: unexpected end of file")
        return
    tmp = torch.empty(shape, dtype=src_dtype)
    buf = tmp.view(torch.uint8).reshape(-1).numpy() if tmp.numel() else None
    if buf is not None and f.readinto(memoryview(buf)) != buf.nbytes:
        raise CheckpointError(f"{f.name}: unexpected end of file")
    target.copy_(tmp)


def checkpoint_entries(headers: dict[Path, tuple[dict, int]],
                       known: Container[str]) -> Iterator[tuple[Path, BinaryIO, int, str, dict, torch.dtype]]:
    """Every tensor of the checkpoint files (`{file: read_safetensors_header(file)}`), file by file in storage order,
    as (file, open file, data start, name, header entry, stored dtype), after the checks every loader makes: a name
    in `known`, in one file only, a supported dtype, a byte size that matches its shape."""
    seen: set[str] = set()
    for path, (header, data_start) in headers.items():
        with open(path, "rb", buffering=0) as f:
            for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
                if name not in known:
                    raise CheckpointError(f"{path.name}: unexpected tensor {name!r} (not part of an llada2_moe model "
                                          f"with this config.json)")
                if name in seen:
                    raise CheckpointError(f"{path.name}: tensor {name!r} appears in more than one shard")
                seen.add(name)
                src_dtype = SAFE_DTYPES.get(entry["dtype"])
                if src_dtype is None:
                    raise CheckpointError(f"{path.name}: tensor {name!r} has unsupported dtype {entry['dtype']}")
                begin, end = entry["data_offsets"]
                if end - begin != math.prod(entry["shape"]) * torch.empty((), dtype=src_dtype).element_size():
                    raise CheckpointError(f"{path.name}: tensor {name!r}: byte size does not match its shape")
                yield path, f, data_start, name, entry, src_dtype


def check_complete(root: Path, missing: list[str]) -> None:
    """One CheckpointError naming the first missing tensors, if any."""
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise CheckpointError(f"{root}: missing tensor(s) {', '.join(repr(m) for m in missing[:5])}{more}")


def load_model(path_or_hub_id: str | os.PathLike, dtype: torch.dtype | str | None = None,
               device: torch.device | str = "cpu", revision: str | None = None,
               quantization: "str | Fp8Config | None" = None) -> LLaDA2MoeModelLM:
    """Load an `llada2_moe` checkpoint (local directory or hub id) in eval mode.

    dtype: parameter dtype; default the config's `torch_dtype`. Raises `CheckpointError` naming the tensor, file
    or config field for a missing, unexpected or wrongly shaped tensor, a truncated file, or a bad config.
    quantization: None, "fp8" (routed experts), "fp8-all" (every linear layer) or an `Fp8Config`: per-block FP8
    weights, quantized tensor by tensor while reading. FP8 checkpoints (block-FP8 `quantization_config`, or
    `use_fp8_experts`) load as FP8 in any case (see `redraft.model.fp8` and docs/quantization.md).
    """
    root = resolve_checkpoint(path_or_hub_id, revision)
    cfg_path = root / "config.json"
    if not cfg_path.exists():
        raise CheckpointError(f"{root}: no config.json")
    try:
        cfg = LLaDA2MoeConfig.from_file(cfg_path)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    if isinstance(dtype, str):
        dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype)
        dtype = getattr(torch, dtype, None)
    if dtype is not None and dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise CheckpointError(f"dtype must be one of float32, bfloat16, float16, got {dtype}")
    dtype = dtype or cfg.dtype
    device = torch.device(device)
    from .fp8.checkpoint import plan_fp8
    from .fp8.config import resolve_quantization

    try:
        quantization = resolve_quantization(quantization)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    headers = {shard: read_safetensors_header(shard) for shard in _shards(root)}
    with torch.device("meta"):
        model = LLaDA2MoeModelLM(cfg)
    model = model.to(dtype=dtype)
    fp8 = plan_fp8(model, cfg.extra, {n: (s.name, e) for s, (h, _) in headers.items() for n, e in h.items()},
                   quantization)
    if fp8 is not None:
        fp8.apply(model)  # FP8 modules swapped in on meta: storage is allocated once, in FP8
    model = model.to_empty(device=device)
    targets = model.state_dict(keep_vars=True)
    loaded: set[str] = set()
    for shard, f, data_start, name, entry, src_dtype in checkpoint_entries(headers, targets):
        target = targets[name]
        shape = list(entry["shape"])
        if shape != list(target.shape):
            raise CheckpointError(f"{shard.name}: tensor {name!r} has shape {tuple(shape)} but config.json "
                                  f"implies {tuple(target.shape)}")
        begin = entry["data_offsets"][0]
        with torch.no_grad():
            if fp8 is not None and fp8.quantizes(target, src_dtype):  # quantize at load, tensor by tensor
                tmp = torch.empty(shape, dtype=src_dtype)
                _read_into(f, data_start + begin, tmp, src_dtype, shape)
                loaded.add(fp8.quantize_into(name, tmp, targets))
            elif target.device.type == "cpu":
                _read_into(f, data_start + begin, target.data, src_dtype, shape)
            else:
                tmp = torch.empty(shape, dtype=src_dtype)
                _read_into(f, data_start + begin, tmp, src_dtype, shape)
                target.data.copy_(tmp)
        loaded.add(name)
    check_complete(root, [k for k in targets if k not in loaded])
    model.reset_non_persistent_buffers()
    model.config.torch_dtype = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    return model.eval()


def save_model(model: LLaDA2MoeModelLM, directory: str | os.PathLike, max_shard_bytes: int | None = None,
               tokenizer=None) -> Path:
    """Write `config.json` and `model.safetensors` (or shards + index when `max_shard_bytes` is set)."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    dtype = next(model.parameters()).dtype
    cfg = model.config.to_dict()
    cfg["torch_dtype"] = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    groups: list[list[str]] = [[]]
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if max_shard_bytes and groups[-1] and size + nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    for old in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        old.unlink()
    if len(groups) == 1:
        save_file({k: state[k].detach().to("cpu").clone().contiguous() for k in groups[0]},
                  out / "model.safetensors", metadata={"format": "pt"})
    else:
        weight_map = {}
        total = 0
        for i, names in enumerate(groups, 1):
            fname = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
            tensors = {k: state[k].detach().to("cpu").clone().contiguous() for k in names}
            total += sum(t.numel() * t.element_size() for t in tensors.values())
            save_file(tensors, out / fname, metadata={"format": "pt"})
            weight_map.update({k: fname for k in names})
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    if tokenizer is not None:
        tokenizer.save(out)
    return out
