"""`redraft train CONFIG.yaml|toml [--resume] [--set key=value ...] [--prepare-only]`."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a block-diffusion model (M2T + T2T + MTF) from a config file",
                              description="Train with the Mixture M2T + T2T objective and Multi-Turn Forward. "
                                          "Run under torchrun for FSDP2 across processes.")
    p.add_argument("config", help="training config (.yaml, .yml or .toml)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set noise.t2t_ratio=0 (repeatable)")
    p.add_argument("--prepare-only", action="store_true",
                   help="tokenise and pack the data into OUTPUT_DIR/data (or DIR given by --set data.prepared) "
                        "and stop")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .prepare import prepare_data
    from .trainer import Trainer

    cfg = load_config(args.config, args.overrides)
    if args.prepare_only:
        from pathlib import Path

        folder = Path(cfg.data.prepared or Path(cfg.output_dir) / "data")
        data = prepare_data(cfg.data, folder)
        keys = ("train_rows", "eval_rows", "train_tokens_eligible", "eval_tokens_eligible", "train_fill", "vocab_size")
        print(json.dumps({"prepared": str(folder), **{k: data.recipe[k] for k in keys}}, indent=1))
        return 0
    summary = Trainer(cfg, resume=args.resume).run()
    print(json.dumps(summary, indent=1, default=str))
    return 0
