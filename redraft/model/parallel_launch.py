"""Start the ranks of a tensor-parallel run: `launch(fn, ...)` spawns `tp` worker processes (torch.multiprocessing,
gloo on CPU, NCCL on CUDA), or, under `torchrun` (RANK / WORLD_SIZE set), joins the group torchrun describes.

SPMD: every rank runs `fn(rank, *args)` on the same inputs; only rank 0 talks to the user. `launch` returns rank 0's
return value. A rank that raises or dies makes every other rank fail within `timeout_s` (the process group's
collective timeout) and `launch` raise, instead of hanging.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .parallel import ParallelConfig

DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Rank:
    """What a worker knows about itself: its rank, the group size, its device and the group (None = WORLD)."""

    rank: int
    world_size: int
    device: torch.device
    group: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def check_devices(config: ParallelConfig, device: str, oversubscribe: bool = False) -> str:
    """The device type of every rank ('cpu' or 'cuda'); ValueError for mixed devices, a device index (each rank
    takes `cuda:<local rank>`), more ranks than GPUs, or more ranks than CPU cores (unless `oversubscribe`)."""
    kinds = {d.strip().split(":")[0] for d in str(device).split(",") if d.strip()}
    if len(kinds) > 1:
        raise ValueError(f"device {device!r} mixes device types {sorted(kinds)}: every rank must use the same kind "
                         "(all 'cpu' or all 'cuda')")
    kind = kinds.pop() if kinds else "cpu"
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto' for a parallel run, got {device!r}")
    if ":" in str(device) or "," in str(device):
        raise ValueError(f"device {device!r}: give the device type only; rank r uses cuda:r (set "
                         "CUDA_VISIBLE_DEVICES to choose the GPUs)")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but CUDA is not available")
        n = torch.cuda.device_count()
        if config.tp > n and not _under_torchrun():
            raise ValueError(f"tp={config.tp} needs {config.tp} GPUs, this machine has {n}")
    else:
        n = os.cpu_count() or 1
        if config.tp > n and not oversubscribe:
            raise ValueError(f"tp={config.tp} needs {config.tp} CPU cores (one rank each), this machine has {n}; "
                             "pass oversubscribe=True (--oversubscribe) to run anyway, slowly")
    return kind


def _under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_main_process() -> bool:
    """False on the ranks other than 0 of a torchrun launch (they compute, rank 0 reports)."""
    return int(os.environ.get("RANK", "0")) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank: int, world: int, kind: str, timeout_s: float, local_rank: int) -> Rank:
    device = torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    dist.init_process_group("nccl" if kind == "cuda" else "gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s),
                            **({"device_id": device} if kind == "cuda" else {}))
    return Rank(rank, world, device)


def _finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _worker(rank: int, fn: Callable, args: tuple, world: int, kind: str, port: int, timeout_s: float,
            threads: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    try:
        info = _init(rank, world, kind, timeout_s, rank)
        value = fn(info, *args)
        if rank == 0:
            results.put(("ok", value))
        dist.barrier()
    except BaseException as e:
        if rank == 0:
            results.put(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))
        raise
    finally:
        _finish()


@contextlib.contextmanager
def _signals_to_rank0(pid: int) -> Iterator[None]:
    """While the ranks run: SIGTERM to this process goes to rank 0 (which shuts down in order and stops the others);
    SIGINT is ignored here (a terminal's Ctrl-C reaches the ranks themselves)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum, frame) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    old_term = signal.signal(signal.SIGTERM, forward)
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


class ParallelRunError(RuntimeError):
    """A rank of a parallel run failed; the message carries the first error."""


def launch(fn: Callable[..., Any], config: ParallelConfig, args: tuple = (), device: str = "cpu",
           oversubscribe: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """Run `fn(rank: Rank, *args)` on every rank of a `config.tp`-process group and return rank 0's result.

    fn and args must be picklable (a module-level function). Under torchrun this process is one rank: fn runs here
    and rank 0's result is returned on rank 0 (other ranks return their own)."""
    kind = check_devices(config, device, oversubscribe)
    if _under_torchrun():
        world = int(os.environ["WORLD_SIZE"])
        if world != config.tp:
            raise ValueError(f"tp={config.tp} but torchrun started WORLD_SIZE={world} processes")
        info = _init(int(os.environ["RANK"]), world, kind, timeout_s, int(os.environ.get("LOCAL_RANK", "0")))
        try:
            return fn(info, *args)
        finally:
            _finish()
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    threads = max(1, (os.cpu_count() or 1) // config.tp) if kind == "cpu" else torch.get_num_threads()
    try:
        context = mp.start_processes(_worker, args=(fn, args, config.tp, kind, _free_port(), timeout_s, threads,
                                                    results), nprocs=config.tp, join=False, start_method="spawn")
        with _signals_to_rank0(context.processes[0].pid):
            while not context.join():
                pass
    except mp.ProcessRaisedException as e:
        first = results.get() if not results.empty() else None
        if first is not None and first[0] == "error":
            raise ParallelRunError(f"rank 0 failed: {first[1]}") from e
        raise ParallelRunError(f"a rank failed: {str(e).strip().splitlines()[-1]}") from e
    except mp.ProcessExitedException as e:
        raise ParallelRunError(f"a rank died: {e}") from e
    if results.empty():
        raise ParallelRunError("rank 0 returned no result")
    status, *rest = results.get()
    if status != "ok":
        raise ParallelRunError(f"rank 0 failed: {rest[0]}")
    return rest[0]
