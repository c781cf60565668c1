"""Tensor-parallel decode step: measured step time at tp 1 / 2 (/ 4) on CPU (gloo), and the communication per step
computed from the shapes for LLaDA2.1-mini and -flash at tp 2 / 4 / 8.

Measured part: every rank builds the same random model (a CPU-sized MoE shape), cuts it with `apply_parallel`, and
times decode steps the way the runner runs them: one cached forward over a B x 32 window with the logits kept
vocab-sharded, then the (max, argmax, sum exp) top reduce. tp=1 is the plain single-process model. Each run gets
the machine's cores split over its ranks, so the ratios say what splitting one machine's CPUs costs or gains; on a
2-core machine tp 2 runs one thread per rank. Report ratios from one run, side by side.

Computed part (no hardware needed): per decode step of B rows x W window tokens (all W positions need logits),
    all-reduces: 1 (embedding) + 2 per layer (attention, MLP/MoE), each B*W*hidden activations (bf16 by default);
    top reduce: one all-gather of 3 float32 per position per rank;
against gathering full float32 logits (B*W*vocab*4 bytes) that a plain vocab-parallel head would need. "ring bytes
per rank" is what each GPU sends in a ring all-reduce, 2 (tp-1)/tp x payload.

    python benchmarks/parallel_step.py [--quick] [--steps 20] [--rows 1 4] [--tp 1 2] [--threads N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

MODELS = {  # configs/models/*.json (flash: shape assumed, see docs/parallel.md)
    "llada2.1-mini": dict(hidden_size=2048, num_hidden_layers=20, vocab_size=157184),
    "llada2.1-flash": dict(hidden_size=4096, num_hidden_layers=32, vocab_size=157184),
}
CPU_SHAPE = dict(vocab_size=32768, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                 num_attention_heads=16, num_key_value_heads=4, head_dim=64, num_experts=32, num_experts_per_tok=4,
                 n_group=4, topk_group=2, moe_intermediate_size=512, num_shared_experts=1, torch_dtype="float32")
QUICK_SHAPE = {**CPU_SHAPE, "vocab_size": 8192, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 8, "moe_intermediate_size": 128}
WINDOW = 32


def communication(model: str, tp: int, rows: int, window: int = WINDOW, act_bytes: int = 2) -> dict:
    shape = MODELS[model]
    payload = rows * window * shape["hidden_size"] * act_bytes
    count = 1 + 2 * shape["num_hidden_layers"]
    top = 3 * 4 * rows * window * tp  # every rank receives tp x 3 float32 per position
    full_logits = rows * window * shape["vocab_size"] * 4
    return {"model": model, "tp": tp, "rows": rows, "all_reduce_bytes": payload, "all_reduces": count,
            "all_reduce_total": payload * count, "ring_bytes_per_rank": 2 * (tp - 1) / tp * payload * count,
            "top_reduce_bytes": top, "gathered_logits_bytes": full_logits}


def _step_rank(rank, shape: dict, rows_list: list[int], steps: int, threads: int | None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from redraft.model import BlockLayout, KVCache, LLaDA2MoeConfig
    from redraft.model.parallel import ParallelConfig, apply_parallel
    from redraft.model.testing import random_model

    tp = rank.world_size
    cfg = LLaDA2MoeConfig(**shape)
    model = random_model(cfg, seed=0, head_std=1.0)
    if tp > 1:
        apply_parallel(model, ParallelConfig(tp), rank.group)
    from redraft.decoding.policy import greedy_top

    out = {}
    gen = torch.Generator().manual_seed(1)
    for rows in rows_list:
        cache = KVCache.for_model(model, rows)
        times = []
        with torch.inference_mode():
            prompt = torch.randint(0, cfg.vocab_size, (rows, 2 * WINDOW), generator=gen)
            o = model(prompt, None, BlockLayout(WINDOW), cache=cache)
            cache.commit(o.new_kv, [2 * WINDOW] * rows)
            ids = torch.randint(0, cfg.vocab_size, (rows, WINDOW), generator=gen)
            for i in range(steps + 3):
                if tp > 1:
                    torch.distributed.barrier()
                t0 = time.perf_counter()
                if tp > 1:
                    with model.parallel.sharded_logits():
                        logits = model(ids, None, BlockLayout(WINDOW), cache=cache).logits
                    model.parallel.reduce_top(logits)
                else:
                    greedy_top(model(ids, None, BlockLayout(WINDOW), cache=cache).logits)
                if i >= 3:  # warm-up left out
                    times.append(time.perf_counter() - t0)
        out[rows] = statistics.median(times)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny shape and 5 steps")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--tp", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=None,
                    help="threads per rank (default: the cores split over the ranks)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    from redraft.model.parallel import ParallelConfig
    from redraft.model.parallel_launch import launch

    shape = QUICK_SHAPE if args.quick else CPU_SHAPE
    steps = 5 if args.quick else args.steps
    measured = {}
    for tp in args.tp:
        measured[tp] = launch(_step_rank, ParallelConfig(tp), (shape, args.rows, steps, args.threads),
                             oversubscribe=True)
    console = Console(width=160)
    table = Table(title=f"decode step, CPU gloo (hidden {shape['hidden_size']}, {shape['num_hidden_layers']} layers, "
                        f"{shape['num_experts']} experts, window {WINDOW}); median of {steps} steps; threads per rank: "
                        f"{args.threads or 'cores / tp'}")
    for col in ("rows", *[f"tp {tp} (ms)" for tp in args.tp], *[f"tp {tp} / tp {args.tp[0]}" for tp in args.tp[1:]]):
        table.add_column(col, justify="right")
    for rows in args.rows:
        base = measured[args.tp[0]][rows]
        table.add_row(str(rows), *[f"{measured[tp][rows] * 1e3:.1f}" for tp in args.tp],
                      *[f"{measured[tp][rows] / base:.2f}x" for tp in args.tp[1:]])
    console.print(table)

    comm = [communication(m, tp, rows) for m in MODELS for tp in (2, 4, 8) for rows in (1, 8)]
    table = Table(title=f"communication per decode step (window {WINDOW}, bf16 activations), from the shapes")
    for col in ("model", "tp", "rows", "all-reduce (KiB) x count", "all-reduce total (MiB)", "ring MiB/rank",
                "top reduce (KiB)", "gathered fp32 logits instead (MiB)"):
        table.add_column(col, justify="right")
    for c in comm:
        table.add_row(c["model"], str(c["tp"]), str(c["rows"]), f"{c['all_reduce_bytes'] / 1024:.0f} x {c['all_reduces']}",
                      f"{c['all_reduce_total'] / 2**20:.2f}", f"{c['ring_bytes_per_rank'] / 2**20:.2f}",
                      f"{c['top_reduce_bytes'] / 1024:.1f}", f"{c['gathered_logits_bytes'] / 2**20:.1f}")
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"shape": shape, "steps": steps, "threads": args.threads,
                                         "step_seconds": measured,
                                         "communication": comm}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
