"""Held-out greedy accuracy of a checkpoint on the synthetic tasks, to pick the EBPO demo task (neither 0% nor 100%).

    python benchmarks/rl_pick_task.py redraft/assets/tiny --n 100 --device cuda     # prints JSON, last line = pick
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from redraft.evaluation.tasks import get_task
from redraft.model import load_model
from redraft.model.tokenizer import load_tokenizer
from redraft.rl.evaluate import heldout_accuracy
from redraft.rl.rollout import RolloutConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tasks", default="addition,sorting,sudoku4,reverse")
    args = ap.parse_args()
    model = load_model(args.checkpoint, dtype=torch.float32).to(args.device)
    tok = load_tokenizer(args.checkpoint)
    scores = {}
    for name in args.tasks.split(","):
        task = get_task(name)
        ex = task.examples(args.n, 0, split="eval")
        t0 = time.perf_counter()
        r = heldout_accuracy(model, tok, task, ex, [task.prompt_ids(e, tok) for e in ex], RolloutConfig())
        scores[name] = r["eval_accuracy"]
        print(json.dumps({"task": name, **r, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    inside = {k: v for k, v in scores.items() if 0.05 <= v <= 0.9}
    print(min(inside, key=lambda k: abs(inside[k] - 0.5)) if inside else "none")


if __name__ == "__main__":
    main()
