"""LoRA vs full fine-tuning memory on the bundled model: trainable parameters, optimiser bytes, peak RSS.

Each mode runs in a fresh subprocess: load the bundled model (float32), wrap it with LoRA adapters (or not), build
AdamW over the trainable parameters (the trainer's `param_groups`), and run `--steps` optimiser steps of the M2T + T2T
+ MTF objective (the trainer's `DiffusionObjective`, default noise) on a random packed batch. Reported: trainable
parameters, optimiser state bytes (AdamW's exp_avg + exp_avg_sq, measured from the optimiser after the steps),
gradient bytes, and peak RSS (VmHWM) of the process. Peak RSS includes the interpreter, torch and (for LoRA) PEFT and
transformers imports, measured the same way for both modes.

    python benchmarks/lora_memory.py [--rank 16] [--batch 8] [--seq 256] [--steps 3] [--json FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys
import torch
torch.set_num_threads(2)
mode, rank, batch, seq, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if mode == "lora":
    import peft, transformers  # imported up front, so the baseline RSS below includes them
from redraft.model import load_model
from redraft.model.tokenizer import load_tokenizer
from redraft.training.noise import NoiseConfig
from redraft.training.objective import DiffusionObjective, TrainBatch
from redraft.training.trainer import param_groups

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

root = "redraft/assets/tiny"
tok = load_tokenizer(root)
model = load_model(root, dtype=torch.float32).train()
if mode == "lora":
    from redraft.model.lora import LoraSettings, apply_lora
    apply_lora(model, LoraSettings(r=rank, alpha=2 * rank))
after_load = status("VmRSS")
opt = torch.optim.AdamW(param_groups(model, 0.0), lr=1e-4)
special = set(tok.special_ids)
allowed = torch.tensor([i for i in range(tok.vocab_size) if i not in special])
objective = DiffusionObjective(NoiseConfig(), tok.mask_id, allowed)
gen = torch.Generator().manual_seed(0)
ids = torch.randint(0, tok.vocab_size, (batch, seq), generator=gen)
b = TrainBatch(ids, torch.arange(seq).expand(batch, seq).contiguous(), torch.zeros(batch, seq, dtype=torch.long),
               torch.ones(batch, seq, dtype=torch.bool))
for _ in range(steps):
    loss, _ = objective(model, b, 32, gen)
    loss.backward()
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    opt.step()
    opt.zero_grad(set_to_none=True)
opt_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                if torch.is_tensor(t) and t.dim() > 0)
print(json.dumps({"mode": mode, "parameters": sum(p.numel() for p in model.parameters()),
                  "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                  "optimizer_bytes": opt_bytes, "grad_bytes": grad_bytes, "rss_after_load": after_load,
                  "peak_rss": status("VmHWM"), "loss": float(loss)}))
"""


def run(mode: str, args) -> dict:
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(args.rank), str(args.batch), str(args.seq),
                          str(args.steps)], capture_output=True, text=True, cwd=repo, check=False)
    if out.returncode:
        raise RuntimeError(f"{mode} child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--quick", action="store_true", help="batch 2, seq 64, 1 step")
    args = p.parse_args()
    if args.quick:
        args.batch, args.seq, args.steps = 2, 64, 1
    rows = [run("full", args), run("lora", args)]
    mib = 1 << 20
    print(f"bundled model, batch {args.batch} x seq {args.seq}, {args.steps} step(s), LoRA r={args.rank} "
          f"on query_key_value, dense, gate_up_proj, down_proj")
    print(f"{'mode':6} {'trainable':>12} {'% of all':>9} {'optimizer MiB':>14} {'grads MiB':>10} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['mode']:6} {r['trainable']:>12,} {100 * r['trainable'] / r['parameters']:>8.2f}% "
              f"{r['optimizer_bytes'] / mib:>14.2f} {r['grad_bytes'] / mib:>10.2f} {r['peak_rss'] / mib:>13.1f}")
    full, lora = rows
    ratios = {"trainable": lora["trainable"] / full["trainable"],
              "optimizer_bytes": lora["optimizer_bytes"] / full["optimizer_bytes"],
              "peak_rss": lora["peak_rss"] / full["peak_rss"]}
    print("LoRA / full: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "rows": rows,
                                         "ratios": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
