"""Greedy held-out accuracy of a model (optionally with a LoRA adapter merged) on a synthetic task's eval split, the
way `redraft rl` measures it (docs/rl_results.md: 200 eval prompts, eval_seed 0, greedy S Mode).

    python scripts/heldout_accuracy.py redraft/assets/tiny --adapter runs/sft/sorting20-tiny-lora/final \
        --task sorting --task-config '{"max_value": 20}' --n 200
"""

from __future__ import annotations

import argparse
import json

from redraft.evaluation.tasks import get_task
from redraft.model.lora import load_merged
from redraft.model.tokenizer import load_tokenizer
from redraft.rl.evaluate import heldout_accuracy
from redraft.rl.rollout import RolloutConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--adapter", default=None)
    p.add_argument("--task", default="sorting")
    p.add_argument("--task-config", type=json.loads, default={})
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", default="speedy")
    args = p.parse_args()
    model, tok = load_merged(args.model, args.adapter, dtype="float32"), load_tokenizer(args.model)
    task = get_task(args.task, **args.task_config)
    samples = task.examples(args.n, args.seed, split="eval")
    rollout = RolloutConfig(mode=args.mode, max_new_tokens=32, block_length=32)
    out = heldout_accuracy(model, tok, task, samples, [task.prompt_ids(s, tok) for s in samples], rollout)
    print(json.dumps({"model": args.model, "adapter": args.adapter, "task": args.task, **args.task_config, "n": args.n,
                      **{k: round(v, 4) for k, v in out.items()}}))


if __name__ == "__main__":
    main()
