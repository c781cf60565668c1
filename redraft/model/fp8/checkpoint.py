"""Reading an FP8 checkpoint: which modules are FP8, checked against the tensors before anything is allocated.

`plan_fp8` looks at config.json and every safetensors header: a module is FP8 when its weights are stored as
float8_e4m3fn (each with a float32 `weight_scale_inv` of the block grid's shape), or when the caller asked to quantize
it while loading. Anything inconsistent raises one `CheckpointError` naming the tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .blocks import FP8_DTYPE, Block, quantize_block_fp8, scale_shape
from .config import Fp8Config, checkpoint_block_size
from .transform import candidates, convert, select

SCALE_SUFFIX = "weight_scale_inv"


def scale_name(weight_name: str) -> str:
    return weight_name[:-len("weight")] + SCALE_SUFFIX


@dataclass
class Fp8LoadPlan:
    """block: the block size; paths: modules to make FP8 (from the checkpoint, plus those quantized at load)."""

    block: Block
    paths: list[str]

    def apply(self, model: nn.Module) -> None:
        convert(model, self.paths, self.block)

    @staticmethod
    def quantizes(target: Tensor, src_dtype: torch.dtype) -> bool:
        """A floating-point tensor read into an FP8 weight: quantize it on the way in."""
        return target.dtype == FP8_DTYPE and src_dtype != FP8_DTYPE

    def quantize_into(self, name: str, tensor: Tensor, targets: dict[str, Tensor]) -> str:
        """Quantize `tensor` into targets[name] and its scale; returns the scale's name."""
        q, s = quantize_block_fp8(tensor, self.block)
        scale = scale_name(name)
        targets[name].data.copy_(q)
        targets[scale].data.copy_(s)
        return scale


def plan_fp8(model: nn.Module, cfg: dict, headers: dict[str, tuple[str, dict]],
             requested: Fp8Config | None) -> Fp8LoadPlan | None:
    """headers: tensor name -> (file name, safetensors entry). None when the model stays unquantized."""
    from ..loading import CheckpointError

    try:
        block = checkpoint_block_size(cfg)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    float8 = {n for n, (_, e) in headers.items() if e["dtype"].startswith("F8")}
    for n in sorted(float8):
        if headers[n][1]["dtype"] != "F8_E4M3":
            raise CheckpointError(f"{headers[n][0]}: tensor {n!r} is {headers[n][1]['dtype']}; only F8_E4M3 "
                                  "(float8_e4m3fn) FP8 weights are supported")
    if float8 and block is None:
        n = min(float8)
        raise CheckpointError(f"{headers[n][0]}: tensor {n!r} is float8 but config.json declares no FP8 layout "
                              "(no quantization_config with quant_method 'fp8', no use_fp8_experts)")
    cands = candidates(model)
    from_ckpt = []
    owned: set[str] = set()
    for c in cands:
        stored = [n for n in c.official if n in float8]
        if not stored:
            continue
        for n in c.official:
            if n not in float8:
                where = f"{headers[n][0]}: " if n in headers else ""
                raise CheckpointError(f"{where}tensor {n!r} is not float8 while {stored[0]!r} of the same module is "
                                      "(a module is FP8 as a whole)")
            _check_scale(n, headers, block, c)
            owned.update((n, scale_name(n)))
        from_ckpt.append(c.path)
    for n in sorted(float8 - owned):
        raise CheckpointError(f"{headers[n][0]}: tensor {n!r} is float8, but redraft keeps this tensor in the model "
                              "dtype (FP8 applies to linear layers and experts only)")
    for n in sorted(n for n in headers if n.endswith("." + SCALE_SUFFIX) and n not in owned):
        raise CheckpointError(f"{headers[n][0]}: tensor {n!r} is an FP8 block scale, but its weight "
                              f"{n[:-len(SCALE_SUFFIX)] + 'weight'!r} is not stored as float8")
    if block is not None and not from_ckpt:
        raise CheckpointError("config.json declares FP8 weights, but no tensor of the checkpoint is float8")
    paths = list(from_ckpt)
    if requested is not None:
        if block is not None and tuple(requested.weight_block_size) != block:
            raise CheckpointError(f"the checkpoint's FP8 blocks are {list(block)}, quantization asked for "
                                  f"{list(requested.weight_block_size)}")
        block = requested.weight_block_size
        paths += [c.path for c in select(model, requested) if c.path not in from_ckpt]
    return Fp8LoadPlan(block, paths) if paths else None


def _check_scale(name: str, headers: dict[str, tuple[str, dict]], block: Block, c) -> None:
    from ..loading import CheckpointError

    scale = scale_name(name)
    file, entry = headers[name]
    if scale not in headers:
        raise CheckpointError(f"{file}: FP8 weight {name!r} has no block scale: tensor {scale!r} is missing")
    sfile, sentry = headers[scale]
    want = list(scale_shape(entry["shape"], block))
    if list(sentry["shape"]) != want:
        raise CheckpointError(f"{sfile}: tensor {scale!r} has shape {tuple(sentry['shape'])}, but weight {name!r} "
                              f"{tuple(entry['shape'])} with weight_block_size {list(block)} needs {tuple(want)} "
                              "(ceil(rows / block) x ceil(columns / block))")
    if sentry["dtype"] != "F32":
        raise CheckpointError(f"{sfile}: tensor {scale!r} is {sentry['dtype']}; FP8 block scales must be F32")
