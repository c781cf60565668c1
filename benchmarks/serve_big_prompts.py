"""/health latency while big prompts are in flight (issue 14): N requests with ~1 MB prompts (over the character
bound: rejected without tokenizing) and N with prompts just under it (tokenized in worker threads without the GIL,
then rejected by the token limit), in process over ASGI. Side by side in one run: the server as shipped, and the
same server with the two protections switched off (no character bound, `encode` holding the GIL), the behaviour
before the fix. Latency = a probe's answer plus how late the event loop woke from a 10 ms sleep after it.

    python benchmarks/serve_big_prompts.py --quick
    nice python benchmarks/serve_big_prompts.py --requests 6 --json benchmarks/results/serve_big_prompts_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import tempfile
import time

import httpx
import torch

from redraft.model.testing import make_tiny_checkpoint
from redraft.serving import create_app


def measure(checkpoint, requests: int, protected: bool) -> dict:
    app = create_app(checkpoint, model_name="tiny", max_body_bytes=2 << 20)
    state = app.state.server
    limits = state.limits
    unit = "def f(x):\n    return x + 1\n"
    near = unit * (limits.max_prompt_chars // len(unit))
    huge = "y" * ((1 << 20) - 100)
    if not protected:
        state.limits = dataclasses.replace(limits, max_token_chars=None)
        tok = state.tokenizer
        tok.encode_batch = lambda texts: [tok.encode(t) for t in texts]

    async def run() -> tuple[list[float], list[int], float]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:
                async def big(prompt: str) -> int:
                    r = await client.post("/v1/completions", json={"model": "tiny", "prompt": prompt,
                                                                   "max_tokens": 2})
                    return r.status_code

                start = time.perf_counter()
                tasks = [asyncio.ensure_future(big(p)) for p in [huge] * requests + [near] * requests]
                latencies = []
                while not all(t.done() for t in tasks):
                    t0 = time.perf_counter()
                    await client.get("/health")
                    await asyncio.sleep(0.01)
                    latencies.append(time.perf_counter() - t0 - 0.01)
                return latencies, [t.result() for t in tasks], time.perf_counter() - start

    latencies, statuses, total = asyncio.run(run())
    latencies.sort()
    return {"server": "as shipped" if protected else "no bound, GIL held", "probes": len(latencies),
            "health_p50_ms": 1000 * latencies[len(latencies) // 2],
            "health_p90_ms": 1000 * latencies[int(0.9 * len(latencies))],
            "health_max_ms": 1000 * latencies[-1], "big_requests_s": total, "statuses": sorted(set(statuses))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=6, help="requests of each kind (huge, near the bound)")
    ap.add_argument("--quick", action="store_true", help="2 requests of each kind")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args()
    n = 2 if args.quick else args.requests
    torch.set_num_threads(1)
    checkpoint = make_tiny_checkpoint(tempfile.mkdtemp(), seed=0)
    rows = [measure(checkpoint, n, protected) for protected in (True, False)]
    print(f"{2 * n} big requests in flight (load average {os.getloadavg()[0]:.1f})")
    print(f"{'server':22} {'probes':>6} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>9} {'requests s':>10}")
    for r in rows:
        print(f"{r['server']:22} {r['probes']:>6} {r['health_p50_ms']:>8.1f} {r['health_p90_ms']:>8.1f} "
              f"{r['health_max_ms']:>9.1f} {r['big_requests_s']:>10.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"requests_each": n, "load_average": os.getloadavg()[0], "machine": platform.machine(),
                       "cpus": os.cpu_count(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
