"""`redraft lm-eval ARGS...`: register the `redraft` model class and run lm-evaluation-harness's own CLI with ARGS
(every lm-eval flag works; `--model redraft` is added when no --model is given, `run` when no subcommand is)."""

from __future__ import annotations

import argparse
import sys

_SUBCOMMANDS = ("run", "ls", "validate")


def lm_eval_argv(rest: list[str]) -> list[str]:
    """lm-eval's argv for `redraft lm-eval REST`."""
    argv = list(rest)
    if not argv or argv[0] not in _SUBCOMMANDS:
        argv.insert(0, "run")
    if argv[0] == "run" and not any(a == "--model" or a.startswith("--model=") for a in argv) and \
            not any(a in ("-h", "--help") for a in argv):
        argv[1:1] = ["--model", "redraft"]
    return ["lm-eval", *argv]


def run_lm_eval(args: argparse.Namespace) -> int:
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        raise ValueError("redraft lm-eval needs the lm-eval package: pip install 'redraft[lmeval]'") from None
    import redraft.evaluation.lmeval  # noqa: F401  (registers the `redraft` model)

    saved, sys.argv = sys.argv, lm_eval_argv(args.rest)
    try:
        cli_evaluate()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "lm-eval", add_help=False, prefix_chars="\x00",  # every argument, flags included, goes to lm-eval
        help="run EleutherAI lm-evaluation-harness on a redraft model (all lm-eval flags; --help for them)",
        description="redraft lm-eval --model_args pretrained=PATH,mode=speedy --tasks TASKS [lm-eval flags]")
    p.add_argument("rest", nargs="*", metavar="LM_EVAL_ARGS")
    p.set_defaults(func=run_lm_eval)
