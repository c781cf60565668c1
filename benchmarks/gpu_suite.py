"""GPU suite: every GPU check of the project in one command, at the LLaDA2.1-mini shape on one GPU.

Random bf16 weights (float32 on CPU) are built directly on the device (hidden 2048, 20 layers, 256 experts top-8, vocab 157184; the
release's mask id 156895 and eos id 156892). With a 1024-token prompt and 32-token blocks, for each batch size:
  (a) the model forward alone: one decode window (the block over the cache, logits for the block), as the engine
      runs it (CUDA graphs on CUDA), median ms;
  (b) the full engine step (`Engine.step()`: forward, policy, commit, bookkeeping, the step's one host sync), median
      and p90 ms over `--steps` decode steps after the join step and `--warmup` steps;
  (c) the step split into GPU time (kernel time from the profiler over `--profile-steps` steps) and the rest
      (host time the GPU waits for);
  (d) peak GPU memory of the engine run;
  (e) projected tokens/s = B x TPF / step time at the paper's TPF (S Mode 5.34, Q Mode 3.12) -- a projection, not a
      measurement (random weights do not decode like the real model);
  (f) the same in FP8 when `redraft.model.quant` (FP8 linears) is importable, else skipped with a note;
  (g) exactness: the engine's greedy tokens equal its own no-cache run for every generate case of ../shared/parity,
      in float32 on the device (and the official tokens).
Writes `benchmarks/results/gpu_suite_<device>.json` and a Markdown table beside it (`.md`).

    python benchmarks/gpu_suite.py                              # CUDA, mini shape, batch 1/4/16/64 (< 8 min, H100/H200)
    python benchmarks/gpu_suite.py --shape tiny --device cpu    # the same code on CPU at a small shape (seconds)
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
from model_step_latency import MINI, TINY  # noqa: E402

from redraft.decoding import Engine, preset  # noqa: E402
from redraft.model import BlockLayout, KVCache, LLaDA2MoeConfig, LLaDA2MoeModelLM  # noqa: E402
from redraft.model.cuda_graphs import CUDAGraphRunner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PARITY = Path(os.environ.get("REDRAFT_PARITY", REPO.parent / "shared" / "parity"))
# the release's special tokens (LLaDA2.x tokenizer: <|mask|>, <|endoftext|>); tiny: the last two ids
SHAPES = {"mini": (MINI, 156895, 156892), "tiny": (TINY, TINY["vocab_size"] - 1, TINY["vocab_size"] - 2)}
PAPER_TPF = {"S": 5.34, "Q": 3.12}


def build(shape: dict, device: str, dtype: torch.dtype) -> LLaDA2MoeModelLM:
    """Random weights made on the device (no checkpoint, no host copy)."""
    cfg = LLaDA2MoeConfig(**{**shape, "torch_dtype": {torch.bfloat16: "bfloat16", torch.float32: "float32"}[dtype]})
    with torch.device("meta"):
        model = LLaDA2MoeModelLM(cfg)
    model = model.to(dtype=dtype).to_empty(device=device)
    model.init_weights(0.02, generator=torch.Generator(device=device).manual_seed(0))
    return model.eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def prompts_for(batch: int, length: int, vocab: int, special: tuple[int, ...], seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab - 8, (batch, length), generator=g)
    for s in special:  # no special token inside a prompt
        ids = torch.where(ids == s, ids + 1, ids)
    return ids.tolist()


def forward_ms(model, batch: int, prompt: int, block: int, iters: int, device: str) -> float:
    """(a) one decode window over a `prompt`-token cache, logits for the block only (as the engine asks)."""
    vocab = model.config.vocab_size
    cache = KVCache.for_model(model, batch, capacity=prompt + block)
    run = CUDAGraphRunner(model) if device.startswith("cuda") else model
    with torch.inference_mode():
        ids = torch.randint(0, vocab, (batch, prompt), device=device)
        for start in range(0, prompt, 256):
            w = ids[:, start:start + 256]
            cache.commit(model(w, None, BlockLayout(block), cache=cache).new_kv, [w.shape[1]] * batch)
        window = torch.randint(0, vocab, (batch, block), device=device)
        index = torch.arange(block, device=device)[None].expand(batch, block)
        times = []
        for i in range(iters + 3):
            sync(device)
            t = time.perf_counter()
            run(window, None, BlockLayout(block), cache=cache, logits_index=index)
            sync(device)
            if i >= 3:
                times.append(time.perf_counter() - t)
    del cache
    return 1000 * pct(times, 0.5)


def gpu_kernel_ms(engine: Engine, steps: int) -> float | None:
    """(c) kernel time per step from the profiler (None on CPU or when the profiler saw no kernel)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        done = 0
        while done < steps and engine.has_work():
            engine.step()
            done += 1
        torch.cuda.synchronize()
    total_us = sum(getattr(e, "self_device_time_total", 0.0) for e in prof.key_averages())
    return total_us / 1000 / max(done, 1) if total_us > 0 else None


