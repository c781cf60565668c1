"""`redraft serve MODEL --tp N [--ep]`: the OpenAI server over a tensor-/expert-parallel model (SPMD).

Rank 0 runs the HTTP server, the engine loop and the scheduler, with a `MirroredEngine`: before each step it
broadcasts the joins and cancels made since the last step (`broadcast_object_list` on a gloo control group). Every
other rank runs `follow`: the same engine, the same joins and cancels, the same `step()`, so the model's collectives
line up and every rank decides the same tokens. The control group waits without a time limit (an idle server is
fine); the model's collectives keep the launch timeout, so a dead rank makes a step fail instead of hang: the engine
loop fails the in-flight requests (500, or an error event on a stream) and rank 0 shuts the server down and exits.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import signal
import threading
import time

import torch
import torch.distributed as dist

from redraft.decoding import Engine
from redraft.model.parallel import ParallelConfig
from redraft.model.parallel_launch import Rank, launch
from redraft.model.parallel_loading import load_sharded, read_config

from .settings import ServerSettings

log = logging.getLogger("redraft.serving")
_CONTROL_TIMEOUT = datetime.timedelta(days=365)


class MirroredEngine(Engine):
    """Rank 0's engine: records joins and cancels and broadcasts them to the followers at each step."""

    def __init__(self, *args, control_group=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.control_group = control_group
        self._ops: list[tuple] = []

    def add_request(self, prompt_ids, config=None, request_id=None) -> str:
        rid = super().add_request(prompt_ids, config, request_id)  # a rejected request is not mirrored
        self._ops.append(("add", [int(t) for t in prompt_ids], config, rid))
        return rid

    def cancel(self, request_id) -> None:
        super().cancel(request_id)
        self._ops.append(("cancel", str(request_id)))

    def step(self):
        ops, self._ops = self._ops, []
        dist.broadcast_object_list([ops], src=0, group=self.control_group)
        return super().step()

    def close(self) -> None:
        """Tell the followers to stop."""
        dist.broadcast_object_list([None], src=0, group=self.control_group)


def follow(engine: Engine, control_group) -> None:
    """A follower rank: apply rank 0's joins and cancels and step, until rank 0 closes."""
    with torch.inference_mode():
        while True:
            box: list = [None]
            dist.broadcast_object_list(box, src=0, group=control_group)
            ops = box[0]
            if ops is None:
                return
            for op in ops:
                if op[0] == "add":
                    engine.add_request(op[1], op[2], request_id=op[3])
                else:
                    engine.cancel(op[1])
            engine.step()


def _exit_when_failed(engine_loop, poll_s: float = 0.5, grace_s: float = 1.0) -> None:
    """Rank 0: once the engine loop failed (e.g. a rank died), let the error answers go out, then shut down."""
    while engine_loop.error is None:
        time.sleep(poll_s)
    log.error("engine failed on a parallel rank (%s); shutting the server down", engine_loop.error)
    time.sleep(grace_s)
    os.kill(os.getpid(), signal.SIGTERM)


class _Terminated(Exception):
    """SIGTERM after uvicorn's graceful shutdown."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def _serve_rank(rank: Rank, path: str, parallel: ParallelConfig, settings: ServerSettings, host: str, port: int,
                log_level: str, threads: int | None) -> None:
    from redraft.model.tokenizer import load_tokenizer

    from .prefix_cache import PrefixCache

    if threads:
        torch.set_num_threads(threads)
    control = dist.new_group(backend="gloo", timeout=_CONTROL_TIMEOUT)
    model = load_sharded(path, parallel, rank.rank, rank.group, dtype=settings.dtype, device=rank.device)
    prefix = PrefixCache(settings.prefix_cache_slots) if settings.prefix_cache_slots else None
    kwargs = dict(max_batch_size=settings.max_batch_size, prefix_index=prefix,
                  batch_invariant=settings.batch_invariant)
    tokenizer = load_tokenizer(path)
    if not rank.is_main:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # rank 0 handles Ctrl-C and then closes the followers
        follow(Engine(model, tokenizer, **kwargs), control)
        return None
    from pathlib import Path

    from .app import create_app
    from .server import run_server

    engine = MirroredEngine(model, tokenizer, control_group=control, **kwargs)
    name = settings.model_name or Path(path).name
    app = create_app(engine, dataclasses.replace(settings, model_name=name))
    threading.Thread(target=_exit_when_failed, args=(app.state.server.loop,), daemon=True,
                     name="redraft-parallel-watchdog").start()
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal; end here instead, so the followers
    # are told to stop and every rank exits cleanly
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        run_server(app, host=host, port=port, log_level=log_level, shutdown_timeout=settings.shutdown_timeout)
    except _Terminated:
        pass
    finally:
        try:
            engine.close()
        except Exception:  # a follower is gone already: nothing to tell
            pass
    return None


def serve_parallel(path: str, parallel: ParallelConfig, settings: ServerSettings, host: str = "127.0.0.1",
                   port: int = 8000, log_level: str = "info", threads: int | None = None,
                   oversubscribe: bool = False) -> None:
    """Serve `path` over `parallel.tp` ranks (blocks until the server stops). settings.device: the device kind of
    every rank ('cpu' or 'cuda'; rank r uses cuda:r)."""
    if settings.row_tile is not None:
        raise ValueError("ServerSettings.row_tile is not supported with tensor/expert parallel serving (sharded "
                         "linears take the default tiles)")
    _, cfg = read_config(path)
    parallel.check(cfg)
    launch(_serve_rank, parallel, (str(path), parallel, settings, host, port, log_level, threads),
           settings.device, oversubscribe)
