"""`EngineLoop` slot accounting with a scripted engine (no model): every accepted choice releases its slot exactly
once, whichever way it ends (finished, cancelled in the inbox or in the engine, rejected, lost by the engine, engine
failure), and the cancelled counter counts each cancelled choice once."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from redraft.decoding import DecodeConfig, DecodeStats, GenerationResult, StepEvent
from redraft.serving.loop import EngineLoop, Failure, QueueFull, Sink, Submission
from redraft.serving.metrics import ServingMetrics


class ScriptedEngine:
    """Each added request finishes after `steps` steps (or at the next step once cancelled); `lose` names requests
    it forgets without an event (an engine bug), `reject` ones `add_request` refuses, `explode` a step that raises."""

    def __init__(self, steps: int = 3, lose: set[str] = frozenset(), reject: set[str] = frozenset(),
                 explode: bool = False):
        self.steps, self.lose, self.reject, self.explode = steps, set(lose), set(reject), explode
        self.rows: dict[str, dict] = {}
        self.scheduler = SimpleNamespace(num_running=0, waiting=[])

    def add_request(self, prompt, config, request_id):
        if request_id in self.reject:
            raise ValueError(f"rejected {request_id}")
        self.rows[request_id] = {"left": self.steps, "reason": None}

    def cancel(self, request_id):
        self.rows[request_id]["reason"] = "cancelled"

    def has_work(self) -> bool:
        return bool(self.rows)

    def step(self) -> list[StepEvent]:
        if self.explode:
            raise RuntimeError("boom")
        events = []
        for rid in list(self.rows):
            row = self.rows[rid]
            row["left"] -= 1
            if rid in self.lose:
                del self.rows[rid]
                continue
            if row["reason"] or row["left"] <= 0:
                del self.rows[rid]
                reason = row["reason"] or "length"
                events.append(StepEvent(rid, [1], "x", True, GenerationResult(rid, [1], "x", reason, DecodeStats())))
            else:
                events.append(StepEvent(rid, [1], "x", False, None))
        return events


async def _run(engine, ids, cancel: list[str] = (), max_in_flight: int = 8):
    metrics = ServingMetrics()
    loop = EngineLoop(engine, max_in_flight, metrics)
    sink = Sink()
    loop.submit([Submission(rid, [1, 2], DecodeConfig(), sink) for rid in ids])
    loop.cancel(list(cancel))  # before the loop thread runs: still in the inbox
    loop.start()
    last = {}
    while len(last) < len(set(ids) - set(cancel)):
        item = await asyncio.wait_for(sink.queue.get(), 10)
        if isinstance(item, Failure) or item.finished:
            last[item.request_id] = item
    await asyncio.to_thread(loop.stop, 5)
    return loop, metrics, last


def test_every_way_out_releases_the_slot_once():
    engine = ScriptedEngine(lose={"lost"}, reject={"bad"})
    loop, metrics, last = asyncio.run(_run(engine, ["a", "b", "lost", "bad", "gone"], cancel=["gone"]))
    assert loop.num_in_flight == 0
    assert last["a"].result.finish_reason == "length" and last["b"].result.finish_reason == "length"
    assert isinstance(last["bad"], Failure) and last["bad"].status == 400
    assert isinstance(last["lost"], Failure) and last["lost"].status == 500
    assert metrics.cancelled.value() == 1  # "gone", cancelled before it reached the engine


def test_cancel_in_the_engine_is_counted_once():
    async def run():
        metrics = ServingMetrics()
        loop = EngineLoop(ScriptedEngine(steps=10_000), 2, metrics)
        sink = Sink()
        loop.start()
        loop.submit([Submission("a", [1], DecodeConfig(), sink), Submission("b", [1], DecodeConfig(), sink)])
        with pytest.raises(QueueFull):
            loop.submit([Submission("c", [1], DecodeConfig(), sink)])
        await asyncio.wait_for(sink.queue.get(), 10)  # running
        loop.cancel(["a", "b"])
        loop.cancel(["a", "b"])  # twice: still one release each
        done = set()
        while len(done) < 2:
            item = await asyncio.wait_for(sink.queue.get(), 10)
            if item.finished:
                done.add(item.request_id)
                assert item.result.finish_reason == "cancelled"
        assert loop.num_in_flight == 0
        await asyncio.to_thread(loop.stop, 5)
        return metrics

    assert asyncio.run(run()).cancelled.value() == 2


def test_engine_failure_releases_everything():
    loop, _, last = asyncio.run(_run(ScriptedEngine(explode=True), ["a", "b"]))
    assert loop.num_in_flight == 0 and not loop.is_alive
    assert {f.status for f in last.values()} == {500}
