"""`redraft quantize SRC DST`, and the `--quantization` option the loading verbs share."""

from __future__ import annotations

import argparse
import sys

from .config import QUANTIZATION_CHOICES, SCOPES, Fp8Config


def add_quantization_argument(p: argparse.ArgumentParser) -> None:
    """`--quantization {fp8,fp8-all}` for verbs that load a model (passed to `load_model(quantization=...)`)."""
    p.add_argument("--quantization", choices=QUANTIZATION_CHOICES, default=None,
                   help="per-block FP8 weights, quantized while loading: fp8 = routed experts (like the official FP8 "
                        "release), fp8-all = every linear layer but the LM head (FP8 checkpoints load as FP8 anyway)")


def _block(text: str) -> tuple[int, int]:
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"--block must be ROWS,COLS (e.g. 128,128), got {text!r}")
    return parts


def run_quantize(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..loading import load_model, resolve_checkpoint, save_model

    config = Fp8Config(weight_block_size=args.block, scope=args.scope, lm_head=args.lm_head,
                       modules_to_not_convert=tuple(args.exclude))
    src = resolve_checkpoint(args.src)
    dst = Path(args.dst)
    if dst.resolve() == src.resolve():
        raise ValueError(f"DST must differ from SRC ({src}): quantizing in place would lose the original weights")
    model = load_model(src, quantization=config)
    tokenizer = None
    if (src / "tokenizer.json").exists():
        from ..tokenizer import load_tokenizer

        tokenizer = load_tokenizer(src)
    max_shard = int(args.max_shard_gb * 1e9) if args.max_shard_gb else None
    save_model(model, dst, max_shard_bytes=max_shard, tokenizer=tokenizer)
    size = sum(f.stat().st_size for f in dst.glob("*.safetensors"))
    before = sum(f.stat().st_size for f in src.glob("*.safetensors"))
    print(f"wrote {dst}: FP8 ({config.scope}, blocks {config.weight_block_size[0]}x{config.weight_block_size[1]}), "
          f"{size / 1e6:,.1f} MB of weights (was {before / 1e6:,.1f} MB)", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("quantize", help="write a per-block FP8 copy of a checkpoint (HF / vLLM / SGLang layout)",
                       description="Quantize a checkpoint's weights to float8_e4m3fn with one float32 scale per "
                                   "block (weight_scale_inv), tensor by tensor, and write it with its "
                                   "quantization_config.")
    p.add_argument("src", help="checkpoint directory or hub id")
    p.add_argument("dst", help="output directory")
    p.add_argument("--scope", choices=SCOPES, default="experts",
                   help="experts (default; like the official FP8 release) or all linear layers")
    p.add_argument("--lm-head", action="store_true", help="quantize the LM head too (with --scope all)")
    p.add_argument("--exclude", action="append", default=[], metavar="NAME",
                   help="module name (or part of one) to keep unquantized, repeatable (modules_to_not_convert)")
    p.add_argument("--block", type=_block, default=(128, 128), help="block ROWS,COLS (default 128,128)")
    p.add_argument("--max-shard-gb", type=float, default=None, help="split the weights into shards of this size")
    p.set_defaults(func=run_quantize)
