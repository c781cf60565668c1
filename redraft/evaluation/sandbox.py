"""Sandbox for untrusted Python programs (code rewards, HumanEval): one isolated, resource-limited process each.

Isolation, strongest first, each applied where the OS allows (`SandboxResult.protections` lists what was applied):
network namespace (no interfaces but a down loopback) or, failing that, socket creation blocked in a preamble;
mount namespace with every mount read-only except the fresh working directory; PID namespace whose PID 1 kills all
leftovers; privileges dropped to a fresh uid/gid per program when started as root. Always: rlimits on CPU time, address space, file
size (which caps stdout/stderr, written to files), processes and open files; a wall-clock limit; the process group
killed at the end; the temporary directory deleted.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

CHILD = Path(__file__).with_name("_sandbox_child.py")
PROGRAM = "main.py"
BOOT = "_redraft_boot.py"
_NO_SOCKET_PREAMBLE = """import runpy, socket, sys, _socket


def _refuse(*args, **kwargs):
    raise OSError(101, "Network is unreachable (network disabled by the redraft sandbox)")


class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        _refuse()


socket.socket = socket.SocketType = _socket.socket = _NoSocket
for _name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
    setattr(socket, _name, _refuse)
sys.argv = [%r]
runpy.run_path(%r, run_name="__main__")
""" % (PROGRAM, PROGRAM)


class Status(str, Enum):
    """How a sandboxed program ended."""

    PASSED = "passed"    # exit status 0
    FAILED = "failed"    # non-zero exit (an exception, a failed assertion, sys.exit(1))
    TIMEOUT = "timeout"  # wall-clock or CPU-time limit
    MEMORY = "memory"    # address-space limit (MemoryError / allocation failure)
    KILLED = "killed"    # other limit or signal: file/output size, a crash
    ERROR = "error"      # the sandbox itself could not run the program


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation for one program.

    network: "deny" (network namespace, else socket creation blocked), "block" (socket creation blocked only) or
    "allow". isolate_fs: mount + PID namespaces (read-only filesystem outside the working dir, leftovers killed).
    user: who runs the program when started as root: "unique" (a fresh uid/gid per program, owning nothing on the
        host and unable to signal other sandboxes; RLIMIT_NPROC then counts this program's processes only), a user
        name (e.g. "nobody"), or "" to keep root. output_bytes: how much stdout/stderr is kept;
    file_bytes: the largest file (stdout/stderr included) the program may write before it is stopped.
    """

    timeout_s: float = 10.0
    cpu_s: float = 10.0
    memory_mb: int = 1024
    output_bytes: int = 64_000
    file_bytes: int = 16 * 2**20
    processes: int = 32
    open_files: int = 256
    network: str = "deny"
    isolate_fs: bool = True
    user: str = "unique"
    python: str = sys.executable

    def __post_init__(self) -> None:
        for name in ("timeout_s", "cpu_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("memory_mb", "output_bytes", "file_bytes", "processes", "open_files"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.memory_mb < 64:
            raise ValueError(f"memory_mb must be >= 64 (the interpreter needs it), got {self.memory_mb}")
        if self.network not in ("deny", "block", "allow"):
            raise ValueError(f"network must be 'deny', 'block' or 'allow', got {self.network!r}")
        if not os.access(self.python, os.X_OK):
            raise ValueError(f"python must be an executable interpreter, got {self.python!r}")


@dataclass(frozen=True)
class SandboxResult:
    status: Status
    reason: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    cpu_s: float | None = None
    truncated: bool = False
    protections: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED


def _drop_spec(config: SandboxConfig) -> str | list[int] | None:
    """None (keep the current user), "unique" (the launcher picks UNIQUE_ID_BASE + its pid) or [uid, gid]."""
    if os.geteuid() != 0 or not config.user:
        return None
    if config.user == "unique":
        return "unique"
    try:
        entry = pwd.getpwnam(config.user)
    except KeyError:
        raise ValueError(f"user must be 'unique', '' or an existing user name, got {config.user!r}") from None
    return [entry.pw_uid, entry.pw_gid]


def _process_allowance(config: SandboxConfig, drop: str | list[int] | None) -> int:
    """RLIMIT_NPROC counts all processes of the real uid: add what the uid already runs when it is not dropped."""
    if drop is not None:
        return config.processes
    uid = os.getuid()
    mine = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit() and _owner(p) == uid)
    return config.processes + mine


def _owner(path: Path) -> int | None:
    try:
        return path.stat().st_uid
    except OSError:
        return None


def _read(path: Path, limit: int) -> tuple[str, bool]:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    return data[:limit].decode("utf-8", "replace"), len(data) > limit


def _classify(info: dict | None, stderr: str, config: SandboxConfig) -> tuple[Status, str, int | None]:
    if info is None:
        return Status.ERROR, "sandbox launcher failed", None
    code, sig = info.get("code"), info.get("signal")
    if sig is not None:
        name = signal.Signals(sig).name
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and info.get("cpu_s", 0) >= config.cpu_s):
            return Status.TIMEOUT, f"CPU time limit ({config.cpu_s:g}s) exceeded", -sig
        if sig == signal.SIGXFSZ:
            return Status.KILLED, f"file/output size limit ({config.file_bytes} bytes) exceeded", -sig
        return Status.KILLED, f"killed by {name}", -sig
    if code == 0:
        return Status.PASSED, "exit status 0", 0
    if code == 71 and "redraft-sandbox: could not start" in stderr:
        return Status.ERROR, "could not start the program: " + _last_line(stderr), code
    if "File too large" in stderr:
        return Status.KILLED, f"file/output size limit ({config.file_bytes} bytes) exceeded", code
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return Status.MEMORY, f"memory limit ({config.memory_mb} MB) exceeded: {_last_line(stderr)}", code
    if "BlockingIOError" in stderr or "Resource temporarily unavailable" in stderr:
        return Status.FAILED, f"process limit ({config.processes}) hit: {_last_line(stderr)}", code
    return Status.FAILED, _last_line(stderr) or f"exit status {code}", code


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


