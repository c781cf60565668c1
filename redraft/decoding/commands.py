"""CLI verbs: `redraft generate`, `redraft chat`, `redraft conformance` (argument parsing only; logic is the API)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import PRESETS, DecodeConfig, preset

# CLI flag -> DecodeConfig field
_OVERRIDES = {"tau_mask": float, "tau_edit": float, "max_post_steps": int, "block_length": int,
              "num_to_transfer": int, "max_new_tokens": int, "temperature": float, "top_k": int, "top_p": float,
              "seed": int, "mbe_blocks": int, "stutter_ngram": int}
_SWITCHES = {"no_editing": ("editing", False), "no_eos_early_stop": ("eos_early_stop", False),
             "forbid_mask_token": ("forbid_mask_token", True), "oscillation_guard": ("oscillation_guard", True)}


def default_model_dir() -> Path:
    import redraft

    return Path(redraft.__file__).parent / "assets" / "tiny"


def resolve_model_dir(path: str | None) -> str:
    if path is not None:
        return path
    default = default_model_dir()
    if not (default / "config.json").exists():
        raise FileNotFoundError(f"no bundled model at {default} (not trained yet); pass a checkpoint path, e.g. "
                                "`redraft generate path/to/checkpoint \"prompt\"`")
    return str(default)


def config_from_args(args: argparse.Namespace, **extra) -> DecodeConfig:
    changes = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    changes.update({field: value for flag, (field, value) in _SWITCHES.items() if getattr(args, flag)})
    if args.stop:
        changes["stop"] = tuple(args.stop)
    return preset(args.mode, **changes, **extra)


def load(path: str | None, adapter: str | None = None):
    """The model (with a LoRA `adapter` merged in, when given) and its tokenizer."""
    from redraft.model.lora import load_merged
    from redraft.model.tokenizer import load_tokenizer

    root = resolve_model_dir(path)
    return load_merged(root, adapter), load_tokenizer(root)


def print_stats(result, file=sys.stderr) -> None:
    s = result.stats
    print(f"[{result.finish_reason}] tokens {s.tokens} | forwards {s.forwards} | TPF {s.tpf:.2f} | "
          f"M2T {s.m2t_fills} | T2T {s.t2t_edits} | MBE {s.mbe_edits} | {s.wall_time:.2f}s | "
          f"{s.tokens_per_s:.1f} tok/s", file=file)


def run_generate(args: argparse.Namespace) -> int:
    from .engine import Engine

    if len(args.inputs) > 2:
        raise ValueError(f"generate takes [MODEL] PROMPT, got {len(args.inputs)} arguments")
    model_path, prompt = (None, args.inputs[0]) if len(args.inputs) == 1 else args.inputs
    model, tok = load(model_path, args.adapter)
    config = config_from_args(args, trajectory=bool(args.show or args.trace))
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}]) if args.chat else tok.encode(prompt)
    engine = Engine(model, tok, max_batch_size=1)
    if args.show:
        from .view import live_decode

        result = live_decode(engine, ids, config, tok)
    else:
        engine.add_request(ids, config)
        result = stream_to_stdout(engine)
    if args.trace:
        from .trace import write_trace

        write_trace(args.trace, result.trajectory, tok, title=prompt)
        print(f"trace written to {args.trace}", file=sys.stderr)
    print_stats(result)
    return 0


def stream_to_stdout(engine):
    """Run the engine until idle, printing each finalised text delta; return the last finished result."""
    result = None
    while engine.has_work():
        for e in engine.step():
            print(e.text, end="", flush=True)
            result = e.result or result
    print()
    return result


def run_chat(args: argparse.Namespace) -> int:
    from .engine import Engine

    model, tok = load(args.model, args.adapter)
    config = config_from_args(args)
    engine = Engine(model, tok, max_batch_size=1)
    messages = []
    print("redraft chat: empty line or /exit to quit", file=sys.stderr)
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            return 0
        if not text or text == "/exit":
            return 0
        messages.append({"role": "user", "content": text})
        engine.add_request(tok.apply_chat_template(messages), config)
        print("model> ", end="", flush=True)
        result = stream_to_stdout(engine)
        if args.stats:
            print_stats(result)
        messages.append({"role": "assistant", "content": result.text})


def run_conformance(args: argparse.Namespace) -> int:
    from .conformance import run_conformance as run

    _, failed = run(args.directory)
    return 1 if failed else 0


def _add_decoding_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=sorted(PRESETS), default="quality", help="preset: quality (Q Mode) or speedy")
    for name, kind in _OVERRIDES.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=f"override DecodeConfig.{name}")
    for flag, (field, value) in _SWITCHES.items():
        p.add_argument("--" + flag.replace("_", "-"), action="store_true", help=f"set DecodeConfig.{field}={value}")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--adapter", metavar="DIR", default=None,
                   help="LoRA adapter (PEFT layout) to merge into the model before decoding")


def register(sub) -> None:
    p = sub.add_parser("generate", help="decode one prompt with Draft-and-Edit (prints text and stats)")
    p.add_argument("inputs", nargs="+", metavar="[MODEL] PROMPT",
                   help="checkpoint directory (default: the bundled model) and the prompt")
    _add_decoding_flags(p)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    p.add_argument("--show", action="store_true", help="render decoding live (masks, fills, edits)")
    p.add_argument("--trace", metavar="FILE.html", help="write a self-contained HTML replay with a step slider")
    p.set_defaults(func=run_generate)

    p = sub.add_parser("chat", help="multi-turn chat with the chat template")
    p.add_argument("model", nargs="?", default=None, help="checkpoint directory (default: the bundled model)")
    _add_decoding_flags(p)
    p.add_argument("--stats", action="store_true", help="print stats after each reply")
    p.set_defaults(func=run_chat)

    p = sub.add_parser("conformance", help="check decoding against parity vectors (../shared/parity format)")
    p.add_argument("directory", help="directory with cases.json, expected.safetensors and model/")
    p.set_defaults(func=run_conformance)
