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
  (i) `pytest tests/test_model_gpu.py` in a subprocess (CUDA only unless `--tests on`): passed / failed / skipped.
Writes `benchmarks/results/gpu_suite_<device>.json` and a Markdown table beside it (`.md`) after every section, so a
run cut short (a device command's time limit) still leaves what it measured (`"complete": false`). A section that
fails (an out-of-memory at batch 64, a kernel error) is recorded with its error and the suite goes on; with
`--budget-s` a section that would start after that many seconds is skipped and said so. Exit status: 3 when (g)
finds a mismatch, 2 when a section failed, else 0 (1: Python's own, an uncaught error). The order puts the cheap,
decisive check first: (g), then (a)-(e), (f), (h), (i). On a lent device: `bash scripts/gpu_check.sh` (see there).

    python benchmarks/gpu_suite.py                              # CUDA, mini shape, batch 1/4/16/64 (< 8 min, H100/H200)
    python benchmarks/gpu_suite.py --shape tiny --device cpu    # the same code on CPU at a small shape (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the checkout's redraft, installed or not (a device)
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


def error_record(e: BaseException) -> dict:
    """What a failed section or row leaves in the JSON: the error and the end of its traceback."""
    return {"error": f"{type(e).__name__}: {e}"[:2000], "traceback": traceback.format_exc()[-3000:]}


def free_device_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def run_shape(model, args, mask_id: int, eos_id: int, device: str, run: "SuiteRun | None" = None,
              publish: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """(a)-(e) for each batch size; a batch that fails (out of memory, ...) leaves its error and the next one runs; a
    batch that would start after `run`'s time budget is skipped. `publish(rows)` after every batch (the suite
    rewrites its JSON)."""
    rows: list[dict] = []
    for batch in args.batch_sizes:
        if run is not None and run.out_of_time():
            rows.append(dict(batch=batch, skipped=f"time budget ({run.budget_s:.0f} s) spent"))
        else:
            try:
                fwd = forward_ms(model, batch, args.prompt, args.block, args.forward_iters, device)
                step = engine_steps(model, batch, args.prompt, args.block, args, mask_id, eos_id, device)
                rows.append(dict(batch=batch, forward_ms=fwd, step_over_forward=step["step_ms_median"] / fwd, **step))
                print(f"batch {batch:3d}: forward {fwd:8.2f} ms | step median {step['step_ms_median']:8.2f} ms, p90 "
                      f"{step['step_ms_p90']:8.2f} ms | gpu {step['gpu_ms']} ms | peak {step['peak_memory_gib']} GiB",
                      flush=True)
            except Exception as e:  # noqa: BLE001 -- recorded, the other batch sizes still run
                rows.append(dict(batch=batch, **error_record(e)))
                print(f"batch {batch:3d}: FAILED {type(e).__name__}: {e}", flush=True)
        free_device_memory(device)
        if publish is not None:
            publish(rows)
    return rows


def fp8_section(model, args, mask_id: int, eos_id: int, device: str, run: "SuiteRun | None" = None) -> dict:
    """(f): the same rows with the routed experts in per-block FP8 (`redraft.model.fp8.quantize_model`, in place)."""
    from redraft.model.fp8 import quantize_model

    try:
        qmodel = quantize_model(model, "fp8")
    except Exception as e:  # a device or dtype FP8 does not support: report, do not stop the suite
        return {"skipped": f"quantize_model failed: {type(e).__name__}: {e}"}
    entry = "redraft.model.fp8.quantize_model(model, 'fp8')"
    publish = None if run is None else (lambda rows: run.update(fp8={"entry_point": entry, "rows": rows}))
    return {"entry_point": entry, "rows": run_shape(qmodel, args, mask_id, eos_id, device, run, publish)}


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
    """The result as Markdown; a partial result (a run still going or cut short) shows what it has."""
    lines = [f"# GPU suite: {result['device_name']}, {result['shape']} shape, {result['dtype']}",
             "", f"Prompt {result['prompt']} tokens, block {result['block']}, {result['steps']} timed steps after "
             f"{result['warmup']} warm-up steps. Projected tok/s = B x TPF / step (paper TPF: S {PAPER_TPF['S']}, "
             f"Q {PAPER_TPF['Q']}) is a projection, not a measurement.", ""]
    if not result.get("complete", True):
        lines += [f"**Partial result** (the run had not finished after {result.get('seconds', 0):.0f} s).", ""]
    if result.get("failed"):
        lines += ["Failed: " + ", ".join(result["failed"]), ""]

    def not_run(section) -> str | None:
        """Why a section has no numbers (None when it has them)."""
        if section is None:
            return "not reached"
        if isinstance(section, dict) and "error" in section:
            return f"FAILED: {section['error']}"
        if isinstance(section, dict) and "skipped" in section:
            return f"Skipped: {section['skipped']}"
        return None

    def table(rows) -> None:
        if not_run(rows):
            lines.append(not_run(rows))
            return
        lines.append("| batch | forward ms | step ms (median) | step ms (p90) | step / forward | GPU ms | host ms | "
                     "peak GiB | projected tok/s S | projected tok/s Q |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
        for r in rows:
            if "error" in r or "skipped" in r:
                lines.append(f"| {r['batch']} | {not_run(r)} |" + " |" * 8)
                continue
            lines.append(f"| {r['batch']} | {f(r['forward_ms'])} | {f(r['step_ms_median'])} | {f(r['step_ms_p90'])} | "
                         f"{f(r['step_over_forward'])} | {f(r['gpu_ms'])} | {f(r['host_ms'])} | "
                         f"{f(r['peak_memory_gib'])} | {f(r['projected_tok_s']['S'], 0)} | "
                         f"{f(r['projected_tok_s']['Q'], 0)} |")

    table(result.get("rows"))
    fp8 = result.get("fp8")
    lines += ["", "## FP8", ""]
    table(fp8["rows"] if isinstance(fp8, dict) and "rows" in fp8 else fp8)
    ex = result.get("exactness")
    lines += ["", "## Exactness (float32 on the device)", ""]
    if not_run(ex):
        lines.append(not_run(ex))
    else:
        lines.append(f"Engine (cache) == its no-cache run on all {len(ex['cases'])} parity generate cases: "
                     f"**{ex['all_equal']}**; == official tokens: **{ex['all_official']}**.")
        lines += [f"- {name}: cache==no-cache {v['cache_equals_no_cache']}, official {v['equals_official']}"
                  for name, v in ex["cases"].items() if not (v["cache_equals_no_cache"] and v["equals_official"])]
    if "moonshot" in result:
        mo = result["moonshot"]
        lines += ["", "## (h) FP8 weights vs bf16, and the flash shape with FP8 experts on one device (fp8_gpu.py)", ""]
        if not_run(mo):
            lines.append(not_run(mo))
        else:
            lines += ["| shape | weights | batch | ms / forward | weight GB | compute |", "|---|---|---|---|---|---|"]
            lines += [f"| {r['shape']} | {r['weights']} | {r['batch']} | {r['ms_per_forward']:.2f} | "
                      f"{r['weight_bytes'] / 1e9:.2f} | {r['compute']} |" for r in mo["rows"]]
    if "gpu_tests" in result:
        gt = result["gpu_tests"]
        lines += ["", "## (i) tests/test_model_gpu.py", ""]
        if "counts" in gt:
            c = gt["counts"]
            lines.append(f"{c['passed']} passed, {c['failures']} failed, {c['errors']} errors, {c['skipped']} skipped "
                         f"(`python {gt['command']}`).")
        if not_run(gt):
            lines.append(not_run(gt))
    return "\n".join(lines) + "\n"


def subprocess_env() -> dict:
    """The environment of the suite's subprocesses: this checkout's redraft importable without an install."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def moonshot(args, json_path: Path, timeout_s: float = 420) -> dict:
    """(h) `benchmarks/fp8_gpu.py --moonshot` in its own process (the mini model's memory is gone; a crash or an
    out-of-memory there does not lose the rows above)."""
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    cmd = [sys.executable, str(REPO / "benchmarks" / "fp8_gpu.py"), "--moonshot", "--scopes", "fp8",
           "--device", args.device, "--json", str(json_path)] + (["--shape", "tiny"] if args.shape == "tiny" else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=subprocess_env())
    if proc.returncode != 0 or not json_path.exists():
        return {"error": f"fp8_gpu.py exited {proc.returncode}", "stderr": proc.stderr[-3000:]}
    return {"command": " ".join(cmd[1:]), **json.loads(json_path.read_text())}


def gpu_tests(junit: Path, timeout_s: float, tests: str = "tests/test_model_gpu.py") -> dict:
    """(i) the GPU tests under pytest in a subprocess (on a device the parity copy comes through REDRAFT_PARITY):
    the counts from its JUnit XML and the end of its output."""
    import xml.etree.ElementTree as ET

    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", tests, f"--junitxml={junit}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO, env=subprocess_env())
    except subprocess.TimeoutExpired as e:
        tail = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return {"error": f"pytest timed out after {timeout_s:.0f} s", "output_tail": tail[-3000:]}
    out = {"command": " ".join(cmd[1:]), "exit_status": proc.returncode,
           "output_tail": (proc.stdout + proc.stderr)[-3000:]}
    if junit.exists():
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        out["counts"] = dict(counts, passed=counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"])
    if proc.returncode not in (0, 5):  # 5: no test collected (not a failure of the code)
        out["error"] = f"pytest exited {proc.returncode}"
    return out


class SuiteRun:
    """The suite's result as it grows: every section through `section` (its error recorded, the time budget
    checked), the JSON and Markdown rewritten after each one."""

    def __init__(self, result: dict, out: Path, name: str, budget_s: float | None):
        self.result, self.budget_s, self.t0 = result, budget_s, time.perf_counter()
        self.json_path, self.md_path = out / f"{name}.json", out / f"{name}.md"
        self.failed: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def remaining(self) -> float:
        return float("inf") if self.budget_s is None else self.budget_s - self.elapsed()

    def out_of_time(self) -> bool:
        return self.remaining() <= 0

    def update(self, **items) -> None:
        self.result.update(items)
        self.save()

    def section(self, key: str, fn: Callable[[], dict | list]) -> None:
        """result[key] = fn(), or its error (the suite goes on), or a skip note once the budget is spent."""
        if self.out_of_time():
            self.update(**{key: {"skipped": f"time budget ({self.budget_s:.0f} s) spent"}})
            return
        print(f"== {key} ({self.elapsed():.0f} s)", flush=True)
        try:
            value = fn()
        except Exception as e:  # noqa: BLE001 -- recorded; the remaining sections still run
            print(f"{key}: FAILED {type(e).__name__}: {e}", flush=True)
            value = error_record(e)
        if isinstance(value, dict):
            self.failed += [key] if "error" in value else []
            self.failed += [f"{key}[batch {r['batch']}]" for r in value.get("rows", []) if "error" in r]
        else:
            self.failed += [f"{key}[batch {r['batch']}]" for r in value if "error" in r]
        self.update(**{key: value})

    def save(self, complete: bool = False) -> None:
        self.result.update(complete=complete, seconds=self.elapsed(), failed=self.failed)
        self.json_path.write_text(json.dumps(self.result, indent=2))
        self.md_path.write_text(markdown(self.result))


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
    ap.add_argument("--tests", choices=["auto", "on", "off"], default="auto",
                    help="(i) pytest tests/test_model_gpu.py in a subprocess (auto: on CUDA)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="skip any section or batch size that would start after this many seconds (a device "
                         "command's limit); what ran is kept")
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
    if args.budget_s is not None and args.budget_s <= 0:
        raise ValueError(f"--budget-s must be positive, got {args.budget_s}")
    is_cuda = args.device.startswith("cuda")
    shape, mask_id, eos_id = SHAPES[args.shape]
    dtype = torch.bfloat16 if is_cuda else torch.float32
    device_name = torch.cuda.get_device_name(args.device) if is_cuda else "cpu"
    slug = "".join(ch if ch.isalnum() else "_" for ch in device_name.lower()).strip("_")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"gpu_suite_{slug}" + ("_tiny" if tiny else "")
    run = SuiteRun(dict(device_name=device_name, shape=args.shape, dtype=str(dtype).replace("torch.", ""),
                        prompt=args.prompt, block=args.block, steps=args.steps, warmup=args.warmup,
                        mask_id=mask_id, eos_id=eos_id, paper_tpf=PAPER_TPF, torch=torch.__version__,
                        load_average=os.getloadavg()[0], budget_s=args.budget_s),
                   out, name, args.budget_s)
    # (g) first: small (the parity model), and the check every new path must pass
    if args.no_exactness:
        run.update(exactness={"skipped": "--no-exactness"})
    elif not is_cuda and not args.exactness:
        run.update(exactness={"skipped": "CPU run (pass --exactness; `redraft conformance ../shared/parity` "
                                         "checks the same on CPU)"})
    else:
        run.section("exactness", lambda: exactness(args.device))
    model = None

    def rows() -> list[dict]:
        nonlocal model
        model = build(shape, args.device, dtype)
        return run_shape(model, args, mask_id, eos_id, args.device, run, publish=lambda r: run.update(rows=r))

    run.section("rows", rows)
    if args.no_fp8:
        run.update(fp8={"skipped": "--no-fp8"})
    elif model is None:
        run.update(fp8={"skipped": "no model (building it failed, see rows)"})
    else:
        run.section("fp8", lambda: fp8_section(model, args, mask_id, eos_id, args.device, run))
    model = None  # the mini model's memory goes before (h) builds the flash shape
    free_device_memory(args.device)
    if args.moonshot == "on" or (args.moonshot == "auto" and is_cuda and not tiny):
        run.section("moonshot", lambda: moonshot(args, out / f"fp8_gpu_{slug}.json",
                                                 timeout_s=min(420.0, max(run.remaining(), 30.0))))
    if args.tests == "on" or (args.tests == "auto" and is_cuda):
        run.section("gpu_tests", lambda: gpu_tests(out / f"{name}_tests.xml", min(600.0, max(run.remaining(), 60.0))))
    run.save(complete=True)
    print(markdown(run.result))
    print(f"wrote {run.json_path} and .md ({run.elapsed():.0f} s)")
    exact = run.result["exactness"]
    if isinstance(exact, dict) and exact.get("all_equal") is False:
        return 3
    return 2 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
