"""FP8 step latency at real shapes: one forward of a 32-token block over a committed KV cache, per-block FP8 weights
vs bf16, and the moonshot: the flash shape (103B parameters) built layer by layer with random FP8 weights straight
on one GPU.

    python benchmarks/fp8_gpu.py [--shape mini] [--batch 1,16] [--cache 1024] [--moonshot] [--json FILE]
    python benchmarks/fp8_gpu.py --shape tiny --device cpu --moonshot      # a CPU smoke run of every path

Rows: bf16 (the unquantized model, grouped-matmul experts on Hopper), fp8 (routed experts in FP8: the grouped
triton kernel, bf16 activations), fp8-w8a8 (CUDA only: the same weights through per-expert blockwise `scaled_mm`
with activations quantized per 1 x 128), fp8-all (every linear layer but the LM head). The FP8 model is the bf16 model quantized in place (same random weights). The
moonshot row never holds a bf16 copy: the model is built on the meta device, its experts swapped for FP8 banks,
allocated on the device, and filled with random FP8 codes and scales one layer at a time. tok/s = TPF / step, at
`--tpf` tokens per forward (S Mode on the paper's benchmarks decodes several tokens per forward).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_step_latency import MINI, TINY  # noqa: E402

from redraft.model import BlockLayout, KVCache, LLaDA2MoeConfig, LLaDA2MoeModelLM  # noqa: E402
from redraft.model.fp8 import Fp8ExpertBank, Fp8Linear, quantize_model  # noqa: E402
from redraft.model.fp8.blocks import FP8_DTYPE  # noqa: E402
from redraft.model.shapes import SHAPES  # noqa: E402

TINY_FLASH = dict(TINY, num_hidden_layers=3, torch_dtype="bfloat16")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_bf16(shape: dict, device: str) -> LLaDA2MoeModelLM:
    cfg = LLaDA2MoeConfig(**{**shape, "torch_dtype": "bfloat16"})
    with torch.device("meta"):
        model = LLaDA2MoeModelLM(cfg)
    model = model.to(torch.bfloat16).to_empty(device=device)
    model.init_weights(0.02)
    return model.eval()


def build_fp8_layer_by_layer(shape: dict, device: str, scope: str = "fp8", std: float = 0.02,
                             seed: int = 0) -> LLaDA2MoeModelLM:
    """The model with random FP8 weights made on the device one module at a time (peak: the FP8 model plus one
    expert's bf16 temporary). FP8 codes ~ N(0, 1) rounded to e4m3, every block scale = std."""
    cfg = LLaDA2MoeConfig(**{**shape, "torch_dtype": "bfloat16"})
    with torch.device("meta"):
        model = LLaDA2MoeModelLM(cfg).to(torch.bfloat16)
    quantize_model(model, scope)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, Fp8ExpertBank):
                for e in range(m.num_experts):
                    for w in (m.gate_up_proj[e], m.down_proj[e]):
                        w.copy_(torch.randn(w.shape, generator=gen, device=device, dtype=torch.bfloat16).to(FP8_DTYPE))
                m.gate_up_proj_scale_inv.fill_(std)
                m.down_proj_scale_inv.fill_(std)
            elif isinstance(m, Fp8Linear):
                m.qweight.copy_(torch.randn(m.qweight.shape, generator=gen, device=device,
                                            dtype=torch.bfloat16).to(FP8_DTYPE))
                m.weight_scale_inv.fill_(std)
                if m.bias is not None:
                    m.bias.zero_()
        for name, p in model.named_parameters(recurse=True):
            if p.dtype in (torch.bfloat16, torch.float32) and not name.endswith("scale_inv") and "bias" not in name:
                if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, std, generator=gen)
        for m in model.modules():
            if hasattr(m, "expert_bias"):
                m.expert_bias.zero_()
    model.reset_non_persistent_buffers()
    return model.eval()