def run_program(source: str, config: SandboxConfig | None = None, *, files: Mapping[str, str] | None = None,
                stdin: str | None = None) -> SandboxResult:
    """Run Python `source` in a fresh sandbox; `files` are extra text files placed in its working directory."""
    config = config or SandboxConfig()
    drop = _drop_spec(config)
    root = Path(tempfile.mkdtemp(prefix="redraft-sandbox-"))
    start = time.monotonic()
    proc = None
    try:
        root.chmod(0o711)
        work, out, stage = root / "work", root / "out", root / "stage"
        for d in (work, out, stage):
            d.mkdir(mode=0o700)
        for name, text in {**dict(files or {}), PROGRAM: source}.items():
            if os.sep in name or name.startswith(".") or name == BOOT:
                raise ValueError(f"files key must be a plain file name, got {name!r}")
            (work / name).write_text(text, encoding="utf-8")
        (work / BOOT).write_text(_NO_SOCKET_PREAMBLE, encoding="utf-8")
        # unprivileged, run the real interpreter file (a venv's symlink may sit in a directory it cannot enter);
        # its prefix (bin/..) is what the mount namespace exposes
        python = os.path.realpath(config.python) if drop is not None else config.python
        cfg = {"workdir": str(work), "report": str(out / "report.jsonl"), "stage": str(stage),
               "prefix": str(Path(python).parents[1]), "python": python, "drop_to": drop, "network": config.network,
               "isolate_fs": config.isolate_fs, "entry": PROGRAM, "boot": BOOT,
               "limits": {"cpu_s": config.cpu_s, "memory_bytes": config.memory_mb * 2**20,
                          "file_bytes": max(config.file_bytes, config.output_bytes),
                          "processes": _process_allowance(config, drop), "open_files": config.open_files}}
        (out / "stdin").write_text(stdin or "", encoding="utf-8")
        with open(out / "stdin", "rb") as fi, open(out / "stdout", "wb") as fo, open(out / "stderr", "wb") as fe:
            launch = [config.python, "-I", "-S", str(CHILD), json.dumps(cfg)]
            proc = subprocess.Popen(launch, stdin=fi, stdout=fo, stderr=fe, start_new_session=True, close_fds=True)
            timed_out = not _wait_unreaped(proc.pid, start + config.timeout_s)
        duration = time.monotonic() - start
        _kill_group(proc)
        proc = None
        stdout, t1 = _read(out / "stdout", config.output_bytes)
        stderr, t2 = _read(out / "stderr", config.output_bytes)
        lines = (out / "report.jsonl").read_text().splitlines() if (out / "report.jsonl").exists() else []
        records = [json.loads(line) for line in lines if line.strip()]
        setup = records[0] if records else {}
        protections = tuple(setup.get("applied", ()))
        if config.network != "allow" and not setup.get("network_namespace"):
            protections += ("socket creation blocked",)
        if "error" in setup:
            return SandboxResult(Status.ERROR, "sandbox setup failed: " + _last_line(setup["error"]), None,
                                 stdout, stderr, duration, None, t1 or t2, protections)
        info = records[1] if len(records) > 1 else None
        if timed_out:
            status, reason, code = Status.TIMEOUT, f"wall-clock limit ({config.timeout_s:g}s) exceeded", None
        else:
            status, reason, code = _classify(info, stderr, config)
        return SandboxResult(status, reason, code, stdout, stderr, duration, info and info.get("cpu_s"),
                             t1 or t2, protections)
    finally:
        if proc is not None:
            _kill_group(proc)
        shutil.rmtree(root, ignore_errors=True)


def _wait_unreaped(pid: int, deadline: float) -> bool:
    """Wait until `pid` exits, leaving it a zombie (so its process-group id cannot be reused before we kill the
    group). False if the deadline passed first."""
    delay = 0.001
    while True:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is not None:
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, 0.02)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher's whole process group (the program and anything it forked), then reap the launcher."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


class SandboxPool:
    """Runs many programs in parallel, each in its own sandbox (threads only wait on the sandboxed processes).

    Use as a context manager, or call `close()`. workers defaults to the number of CPUs.
    """

    def __init__(self, config: SandboxConfig | None = None, workers: int | None = None) -> None:
        workers = workers if workers is not None else (os.cpu_count() or 1)
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be a positive int, got {workers!r}")
        self.config = config or SandboxConfig()
        self.workers = workers
        self._executor: Executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="redraft-sandbox")

    def run(self, sources: Sequence[str], files: Mapping[str, str] | None = None) -> list[SandboxResult]:
        """Results in the order of `sources`."""
        return list(self._executor.map(lambda src: run_program(src, self.config, files=files), sources))

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_many(sources: Sequence[str], config: SandboxConfig | None = None, workers: int | None = None
             ) -> list[SandboxResult]:
    """Run every program in its own sandbox, `workers` at a time; results in input order."""
    with SandboxPool(config, workers) as pool:
        return pool.run(sources)
