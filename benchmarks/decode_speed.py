"""Decoding speed: the engine vs the official recompute-everything loop, batching, speedy vs quality, GPU step latency.

CPU (default): a random LLaDA2-MoE checkpoint of ~25M parameters built here (confidences spread by a large LM-head
scale so the thresholds matter); prompt 128, 512 new tokens, block 32, Q Mode unless said otherwise.
  (a) batch-1 tokens/s of the engine (its CPU default: batch invariant, `redraft.model.invariant`) vs
      `_baseline_decoder.official_generate` with plain GEMMs as the official code runs them, on the same prompt;
      the engine with plain GEMMs too, whose tokens must equal the baseline's (same kernels: the cache and the
      engine loop change nothing); median of `--repeat` alternated timings;
  (b) batch 8 vs the same 8 prompts decoded one at a time (identical tokens: batch invariance);
  (c) TPF and tokens/s for S Mode vs Q Mode.
GPU (`--gpu`): random weights of the LLaDA2.1-mini shape built on the device (bf16): per-step latency of a 32-token
block over a 1024-token cache through the engine (CUDA graphs on/off) and batch-1 / batch-16 tokens/s.
Ratios are measured side by side in one run; the load average is recorded with the numbers.

    python benchmarks/decode_speed.py [--quick] [--json FILE] [--gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _baseline_decoder import official_generate  # noqa: E402

from redraft.decoding import Engine, generate, preset  # noqa: E402
from redraft.model import LLaDA2MoeConfig  # noqa: E402
from redraft.model.testing import random_model  # noqa: E402

CPU_SHAPE = dict(vocab_size=8192, hidden_size=256, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64, num_experts=16, num_experts_per_tok=2, n_group=4, topk_group=2,
                 moe_intermediate_size=256, num_shared_experts=1, first_k_dense_replace=1,
                 max_position_embeddings=4096, torch_dtype="float32")


def load_average() -> float:
    return os.getloadavg()[0]


def prompts_for(n: int, length: int, vocab: int, mask_id: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        p = torch.randint(0, vocab - 1, (length,), generator=g)
        out.append(torch.where(p == mask_id, p + 1, p).tolist())
    return out


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def cpu_bench(args) -> dict:
    torch.manual_seed(0)
    cfg = LLaDA2MoeConfig(**CPU_SHAPE)
    model = random_model(cfg, seed=0, head_std=args.head_std)
    mask_id = cfg.vocab_size - 1
    prompt_len, new, batch = (32, 128, 4) if args.quick else (128, 512, 8)
    quality = preset("quality", max_new_tokens=new, mask_id=mask_id, eos_ids=())
    speedy = preset("speedy", max_new_tokens=new, mask_id=mask_id, eos_ids=())
    prompts = prompts_for(batch, prompt_len, cfg.vocab_size, mask_id)
    load_start = load_average()
    generate(model, None, [prompts[0][:32]], quality.replace(max_new_tokens=32))  # warm-up

    # (a) engine vs the official recompute-everything loop, batch 1, same prompt; alternated `repeat` times and the
    # median time of each kept (the engine run lasts seconds, so one pair is at the mercy of the machine)
    base_times, eng_times, plain_times = [], [], []
    for _ in range(args.repeat):
        (base_ids, base_forwards), t = timed(lambda: official_generate(
            model, prompts[0], mask_id=mask_id, gen_length=new, block_length=quality.block_length,
            threshold=quality.tau_mask, editing_threshold=quality.tau_edit, max_post_steps=quality.max_post_steps,
            batch_invariant=False))
        base_times.append(t)
        eng, t = timed(lambda: generate(model, None, [prompts[0]], quality)[0])
        eng_times.append(t)
        plain, t = timed(lambda: generate(model, None, [prompts[0]], quality, batch_invariant=False)[0])
        plain_times.append(t)
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    base_s, eng_s, plain_s = median(base_times), median(eng_times), median(plain_times)
    # (b) batch vs one at a time, same prompts
    singles, single_s = timed(lambda: [eng] + [generate(model, None, [p], quality)[0] for p in prompts[1:]])
    single_s += eng_s
    batched, batch_s = timed(lambda: generate(model, None, prompts, quality))
    # (c) speedy vs quality, batch 1
    fast, fast_s = timed(lambda: generate(model, None, [prompts[0]], speedy)[0])
    tokens_single = sum(len(r.token_ids) for r in singles)
    tokens_batch = sum(len(r.token_ids) for r in batched)
    identical_vs_recompute = plain.token_ids == base_ids
    identical_batch = [r.token_ids for r in batched] == [r.token_ids for r in singles]
    identical = identical_vs_recompute and identical_batch
    rows = {
        "baseline_recompute": dict(tokens=len(base_ids), forwards=base_forwards, seconds=base_s),
        "engine_quality_b1": dict(tokens=len(eng.token_ids), forwards=eng.stats.forwards, seconds=eng_s),
        "engine_quality_b1_plain_gemm": dict(tokens=len(plain.token_ids), forwards=plain.stats.forwards,
                                             seconds=plain_s),
        f"engine_quality_b1_x{batch}": dict(tokens=tokens_single, forwards=sum(r.stats.forwards for r in singles),
                                            seconds=single_s),
        f"engine_quality_b{batch}": dict(tokens=tokens_batch, forwards=max(r.stats.forwards for r in batched),
                                         seconds=batch_s),
        "engine_speedy_b1": dict(tokens=len(fast.token_ids), forwards=fast.stats.forwards, seconds=fast_s),
    }
    for r in rows.values():
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
        r["tpf"] = r["tokens"] / r["forwards"]
    return {
        "mode": "cpu-quick" if args.quick else "cpu",
        "model_params": sum(p.numel() for p in model.parameters()),
        "prompt_len": prompt_len, "new_tokens": new, "block_length": quality.block_length, "batch": batch,
        "threads": torch.get_num_threads(), "load_average_start": load_start, "load_average_end": load_average(),
        "rows": rows, "repeat": args.repeat,
        "speedup_vs_recompute_each_repeat": [b / e for b, e in zip(base_times, eng_times)],
        "speedup_vs_recompute_plain_gemm": base_s / plain_s,
        "batch_invariance_cost_b1": eng_s / plain_s,
        "identical_tokens": identical,
        "identical_tokens_vs_recompute": identical_vs_recompute,
        "engine_default_equals_recompute": eng.token_ids == base_ids,
        "identical_tokens_batch_vs_single": identical_batch,
        "mismatched_rows_batch_vs_single": [i for i, (a, b) in enumerate(zip(batched, singles))
                                            if a.token_ids != b.token_ids],
        "speedup_vs_recompute": rows["engine_quality_b1"]["tokens_per_s"] / rows["baseline_recompute"]["tokens_per_s"],
        "batch8_vs_batch1": rows[f"engine_quality_b{batch}"]["tokens_per_s"]
        / rows[f"engine_quality_b1_x{batch}"]["tokens_per_s"],
        "speedy_vs_quality_tokens_per_s": rows["engine_speedy_b1"]["tokens_per_s"]
        / rows["engine_quality_b1"]["tokens_per_s"],
    }


def engine_run(model, prompts: list[list[int]], config, cuda_graphs: bool) -> dict:
    """Decode on CUDA through the engine; per-step wall times (each step ends in the engine's one host sync)."""
    engine = Engine(model, None, max_batch_size=len(prompts), cuda_graphs=cuda_graphs)
    for p in prompts:
        engine.add_request(p, config)
    torch.cuda.synchronize()
    times, results, t0 = [], {}, time.perf_counter()
    while engine.has_work():
        t = time.perf_counter()
        for e in engine.step():
            if e.finished:
                results[e.request_id] = e.result
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    tokens = sum(len(r.token_ids) for r in results.values())
    steady = sorted(times[1:])  # the first step is the join (prompt prefill)
    return dict(tokens=tokens, forwards=max(r.stats.forwards for r in results.values()), seconds=total,
                step_ms_median=1000 * steady[len(steady) // 2], join_ms=1000 * times[0],
                ids=[results[str(i)].token_ids for i in range(len(prompts))])


def gpu_bench(args) -> dict:
    """LLaDA2.1-mini shape, random bf16 weights on the GPU; prompts of 1024 tokens, so each decode step is a
    32-token block over a 1024-token (and growing) cache."""
    from model_step_latency import MINI, build

    model = build(MINI, "cuda", torch.bfloat16)
    mask_id = MINI["vocab_size"] - 1
    new = 64 if args.quick else 128
    cfg = preset("quality", max_new_tokens=new, mask_id=mask_id, eos_ids=())
    prompts = prompts_for(16, 1024, MINI["vocab_size"], mask_id)
    engine_run(model, [prompts[0][:64]], cfg.replace(max_new_tokens=32), True)  # warm-up (kernels, allocator)
    runs = {"graphs_b1": engine_run(model, prompts[:1], cfg, True),
            "graphs_b16": engine_run(model, prompts, cfg, True),
            "eager_b1": engine_run(model, prompts[:1], cfg, False)}
    rows = {}
    for name, r in runs.items():
        rows[name] = dict(tokens=r["tokens"], forwards=r["forwards"], seconds=r["seconds"],
                          tokens_per_s=r["tokens"] / r["seconds"], tpf=r["tokens"] / r["forwards"],
                          step_ms_median=r["step_ms_median"], join_ms=r["join_ms"])
    return {"mode": "gpu", "device": torch.cuda.get_device_name(), "shape": "llada2.1-mini (random, bf16)",
            "prompt_len": 1024, "new_tokens": new, "block_length": 32, "rows": rows,
            "identical_tokens": runs["graphs_b1"]["ids"][0] == runs["eager_b1"]["ids"][0],
            "b16_row0_equals_b1": runs["graphs_b16"]["ids"][0] == runs["graphs_b1"]["ids"][0],
            "step_ms_b1": rows["graphs_b1"]["step_ms_median"], "step_ms_b16": rows["graphs_b16"]["step_ms_median"],
            "step_ms_b1_no_graphs": rows["eager_b1"]["step_ms_median"],
            "tokens_per_s_b1": rows["graphs_b1"]["tokens_per_s"],
            "tokens_per_s_b16": rows["graphs_b16"]["tokens_per_s"],
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"redraft decode speed ({result['mode']}, load {result.get('load_average_start', 0):.1f}"
                        f"->{result.get('load_average_end', 0):.1f})")
    for col in ("run", "tokens", "forwards", "TPF", "seconds", "tokens/s", "step ms"):
        table.add_column(col, justify="right" if col != "run" else "left")
    for name, r in result["rows"].items():
        table.add_row(name, str(r["tokens"]), str(r["forwards"]), f"{r['tpf']:.2f}", f"{r['seconds']:.2f}",
                      f"{r['tokens_per_s']:.1f}", f"{r['step_ms_median']:.2f}" if "step_ms_median" in r else "")
    console = Console()
    console.print(table)
    for key in ("identical_tokens", "speedup_vs_recompute", "speedup_vs_recompute_plain_gemm",
                "batch_invariance_cost_b1", "batch8_vs_batch1", "speedy_vs_quality_tokens_per_s",
                "step_ms_b1", "step_ms_b16", "step_ms_b1_no_graphs"):
        if key in result:
            v = result[key]
            console.print(f"{key}: {v:.2f}" if isinstance(v, float) else f"{key}: {v}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller run (under a minute on CPU)")
    ap.add_argument("--gpu", action="store_true", help="LLaDA2.1-mini shape on CUDA (see gpu_bench)")
    ap.add_argument("--repeat", type=int, default=5, help="(a) is timed this many times, alternating; medians kept")
    ap.add_argument("--head-std", type=float, default=1.0, help="LM-head init scale (spreads confidences)")
    ap.add_argument("--json", default=None, help="write the numbers to this file")
    args = ap.parse_args()
    if args.gpu:
        result = gpu_bench(args)
    else:
        result = cpu_bench(args)
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
