"""Trainer throughput of a real recipe, variant against variant, side by side: `Trainer.train_step` as `redraft train`
runs it (data, objective with T2T and MTF, autocast, AdamW, expert balancing), on the recipe's prepared data.

Each variant is a list of `--set` overrides (e.g. `keep_host_memory=false`, `compile=true`); every timing runs in a
fresh process (process-wide settings such as `keep_host_memory` cannot be undone in one), and the variants alternate
`--repeat` times so that machine noise hits them alike. A run builds the trainer, takes `--warmup` steps (page
faults, compilation), then times `--steps` steps; it reports trained tokens/s (rows x seq_len per second) and the
mean loss of the timed steps, so variants that must not change the numbers can be compared. The table gives each
variant's median tokens/s and its ratio to the first variant; the JSON keeps every run and the load average.

    python benchmarks/train_recipe_speed.py --config configs/v2.yaml --data .device_data/v2 \
        --variant keep_host_memory=false --variant keep_host_memory=true --variant compile=true [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(config: str, overrides: list[str], warmup: int, steps: int) -> dict:
    """In this process: build the trainer, warm up, time `steps` steps."""
    import tempfile

    import torch

    from redraft.training import load_config
    from redraft.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(config, [f"output_dir={out}", *overrides])
        trainer = Trainer(cfg)
        t0 = time.perf_counter()
        trainer.setup()
        setup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for step in range(warmup):
            float(trainer.train_step(step)["loss_sum"])
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        losses = [float(trainer.train_step(step)["loss_sum"]) for step in range(warmup, warmup + steps)]
        elapsed = time.perf_counter() - t0
    tokens = steps * cfg.batch_size * cfg.data.seq_len
    return {"overrides": overrides, "tok_per_s": tokens / elapsed, "step_s": elapsed / steps, "setup_s": setup_s,
            "warmup_s": warm_s, "mean_loss": sum(losses) / len(losses), "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/v2.yaml"))
    ap.add_argument("--data", default=str(ROOT / ".device_data/v2"), help="prepared data folder (--prepare-only)")
    ap.add_argument("--variant", action="append", default=[],
                    help="comma-separated --set overrides; repeat the flag per variant (default: the recipe as is)")
    ap.add_argument("--set", action="append", default=["micro_batch_size=32", "batch_size=32"], dest="common",
                    help="overrides for every variant (default: one micro-batch of 32 rows per step)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    args = ap.parse_args()
    if args.one is not None:
        print("RESULT " + json.dumps(one_run(args.config, json.loads(args.one), args.warmup, args.steps)))
        return
    if not (Path(args.data) / "recipe.json").exists():
        sys.exit(f"no prepared data in {args.data}: run  redraft train {args.config} --prepare-only "
                 f"--set data.prepared={args.data}")
    variants = [[s for s in v.split(",") if s] for v in (args.variant or [""])]
    runs: list[dict] = []
    for rep in range(args.repeat):
        for v in variants:
            overrides = [f"data.prepared={args.data}", *args.common, *v]
            cmd = [sys.executable, __file__, "--config", args.config, "--warmup", str(args.warmup), "--steps",
                   str(args.steps), "--one", json.dumps(overrides)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                sys.exit(f"variant {v} failed:\n{proc.stderr[-3000:]}")
            run = {"variant": ",".join(v) or "(recipe)", "repeat": rep, "load_avg": os.getloadavg()[0],
                   **json.loads(line[0][7:])}
            runs.append(run)
            print(f"  {run['variant']:<40} {run['tok_per_s']:8.0f} tok/s  loss {run['mean_loss']:.5f}", flush=True)
    names = [",".join(v) or "(recipe)" for v in variants]
    base = statistics.median(r["tok_per_s"] for r in runs if r["variant"] == names[0])
    rows = []
    print(f"\n{'variant':<40} {'tok/s (median)':>15} {'vs first':>9} {'mean loss':>10} {'warm-up s':>10}")
    for name in names:
        mine = [r for r in runs if r["variant"] == name]
        tps = statistics.median(r["tok_per_s"] for r in mine)
        row = {"variant": name, "tok_per_s": round(tps, 1), "ratio": round(tps / base, 3),
               "mean_loss": round(mine[0]["mean_loss"], 5), "warmup_s": round(mine[0]["warmup_s"], 1)}
        rows.append(row)
        print(f"{name:<40} {tps:15.0f} {tps / base:8.2f}x {row['mean_loss']:10.5f} {row['warmup_s']:10.1f}")
    loads = [r["load_avg"] for r in runs]
    print(f"load average during the runs: {min(loads):.1f}-{max(loads):.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"config": args.config, "common": args.common, "warmup": args.warmup,
                                               "steps": args.steps, "table": rows, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
