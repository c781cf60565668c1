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


def load(path: str | None, quantization: str | None = None, adapter: str | None = None):
    """The model (with a LoRA `adapter` merged in and FP8 `quantization`, when given) and its tokenizer."""
    from redraft.model.lora import load_merged
    from redraft.model.tokenizer import load_tokenizer

    root = resolve_model_dir(path)
    return load_merged(root, adapter, quantization=quantization), load_tokenizer(root)


def print_stats(result, file=None) -> None:
    s = result.stats
    file = file if file is not None else sys.stderr  # looked up now (tests and callers may swap sys.stderr)
    print(f"[{result.finish_reason}] tokens {s.tokens} | forwards {s.forwards} | TPF {s.tpf:.2f} | "
          f"M2T {s.m2t_fills} | T2T {s.t2t_edits} | MBE {s.mbe_edits} | {s.wall_time:.2f}s | "
          f"{s.tokens_per_s:.1f} tok/s", file=file)


def read_prompt(path: str) -> str:
    """A prompt from a UTF-8 file ("-": standard input); one final newline is dropped (like `$(cat FILE)`)."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except IsADirectoryError:
        raise ValueError(f"-f {path}: is a directory, not a prompt file") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"-f {path}: no such file") from None
    name = "standard input" if path == "-" else "the file"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"-f {path}: {name} is not valid UTF-8 (byte {data[e.start]:#04x} at offset {e.start})") \
            from None
    text = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    if not text:
        raise ValueError(f"-f {path}: the prompt in {name} is empty")
    return text


def prompt_from_args(inputs: list[str], file: str | None) -> tuple[str | None, str]:
    """(model directory or None for the bundled model, prompt) from `[MODEL] PROMPT` or `[MODEL] -f FILE`."""
    if file is not None:
        if len(inputs) > 1:
            raise ValueError(f"generate -f FILE takes at most a MODEL argument besides, got {inputs}")
        return (inputs[0] if inputs else None), read_prompt(file)
    if not inputs:
        raise ValueError("generate needs a PROMPT argument or -f FILE (- for standard input)")
    if len(inputs) > 2:
        raise ValueError(f"generate takes [MODEL] PROMPT, got {len(inputs)} arguments")
    return (None, inputs[0]) if len(inputs) == 1 else (inputs[0], inputs[1])


def run_generate(args: argparse.Namespace) -> int:
    from .engine import Engine

    model_path, prompt = prompt_from_args(args.inputs, args.file)
    parallel = parallel_from_args(args)
    if parallel is not None:
        if args.quantization or args.adapter:
            raise ValueError("--quantization and --adapter with --tp are not supported yet (merge the adapter with "
                             "`redraft merge`; run FP8 on one device)")
        return _run_generate_parallel(args, model_path, prompt, parallel)
    model, tok = load(model_path, args.quantization, args.adapter)
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

        write_trace(args.trace, result.trajectory, tok, title=prompt,
                    end=result.trajectory.prompt_len + len(result.token_ids))
        print(f"trace written to {args.trace}", file=sys.stderr)
    print_stats(result)
    return 0


def parallel_from_args(args: argparse.Namespace):
    """ParallelConfig from --tp/--ep (None: one process). --ep without a value: ep = tp (whole experts per rank)."""
    if args.tp == 1 and args.ep == 1:
        if args.device != "cpu" or args.oversubscribe:
            raise ValueError("--device and --oversubscribe go with --tp N (N > 1); a single process runs on cpu")
        return None
    from redraft.model.parallel import ParallelConfig

    return ParallelConfig(tp=args.tp, ep=args.tp if args.ep == 0 else args.ep)


def _run_generate_parallel(args: argparse.Namespace, model_path: str | None, prompt: str, parallel) -> int:
    from redraft.model.tokenizer import load_tokenizer

    from .parallel_run import stream_generate_parallel

    if args.show or args.trace:
        raise ValueError("--show and --trace are single-process views; drop them or use --tp 1")
    root = resolve_model_dir(model_path)
    tok = load_tokenizer(root)
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}]) if args.chat else tok.encode(prompt)
    stream_generate_parallel(root, ids, config_from_args(args), parallel, device=args.device,
                             oversubscribe=args.oversubscribe)
    return 0


def add_parallel_flags(p: argparse.ArgumentParser) -> None:
    """--tp / --ep / --device / --oversubscribe (see docs/parallel.md)."""
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel ranks (spawned worker processes)")
    p.add_argument("--ep", type=int, nargs="?", const=0, default=1, metavar="M",
                   help="expert-parallel groups among the tp ranks (--ep alone: one per rank, whole experts)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                   help="device of every rank with --tp (gloo on cpu, NCCL on cuda; rank r uses cuda:r)")
    p.add_argument("--oversubscribe", action="store_true", help="allow more CPU ranks than cores (slow)")


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

    model, tok = load(args.model, args.quantization, args.adapter)
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

    parallel = parallel_from_args(args)
    kinds = tuple(args.kind) if args.kind else None
    if parallel is None:
        _, failed = run(args.directory, kinds=kinds)
    else:
        from .parallel_run import run_conformance_parallel

        _, failed = run_conformance_parallel(args.directory, parallel, device=args.device,
                                             oversubscribe=args.oversubscribe, kinds=kinds)
    return 1 if failed else 0


def _preset_values(name: str) -> str:
    """What the presets set a field to: "0.7 (quality), 0.5 (speedy)", or one value when they agree."""
    values = {mode: getattr(cfg, name) for mode, cfg in sorted(PRESETS.items())}
    if len(set(map(repr, values.values()))) == 1:
        return str(next(iter(values.values())))
    return ", ".join(f"{v} ({mode})" for mode, v in values.items())


def _add_decoding_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=sorted(PRESETS), default="quality", help="preset: quality (Q Mode) or speedy")
    for name, kind in _OVERRIDES.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                       help=f"override DecodeConfig.{name} (default: {_preset_values(name)})")
    for flag, (field, value) in _SWITCHES.items():
        p.add_argument("--" + flag.replace("_", "-"), action="store_true", help=f"set DecodeConfig.{field}={value}")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    from redraft.model.fp8.commands import add_quantization_argument

    add_quantization_argument(p)
    p.add_argument("--adapter", metavar="DIR", default=None,
                   help="LoRA adapter (PEFT layout) to merge into the model before decoding")


def register(sub) -> None:
    p = sub.add_parser("generate", help="decode one prompt with Draft-and-Edit (prints text and stats)")
    p.add_argument("inputs", nargs="*", metavar="[MODEL] PROMPT",
                   help="checkpoint directory (default: the bundled model) and the prompt (none with -f)")
    p.add_argument("-f", "--file", metavar="FILE", default=None,
                   help="read the prompt from a UTF-8 file, - for standard input (one final newline is dropped)")
    _add_decoding_flags(p)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    p.add_argument("--show", action="store_true", help="render decoding live (masks, fills, edits)")
    p.add_argument("--trace", metavar="FILE.html", help="write a self-contained HTML replay with a step slider")
    add_parallel_flags(p)
    p.set_defaults(func=run_generate)

    p = sub.add_parser("chat", help="multi-turn chat with the chat template")
    p.add_argument("model", nargs="?", default=None, help="checkpoint directory (default: the bundled model)")
    _add_decoding_flags(p)
    p.add_argument("--stats", action="store_true", help="print stats after each reply")
    p.set_defaults(func=run_chat)

    p = sub.add_parser("conformance", help="check decoding against parity vectors (../shared/parity format)")
    p.add_argument("directory", help="directory with cases.json, expected.safetensors and model/")
    p.add_argument("--kind", action="append", choices=["forward", "generate"],
                   help="run only cases of this kind (repeatable; default: all)")
    add_parallel_flags(p)
    p.set_defaults(func=run_conformance)
