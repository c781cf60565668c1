"""LoRA adapters through PEFT, applied to a built model (like a quantisation transform: the layers know nothing).

`apply_lora` wraps the token-wise linears named in `LoraSettings.targets` with PEFT's `lora.Linear` (the model's
forward calls a wrapped linear as a module, see `invariant.apply_linear`) and freezes everything else. Target names:
`query_key_value` and `dense` (attention), `gate_up_proj` and `down_proj` (the dense MLPs and the shared experts:
gate and up are one fused [2I, H] matrix here, so one adapter covers both), `lm_head`. The routed experts are stored
stacked and are not `nn.Linear`s: no target reaches them.

Adapters are saved in the PEFT layout (`adapter_config.json` + `adapter_model.safetensors`, tensors named
`base_model.model.<module>.lora_{A,B}.weight`), so `peft.PeftModel.from_pretrained(load_model(BASE), DIR)` loads
them too. `merge_lora` folds W += (alpha / r) * B @ A into the base weights and removes the wrappers, leaving a
plain `LLaDA2MoeModelLM` (save it with `save_model`: official names, as any checkpoint).

PEFT (and through it transformers) is imported only when an adapter is used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
DEFAULT_TARGETS = ("query_key_value", "dense", "gate_up_proj", "down_proj")
KNOWN_TARGETS = DEFAULT_TARGETS + ("lm_head",)
_PREFIX = "base_model.model."  # PeftModel's prefix in adapter_model.safetensors
_ADAPTER = "default"


@dataclass
class LoraSettings:
    """r: adapter rank; alpha: scale numerator (delta = alpha / r * B @ A); dropout: on the adapter's input during
    training; targets: module names (see the module docstring). A starts Kaiming-uniform, B at zero (PEFT's default),
    so a fresh adapter leaves the model unchanged."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ValueError(f"lora.r must be a positive int, got {self.r!r}")
        if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ValueError(f"lora.alpha must be positive, got {self.alpha!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.targets, str) or not self.targets:
            raise ValueError(f"lora.targets must be a non-empty list of module names, got {self.targets!r}")
        for name in self.targets:
            if name in ("gate_proj", "up_proj"):
                raise ValueError(f"lora.targets: {name!r} is stored fused here; target 'gate_up_proj' (one adapter "
                                 "over the fused gate+up matrix)")
            if name not in KNOWN_TARGETS:
                raise ValueError(f"lora.targets: unknown module name {name!r}; known: {list(KNOWN_TARGETS)}")
        self.targets = list(self.targets)

    def peft_config(self, base_model: str | None = None):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.targets), bias="none",
                          base_model_name_or_path=str(base_model) if base_model is not None else None)


def apply_lora(model: nn.Module, settings: LoraSettings | None = None, peft_config=None, seed: int = 0) -> nn.Module:
    """Wrap the target linears of `model` in place (fresh adapter: B = 0) and freeze every other parameter.
    Returns `model`. `peft_config`: a `peft.LoraConfig` to use instead of `settings` (loading a saved adapter).
    seed: the A matrices' initialisation (PEFT draws from the global generator: forked here, so a run is a pure
    function of its seed and the caller's random state is left alone)."""
    from peft import inject_adapter_in_model

    if is_lora(model):
        raise ValueError("apply_lora: the model already has LoRA adapters")
    config = peft_config if peft_config is not None else (settings or LoraSettings()).peft_config()
    model.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, model, adapter_name=_ADAPTER)
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name)
    return model


def is_lora(model: nn.Module) -> bool:
    """Whether `model` holds PEFT LoRA wrappers."""
    return any(type(m).__module__.startswith("peft.") for m in model.modules())


def adapter_state(model: nn.Module) -> dict[str, Tensor]:
    """The adapter tensors under PEFT's saved names (`<module>.lora_A.weight`, no adapter name, no prefix), full
    (unsharded: every rank of an FSDP2 run must call it), on CPU."""
    out = {}
    for name, p in model.named_parameters():
        if ".lora_" in name:
            t = p.detach()
            t = t.full_tensor() if hasattr(t, "full_tensor") else t
            out[name.replace(f".{_ADAPTER}.", ".")] = t.cpu().contiguous()
    if not out:
        raise ValueError("the model has no LoRA adapter parameters")
    return out


