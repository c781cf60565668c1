"""`redraft serve [MODEL]`: run the OpenAI-compatible server with uvicorn."""

from __future__ import annotations

import argparse
from pathlib import Path

import redraft

DEFAULT_MODEL = Path(redraft.__file__).parent / "assets" / "tiny"


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="OpenAI-compatible HTTP server (continuous batching, streaming)",
                              description="Serve a model over the OpenAI API: /v1/completions, /v1/chat/completions, "
                                          "/v1/models, /health, /metrics.")
    p.add_argument("model", nargs="?", default=str(DEFAULT_MODEL),
                   help=f"checkpoint directory (default: the bundled model, {DEFAULT_MODEL})")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--model-name", default=None, help="id clients pass as `model` (default: the directory name)")
    p.add_argument("--max-batch-size", type=int, default=32, help="rows decoded together")
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting beyond the batch; more get 429")
    p.add_argument("--max-model-len", type=int, default=None, help="prompt + max_tokens limit")
    p.add_argument("--default-max-tokens", type=int, default=256, help="max_tokens when a request gives none")
    p.add_argument("--mode", choices=["quality", "speedy"], default="quality", help="preset when a request has none")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413")
    p.add_argument("--shutdown-timeout", type=float, default=10.0,
                   help="seconds in-flight requests may finish at shutdown before they are cancelled")
    p.add_argument("--prefix-cache-slots", type=int, default=32,
                   help="prompt prefixes (system prompts, few-shot) whose K/V are kept for reuse; 0 = off")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="parameter dtype (default: the checkpoint's)")
    from redraft.model.fp8.commands import add_quantization_argument

    add_quantization_argument(p)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 suits small models on busy machines)")
    p.add_argument("--batch-invariant", choices=["auto", "on", "off"], default="auto",
                   help="a request's tokens never depend on the rest of the batch, bit for bit (auto: on CPU)")
    p.add_argument("--row-tile", type=int, default=None, metavar="N",
                   help="CPU: rows per GEMM tile of the batch-invariant forward (default 32; 64 decodes batches of 2+ "
                        "~1.15x faster and a lone request a little slower)")
    p.add_argument("--adapter", metavar="DIR", default=None,
                   help="LoRA adapter (PEFT layout) merged into the model at load")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn log level")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel ranks (spawned workers; see docs/parallel.md)")
    p.add_argument("--ep", type=int, nargs="?", const=0, default=1, metavar="M",
                   help="expert-parallel groups among the tp ranks (--ep alone: one per rank)")
    p.add_argument("--oversubscribe", action="store_true", help="allow more CPU ranks than cores (slow)")
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    from .app import create_app
    from .server import run_server
    from .settings import ServerSettings

    model = Path(args.model)
    if not model.is_dir():
        hint = " (the bundled model is not built yet; pass a checkpoint directory)" if model == DEFAULT_MODEL else ""
        raise FileNotFoundError(f"model directory not found: {model}{hint}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    settings = ServerSettings(model_name=args.model_name, max_batch_size=args.max_batch_size,
                              max_queue=args.max_queue, max_model_len=args.max_model_len,
                              default_max_tokens=args.default_max_tokens, default_mode=args.mode,
                              max_body_bytes=args.max_body_bytes, shutdown_timeout=args.shutdown_timeout,
                              prefix_cache_slots=args.prefix_cache_slots, device=args.device, dtype=args.dtype,
                              quantization=args.quantization,
                              batch_invariant={"auto": None, "on": True, "off": False}[args.batch_invariant],
                              row_tile=args.row_tile, adapter=args.adapter)
    if args.tp != 1 or args.ep != 1:
        if args.quantization or args.adapter:
            raise ValueError("--quantization and --adapter with --tp are not supported yet (merge the adapter with "
                             "`redraft merge`; run FP8 on one device)")
        from redraft.model.parallel import ParallelConfig

        from .parallel_serve import serve_parallel

        parallel = ParallelConfig(args.tp, args.tp if args.ep == 0 else args.ep)
        serve_parallel(str(model), parallel, settings, host=args.host, port=args.port, log_level=args.log_level,
                       threads=args.threads, oversubscribe=args.oversubscribe)
        return 0
    app = create_app(model, settings)
    run_server(app, host=args.host, port=args.port, log_level=args.log_level, shutdown_timeout=args.shutdown_timeout)
    return 0
