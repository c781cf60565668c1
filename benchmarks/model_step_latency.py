"""Model-level step latency: one forward of a 32-token block over a committed KV cache, at a real model's shape.

Random weights are built directly on the device (no file). Default shape: LLaDA2.1-mini (hidden 2048, 20 layers,
16/4 heads, head_dim 128, 256 experts top-8 in 8 groups top-4, expert hidden 512, 1 shared, dense hidden 5120,
vocab 157184), bf16. Reports ms per forward for each batch size, with and without the grouped-matmul MoE path.

    python benchmarks/model_step_latency.py [--cache 1024] [--batch 1,16] [--json FILE] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from redraft.model import BlockLayout, KVCache, LLaDA2MoeConfig, LLaDA2MoeModelLM
from redraft.model.cuda_graphs import CUDAGraphRunner

MINI = dict(vocab_size=157184, hidden_size=2048, intermediate_size=5120, num_hidden_layers=20, num_attention_heads=16,
            num_key_value_heads=4, head_dim=128, num_experts=256, num_experts_per_tok=8, n_group=8, topk_group=4,
            moe_intermediate_size=512, num_shared_experts=1, first_k_dense_replace=1, torch_dtype="bfloat16")
TINY = dict(vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=64, num_experts=16, num_experts_per_tok=2, n_group=4, topk_group=2,
            moe_intermediate_size=128, num_shared_experts=1, first_k_dense_replace=1, torch_dtype="float32")


def build(shape: dict, device: str, dtype: torch.dtype) -> LLaDA2MoeModelLM:
    cfg = LLaDA2MoeConfig(**shape)
    with torch.device("meta"):
        model = LLaDA2MoeModelLM(cfg)
    model = model.to(dtype=dtype).to_empty(device=device)
    model.init_weights(0.02)
    return model.eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_ms(model, batch: int, cache_len: int, block: int, device: str, iters: int, graphs: bool = False) -> float:
    cfg = model.config
    cache = KVCache.for_model(model, batch, capacity=cache_len + block)
    with torch.no_grad():
        ids = torch.randint(0, cfg.vocab_size, (batch, cache_len), device=device)
        for start in range(0, cache_len, 256):  # fill the cache in chunks
            w = ids[:, start:start + 256]
            out = model(w, None, BlockLayout(block), cache=cache)
            cache.commit(out.new_kv, [w.shape[1]] * batch)
        window = torch.randint(0, cfg.vocab_size, (batch, block), device=device)
        run = CUDAGraphRunner(model) if graphs else model
        for _ in range(3):
            run(window, None, BlockLayout(block), cache=cache)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            run(window, None, BlockLayout(block), cache=cache)
        sync(device)
    return (time.perf_counter() - t0) / iters * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=int, default=1024)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--tiny", action="store_true", help="a small shape (CPU smoke run)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = TINY if args.tiny or device == "cpu" else MINI
    dtype = torch.bfloat16 if shape["torch_dtype"] == "bfloat16" else torch.float32
    model = build(shape, device, dtype)
    rows = []
    modes = [(False, False), (True, False), (True, True)] if device == "cuda" else [(False, False)]
    for grouped, graphs in modes:
        for m in model.modules():
            if hasattr(m, "use_grouped_mm"):
                m.use_grouped_mm = grouped
        for b in [int(x) for x in args.batch.split(",")]:
            ms = step_ms(model, b, args.cache, args.block, device, args.iters, graphs)
            rows.append({"batch": b, "grouped_mm": grouped, "cuda_graphs": graphs, "ms_per_forward": ms,
                         "block_tokens_per_s": b * args.block / ms * 1000})
            print(f"batch {b:3d} grouped_mm={grouped!s:5} cuda_graphs={graphs!s:5} {ms:8.2f} ms/forward  "
                  f"cache {args.cache}  block {args.block}", flush=True)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "shape": "tiny" if shape is TINY else "llada2.1-mini", "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
