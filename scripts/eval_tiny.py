"""Task accuracies of a trained checkpoint in quality and speedy mode (eval split), plus a code sample.

python scripts/eval_tiny.py MODEL_DIR [--n 50] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from redraft.decoding import generate, preset
from redraft.evaluation.tasks import get_task
from redraft.model import load_model
from redraft.model.tokenizer import load_tokenizer

TASKS = ("addition", "sorting", "sudoku4", "reverse")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-cache", dest="cache", action="store_false", help="recompute every forward (no KV cache)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model, dtype=torch.float32)
    tok = load_tokenizer(args.model)
    report: dict = {"model": args.model, "n": args.n, "tasks": {}}
    for mode in ("quality", "speedy"):
        cfg = preset(mode, max_new_tokens=args.max_new_tokens)
        for name in TASKS:
            task = get_task(name)
            examples = task.examples(args.n, args.seed, split="eval")
            prompts = [task.prompt_ids(e, tok) for e in examples]
            t0 = time.perf_counter()
            results = generate(model, tok, prompts, cfg, use_cache=args.cache)
            dt = time.perf_counter() - t0
            scores = task.score_many(examples, [r.text for r in results])
            tpf = sum(r.stats.tpf for r in results) / len(results)
            report["tasks"].setdefault(name, {})[mode] = {"accuracy": sum(scores) / len(scores), "tpf": tpf,
                                                          "seconds": round(dt, 2),
                                                          "sample": [examples[0].messages[-1]["content"],
                                                                     results[0].text, examples[0].answer]}
            print(mode, name, report["tasks"][name][mode], flush=True)
    code = generate(model, tok, ["def fibonacci(n):"], preset("quality", max_new_tokens=96))[0]
    report["fibonacci"] = code.text
    print("def fibonacci(n):" + code.text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