def step_ms(model, batch: int, cache_len: int, block: int, device: str, iters: int) -> float:
    cfg = model.config
    cache = KVCache.for_model(model, batch, capacity=cache_len + block)
    with torch.no_grad():
        ids = torch.randint(0, cfg.vocab_size, (batch, cache_len), device=device)
        for start in range(0, cache_len, 256):
            w = ids[:, start:start + 256]
            out = model(w, None, BlockLayout(block), cache=cache)
            cache.commit(out.new_kv, [w.shape[1]] * batch)
        window = torch.randint(0, cfg.vocab_size, (batch, block), device=device)
        for _ in range(2):
            model(window, None, BlockLayout(block), cache=cache)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            model(window, None, BlockLayout(block), cache=cache)
        sync(device)
    return (time.perf_counter() - t0) / iters * 1000


def weight_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def fast_path_state(model) -> str:
    """How the FP8 modules computed: experts "grouped" (triton), "scaled_mm" (per expert) or "dequant"; linears
    (read through `.weight` by the layers) "dequant"."""
    experts = {"grouped" if m.grouped.enabled else "scaled_mm" if m.fast.enabled else "dequant"
               for m in model.modules() if isinstance(m, Fp8ExpertBank)}
    linears = any(isinstance(m, Fp8Linear) for m in model.modules())
    return "experts " + "/".join(sorted(experts)) + (", linears dequant" if linears else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["tiny", "mini"], default="mini")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--cache", type=int, default=1024)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--scopes", default="fp8,fp8-all")
    ap.add_argument("--moonshot", action="store_true", help="also the flash shape with FP8 experts, batch 1")
    ap.add_argument("--tpf", type=float, default=6.0, help="tokens per forward for the tok/s column")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    device = args.device
    shape = MINI if args.shape == "mini" else TINY
    batches = [int(b) for b in args.batch.split(",")]
    if args.shape == "tiny":
        args.cache = min(args.cache, 64)
    rows = []

    def record(label, model, batch, ms, shape_name):
        rows.append({"shape": shape_name, "weights": label, "batch": batch, "ms_per_forward": ms,
                     "tok_per_s_at_tpf": args.tpf * batch / ms * 1000, "weight_bytes": weight_bytes(model),
                     "compute": fast_path_state(model) if label != "bf16" else "bf16"})
        print(f"{shape_name:6} {label:8} batch {batch:3d} {ms:9.2f} ms/forward  {rows[-1]['tok_per_s_at_tpf']:9.1f} "
              f"tok/s at TPF {args.tpf:g}  weights {rows[-1]['weight_bytes'] / 1e9:.2f} GB  ({rows[-1]['compute']})",
              flush=True)

    model = build_bf16(shape, device)
    for b in batches:
        record("bf16", model, b, step_ms(model, b, args.cache, args.block, device, args.iters), args.shape)
    for scope in [s for s in args.scopes.split(",") if s]:
        q = quantize_model(build_bf16(shape, device) if scope != "fp8" else model, scope)
        for b in batches:
            record(scope, q, b, step_ms(q, b, args.cache, args.block, device, args.iters), args.shape)
        if scope == "fp8" and device.startswith("cuda"):
            # the other way: activations quantized per 1 x 128 too, FP8 tensor-core GEMMs per expert (scaled_mm)
            for m in q.modules():
                if isinstance(m, Fp8ExpertBank):
                    m.grouped.enabled, m.fast.enabled = False, None
            for b in batches:
                record("fp8-w8a8", q, b, step_ms(q, b, args.cache, args.block, device, args.iters), args.shape)
        del q
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    if args.moonshot:
        flash = TINY_FLASH if args.shape == "tiny" else SHAPES["flash"]
        name = "tiny-flash" if args.shape == "tiny" else "flash"
        t0 = time.perf_counter()
        model = build_fp8_layer_by_layer(flash, device)
        build_s = time.perf_counter() - t0
        mem = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
        print(f"{name}: built with FP8 experts in {build_s:.0f} s"
              + (f", peak GPU memory {mem / 1e9:.1f} GB" if mem else ""), flush=True)
        record("fp8", model, 1, step_ms(model, 1, args.cache, args.block, device, args.iters), name)
        rows[-1]["build_seconds"] = build_s
        rows[-1]["peak_gpu_bytes"] = mem
    result = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu", "cache": args.cache,
              "block": args.block, "tpf": args.tpf, "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
