"""CPU decoding with other row tiles for the batch-invariant GEMMs (`Engine(batch_invariant=RowTiles(dense=N))`).

The bundled model with its tokenizer, Q Mode, `--new` new tokens for each of B prompts, for each dense tile of
`--tiles` (alternated `--repeat` times in one process; the tile is a per-engine setting): ms per step = the median
`Engine.step()` time. Batch invariance is checked under every tile: each row of the batch must decode to the
tokens of its solo run with the same tiles (tokens may differ between tile settings: bf16 rounding).

    python benchmarks/row_tiles.py [--tiles 32,64] [--batch 1,8] [--threads 1,2] [--new 128] [--repeat 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from redraft.decoding import Engine, preset  # noqa: E402
from redraft.decoding.commands import load  # noqa: E402
from redraft.model.invariant import RowTiles  # noqa: E402

PROMPTS = ("def fibonacci(n):", "The capital of France is", "import numpy as np\n", "reverse: a b c d")


def decode(model, tok, rows: int, new: int, tiles: RowTiles, first: int = 0) -> tuple[float, list[list[int]]]:
    """(median ms per step, token ids per row) of `rows` prompts (from PROMPTS[first] on, cycling) decoded together."""
    engine = Engine(model, tok, max_batch_size=rows, batch_invariant=tiles)
    cfg = preset("quality", max_new_tokens=new)
    ids = [engine.add_request(tok.encode(PROMPTS[(first + i) % len(PROMPTS)]), cfg) for i in range(rows)]
    steps, results = [], {}
    while engine.has_work():
        t = time.perf_counter()
        for event in engine.step():
            if event.finished:
                results[event.request_id] = event.result.token_ids
        steps.append(time.perf_counter() - t)
    return 1000 * statistics.median(steps), [results[i] for i in ids]


def equal_to_solo(model, tok, rows_tokens: list[list[int]], new: int, tiles: RowTiles) -> bool:
    """Whether every row's tokens are those of its prompt decoded alone under the same tiles (a batch of one is its
    own solo run)."""
    if len(rows_tokens) == 1:
        return True
    solo = [decode(model, tok, 1, new, tiles, first=i)[1][0] for i in range(min(len(rows_tokens), len(PROMPTS)))]
    return all(tokens == solo[i % len(PROMPTS)] for i, tokens in enumerate(rows_tokens))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", default="32,64", help="dense row tiles to compare (the first is the baseline)")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    tiles = [int(t) for t in args.tiles.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    model, tok = load(None)
    rows, loads = {}, []
    print(f"CPU decoding, bundled model, Q Mode, {args.new} new tokens: median ms per step (best of {args.repeat})")
    print(f"{'threads':>7s} {'batch':>5s} " + " ".join(f"{'tile ' + str(t):>9s}" for t in tiles)
          + "  " + " ".join(f"{'x' + str(t):>6s}" for t in tiles[1:]) + "  rows == solo")
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        decode(model, tok, max(batches), 16, RowTiles(dense=tiles[0]))  # warm-up
        for b in batches:
            ms = {t: [] for t in tiles}
            tokens = {}
            for _ in range(args.repeat):
                for t in tiles:
                    loads.append(os.getloadavg()[0])
                    step_ms, tokens[t] = decode(model, tok, b, args.new, RowTiles(dense=t))
                    ms[t].append(step_ms)
            invariant = all(equal_to_solo(model, tok, tokens[t], args.new, RowTiles(dense=t)) for t in tiles)
            best = {t: min(v) for t, v in ms.items()}
            rows[f"t{threads}_b{b}"] = dict(step_ms=best, runs_ms=ms, rows_equal_solo=invariant,
                                            speedup={t: best[tiles[0]] / best[t] for t in tiles[1:]})
            print(f"{threads:7d} {b:5d} " + " ".join(f"{best[t]:9.2f}" for t in tiles) + "  "
                  + " ".join(f"{best[tiles[0]] / best[t]:5.2f}x" for t in tiles[1:]) + f"  {invariant}")
    print(f"load average {min(loads):.1f}-{max(loads):.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(dict(new_tokens=args.new, repeat=args.repeat, tiles=tiles,
                                                   load_averages=loads, rows=rows), indent=1))
    return 0 if all(r["rows_equal_solo"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
