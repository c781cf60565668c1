"""FP8 quality and memory on the bundled model: `redraft eval` scores and TPF of per-block FP8 weights vs the
unquantized checkpoint, side by side, over several seeds; checkpoint size and resident weight bytes of each.

    python benchmarks/fp8_quality.py [--n 10] [--seeds 0,1,2] [--tasks addition,sorting,sudoku4,reverse]
                                     [--scopes fp8,fp8-all] [--model DIR] [--json FILE] [--quick]

Every arm decodes the same examples with the same seeds (Q Mode, batch-invariant CPU decoding); the delta is FP8
minus bf16 in points (score x 100). The FP8 checkpoint size is that of the directory `save_model` writes.
`--quick`: n 3, one seed, two tasks (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def resident_bytes(model) -> int:
    """Bytes of every parameter and buffer the model holds (FP8 weights, their scales, the rest)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def checkpoint_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))


def run_arm(path: Path, quantization: str | None, tasks: list[str], n: int, seeds: list[int], tmp: Path) -> dict:
    from redraft.evaluation.harness import evaluate
    from redraft.model import load_model, save_model
    from redraft.model.tokenizer import load_tokenizer

    model = load_model(path, quantization=quantization)
    tokenizer = load_tokenizer(path)
    if quantization is None:
        ckpt = checkpoint_bytes(path)
    else:
        ckpt = checkpoint_bytes(save_model(model, tmp / quantization))
    t0 = time.perf_counter()
    report = evaluate(model, tasks, n=n, seeds=seeds, tokenizer=tokenizer, keep_samples=False)
    seconds = time.perf_counter() - t0
    per_task = {}
    for task in tasks:
        runs = [r for r in report.runs if r.task == task]
        per_task[task] = {"scores": [r.score for r in runs], "tpf": [r.tpf for r in runs],
                          "score": statistics.mean(r.score for r in runs), "tpf_mean": statistics.mean(r.tpf for r in runs)}
    return {"quantization": quantization or "none", "checkpoint_bytes": ckpt, "resident_bytes": resident_bytes(model),
            "eval_seconds": seconds, "tasks": per_task}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "redraft" / "assets" / "tiny")
    ap.add_argument("--tasks", default="addition,sorting,sudoku4,reverse")
    ap.add_argument("--n", type=int, default=10, help="eval examples per task and seed")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--scopes", default="fp8", help="comma-separated quantizations to compare (fp8, fp8-all)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    tasks = args.tasks.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    n = args.n
    if args.quick:
        tasks, seeds, n = tasks[:2], seeds[:1], 3
    arms = [None] + [q for q in args.scopes.split(",") if q]
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_arm(args.model, q, tasks, n, seeds, Path(tmp)) for q in arms]
    base = results[0]
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"FP8 vs unquantized: {args.model.name}, n={n}, seeds {seeds}, Q Mode")
    for col in ["task"] + [c for r in results for c in (f"{r['quantization']} score", f"{r['quantization']} TPF")] + \
            [f"{r['quantization']} delta (pts)" for r in results[1:]]:
        table.add_column(col)
    for task in tasks:
        row = [task]
        for r in results:
            t = r["tasks"][task]
            row += [f"{t['score']:.3f}", f"{t['tpf_mean']:.2f}"]
        for r in results[1:]:
            delta = 100 * (r["tasks"][task]["score"] - base["tasks"][task]["score"])
            r["tasks"][task]["delta_points"] = delta
            row.append(f"{delta:+.1f}")
        table.add_row(*row)
    console = Console()
    console.print(table)
    mem = Table(title="weight bytes")
    for col in ("weights", "checkpoint (MB)", "resident (MB)", "x unquantized (resident)"):
        mem.add_column(col)
    for r in results:
        mem.add_row(r["quantization"], f"{r['checkpoint_bytes'] / 1e6:.2f}", f"{r['resident_bytes'] / 1e6:.2f}",
                    f"{r['resident_bytes'] / base['resident_bytes']:.3f}")
    console.print(mem)
    out = {"model": str(args.model), "n": n, "seeds": seeds, "tasks": tasks, "mode": "quality",
           "load": os.getloadavg(), "arms": results}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
