"""Load test of `redraft serve`: N concurrent streaming clients for a bounded time against a real server subprocess.

Every request is deterministic (greedy, or sampled with a per-request seed), so nothing can be lost or garbled
silently: each stream must be well-formed SSE (valid JSON chunks, one id, one finish_reason per choice, a usage
chunk, `[DONE]` last), and after the timed phase every distinct request is sent once more without streaming; each
streamed text must equal that non-streamed text. Half of the chat requests share a long system prompt (prefix
reuse). Reports requests/s, completion tokens/s, p50/p99 latency and time to first content chunk, plus the server's
own counters from /metrics (they cover the whole run, the reference pass included).

    python benchmarks/serve_load.py --quick
    nice python benchmarks/serve_load.py --clients 16 --seconds 60 --json benchmarks/results/serve_load_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from redraft.serving.commands import DEFAULT_MODEL
from redraft.serving.testing import running_server

SYSTEM = ("You are a careful assistant for a small software team. Answer in plain English, keep answers short, "
          "prefer concrete examples over theory, never invent facts, and say so when you do not know something. "
          "When asked for code, give Python 3 with type hints and a one-line docstring.")
QUESTIONS = ["What is a list comprehension?", "Write a function that reverses a string.", "Why use type hints?",
             "Explain recursion with an example.", "What does a context manager do?", "How do I read a file?",
             "Sort a list of tuples by the second item.", "What is the difference between a tuple and a list?"]
CODE_PROMPTS = [f"def {name}(xs: list[int]) -> int:\n    \"\"\"{doc}\"\"\"\n" for name, doc in (
    ("total", "Sum of xs."), ("largest", "The largest element."), ("count_even", "How many even numbers."),
    ("mean", "Arithmetic mean, 0 for an empty list."), ("second", "The second smallest element."))]


@dataclass(frozen=True)
class Spec:
    """One distinct request (the load cycles through them)."""

    endpoint: str              # "completions" | "chat"
    prompt: str
    system: bool               # chat: with the shared system prompt
    seed: int | None           # None = greedy

    def body(self, max_tokens: int, mode: str, stream: bool) -> dict:
        body: dict = {"model": "served", "max_tokens": max_tokens, "mode": mode, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if self.seed is not None:
            body |= {"temperature": 0.8, "top_p": 0.95, "seed": self.seed}
        if self.endpoint == "chat":
            msgs = [{"role": "system", "content": SYSTEM}] if self.system else []
            body["messages"] = msgs + [{"role": "user", "content": self.prompt}]
        else:
            body["prompt"] = self.prompt
        return body


def request_specs() -> list[Spec]:
    specs = [Spec("chat", q, system=i % 2 == 0, seed=None if i % 4 else 100 + i) for i, q in enumerate(QUESTIONS)]
    specs += [Spec("completions", p, system=False, seed=None if i % 3 else 200 + i) for i, p in enumerate(CODE_PROMPTS)]
    return specs


@dataclass
class Record:
    spec: int
    ok: bool
    latency: float
    ttfc: float | None         # time to the first content chunk
    tokens: int
    text: str
    error: str = ""


@dataclass
class Report:
    model: str
    clients: int
    seconds: float
    max_tokens: int
    mode: str
    elapsed_s: float = 0.0
    requests: int = 0
    errors: int = 0
    mismatches: int = 0
    checked: int = 0
    requests_per_s: float = 0.0
    tokens_per_s: float = 0.0
    latency_p50_s: float = 0.0
    latency_p99_s: float = 0.0
    ttfc_p50_s: float = 0.0
    ttfc_p99_s: float = 0.0
    mean_tokens: float = 0.0
    server: dict = field(default_factory=dict)
    first_errors: list = field(default_factory=list)
    host: dict = field(default_factory=dict)


def _path(spec: Spec) -> str:
    return "/v1/chat/completions" if spec.endpoint == "chat" else "/v1/completions"


async def stream_one(http: httpx.AsyncClient, spec: Spec, index: int, max_tokens: int, mode: str) -> Record:
    """One streaming request, parsed and checked strictly (any protocol violation is an error)."""
    start = time.perf_counter()
    ttfc, parts, usage, reasons, ids, done = None, [], None, [], set(), False
    try:
        async with http.stream("POST", _path(spec), json=spec.body(max_tokens, mode, True)) as r:
            if r.status_code != 200:
                return Record(index, False, 0, None, 0, "", f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
            async for line in r.aiter_lines():
                if not line:
                    continue
                if not line.startswith("data: ") or done:
                    raise ValueError(f"unexpected SSE line {line[:120]!r}")
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    continue
                chunk = json.loads(data)
                if "error" in chunk:
                    raise ValueError(f"error event {chunk['error']}")
                ids.add(chunk["id"])
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for c in chunk["choices"]:
                    if c["index"] != 0:
                        raise ValueError(f"choice index {c['index']}")
                    text = c["delta"].get("content", "") if spec.endpoint == "chat" else c["text"]
                    if text:
                        ttfc = ttfc if ttfc is not None else time.perf_counter() - start
                        parts.append(text)
                    if c["finish_reason"] is not None:
                        reasons.append(c["finish_reason"])
        if not done or len(ids) != 1 or len(reasons) != 1 or usage is None:
            raise ValueError(f"incomplete stream: done={done} ids={len(ids)} finish_reasons={reasons} "
                             f"usage={usage is not None}")
    except (httpx.HTTPError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        return Record(index, False, time.perf_counter() - start, ttfc, 0, "", f"{type(e).__name__}: {e}")
    return Record(index, True, time.perf_counter() - start, ttfc, usage["completion_tokens"], "".join(parts))


async def reference(http: httpx.AsyncClient, spec: Spec, max_tokens: int, mode: str) -> str:
    r = await http.post(_path(spec), json=spec.body(max_tokens, mode, False))
    r.raise_for_status()
    choice = r.json()["choices"][0]
    return choice["message"]["content"] if spec.endpoint == "chat" else choice["text"]


async def load(base_url: str, clients: int, seconds: float, max_tokens: int, mode: str,
               specs: list[Spec]) -> tuple[list[Record], float, dict[int, str]]:
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(600.0), limits=limits) as http:
        records: list[Record] = []
        start = time.perf_counter()
        deadline = start + seconds

        async def client(c: int) -> None:
            i = c
            while time.perf_counter() < deadline:  # a request started before the deadline runs to its end
                records.append(await stream_one(http, specs[i % len(specs)], i % len(specs), max_tokens, mode))
                i += clients

        await asyncio.gather(*(client(c) for c in range(clients)))
        elapsed = time.perf_counter() - start
        used = sorted({r.spec for r in records})
        refs = await asyncio.gather(*(reference(http, specs[i], max_tokens, mode) for i in used))
    return records, elapsed, dict(zip(used, refs))


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1]


def server_counters(base_url: str) -> dict[str, float]:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    out: dict[str, float] = {}
    for name in ("redraft_engine_steps_total", "redraft_row_forwards_total", "redraft_generation_tokens_total",
                 "redraft_prefix_cache_hits_total", "redraft_prefix_cache_reused_tokens_total",
                 "redraft_prefix_cache_lookups_total", "redraft_cancelled_total", "redraft_engine_step_seconds_sum",
                 "redraft_engine_step_seconds_count"):
        values = re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        if values:
            out[name.removeprefix("redraft_")] = sum(float(v) for v in values)
    if out.get("engine_step_seconds_count"):
        out["mean_step_ms"] = round(1000 * out["engine_step_seconds_sum"] / out["engine_step_seconds_count"], 2)
    if out.get("engine_steps_total"):
        out["mean_rows_per_step"] = round(out.get("row_forwards_total", 0) / out["engine_steps_total"], 2)
    return out


def summarise(report: Report, records: list[Record], elapsed: float, refs: dict[int, str]) -> Report:
    good = [r for r in records if r.ok]
    report.requests, report.errors = len(records), len(records) - len(good)
    report.first_errors = [r.error for r in records if not r.ok][:5]
    bad = [r for r in good if r.text != refs[r.spec]]
    report.checked, report.mismatches = len(good), len(bad)
    report.first_errors += [f"spec {r.spec}: streamed {r.text[:60]!r} != {refs[r.spec][:60]!r}" for r in bad[:5]]
    report.elapsed_s = round(elapsed, 2)
    report.requests_per_s = len(good) / elapsed
    report.tokens_per_s = sum(r.tokens for r in good) / elapsed
    lat = [r.latency for r in good]
    ttfc = [r.ttfc for r in good if r.ttfc is not None]
    report.latency_p50_s, report.latency_p99_s = _pct(lat, 50), _pct(lat, 99)
    report.ttfc_p50_s, report.ttfc_p99_s = _pct(ttfc, 50), _pct(ttfc, 99)
    report.mean_tokens = statistics.fmean([r.tokens for r in good]) if good else 0.0
    return report


def show(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"redraft serve load: {report.clients} streaming clients, {report.elapsed_s} s, "
                    f"max_tokens {report.max_tokens}, mode {report.mode}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [("requests (ok / errors)", f"{report.requests - report.errors} / {report.errors}"),
            ("streamed == non-streamed", f"{report.checked - report.mismatches} / {report.checked}"),
            ("requests/s", f"{report.requests_per_s:.2f}"), ("completion tokens/s", f"{report.tokens_per_s:.1f}"),
            ("mean completion tokens", f"{report.mean_tokens:.1f}"),
            ("latency p50 / p99 (s)", f"{report.latency_p50_s:.3f} / {report.latency_p99_s:.3f}"),
            ("first chunk p50 / p99 (s)", f"{report.ttfc_p50_s:.3f} / {report.ttfc_p99_s:.3f}")]
    rows += [(f"server {k}", f"{v:g}") for k, v in report.server.items()]
    for k, v in rows:
        t.add_row(k, v)
    Console().print(t)
    for e in report.first_errors:
        Console().print(f"[red]{e}[/red]")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint directory (default: the bundled model)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60.0, help="time during which clients start new requests")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--mode", choices=["quality", "speedy"], default="quality")
    p.add_argument("--quick", action="store_true", help="4 clients, 10 s, 32 tokens (a smoke run)")
    p.add_argument("--server-arg", action="append", default=[], help="extra `redraft serve` argument (repeat)")
    p.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.seconds, args.max_tokens = 4, 10.0, 32
    for name in ("clients", "max_tokens"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    server_args = ["--model-name", "served", "--max-batch-size", str(max(args.clients, 1)), *args.server_arg]
    report = Report(model=str(args.model), clients=args.clients, seconds=args.seconds, max_tokens=args.max_tokens,
                    mode=args.mode, host={"python": platform.python_version(), "machine": platform.machine(),
                                          "argv": sys.argv[1:]})
    report.host["loadavg_start"] = list(os.getloadavg())
    with running_server(args.model, server_args) as server:
        records, elapsed, refs = asyncio.run(load(server.base_url, args.clients, args.seconds, args.max_tokens,
                                                  args.mode, request_specs()))
        report.server = server_counters(server.base_url)
    report.host["loadavg_end"] = list(os.getloadavg())
    report.host["cpus"] = os.cpu_count()
    summarise(report, records, elapsed, refs)
    show(report)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0 if report.errors == 0 and report.mismatches == 0 and report.requests > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
