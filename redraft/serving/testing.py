"""Run `redraft serve` in a subprocess on a free loopback port (tests and the load benchmark)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass
class ServerProcess:
    process: subprocess.Popen
    base_url: str      # http://127.0.0.1:PORT
    log_path: Path

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful shutdown), then SIGKILL after `timeout` s. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str | os.PathLike, args: Sequence[str] = (), startup_timeout: float = 120.0,
                 attempts: int = 3) -> ServerProcess:
    """Start `python -m redraft.cli serve MODEL --port P ARGS` and wait until /health answers 200."""
    last = ""
    for _ in range(attempts):
        port = free_port()
        log_path = Path(tempfile.mkstemp(prefix="redraft-serve-", suffix=".log")[1])
        cmd = [sys.executable, "-m", "redraft.cli", "serve", str(model), "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning", *args]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        server = ServerProcess(proc, f"http://127.0.0.1:{port}", log_path)
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(server.base_url + "/health", timeout=1.0).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        last = server.log()
        server.stop(5)
        if "address already in use" not in last.lower():
            break
    raise RuntimeError(f"redraft serve did not start:\n{last[-4000:]}")


def wait_idle(server: str | httpx.Client, timeout: float = 30.0) -> int:
    """Poll /health until no request is in flight (every admitted request released its slot) or `timeout` s pass.
    server: a base URL ("http://127.0.0.1:PORT") or a client with the app at its root (e.g. FastAPI's TestClient).
    Returns the last `in_flight` seen (0 when idle)."""
    get = (lambda path: httpx.get(server + path, timeout=5.0)) if isinstance(server, str) else server.get
    deadline = time.monotonic() + timeout
    while True:
        in_flight = get("/health").json().get("in_flight", 0)
        if in_flight == 0 or time.monotonic() > deadline:
            return in_flight
        time.sleep(0.05)


@contextmanager
def running_server(model: str | os.PathLike, args: Sequence[str] = ()) -> Iterator[ServerProcess]:
    server = start_server(model, args)
    try:
        yield server
    finally:
        server.stop()
