"""`Fp8Config` (what to quantize) and the reading of a checkpoint's FP8 description from its config.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCOPES = ("experts", "all")
QUANTIZATION_CHOICES = ("fp8", "fp8-all")  # the CLI's --quantization values


@dataclass(frozen=True)
class Fp8Config:
    """Per-block FP8 weights.

    weight_block_size: (rows, columns) of a block sharing one float32 scale; (128, 128) is the standard.
    scope: "experts" (the routed experts only, like the official LLaDA2.x FP8 release: they hold almost all the
        weight bytes) or "all" (every linear layer of the decoder: attention, dense MLPs, shared experts, experts).
        The router, norms and embeddings always stay in the model dtype.
    lm_head: quantize the LM head too (only with scope "all").
    modules_to_not_convert: module names left unquantized: an entry matches a module whose official name equals it,
        starts with it followed by ".", or contains it (the Hugging Face convention), e.g. "layers.0." or "attention".
    """

    weight_block_size: tuple[int, int] = (128, 128)
    scope: str = "experts"
    lm_head: bool = False
    modules_to_not_convert: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        block = tuple(self.weight_block_size) if isinstance(self.weight_block_size, (list, tuple)) else None
        if block is None or len(block) != 2 or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0
                                                        for b in block):
            raise ValueError(f"Fp8Config.weight_block_size must be two positive ints, got {self.weight_block_size!r}")
        object.__setattr__(self, "weight_block_size", block)
        if self.scope not in SCOPES:
            raise ValueError(f"Fp8Config.scope must be one of {SCOPES}, got {self.scope!r}")
        if self.lm_head and self.scope != "all":
            raise ValueError("Fp8Config.lm_head=True needs scope='all'")
        if isinstance(self.modules_to_not_convert, str) or not all(
                isinstance(m, str) for m in self.modules_to_not_convert):
            raise ValueError(f"Fp8Config.modules_to_not_convert must be a list of module names, "
                             f"got {self.modules_to_not_convert!r}")
        object.__setattr__(self, "modules_to_not_convert", tuple(self.modules_to_not_convert))

    def excludes(self, name: str) -> bool:
        return any(name == m or name.startswith(m + ".") or m in name for m in self.modules_to_not_convert)


def resolve_quantization(quantization: str | Fp8Config | None) -> Fp8Config | None:
    """`load_model`'s `quantization` argument: None / "none", "fp8" (experts), "fp8-all" (all linears) or a config."""
    if quantization is None or isinstance(quantization, Fp8Config):
        return quantization
    if quantization == "none":
        return None
    if quantization == "fp8":
        return Fp8Config()
    if quantization == "fp8-all":
        return Fp8Config(scope="all")
    raise ValueError(f"quantization must be one of None, 'none', {', '.join(map(repr, QUANTIZATION_CHOICES))} or an "
                     f"Fp8Config, got {quantization!r}")


def checkpoint_block_size(cfg: dict[str, Any]) -> tuple[int, int] | None:
    """The FP8 block size a checkpoint's config.json declares, or None when it declares no quantization.

    Read, in this order: `quantization_config` (the Hugging Face / vLLM / SGLang block-FP8 layout: quant_method
    "fp8", weight_block_size, activation_scheme "dynamic"), `llada_fp8_experts` ({"enabled": true, ...}) and the
    `use_fp8_experts` flag of the official LLaDA2.0-Uni-FP8 checkpoint (experts in FP8 with 128 x 128 blocks).
    Which modules are FP8 is read from the tensors themselves (a float8 weight with its `weight_scale_inv`).
    Raises ValueError naming the field for anything else (another quant_method, static activation scales, e5m2...).
    """
    qc = cfg.get("quantization_config")
    if qc is not None:
        if not isinstance(qc, dict):
            raise ValueError(f"config.json: quantization_config must be an object, got {qc!r}")
        method = qc.get("quant_method")
        if method != "fp8":
            raise ValueError(f"config.json: quantization_config.quant_method {method!r} is not supported "
                             "(only 'fp8', per-block)")
        if qc.get("activation_scheme", "dynamic") != "dynamic":
            raise ValueError(f"config.json: quantization_config.activation_scheme {qc['activation_scheme']!r} is not "
                             "supported (only 'dynamic')")
        fmt = qc.get("fmt", "e4m3")
        if fmt not in ("e4m3", "e4m3fn", "float8_e4m3fn"):
            raise ValueError(f"config.json: quantization_config.fmt {fmt!r} is not supported (only 'e4m3')")
        block = qc.get("weight_block_size")
        if block is None:
            raise ValueError("config.json: quantization_config.weight_block_size is missing (per-tensor FP8 is not "
                             "supported; per-block needs e.g. [128, 128])")
        return _block(block, "quantization_config.weight_block_size")
    llada = cfg.get("llada_fp8_experts")
    if isinstance(llada, dict) and llada.get("enabled", False):
        return _block(llada.get("weight_block_size", [128, 128]), "llada_fp8_experts.weight_block_size")
    if cfg.get("use_fp8_experts", False):
        return (128, 128)
    return None


def _block(value: Any, name: str) -> tuple[int, int]:
    try:
        return Fp8Config(weight_block_size=tuple(value) if isinstance(value, list) else value).weight_block_size
    except ValueError:
        raise ValueError(f"config.json: {name} must be two positive ints, got {value!r}") from None


def hf_quantization_config(block: tuple[int, int], not_converted: list[str]) -> dict[str, Any]:
    """The `quantization_config` written to config.json (read by Hugging Face, vLLM and SGLang)."""
    return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": list(block),
            "modules_to_not_convert": list(not_converted), "ignored_layers": list(not_converted)}
