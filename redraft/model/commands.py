"""`redraft inspect PATH`: a checkpoint's architecture, parameter count, dtype and size (and its FP8 size);
`redraft inspect --shape mini|flash`: the same for a released model's shape, without a checkpoint.
`redraft merge BASE ADAPTER OUT`: fold a LoRA adapter into a full checkpoint (see `lora.py`).
`redraft convert SRC DST`: an AR causal LM (Ling, Qwen3, Llama) onto the LLaDA2-MoE layout (see `convert.py`)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import LLaDA2MoeConfig


def inspect_checkpoint(path: str) -> dict:
    """Summary of a checkpoint read from its config and safetensors headers (no weights are loaded)."""
    from .config import LLaDA2MoeConfig
    from .loading import _shards, read_safetensors_header, resolve_checkpoint

    root = resolve_checkpoint(path)
    cfg = LLaDA2MoeConfig.from_file(root / "config.json")
    n_params, nbytes, dtypes = 0, 0, set()
    for shard in _shards(root):
        header, _ = read_safetensors_header(shard)
        for entry in header.values():
            numel = 1
            for d in entry["shape"]:
                numel *= d
            n_params += numel
            nbytes += entry["data_offsets"][1] - entry["data_offsets"][0]
            dtypes.add(entry["dtype"])
    return {"path": str(root), "parameters": n_params, "bytes": nbytes, "dtypes": sorted(dtypes),
            **_summary(cfg)}


def inspect_shape(name: str) -> dict:
    """Summary of a released model's shape (`redraft.model.shapes`), with its bf16 size counted from the config."""
    from .fp8.sizes import weight_bytes
    from .shapes import shape_config

    cfg = shape_config(name)
    return {"shape": name, "parameters": cfg.num_parameters(), "bytes": weight_bytes(cfg), "dtypes": ["BF16"],
            **_summary(cfg)}


def _summary(cfg: LLaDA2MoeConfig) -> dict:
    from .fp8.sizes import weight_bytes

    moe_layers = sum(cfg.is_moe_layer(i) for i in range(cfg.num_hidden_layers))
    active = cfg.num_parameters() - moe_layers * (cfg.num_experts - cfg.num_experts_per_tok) * 3 * cfg.hidden_size * cfg.moe_intermediate_size
    return {
        "model_type": cfg.model_type, "active_parameters": active, "torch_dtype": cfg.torch_dtype,
        "fp8_experts_bytes": weight_bytes(cfg, "fp8", cfg.dtype), "fp8_all_bytes": weight_bytes(cfg, "fp8-all", cfg.dtype),
        "layers": cfg.num_hidden_layers, "dense_layers": cfg.num_hidden_layers - moe_layers, "moe_layers": moe_layers,
        "hidden_size": cfg.hidden_size, "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim, "rotary_dim": cfg.rotary_dim, "experts": cfg.num_experts,
        "experts_per_token": cfg.num_experts_per_tok, "expert_groups": f"{cfg.topk_group} of {cfg.n_group}",
        "shared_experts": cfg.num_shared_experts, "vocab_size": cfg.vocab_size,
    }


def _human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.1f}{suffix}{unit}" if suffix else f"{n:.0f}{unit}"
        n /= 1000
    return f"{n:.1f}P{unit}"


def run_inspect(args: argparse.Namespace) -> int:
    if (args.path is None) == (args.shape is None):
        raise ValueError("inspect takes a checkpoint PATH or --shape NAME (one of them)")
    if args.tp is not None or args.dtype is not None:
        from .parallel import ParallelConfig
        from .parallel_inspect import memory_report, print_memory_report

        tp = args.tp or 1
        print_memory_report(memory_report(args.path or args.shape, ParallelConfig(tp, tp if args.ep == 0 else args.ep),
                                          args.dtype), args.json)
        return 0
    info = inspect_checkpoint(args.path) if args.path else inspect_shape(args.shape)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"redraft inspect {info.get('path') or info['shape']}", show_header=False)
    for key, value in info.items():
        if key in ("parameters", "active_parameters"):
            value = f"{value:,} ({_human(value)})"
        elif key.endswith("bytes"):
            value = f"{value:,} ({_human(value, 'B')})"
        table.add_row(key, str(value))
    Console().print(table)
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from .lora import merge_adapter_checkpoint

    out = merge_adapter_checkpoint(args.base, args.adapter, args.out, dtype=args.dtype)
    print(json.dumps({"merged": str(out), "base": args.base, "adapter": args.adapter}))
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from .convert import convert_checkpoint

    out = convert_checkpoint(args.src, args.dst, allow_resize=not args.no_resize)
    cfg = json.loads((out / "config.json").read_text())
    print(json.dumps({"converted": str(out), "from": cfg.get("converted_from", cfg.get("model_type")),
                      "vocab_size": cfg["vocab_size"], "layers": cfg["num_hidden_layers"]}))
    return 0


def register(sub) -> None:
    p = sub.add_parser("inspect", help="print a checkpoint's architecture, parameter count, dtype and size")
    p.add_argument("path", nargs="?", default=None, help="checkpoint directory or hub id")
    p.add_argument("--shape", choices=["flash", "mini"], default=None,  # redraft.model.shapes (no torch import here)
                   help="a released model's shape instead of a checkpoint (sizes counted from its config)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--tp", type=int, default=None,
                   help="memory per rank under tensor parallelism over N ranks (from config.json; PATH may be one)")
    p.add_argument("--ep", type=int, nargs="?", const=0, default=1, metavar="M",
                   help="with --tp: expert-parallel groups (--ep alone: one per rank)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "fp8"], default=None,
                   help="weight dtype for the memory table (fp8: estimate; default: the config's torch_dtype)")
    p.set_defaults(func=run_inspect)

    p = sub.add_parser("merge", help="merge a LoRA adapter (PEFT layout) into its base: a full checkpoint",
                       description="Fold W += alpha/r * B @ A into the base weights (in float32) and write a full "
                                   "checkpoint with the base's tokenizer.")
    p.add_argument("base", help="base checkpoint directory or hub id")
    p.add_argument("adapter", help="adapter directory (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("out", help="output directory")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="saved dtype (default: the base's torch_dtype)")
    p.set_defaults(func=run_merge)

    p = sub.add_parser("convert", help="convert an AR causal LM (Ling, Qwen3, Llama) to the LLaDA2-MoE layout",
                       description="Map a Hugging Face causal LM folder (config.json, safetensors, tokenizer.json) "
                                   "onto LLaDA2-MoE names, add the <|mask|> token and write config, weights, "
                                   "tokenizer and chat template. Continue with a diffusion run "
                                   "(configs/convert-*.yaml).")
    p.add_argument("src", help="source checkpoint directory")
    p.add_argument("dst", help="output directory")
    p.add_argument("--no-resize", action="store_true",
                   help="fail instead of growing the embedding when it has no free row for <|mask|>")
    p.set_defaults(func=run_convert)

    from .fp8.commands import register as register_quantize

    register_quantize(sub)
