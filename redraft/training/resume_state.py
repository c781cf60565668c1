"""Per-rank exact-resume state without pickle: tensors in safetensors, everything else in JSON.

`trainer_state_rank{r}.safetensors` holds the optimiser's per-parameter tensors (`state.{index}.{key}`; under FSDP2
the rank's local shard of each DTensor) and the noise generator's state (`rng`); `trainer_state_rank{r}.json` holds
the optimiser's param groups, the non-tensor per-parameter values, which keys were DTensors, and the step. On load the
local shards are wrapped back into DTensors with the placements of the (identically sharded) parameters, so a resume
needs the same world size and parallelism, which `checkpoint.load_trainer_state` checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor


def _local(t: Tensor) -> tuple[Tensor, bool]:
    if hasattr(t, "to_local"):
        return t.to_local().detach().cpu().contiguous().clone(), True
    return t.detach().cpu().contiguous().clone(), False


def _json_value(where: str, value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError as e:
        raise ValueError(f"{where}: {type(value).__name__} value {value!r} cannot be stored as JSON") from e
    return value


def state_files(path: Path, rank: int) -> tuple[Path, Path]:
    return path / f"trainer_state_rank{rank}.safetensors", path / f"trainer_state_rank{rank}.json"


def save_resume_state(path: Path, rank: int, optimizer: torch.optim.Optimizer, gen: torch.Generator,
                      step: int) -> None:
    """Write this rank's optimiser state, generator state and step (two files under `path`)."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {"rng": gen.get_state().cpu().contiguous()}
    scalars: dict[str, dict[str, Any]] = {}
    dtensor_keys: list[str] = []
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            name = f"state.{index}.{key}"
            if isinstance(value, Tensor):
                tensors[name], is_dtensor = _local(value)
                if is_dtensor:
                    dtensor_keys.append(name)
            else:
                scalars.setdefault(str(index), {})[key] = _json_value(name, value)
    groups = [{k: _json_value(f"param_groups[{i}].{k}", v) for k, v in g.items()}
              for i, g in enumerate(sd["param_groups"])]
    tensor_file, json_file = state_files(path, rank)
    save_file(tensors, str(tensor_file))
    json_file.write_text(json.dumps({"step": step, "param_groups": groups, "scalars": scalars,
                                     "dtensor_keys": dtensor_keys}, indent=1))


def load_resume_state(path: Path, rank: int, optimizer: torch.optim.Optimizer, gen: torch.Generator) -> int:
    """Restore the optimiser and generator of this rank in place; returns the saved step."""
    tensor_file, json_file = state_files(path, rank)
    for f in (tensor_file, json_file):
        if not f.exists():
            raise ValueError(f"{path}: no {f.name}")
    meta = json.loads(json_file.read_text())
    tensors = load_file(str(tensor_file))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    groups = meta["param_groups"]
    indices = [i for g in groups for i in g["params"]]
    if len(indices) != len(params):
        raise ValueError(f"{json_file}: {len(indices)} parameters saved, the optimiser has {len(params)}")
    by_index = dict(zip(indices, params))
    dtensor_keys = set(meta["dtensor_keys"])
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name == "rng":
            continue
        _, index, key = name.split(".", 2)
        param = by_index[int(index)]
        if name in dtensor_keys:
            if not hasattr(param, "device_mesh"):
                raise ValueError(f"{json_file}: {name} was sharded but the parameter is not (same parallelism?)")
            from torch.distributed.tensor import DTensor

            value = DTensor.from_local(value.to(param.device), param.device_mesh, param.placements, run_check=False)
        state.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    for g in groups:
        if "betas" in g and isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    gen.set_state(tensors["rng"].to(torch.uint8))
    return int(meta["step"])
