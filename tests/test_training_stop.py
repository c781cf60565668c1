"""`StopRequest`: SIGTERM / Ctrl-C are remembered (a second Ctrl-C interrupts), handlers are restored, the time limit
applies, and ranks agree on the reason even when only one of them got the signal."""

from __future__ import annotations

import os
import signal
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from redraft.training.distributed import DistInfo
from redraft.training.stop import StopRequest

SOLO = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_signals_are_remembered_and_handlers_restored():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with StopRequest(SOLO) as stop:
        assert stop.reason() is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.reason() == "SIGTERM"
    assert {sig: signal.getsignal(sig) for sig in before} == before
    with StopRequest(SOLO) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.reason() == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # the second Ctrl-C does not wait for the checkpoint
            os.kill(os.getpid(), signal.SIGINT)
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_time_limit():
    with StopRequest(SOLO, max_time_s=0.0) as stop:
        assert stop.reason() == "max_time_s"
    with StopRequest(SOLO, max_time_s=3600.0) as stop:
        assert stop.reason() is None


def _rank(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    info = DistInfo(rank=rank, world_size=2, local_rank=rank, device=torch.device("cpu"))
    try:
        with StopRequest(info) as stop:
            first = stop.reason()
            if rank == 1:  # only this rank is signalled, as when a launcher's signal reaches ranks at different steps
                os.kill(os.getpid(), signal.SIGTERM)
            results[rank] = (first, stop.reason())
    finally:
        dist.destroy_process_group()


def test_ranks_agree_on_a_signal_one_rank_received():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.get_context("spawn").Manager().dict()
    mp.spawn(_rank, args=(port, results), nprocs=2)
    assert dict(results) == {0: (None, "SIGTERM"), 1: (None, "SIGTERM")}
