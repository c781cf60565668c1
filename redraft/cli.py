"""`redraft` command line: each area registers its verbs; this file only dispatches.

Building the parser imports only the areas' `commands` modules, which import torch and the rest inside the verb
functions, so `redraft --help` and `redraft VERB --help` answer at once. Ctrl-C at any point exits 130 with one line.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import signal
import sys
import threading

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


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default (`(default: 8000)`) unless it is None/False/empty or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help = action.help or ""
        default = action.default
        if (default is argparse.SUPPRESS or default is None or default is False or default == [] or "default" in
                help.lower() or not (action.option_strings or action.nargs in ("?", "*"))):
            return action.help
        return f"{help} (default: %(default)s)".lstrip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redraft", description="Editable block-diffusion language models (LLaDA2.1).",
                                     formatter_class=HelpFormatter)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"redraft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=functools.partial(argparse.ArgumentParser, formatter_class=HelpFormatter))
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


def undecodable_argument(argv: list[str]) -> str | None:
    """The first argument that is not valid UTF-8 (Python hands undecodable bytes over as lone surrogates), shown
    as the bytes it was; None when every argument is valid."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return repr(arg.encode("utf-8", "surrogateescape"))
    return None


def _import_deferring_interrupts(*modules: str) -> None:
    """Import `modules` with Ctrl-C held back until they are in: a KeyboardInterrupt in the middle of importing
    torch (or numpy under it) leaves them half-initialised (seen: a hang, a RecursionError, an abort), so the
    interrupt is raised after the import instead."""
    if threading.current_thread() is not threading.main_thread():
        for name in modules:
            importlib.import_module(name)
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:
        print("redraft: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    bad = undecodable_argument(argv)
    if bad is not None:
        print(f"redraft: error: an argument is not valid UTF-8: {bad} (pass text as UTF-8, e.g. with a UTF-8 "
              "locale, or put the prompt in a UTF-8 file and use -f FILE)", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    _import_deferring_interrupts("torch")  # every verb needs it; an interrupted torch import hangs or aborts
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:  # UnicodeDecodeError (a file that is not UTF-8) is a ValueError
        print(f"redraft {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
