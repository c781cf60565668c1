"""CPU decoding with and without `keep_host_memory` (glibc keeps freed memory mapped; `redraft.host_memory`).

The setting is process-wide and cannot be undone, so every timing runs in a fresh process: the bundled model (bf16)
with its tokenizer, Q Mode, `--new` new tokens for each of B prompts, `Engine(keep_host_memory=False)` against the
default (on for CPU), alternating `--repeat` times; ms per step = wall time / the batch's forwards (medians kept).
The tokens must be identical (the allocator does not change any value).

    python benchmarks/decode_host_memory.py [--batch 1,8] [--threads 1,2] [--new 128] [--repeat 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def worker(batch: int, threads: int, new_tokens: int, keep: bool) -> dict:
    import torch

    from redraft.decoding import Engine, preset
    from redraft.decoding.commands import load

    torch.set_num_threads(threads)
    model, tok = load(None)

    def run(rows: int, new: int) -> list:
        engine = Engine(model, tok, max_batch_size=rows, keep_host_memory=keep)
        cfg = preset("quality", max_new_tokens=new)
        ids = [engine.add_request(tok.encode(f"def load_{i}(self, path):"), cfg) for i in range(rows)]
        results = engine.run_until_done()
        return [results[i] for i in ids]

    run(1, 32)  # warm-up
    t = time.perf_counter()
    results = run(batch, new_tokens)
    seconds = time.perf_counter() - t
    forwards = max(r.stats.forwards for r in results)
    digest = hashlib.sha256(json.dumps([r.token_ids for r in results]).encode()).hexdigest()[:16]
    return dict(step_ms=1000 * seconds / forwards, forwards=forwards, tokens_sha=digest)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        b, t, keep = args.worker.split(",")
        print(json.dumps(worker(int(b), int(t), args.new, keep == "1")))
        return 0
    settings = [(int(b), int(t)) for t in args.threads.split(",") for b in args.batch.split(",")]
    runs: dict[str, list[dict]] = {}
    loads = []
    for _ in range(args.repeat):
        for b, t in settings:
            for keep in (0, 1):
                loads.append(os.getloadavg()[0])
                cmd = [sys.executable, __file__, "--worker", f"{b},{t},{keep}", "--new", str(args.new)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                      env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
                runs.setdefault(f"b{b}_t{t}_{'keep' if keep else 'default_glibc'}", []).append(
                    json.loads(done.stdout.strip().splitlines()[-1]))
    rows = {}
    print(f"CPU decoding, bundled model, Q Mode, {args.new} new tokens: ms per step, medians of {args.repeat} "
          f"(load {min(loads):.1f}-{max(loads):.1f})")
    print(f"{'batch':>5s} {'threads':>7s} {'glibc default':>14s} {'keep_host_memory':>17s} {'speed-up':>9s}  "
          "same tokens")
    for b, t in settings:
        off, on = runs[f"b{b}_t{t}_default_glibc"], runs[f"b{b}_t{t}_keep"]
        row = dict(default_ms=statistics.median(r["step_ms"] for r in off),
                   keep_ms=statistics.median(r["step_ms"] for r in on),
                   same_tokens=len({r["tokens_sha"] for r in off + on}) == 1)
        row["speedup"] = row["default_ms"] / row["keep_ms"]
        rows[f"b{b}_t{t}"] = row
        print(f"{b:5d} {t:7d} {row['default_ms']:14.2f} {row['keep_ms']:17.2f} {row['speedup']:8.2f}x  "
              f"{row['same_tokens']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(dict(new_tokens=args.new, repeat=args.repeat, load_averages=loads,
                                                   rows=rows, runs=runs), indent=1))
    return 0 if all(r["same_tokens"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
