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

CPU ms per forward (`--forward`): the bundled model (redraft/assets/tiny, bf16) and the 22.9M model above, batch 1
and 8, 1 and 2 threads: one decode-window forward (32-token block over a 64-token cache) and one engine step
(`generate` wall time / forwards, greedy Q Mode, batch invariant). `--baseline DIR` measures an older checkout (e.g.
`git archive COMMIT redraft | tar -x -C DIR`) side by side, alternating, and checks that the tokens are identical.

    python benchmarks/decode_speed.py [--quick] [--json FILE] [--gpu]
    python benchmarks/decode_speed.py --forward [--baseline DIR] [--threads 1,2] [--repeat 3] [--json FILE]
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


# ---------------------------------------------------------------------------------------------- ms per forward
FORWARD_PROMPTS = ("def fibonacci(n):", "The capital of France is", "import numpy as np\n", "reverse: a b c d")


def forward_worker(args) -> dict:
    """ms per model forward and per engine step (`generate` wall time / forwards) for the bundled model and the
    22.9M benchmark model, batch 1 and `--forward-batch`, under this process's `redraft` (before/after runs import
    different checkouts). Greedy Q Mode, batch invariance on (the CPU default), so the token ids must not change."""
    import hashlib

    from redraft.decoding.commands import load
    from redraft.model import BlockLayout, KVCache

    torch.set_num_threads(args.threads)
    bundled, tok = load(None)
    bench = random_model(LLaDA2MoeConfig(**CPU_SHAPE), seed=0, head_std=args.head_std)
    out = {}
    for name, model in (("bundled", bundled), ("bench_22.9M", bench)):
        vocab = model.config.vocab_size
        mask_id = tok.mask_id if model is bundled else vocab - 1
        eos = () if model is not bundled else None
        for batch in (1, args.forward_batch):
            # (1) the model alone: a decode window (one 32-token block over a 64-token cache), logits for the block
            L, cached = 32, 64
            g = torch.Generator().manual_seed(0)
            cache = KVCache.for_model(model, batch)
            with torch.inference_mode():
                ids = torch.randint(0, vocab - 1, (batch, cached), generator=g)
                cache.commit(model(ids, None, BlockLayout(L), cache=cache).new_kv, [cached] * batch)
                window = torch.randint(0, vocab - 1, (batch, L), generator=g)
                pos = cache.lengths[:, None] + torch.arange(L)[None]
                layout = BlockLayout(L, key_limit=torch.full((batch, L), cached + L),
                                     valid=torch.ones(batch, L, dtype=torch.bool))
                index = torch.arange(L)[None].expand(batch, L)
                times = []
                for i in range(args.forward_iters + 3):
                    t = time.perf_counter()
                    model(window, pos, layout, cache=cache, logits_index=index)
                    if i >= 3:
                        times.append(time.perf_counter() - t)
            forward_ms = 1000 * sorted(times)[len(times) // 2]
            # (2) the whole engine step in `generate` (forward + policy + commit + bookkeeping), same prompts
            if model is bundled:
                prompts = [tok.encode(FORWARD_PROMPTS[i % len(FORWARD_PROMPTS)]) for i in range(batch)]
                cfg = preset("quality", max_new_tokens=args.forward_new)
            else:
                prompts = prompts_for(batch, 32, vocab, mask_id)
                cfg = preset("quality", max_new_tokens=args.forward_new, mask_id=mask_id, eos_ids=eos)
            res, secs = timed(lambda: generate(model, tok if model is bundled else None, prompts, cfg))
            forwards = sum(r.stats.forwards for r in res) if batch == 1 else max(r.stats.forwards for r in res)
            digest = hashlib.sha256(json.dumps([r.token_ids for r in res]).encode()).hexdigest()[:16]
            out[f"{name}_b{batch}"] = dict(forward_ms=forward_ms, step_ms=1000 * secs / forwards, forwards=forwards,
                                           tokens_sha=digest)
    return out


def forward_bench(args) -> dict:
    """Run `forward_worker` for this checkout and (with --baseline) an older one, in fresh subprocesses,
    alternating `--repeat` times; medians kept, every run in the JSON."""
    import subprocess

    def worker(pythonpath: str, threads: int) -> dict:
        env = dict(os.environ, PYTHONPATH=pythonpath)
        cmd = [sys.executable, __file__, "--forward-worker", "--threads", str(threads),
               "--forward-batch", str(args.forward_batch), "--forward-iters", str(args.forward_iters),
               "--forward-new", str(args.forward_new), "--head-std", str(args.head_std)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    here = str(Path(__file__).resolve().parent.parent)
    sides = {"after": here} | ({"before": str(Path(args.baseline).resolve())} if args.baseline else {})
    runs: dict[str, dict[int, list[dict]]] = {s: {} for s in sides}
    loads = []
    for _ in range(args.repeat):
        for threads in args.threads_list:
            for side, path in sides.items():
                loads.append(load_average())
                runs[side].setdefault(threads, []).append(worker(path, threads))
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    rows = {}
    for side, by_threads in runs.items():
        for threads, reps in by_threads.items():
            for key in reps[0]:
                rows[f"{side}_{key}_t{threads}"] = dict(
                    forward_ms=median([r[key]["forward_ms"] for r in reps]),
                    step_ms=median([r[key]["step_ms"] for r in reps]), forwards=reps[0][key]["forwards"],
                    tokens_sha=reps[0][key]["tokens_sha"])
    result = {"mode": "cpu-forward", "repeat": args.repeat, "threads": args.threads_list, "sides": sides,
              "load_averages": loads, "rows": rows, "runs": runs}
    if "before" in sides:
        result["identical_tokens_before_after"] = all(
            rows[k]["tokens_sha"] == rows[k.replace("after_", "before_", 1)]["tokens_sha"]
            for k in rows if k.startswith("after_"))
        result["speedup"] = {k[len("after_"):]: dict(
            forward=rows[k.replace("after_", "before_", 1)]["forward_ms"] / rows[k]["forward_ms"],
            step=rows[k.replace("after_", "before_", 1)]["step_ms"] / rows[k]["step_ms"])
            for k in rows if k.startswith("after_")}
    return result


def print_forward_table(result: dict) -> None:
    print(f"ms per forward / per engine step (CPU, medians of {result['repeat']}; load averages "
          f"{min(result['load_averages']):.1f}-{max(result['load_averages']):.1f})")
    print(f"{'run':40s} {'forward ms':>10s} {'step ms':>9s} {'forwards':>8s}  tokens")
    for name, r in result["rows"].items():
        print(f"{name:40s} {r['forward_ms']:10.2f} {r['step_ms']:9.2f} {r['forwards']:8d}  {r['tokens_sha']}")
    for name, s in result.get("speedup", {}).items():
        print(f"speed-up {name}: forward {s['forward']:.2f}x, step {s['step']:.2f}x")
    if "identical_tokens_before_after" in result:
        print(f"identical tokens before/after: {result['identical_tokens_before_after']}")


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
    ap.add_argument("--forward", action="store_true",
                    help="ms per forward and per engine step, bundled + 22.9M model, batch 1 and 8 (see forward_bench)")
    ap.add_argument("--baseline", default=None,
                    help="with --forward: a checkout (its root, holding redraft/) measured side by side as 'before'")
    ap.add_argument("--threads", default="1,2", help="with --forward: torch thread counts, comma-separated")
    ap.add_argument("--forward-batch", type=int, default=8)
    ap.add_argument("--forward-iters", type=int, default=30, help="with --forward: timed forwards per setting")
    ap.add_argument("--forward-new", type=int, default=64, help="with --forward: new tokens per engine run")
    ap.add_argument("--forward-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.forward_worker:
        args.threads = int(args.threads)
        print(json.dumps(forward_worker(args)))
        return 0
    if args.forward:
        args.threads_list = [int(t) for t in args.threads.split(",")]
        result = forward_bench(args)
        print_forward_table(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
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
