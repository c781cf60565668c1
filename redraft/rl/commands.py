"""`redraft rl CONFIG.yaml|toml [--resume] [--set key=value ...]`: EBPO reinforcement learning."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("rl", help="reinforcement learning with EBPO (block-level ELBO policy optimisation)",
                              description="EBPO (LLaDA2.1 eq. 4-5): rollouts through the Draft-and-Edit decoder, "
                                          "task rewards, group-normalised advantages, clipped updates on the "
                                          "block-level ELBO ratio. Run under torchrun for several processes.")
    p.add_argument("config", help="RL config (.yaml, .yml or .toml), see configs/rl/")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set loss.clip_high=0.3 (repeatable)")
    p.set_defaults(func=run_rl)


def run_rl(args: argparse.Namespace) -> int:
    from .config import load_config
    from .recipe import EBPORecipe

    cfg = load_config(args.config, args.overrides)
    summary = EBPORecipe(cfg, resume=args.resume).run()
    print(json.dumps(summary, indent=1, default=str))
    return 0