def engine_steps(model, batch: int, prompt: int, block: int, args, mask_id: int, eos_id: int, device: str) -> dict:
    """(b)-(d): decode steps of `batch` requests with `prompt`-token prompts through `Engine.step()`."""
    is_cuda = device.startswith("cuda")
    new = block * (-(-(args.warmup + args.steps + args.profile_steps) // block) + 1)  # >= 1 token per step
    cfg = preset("quality", max_new_tokens=new, block_length=block, mask_id=mask_id, eos_ids=(eos_id,),
                 eos_early_stop=False)
    engine = Engine(model, None, max_batch_size=batch, mask_id=mask_id)
    for p in prompts_for(batch, prompt, model.config.vocab_size, (mask_id, eos_id)):
        engine.add_request(p, cfg)
    if is_cuda:
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t = time.perf_counter()
    engine.step()  # the join: every prompt's blocks committed, first block decoded
    join_ms = 1000 * (time.perf_counter() - t)
    engine.runner.cache(block).reserve(prompt + new + 2 * block)  # no storage growth (and re-capture) while timed
    times, rows = [], []
    while len(times) < args.warmup + args.steps and engine.has_work():
        t = time.perf_counter()
        engine.step()  # ends in the step's one host sync
        times.append(time.perf_counter() - t)
        rows.append(engine.scheduler.num_running)
    timed = times[args.warmup:]
    out = dict(join_ms=join_ms, steps=len(timed), step_ms_median=1000 * pct(timed, 0.5),
               step_ms_p90=1000 * pct(timed, 0.9), rows_min=min(rows[args.warmup:], default=0))
    out["gpu_ms"] = gpu_kernel_ms(engine, args.profile_steps) if is_cuda and args.profile_steps else None
    out["host_ms"] = None if out["gpu_ms"] is None else max(out["step_ms_median"] - out["gpu_ms"], 0.0)
    out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30 if is_cuda else None
    out["projected_tok_s"] = {mode: batch * tpf / (out["step_ms_median"] / 1000) for mode, tpf in PAPER_TPF.items()}
    return out


def run_shape(model, args, mask_id: int, eos_id: int, device: str) -> list[dict]:
    rows = []
    for batch in args.batch_sizes:
        fwd = forward_ms(model, batch, args.prompt, args.block, args.forward_iters, device)
        step = engine_steps(model, batch, args.prompt, args.block, args, mask_id, eos_id, device)
        rows.append(dict(batch=batch, forward_ms=fwd, step_over_forward=step["step_ms_median"] / fwd, **step))
        print(f"batch {batch:3d}: forward {fwd:8.2f} ms | step median {step['step_ms_median']:8.2f} ms, p90 "
              f"{step['step_ms_p90']:8.2f} ms | gpu {step['gpu_ms']} ms | peak {step['peak_memory_gib']} GiB",
              flush=True)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def fp8_section(model, args, mask_id: int, eos_id: int, device: str) -> dict:
    """(f): the same rows with the routed experts in per-block FP8 (`redraft.model.fp8.quantize_model`, in place)."""
    from redraft.model.fp8 import quantize_model

    try:
        qmodel = quantize_model(model, "fp8")
    except Exception as e:  # a device or dtype FP8 does not support: report, do not stop the suite
        return {"skipped": f"quantize_model failed: {type(e).__name__}: {e}"}
    return {"entry_point": "redraft.model.fp8.quantize_model(model, 'fp8')",
            "rows": run_shape(qmodel, args, mask_id, eos_id, device)}


def exactness(device: str) -> dict:
    """(g) engine (KV cache, and CUDA graphs on CUDA) vs its own no-cache run, float32 on the device."""
    if not (PARITY / "cases.json").exists():
        return {"skipped": f"no parity vectors at {PARITY}"}
    from safetensors.torch import load_file

    from redraft.decoding import generate
    from redraft.decoding.conformance import config_from_official
    from redraft.model import load_model

    spec = json.loads((PARITY / "cases.json").read_text())
    tensors = load_file(str(PARITY / spec.get("expected_file", "expected.safetensors")))
    model = load_model(PARITY / spec.get("model_dir", "model"), dtype=torch.float32, device=device)
    cases = {}
    for c in spec["cases"]:
        if c["kind"] != "generate":
            continue
        cfg = config_from_official(c["params"], spec["mask_id"])
        prompt, want = tensors[c["prompt"]].flatten().tolist(), tensors[c["output"]].flatten().tolist()
        cached = generate(model, None, [prompt], cfg)[0].token_ids
        no_cache = generate(model, None, [prompt], cfg, use_cache=False)[0].token_ids
        cases[c["name"]] = dict(cache_equals_no_cache=cached == no_cache, equals_official=cached == want)
    return {"cases": cases, "all_equal": all(v["cache_equals_no_cache"] for v in cases.values()),
            "all_official": all(v["equals_official"] for v in cases.values())}


def markdown(result: dict) -> str:
    lines = [f"# GPU suite: {result['device_name']}, {result['shape']} shape, {result['dtype']}",
             "", f"Prompt {result['prompt']} tokens, block {result['block']}, {result['steps']} timed steps after "
             f"{result['warmup']} warm-up steps. Projected tok/s = B x TPF / step (paper TPF: S {PAPER_TPF['S']}, "
             f"Q {PAPER_TPF['Q']}) is a projection, not a measurement.", ""]

    def table(rows: list[dict]) -> None:
        lines.append("| batch | forward ms | step ms (median) | step ms (p90) | step / forward | GPU ms | host ms | "
                     "peak GiB | projected tok/s S | projected tok/s Q |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
        for r in rows:
            lines.append(f"| {r['batch']} | {f(r['forward_ms'])} | {f(r['step_ms_median'])} | {f(r['step_ms_p90'])} | "
                         f"{f(r['step_over_forward'])} | {f(r['gpu_ms'])} | {f(r['host_ms'])} | "
                         f"{f(r['peak_memory_gib'])} | {f(r['projected_tok_s']['S'], 0)} | "
                         f"{f(r['projected_tok_s']['Q'], 0)} |")

    table(result["rows"])
    fp8 = result["fp8"]
    lines += ["", "## FP8", ""]
    if "rows" in fp8:
        table(fp8["rows"])
    else:
        lines.append(f"Skipped: {fp8['skipped']}")
    ex = result["exactness"]
    lines += ["", "## Exactness (float32 on the device)", ""]
    if "cases" in ex:
        lines.append(f"Engine (cache) == its no-cache run on all {len(ex['cases'])} parity generate cases: "
                     f"**{ex['all_equal']}**; == official tokens: **{ex['all_official']}**.")
        lines += [f"- {name}: cache==no-cache {v['cache_equals_no_cache']}, official {v['equals_official']}"
                  for name, v in ex["cases"].items() if not (v["cache_equals_no_cache"] and v["equals_official"])]
    else:
        lines.append(f"Skipped: {ex['skipped']}")
    if "moonshot" in result:
        mo = result["moonshot"]
        lines += ["", "## (h) FP8 weights vs bf16, and the flash shape with FP8 experts on one device (fp8_gpu.py)", ""]
        if "rows" not in mo:
            lines.append(f"Skipped: {mo['skipped']}")
        else:
            lines += ["| shape | weights | batch | ms / forward | weight GB | compute |", "|---|---|---|---|---|---|"]
            lines += [f"| {r['shape']} | {r['weights']} | {r['batch']} | {r['ms_per_forward']:.2f} | "
                      f"{r['weight_bytes'] / 1e9:.2f} | {r['compute']} |" for r in mo["rows"]]
    return "\n".join(lines) + "\n"


def moonshot(args, json_path: Path) -> dict:
    """(h) `benchmarks/fp8_gpu.py --moonshot` in its own process (the mini model's memory is gone; a crash or an
    out-of-memory there does not lose the rows above)."""
    import subprocess
    import sys

    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    cmd = [sys.executable, str(REPO / "benchmarks" / "fp8_gpu.py"), "--moonshot", "--scopes", "fp8",
           "--device", args.device, "--json", str(json_path)] + (["--shape", "tiny"] if args.shape == "tiny" else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=420)
    if proc.returncode != 0 or not json_path.exists():
        return {"skipped": f"fp8_gpu.py exited {proc.returncode}: {proc.stderr[-1500:]}"}
    return {"command": " ".join(cmd[1:]), **json.loads(json_path.read_text())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="mini")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", default=None, help="batch sizes, comma-separated (default 1,4,16,64; tiny: 1,4)")
    ap.add_argument("--prompt", type=int, default=None, help="prompt tokens (default 1024; tiny: 64)")
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--steps", type=int, default=None, help="timed engine steps (default 50; tiny: 6)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps after the join (default 5; tiny: 2)")
    ap.add_argument("--profile-steps", type=int, default=10, help="steps under the profiler for (c), CUDA only")
    ap.add_argument("--forward-iters", type=int, default=None, help="timed forwards for (a) (default 30; tiny: 3)")
    ap.add_argument("--no-fp8", action="store_true", help="skip (f)")
    ap.add_argument("--no-exactness", action="store_true", help="skip (g)")
    ap.add_argument("--moonshot", choices=["auto", "on", "off"], default="auto",
                    help="(h) benchmarks/fp8_gpu.py in a fresh process: FP8 vs bf16 step at the mini shape and the "
                         "flash shape with FP8 experts on this one GPU (auto: on CUDA at the mini shape)")
    ap.add_argument("--exactness", action="store_true",
                    help="run (g) on CPU too (default: CUDA only; on CPU `redraft conformance` covers it)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="directory for the JSON and .md")
    args = ap.parse_args(argv)
    tiny = args.shape == "tiny"
    args.batch_sizes = [int(b) for b in (args.batch or ("1,4" if tiny else "1,4,16,64")).split(",")]
    args.prompt = args.prompt or (64 if tiny else 1024)
    args.steps = args.steps or (6 if tiny else 50)
    args.warmup = args.warmup if args.warmup is not None else (2 if tiny else 5)
    args.forward_iters = args.forward_iters or (3 if tiny else 30)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: no CUDA device is available (use --device cpu --shape tiny)")
    shape, mask_id, eos_id = SHAPES[args.shape]
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    t0 = time.perf_counter()
    model = build(shape, args.device, dtype)
    result = dict(device_name=device_name, shape=args.shape, dtype=str(dtype).replace("torch.", ""),
                  prompt=args.prompt, block=args.block, steps=args.steps, warmup=args.warmup,
                  mask_id=mask_id, eos_id=eos_id, paper_tpf=PAPER_TPF, torch=torch.__version__,
                  load_average=os.getloadavg()[0])
    result["rows"] = run_shape(model, args, mask_id, eos_id, args.device)
    result["fp8"] = ({"skipped": "--no-fp8"} if args.no_fp8 else fp8_section(model, args, mask_id, eos_id, args.device))
    del model
    if args.no_exactness:
        result["exactness"] = {"skipped": "--no-exactness"}
    elif not args.device.startswith("cuda") and not args.exactness:
        result["exactness"] = {"skipped": "CPU run (pass --exactness; `redraft conformance ../shared/parity` "
                                          "checks the same on CPU)"}
    else:
        result["exactness"] = exactness(args.device)
    slug = "".join(ch if ch.isalnum() else "_" for ch in device_name.lower()).strip("_")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.moonshot == "on" or (args.moonshot == "auto" and args.device.startswith("cuda") and not tiny):
        result["moonshot"] = moonshot(args, out / f"fp8_gpu_{slug}.json")
    result["seconds"] = time.perf_counter() - t0
    name = f"gpu_suite_{slug}" + ("_tiny" if tiny else "")
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    (out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {out / name}.json and .md ({result['seconds']:.0f} s)")
    return 0 if result["exactness"].get("all_equal", True) else 1


if __name__ == "__main__":
    sys.exit(main())
