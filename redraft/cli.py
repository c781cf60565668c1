"""`redraft` command line: each area registers its verbs; this file only dispatches."""

from __future__ import annotations

import argparse
import importlib
import sys

# verb modules, each with `register(subparsers)`; a module that is not importable leaves its verbs out
COMMAND_MODULES = (
    "redraft.decoding.commands",      # generate, chat, conformance
    "redraft.serving.commands",       # serve
    "redraft.training.commands",      # train
    "redraft.rl.commands",            # rl
    "redraft.evaluation.commands",    # eval, bench
    "redraft.evaluation.lmeval_command",  # lm-eval (lm-evaluation-harness)
    "redraft.model.commands",         # inspect
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redraft", description="Editable block-diffusion language models (LLaDA2.1).")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"redraft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    missing: dict[str, str] = {}
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (e.name == name or name.startswith(e.name + ".")):
                continue  # that area is not part of this install
            if e.name and not e.name.startswith("redraft"):
                missing[name.split(".")[1]] = e.name  # a third-party dependency is missing: leave the verbs out
                continue
            raise
        module.register(sub)
    if missing:
        parser.epilog = "unavailable here (missing dependency): " + ", ".join(
            f"{area} (needs {dep})" for area, dep in sorted(missing.items()))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError) as e:
        print(f"redraft {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
