"""Per-block FP8 weights (the Hugging Face / vLLM / SGLang block-FP8 layout): quantize, load, save, compute.

    from redraft import load_model, save_model
    model = load_model("path/to/bf16", quantization="fp8")   # experts in FP8, quantized while loading
    save_model(model, "path/to/fp8")                           # config.json quantization_config + scales
    model = load_model("path/to/fp8")                          # loads FP8 natively

See docs/quantization.md.
"""

from .blocks import FP8_MAX, dequantize_block_fp8, quantize_block_fp8, scale_shape
from .config import Fp8Config, resolve_quantization
from .modules import Fp8ExpertBank, Fp8Linear
from .transform import is_fp8, quantize_model

__all__ = ["FP8_MAX", "Fp8Config", "Fp8ExpertBank", "Fp8Linear", "dequantize_block_fp8", "is_fp8",
           "quantize_block_fp8", "quantize_model", "resolve_quantization", "scale_shape"]
