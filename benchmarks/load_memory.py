"""Loading benchmark: peak resident memory and time of `load_model` on a ~1 GB random checkpoint it creates.

Each measurement runs in a fresh subprocess; peak RSS (VmHWM) minus the RSS before loading is compared with
the checkpoint's bytes (goal: <= 1.5x). `redraft-fp8` loads with quantization="fp8" (experts quantized tensor by
tensor while reading): its peak stays near the FP8 model's size, far below the checkpoint's. For context, the naive path (safetensors `load_file` + `load_state_dict`
into a model built normally) is measured the same way.

    python benchmarks/load_memory.py [--size-gb 1.0] [--json FILE] [--quick] [--tp N [--ep M]]

With --tp, rank 0's and the last rank's `load_sharded` are measured too, against the bytes that rank holds
(goal: <= 1.25x its shard).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
path, mode = sys.argv[1], sys.argv[2]
def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
def rss():
    return status("VmRSS")
from redraft.model import LLaDA2MoeConfig, LLaDA2MoeModelLM, load_model  # imports are not loading memory
from redraft.model.parallel import ParallelConfig
from redraft.model.parallel_loading import load_sharded
with torch.device("meta"):  # first use of the meta device imports torch's meta kernels (~75 MB, fixed)
    LLaDA2MoeModelLM(LLaDA2MoeConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                     num_attention_heads=1, num_key_value_heads=1, head_dim=8, num_experts=0))
before = rss()
t0 = time.perf_counter()
if mode == "redraft":
    from redraft.model import load_model
    model = load_model(path)
elif mode == "redraft-fp8":  # experts quantized to per-block FP8 tensor by tensor while loading
    from redraft.model import load_model
    model = load_model(path, quantization="fp8")
elif mode.startswith("sharded"):  # sharded:TP:EP:RANK, one rank's part (no process group is needed to load)
    from redraft.model.parallel import ParallelConfig
    from redraft.model.parallel_loading import load_sharded
    _, tp, ep, rank = mode.split(":")
    model = load_sharded(path, ParallelConfig(int(tp), int(ep)), int(rank))
else:
    from safetensors.torch import load_file
    from redraft.model import LLaDA2MoeConfig, LLaDA2MoeModelLM
    cfg = LLaDA2MoeConfig.from_file(path + "/config.json")
    model = LLaDA2MoeModelLM(cfg)
    model.load_state_dict(load_file(path + "/model.safetensors"))
elapsed = time.perf_counter() - t0
peak = status("VmHWM")  # not ru_maxrss: it survives exec and would count the parent's peak
held = sum(t.numel() * t.element_size() for t in model.state_dict().values())
print(json.dumps({"before": before, "peak": peak, "seconds": elapsed, "held": held}))
"""


def make_checkpoint(directory: Path, size_gb: float) -> int:
    import torch

    from redraft.model import LLaDA2MoeConfig, save_model
    from redraft.model.modeling import LLaDA2MoeModelLM

    layers = max(1, round(8 * size_gb))
    cfg = LLaDA2MoeConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=layers,
                          num_attention_heads=16, num_key_value_heads=4, head_dim=64, num_experts=16,
                          num_experts_per_tok=2, n_group=4, topk_group=2, moe_intermediate_size=512,
                          torch_dtype="float32")
    model = LLaDA2MoeModelLM(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02, generator=gen)
    save_model(model, directory)
    return (directory / "model.safetensors").stat().st_size


def measure(path: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true", help="a 0.25 GB checkpoint")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--tp", type=int, default=0, help="also load rank 0 and the last rank of a tp-way layout "
                    "(`load_sharded`); goal: peak <= 1.25x the rank's shard")
    ap.add_argument("--ep", type=int, default=1, help="expert-parallel groups with --tp")
    args = ap.parse_args()
    size_gb = 0.25 if args.quick else args.size_gb
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ckpt"
        nbytes = make_checkpoint(ckpt, size_gb)
        modes = ["redraft", "redraft-fp8", "naive"]
        if args.tp:
            modes += [f"sharded:{args.tp}:{args.ep}:{r}" for r in sorted({0, args.tp - 1})]
        rows = {mode: measure(ckpt, mode) for mode in modes}
    table = Table(title=f"load_model on a {nbytes / 1e9:.2f} GB random checkpoint (fp32)")
    for col in ("loader", "seconds", "peak RSS growth (GB)", "x checkpoint bytes", "x bytes held (shard)"):
        table.add_column(col)
    result = {"checkpoint_bytes": nbytes, "loaders": {}}
    for mode, r in rows.items():
        growth = r["peak"] - r["before"]
        result["loaders"][mode] = {"seconds": r["seconds"], "peak_growth_bytes": growth, "ratio": growth / nbytes,
                                   "held_bytes": r["held"], "ratio_to_held": growth / r["held"]}
        table.add_row(mode, f"{r['seconds']:.2f}", f"{growth / 1e9:.2f}", f"{growth / nbytes:.2f}",
                      f"{growth / r['held']:.2f}")
    Console().print(table)
    ok = result["loaders"]["redraft"]["ratio"] <= 1.5
    print(f"goal peak <= 1.5x checkpoint bytes: {'met' if ok else 'NOT met'}")
    for mode in (m for m in rows if m.startswith("sharded")):
        met = result["loaders"][mode]["ratio_to_held"] <= 1.25
        ok = ok and met
        print(f"goal {mode} peak <= 1.25x its shard: {'met' if met else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
