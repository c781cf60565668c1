"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand: counters, gauges, histograms.

Thread-safe (the engine loop thread and the HTTP event loop both record). `ServingMetrics` names what the server
exports; `render()` gives the /metrics body.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    esc = lambda v: v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')  # noqa: E731
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels) + "}"


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, lock: threading.Lock):
        self.name, self.help, self._lock = name, help, lock

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, lock: threading.Lock):
        super().__init__(name, help, lock)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"Counter.inc amount must be >= 0, got {amount}")
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(tuple(sorted(labels.items())), 0.0)

    def lines(self) -> list[str]:
        values = self._values or {(): 0.0}
        return self.header() + [f"{self.name}{_labels(k)} {_num(v)}" for k, v in sorted(values.items())]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help: str, lock: threading.Lock):
        super().__init__(name, help, lock)
        self._value = 0.0

    def set(self, value: float) -> None:
        with self._lock:
            self._value = float(value)

    def value(self) -> float:
        with self._lock:
            return self._value

    def lines(self) -> list[str]:
        return self.header() + [f"{self.name} {_num(self._value)}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, lock: threading.Lock, buckets: Sequence[float]):
        super().__init__(name, help, lock)
        self.buckets = sorted(float(b) for b in buckets)
        self._counts = [0] * (len(self.buckets) + 1)  # last: above every bucket (+Inf only)
        self._sum = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sum += value
            self._count += 1

    def count(self) -> int:
        with self._lock:
            return self._count

    def lines(self) -> list[str]:
        out, running = self.header(), 0
        for bound, n in zip(self.buckets + [math.inf], self._counts):
            running += n
            out.append(f'{self.name}_bucket{{le="{_num(bound)}"}} {running}')
        return out + [f"{self.name}_sum {_num(self._sum)}", f"{self.name}_count {self._count}"]


_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServingMetrics:
    """Everything /metrics exports."""

    def __init__(self) -> None:
        lock = self._lock = threading.Lock()
        self.requests = Counter("redraft_requests_total", "Finished generation requests by endpoint and finish "
                                "reason.", lock)
        self.errors = Counter("redraft_request_errors_total", "Requests answered with an error, by HTTP status.", lock)
        self.cancelled = Counter("redraft_cancelled_total", "Choices cancelled (client gone, shutdown).", lock)
        self.prompt_tokens = Counter("redraft_prompt_tokens_total", "Prompt tokens of finished requests.", lock)
        self.generation_tokens = Counter("redraft_generation_tokens_total", "Generated tokens of finished choices.",
                                         lock)
        self.steps = Counter("redraft_engine_steps_total", "Engine steps (at most one model forward each).", lock)
        self.row_forwards = Counter("redraft_row_forwards_total", "Forwards summed over finished choices (NFE).",
                                    lock)
        self.queue_depth = Gauge("redraft_queue_depth", "Requests waiting to join the running batch.", lock)
        self.batch_size = Gauge("redraft_batch_size", "Rows in the running batch after the last step.", lock)
        self.tpf = Histogram("redraft_tokens_per_forward", "Tokens per forward of finished choices.", lock,
                             (0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32))
        self.latency = Histogram("redraft_request_latency_seconds", "Time from arrival to the last token.", lock,
                                 _LATENCY)
        self.ttft = Histogram("redraft_time_to_first_token_seconds", "Time from arrival to the first streamed "
                              "text.", lock, _LATENCY)
        self.step_time = Histogram("redraft_engine_step_seconds", "Duration of one engine step.", lock,
                                   (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.prefix_lookups = Counter("redraft_prefix_cache_lookups_total", "Joining requests looked up in the "
                                      "prefix cache.", lock)
        self.prefix_hits = Counter("redraft_prefix_cache_hits_total", "Joining requests that reused stored prompt "
                                   "K/V.", lock)
        self.prefix_reused_tokens = Counter("redraft_prefix_cache_reused_tokens_total", "Prompt tokens whose K/V "
                                            "were reused instead of recomputed.", lock)
        self.prefix_evictions = Counter("redraft_prefix_cache_evictions_total", "Stored prefixes recycled (LRU).",
                                        lock)
        self._all = [self.requests, self.errors, self.cancelled, self.prompt_tokens, self.generation_tokens, self.steps,
                     self.row_forwards, self.queue_depth, self.batch_size, self.tpf, self.latency, self.ttft,
                     self.step_time, self.prefix_lookups, self.prefix_hits, self.prefix_reused_tokens,
                     self.prefix_evictions]

    def render(self) -> str:
        with self._lock:
            return "\n".join(line for m in self._all for line in m.lines()) + "\n"
