"""Host time of an engine step outside the model: the per-step "news" (stream events and stop-string checks).

A step's host work is paid on every device: on a GPU it adds to the graph replay of forward + policy + K/V write.
This measures, for the bundled model with its tokenizer (Q Mode, a stop string as servers pass one, 1 thread), the
mean and median milliseconds per step spent in `Engine._event` and `Engine._check_stop` (wrapped with timers), and the
whole step, at batch sizes `--batch`. `--baseline DIR` runs an older checkout (`git archive COMMIT redraft | tar -x -C
DIR`) side by side, alternating in fresh processes, and checks that the tokens are identical.

    python benchmarks/engine_host_time.py [--batch 8,32] [--new 256] [--repeat 2] [--baseline DIR] [--json FILE]
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


def worker(batch: int, new_tokens: int) -> dict:
    """One measurement in this process (imports whatever `redraft` PYTHONPATH points at)."""
    import torch

    import redraft
    from redraft.decoding import Engine, preset
    from redraft.model import load_model
    from redraft.model.tokenizer import load_tokenizer

    torch.set_num_threads(1)
    assets = Path(redraft.__file__).parent / "assets" / "tiny"
    model, tok = load_model(assets), load_tokenizer(assets)
    spent = [0.0]
    for name in ("_event", "_check_stop"):
        method = getattr(Engine, name)

        def timed(self, row, method=method):
            t = time.perf_counter()
            try:
                return method(self, row)
            finally:
                spent[0] += time.perf_counter() - t

        setattr(Engine, name, timed)
    engine = Engine(model, tok, max_batch_size=batch)
    cfg = preset("quality", max_new_tokens=new_tokens, stop=("\nclass Zq",))
    ids = [engine.add_request(tok.encode(f"def load_{i}(self, path):"), cfg) for i in range(batch)]
    news, steps, results = [], [], {}
    while engine.has_work():
        before, t = spent[0], time.perf_counter()
        for e in engine.step():
            if e.finished:
                results[e.request_id] = e.result.token_ids
        steps.append(time.perf_counter() - t)
        news.append(spent[0] - before)
    digest = hashlib.sha256(json.dumps([results[i] for i in ids]).encode()).hexdigest()[:16]
    ms = lambda xs: 1000 * statistics.mean(xs)  # noqa: E731
    return dict(batch=batch, steps=len(steps), news_ms_mean=ms(news), news_ms_median=1000 * statistics.median(news),
                step_ms_mean=ms(steps), news_share=sum(news) / sum(steps), tokens_sha=digest)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="8,32", help="comma-separated batch sizes")
    ap.add_argument("--new", type=int, default=256, help="new tokens per request")
    ap.add_argument("--repeat", type=int, default=2, help="alternated repetitions; medians kept")
    ap.add_argument("--baseline", default=None, help="an older checkout to measure side by side")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    if args.worker:
        print(json.dumps(worker(batches[0], args.new)))
        return 0
    here = str(Path(__file__).resolve().parent.parent)
    sides = {"after": here} | ({"before": str(Path(args.baseline).resolve())} if args.baseline else {})
    runs: dict[str, dict[int, list[dict]]] = {s: {b: [] for b in batches} for s in sides}
    loads = []
    for _ in range(args.repeat):
        for b in batches:
            for side, path in sides.items():
                loads.append(os.getloadavg()[0])
                cmd = [sys.executable, __file__, "--worker", "--batch", str(b), "--new", str(args.new)]
                done = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=path), capture_output=True, text=True,
                                      check=True)
                runs[side][b].append(json.loads(done.stdout.strip().splitlines()[-1]))
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    rows = {f"{side}_b{b}": {k: (median([r[k] for r in reps]) if isinstance(reps[0][k], float) else reps[0][k])
                             for k in reps[0]}
            for side, by_b in runs.items() for b, reps in by_b.items()}
    print(f"engine host time per step outside the model (bundled model + tokenizer, Q Mode, {args.new} new tokens, "
          f"1 thread; medians of {args.repeat}; load {min(loads):.1f}-{max(loads):.1f})")
    print(f"{'run':12s} {'steps':>6s} {'news ms mean':>13s} {'news ms median':>15s} {'step ms':>8s} {'news share':>11s}"
          "  tokens")
    for name, r in rows.items():
        print(f"{name:12s} {r['steps']:6d} {r['news_ms_mean']:13.3f} {r['news_ms_median']:15.3f} "
              f"{r['step_ms_mean']:8.2f} {100 * r['news_share']:10.1f}%  {r['tokens_sha']}")
    result = {"new_tokens": args.new, "repeat": args.repeat, "sides": sides, "load_averages": loads, "rows": rows,
              "runs": runs}
    if "before" in sides:
        result["identical_tokens_before_after"] = all(
            rows[f"after_b{b}"]["tokens_sha"] == rows[f"before_b{b}"]["tokens_sha"] for b in batches)
        print(f"identical tokens before/after: {result['identical_tokens_before_after']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
