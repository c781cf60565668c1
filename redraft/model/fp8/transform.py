"""Apply FP8 to a built model: swap `nn.Linear` -> `Fp8Linear` and `ExpertBank` -> `Fp8ExpertBank` in place.

The model's layer code is untouched (see ../../../shared STYLE: quantized linears are swappable implementations).
Works on a model on the meta device (empty FP8 storage, filled by the loader) or with real weights (quantized now).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import MLP
from ..moe import ExpertBank, MoE
from .blocks import Block
from .config import Fp8Config, hf_quantization_config, resolve_quantization
from .modules import Fp8ExpertBank, Fp8Linear


@dataclass(frozen=True)
class Candidate:
    """A module FP8 can replace. path: its name in the model; official: the checkpoint weight names it owns;
    kind: "experts", "linear" (decoder linears) or "lm_head"; fp8: already converted."""

    path: str
    official: tuple[str, ...]
    kind: str
    fp8: bool

    @property
    def official_modules(self) -> tuple[str, ...]:
        """Module names as the checkpoint (and Hugging Face / vLLM) see them."""
        if self.kind == "experts":
            return (self.path,)
        return tuple(name[:-len(".weight")] for name in self.official)


def candidates(model: nn.Module) -> list[Candidate]:
    """Every expert bank and linear layer of the model, in module order (the router, norms and embeddings are not
    candidates: they always stay in the model dtype)."""
    out = []
    modules = dict(model.named_modules())
    for path, m in modules.items():
        if isinstance(m, ExpertBank):
            names = tuple(f"{path}.{k}" for k in m.official_views() if k.endswith(".weight"))
            out.append(Candidate(path, names, "experts", isinstance(m, Fp8ExpertBank)))
        elif isinstance(m, (nn.Linear, Fp8Linear)):
            parent, _, leaf = path.rpartition(".")
            if leaf == "gate_up_proj" and isinstance(modules.get(parent), MLP):
                names = (f"{parent}.gate_proj.weight", f"{parent}.up_proj.weight")
            else:
                names = (f"{path}.weight",)
            out.append(Candidate(path, names, "lm_head" if path == "lm_head" else "linear", isinstance(m, Fp8Linear)))
    return out


def select(model: nn.Module, config: Fp8Config) -> list[Candidate]:
    """The candidates `config` quantizes (scope, lm_head, modules_to_not_convert)."""
    kinds = {"experts"} if config.scope == "experts" else {"experts", "linear"} | ({"lm_head"} if config.lm_head else set())
    return [c for c in candidates(model) if c.kind in kinds
            and not any(config.excludes(n) for n in (c.path, *c.official_modules))]


def model_dtype(model: nn.Module) -> torch.dtype:
    return model.model.word_embeddings.weight.dtype


def convert(model: nn.Module, paths: list[str], block: Block) -> nn.Module:
    """Replace the modules at `paths` by their FP8 versions (quantizing real weights) and record the layout in
    `model.config.extra["quantization_config"]`, which `save_model` writes to config.json."""
    dtype = model_dtype(model)
    modules = dict(model.named_modules())
    for path in paths:
        old = modules[path]
        if isinstance(old, (Fp8Linear, Fp8ExpertBank)):
            if tuple(old.block) != tuple(block):
                raise ValueError(f"{path} is already FP8 with blocks {old.block}, not {tuple(block)}")
            continue
        parent_path, _, leaf = path.rpartition(".")
        parent = modules[parent_path] if parent_path else model
        if isinstance(old, ExpertBank):
            new = Fp8ExpertBank.from_bank(old, block, dtype)
        else:
            splits = (old.out_features // 2,) * 2 if leaf == "gate_up_proj" and isinstance(parent, MLP) else None
            new = Fp8Linear.from_linear(old, block, dtype, splits)
        setattr(parent, leaf, new)
    if any(c.fp8 for c in candidates(model)):
        kept = [name for c in candidates(model) if not c.fp8 for name in c.official_modules]
        kept += [path for path, m in model.named_modules() if isinstance(m, MoE)
                 for path in [f"{path}.gate"]]  # the routers (not nn.Linear in the official code either)
        model.config.extra["quantization_config"] = hf_quantization_config(block, sorted(kept, key=_natural))
    return model


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in name.split(".")]


def quantize_model(model: nn.Module, config: Fp8Config | str = "fp8") -> nn.Module:
    """Quantize a built model's weights to per-block FP8 in place (module by module, so at most one module's
    bf16 and FP8 copies coexist) and return it. config: an `Fp8Config`, "fp8" (experts) or "fp8-all"."""
    config = resolve_quantization(config)
    if config is None:
        return model
    return convert(model, [c.path for c in select(model, config)], config.weight_block_size)


def is_fp8(model: nn.Module) -> bool:
    return any(isinstance(m, (Fp8Linear, Fp8ExpertBank)) for m in model.modules())