def save_adapter(model: nn.Module, directory: str | os.PathLike, settings: LoraSettings | None = None,
                 base_model: str | None = None, state: dict[str, Tensor] | None = None,
                 dtype: torch.dtype | None = None) -> Path:
    """Write `adapter_config.json` + `adapter_model.safetensors` (PEFT layout) into `directory`.
    settings: the adapter's settings (default: read back from the model's wrappers). state: `adapter_state(model)`
    when already gathered. dtype: tensor dtype on disk (default: as trained)."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = adapter_state(model) if state is None else state
    settings = settings or settings_of(model)
    settings.peft_config(base_model).save_pretrained(str(out))
    tensors = {_PREFIX + k: (v.to(dtype) if dtype is not None else v).contiguous() for k, v in state.items()}
    save_file(tensors, out / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    return out


def settings_of(model: nn.Module) -> LoraSettings:
    """The `LoraSettings` the model's wrappers were built with."""
    from peft.tuners.lora import LoraLayer

    layers = {name.rsplit(".", 1)[-1]: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    if not layers:
        raise ValueError("the model has no LoRA adapters")
    first = next(iter(layers.values()))
    dropout = first.lora_dropout[_ADAPTER]
    return LoraSettings(r=first.r[_ADAPTER], alpha=first.lora_alpha[_ADAPTER],
                        dropout=dropout.p if isinstance(dropout, nn.Dropout) else 0.0, targets=sorted(layers))


def is_adapter_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def read_adapter_config(directory: str | os.PathLike):
    """The adapter's `peft.LoraConfig`; ValueError naming the file for a missing or non-LoRA adapter."""
    from peft import LoraConfig

    root = Path(directory)
    path = root / ADAPTER_CONFIG
    if not path.is_file():
        raise ValueError(f"{root}: not an adapter directory (no {ADAPTER_CONFIG})")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if raw.get("peft_type") != "LORA":
        raise ValueError(f"{path}: peft_type {raw.get('peft_type')!r} is not supported (only 'LORA')")
    if not (root / ADAPTER_WEIGHTS).is_file():
        raise ValueError(f"{root}: no {ADAPTER_WEIGHTS}")
    return LoraConfig.from_pretrained(str(root))


def load_adapter_weights(model: nn.Module, directory: str | os.PathLike) -> None:
    """Copy a saved adapter's tensors into the model's (already applied) wrappers; ValueError naming every missing
    or unexpected tensor and any shape mismatch."""
    from safetensors.torch import load_file

    path = Path(directory) / ADAPTER_WEIGHTS
    saved = {k[len(_PREFIX):] if k.startswith(_PREFIX) else k: v for k, v in load_file(str(path)).items()}
    params = {name.replace(f".{_ADAPTER}.", "."): p for name, p in model.named_parameters() if ".lora_" in name}
    missing = sorted(set(params) - set(saved))
    unexpected = sorted(set(saved) - set(params))
    if missing or unexpected:
        raise ValueError(f"{path}: adapter does not fit this model: missing {_first(missing)}, "
                         f"unexpected {_first(unexpected)}")
    with torch.no_grad():
        for name, p in params.items():
            if tuple(saved[name].shape) != tuple(p.shape):
                raise ValueError(f"{path}: tensor {name!r} has shape {tuple(saved[name].shape)}, the model expects "
                                 f"{tuple(p.shape)}")
            p.copy_(saved[name])


def _first(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" (and {len(names) - n} more)" if len(names) > n else "") if names else "none"


def load_adapter(model: nn.Module, directory: str | os.PathLike, merge: bool = True) -> nn.Module:
    """Apply the adapter saved in `directory` to `model` (a plain `LLaDA2MoeModelLM`). merge: fold it into the base
    weights (a plain model again: the fast, batch-invariant decoding path); otherwise keep the wrappers."""
    apply_lora(model, peft_config=read_adapter_config(directory))
    load_adapter_weights(model, directory)
    return merge_lora(model) if merge else model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W += alpha / r * B @ A) and put the base linear back. In place."""
    from peft.tuners.lora import LoraLayer

    wrapped = [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]
    if not wrapped:
        raise ValueError("merge_lora: the model has no LoRA adapters")
    for name, m in wrapped:
        m.merge(safe_merge=True, adapter_names=[_ADAPTER])
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, m.get_base_layer())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def merge_adapter_checkpoint(base: str | os.PathLike, adapter: str | os.PathLike, out: str | os.PathLike,
                             dtype: torch.dtype | str | None = None) -> Path:
    """`redraft merge`: base checkpoint + adapter -> a full checkpoint in `out` (merged in float32, saved in `dtype`,
    default the base's `torch_dtype`), with the base's tokenizer."""
    from .config import LLaDA2MoeConfig
    from .loading import load_model, resolve_checkpoint, save_model
    from .tokenizer import Tokenizer

    root = resolve_checkpoint(base)
    peft_config = read_adapter_config(adapter)  # fail before the base is loaded
    target = LLaDA2MoeConfig.from_file(root / "config.json").torch_dtype if dtype is None else dtype
    model = load_model(root, dtype=torch.float32)
    if isinstance(target, str):
        target = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(target) or getattr(
            torch, target, None)
    if target not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"merge: dtype must be float32, bfloat16 or float16, got {dtype!r}")
    apply_lora(model, peft_config=peft_config)
    load_adapter_weights(model, adapter)
    merge_lora(model)
    tokenizer = Tokenizer.from_dir(root) if (root / "tokenizer.json").exists() else None
    return save_model(model.to(target), out, tokenizer=tokenizer)


def load_merged(base: str | os.PathLike, adapter: str | os.PathLike | None = None,
                dtype: torch.dtype | str | None = None, device: torch.device | str = "cpu",
                quantization: str | None = None) -> nn.Module:
    """`load_model(base)` with `adapter` (a LoRA directory) merged in: loaded and merged in float32 on CPU, then cast
    to `dtype` (default the base's `torch_dtype`), moved to `device` and, with `quantization` ("fp8", "fp8-all"),
    quantized to per-block FP8 (`--adapter` / `--quantization` of generate, chat, serve)."""
    from .config import LLaDA2MoeConfig
    from .loading import load_model, resolve_checkpoint

    if adapter is None:
        return load_model(base, dtype=dtype, device=device, quantization=quantization)
    root = resolve_checkpoint(base)
    peft_config = read_adapter_config(adapter)
    target = dtype or LLaDA2MoeConfig.from_file(root / "config.json").torch_dtype
    model = load_model(root, dtype=torch.float32)
    apply_lora(model, peft_config=peft_config)
    load_adapter_weights(model, adapter)
    merge_lora(model)
    if isinstance(target, str):
        target = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(target, target)
        target = getattr(torch, target, None)
    if target not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
    model = model.to(dtype=target, device=device).eval()
    model.config.torch_dtype = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[target]
    if quantization is not None:
        from .fp8 import quantize_model

        model = quantize_model(model, quantization)
    return model
