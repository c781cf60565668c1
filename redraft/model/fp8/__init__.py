"""Per-block FP8 weights (the Hugging Face / vLLM / SGLang block-FP8 layout): quantize, load, save, compute.

    from redraft import load_model, save_model
    model = load_model("path/to/bf16", quantization="fp8")   # experts in FP8, quantized while loading
    save_model(model, "path/to/fp8")                           # config.json quantization_config + scales
    model = load_model("path/to/fp8")                          # loads FP8 natively

See docs/quantization.md.
"""

from redraft._lazy import lazy_package

# public names, imported on first use (the CLI imports `fp8.commands` without torch)
lazy_package(__name__, {
    "FP8_MAX": ".blocks", "dequantize_block_fp8": ".blocks", "quantize_block_fp8": ".blocks", "scale_shape": ".blocks",
    "Fp8Config": ".config", "resolve_quantization": ".config", "Fp8ExpertBank": ".modules", "Fp8Linear": ".modules",
    "is_fp8": ".transform", "quantize_model": ".transform",
})
