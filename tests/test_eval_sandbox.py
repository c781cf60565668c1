"""Tests for the code sandbox: results, limits, isolation (network, filesystem, processes) and the worker pool."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from redraft.evaluation.sandbox import SandboxConfig, SandboxPool, Status, run_many, run_program
from redraft.evaluation.tasks import get_task
from redraft.evaluation.tasks.humaneval import program

FAST = SandboxConfig(timeout_s=5.0, cpu_s=2.0, memory_mb=256)


def _fs_protected(result) -> bool:
    return any(p.startswith("read-only filesystem") or p.startswith("uid/gid") for p in result.protections)


def test_pass_fail_and_output():
    ok = run_program("print('hello')", FAST)
    assert ok.status is Status.PASSED and ok.passed and ok.stdout == "hello\n" and ok.returncode == 0
    bad = run_program("assert 1 + 1 == 3, 'arith'", FAST)
    assert bad.status is Status.FAILED and "AssertionError: arith" in bad.reason and bad.returncode == 1
    assert run_program("import sys; sys.exit(4)", FAST).returncode == 4


def test_files_and_stdin_and_fresh_workdir_deleted():
    r = run_program("import os; print(open('data.txt').read(), input(), os.getcwd())", FAST,
                    files={"data.txt": "abc"}, stdin="xyz\n")
    assert r.passed, r.stderr
    data, line, cwd = r.stdout.split()
    assert (data, line) == ("abc", "xyz")
    assert not os.path.exists(cwd)
    with pytest.raises(ValueError, match="files"):
        run_program("pass", FAST, files={"../x": ""})


def test_infinite_loop_stopped_by_cpu_limit():
    start = time.monotonic()
    r = run_program("while True:\n    pass", SandboxConfig(timeout_s=10.0, cpu_s=1.0))
    assert r.status is Status.TIMEOUT and "CPU" in r.reason
    assert time.monotonic() - start < 8


def test_sleeper_stopped_by_wall_clock():
    r = run_program("import time; time.sleep(60)", SandboxConfig(timeout_s=1.0, cpu_s=5.0))
    assert r.status is Status.TIMEOUT and "wall-clock" in r.reason and r.duration_s < 5


def test_memory_hog_stopped():
    r = run_program("x = bytearray(1024 * 2**20)\nprint(len(x))", SandboxConfig(timeout_s=10.0, memory_mb=256))
    assert r.status is Status.MEMORY and "memory limit" in r.reason and not r.stdout


def test_fork_bomb_stopped_and_cleaned_up():
    bomb = "import os\nprint(os.getcwd(), flush=True)\nwhile True:\n    try:\n        os.fork()\n" \
           "    except OSError:\n        pass\n"
    r = run_program(bomb, SandboxConfig(timeout_s=2.0, cpu_s=2.0, processes=16))
    assert r.status is Status.TIMEOUT
    workdir = r.stdout.split()[0]
    assert not os.path.exists(workdir)
    time.sleep(0.2)
    # nothing the bomb started is left running (no process has its cwd in that sandbox), and the host can still fork
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(workdir):
                left.append(pid)
        except OSError:
            continue
    assert left == []
    assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True).returncode == 0


def test_process_limit_reported():
    src = "import os\npids = []\nfor _ in range(200):\n    pid = os.fork()\n    if pid == 0:\n" \
          "        import time; time.sleep(30)\n    pids.append(pid)\n"
    r = run_program(src, SandboxConfig(timeout_s=10.0, processes=8))
    assert r.status is Status.FAILED and "process limit" in r.reason


def test_output_truncated_and_file_size_capped():
    r = run_program("print('x' * 100_000)", SandboxConfig(output_bytes=1000))
    assert r.passed and r.truncated and len(r.stdout) == 1000
    big = run_program("print('x' * 10**7)", SandboxConfig(output_bytes=1000, file_bytes=2**20))
    assert big.status is Status.KILLED and "size limit" in big.reason


@pytest.mark.parametrize("world_writable", [False, True])
def test_write_outside_workdir_blocked(tmp_path, world_writable):
    target = tmp_path / "escape.txt"
    if world_writable:
        tmp_path.chmod(0o777)
    r = run_program(f"open({str(target)!r}, 'w').write('pwned')", FAST)
    if not _fs_protected(r) or (world_writable and not any("read-only" in p for p in r.protections)):
        pytest.skip(f"this OS allows no filesystem isolation here (applied: {r.protections})")
    assert r.status is Status.FAILED and ("Read-only" in r.reason or "Permission denied" in r.reason)
    assert not target.exists()


@pytest.mark.parametrize("network", ["deny", "block"])
def test_network_connection_blocked(network):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        src = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
        r = run_program(src, SandboxConfig(timeout_s=5.0, network=network))
        assert r.status is Status.FAILED and "connected" not in r.stdout
        assert "Network is unreachable" in r.reason, r.reason
        assert any(p in r.protections for p in ("network-namespace", "socket creation blocked"))
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()


def test_network_allowed_when_asked():
    r = run_program("import socket; socket.socket().close(); print('ok')", SandboxConfig(network="allow"))
    assert r.passed and "socket creation blocked" not in r.protections


def test_bad_config_raises_value_error():
    for kwargs, name in [({"timeout_s": 0}, "timeout_s"), ({"memory_mb": 8}, "memory_mb"),
                         ({"network": "maybe"}, "network"), ({"processes": -1}, "processes"),
                         ({"python": "/nonexistent/python"}, "python")]:
        with pytest.raises(ValueError, match=name):
            SandboxConfig(**kwargs)
    with pytest.raises(ValueError, match="workers"):
        SandboxPool(FAST, workers=0)


def test_pool_keeps_order():
    results = run_many([f"import sys; sys.exit({i % 3})" for i in range(6)], FAST, workers=2)
    assert [r.returncode for r in results] == [i % 3 for i in range(6)]


def test_humaneval_wrong_solutions_fail():
    task = get_task("humaneval")
    examples = task.examples(6, seed=0)
    assert task.score_many(examples, ["    return None\n"] * 6) == [0.0] * 6
    # another problem's canonical solution is wrong here
    swapped = [examples[(i + 1) % 6].answer for i in range(6)]
    assert sum(task.score_many(examples, swapped)) == 0.0
    assert task.score(examples[0], examples[0].answer) == 1.0
    assert "check(" in program(examples[0], examples[0].answer)
    with pytest.raises(ValueError, match="split"):
        task.examples(3, seed=0, split="train")


@pytest.mark.slow
def test_humaneval_canonical_solutions_all_pass():
    task = get_task("humaneval")
    examples = task.examples(164, seed=0)
    assert len({e.key for e in examples}) == 164
    results = task.run(examples, [e.answer for e in examples])
    failures = [(e.key, r.status, r.reason) for e, r in zip(examples, results) if not r.passed]
    assert failures == []


@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop only applies when started as root")
def test_programs_run_as_fresh_unprivileged_uids():
    a, b = run_many(["import os; print(os.getuid(), os.getgid(), os.getgroups())"] * 2, FAST, workers=2)
    assert a.passed and b.passed, (a.stderr, b.stderr)
    uid_a, uid_b = int(a.stdout.split()[0]), int(b.stdout.split()[0])
    assert uid_a != 0 and uid_b != 0 and uid_a != uid_b and a.stdout.split()[2] == "[]"
    named = run_program("import os; print(os.getuid())", SandboxConfig(user="nobody"))
    assert named.passed and named.stdout.strip() == str(__import__("pwd").getpwnam("nobody").pw_uid)
    with pytest.raises(ValueError, match="user"):
        run_program("pass", SandboxConfig(user="no-such-user-xyz"))


def test_fallback_without_namespaces_still_blocks_sockets_and_limits():
    cfg = SandboxConfig(timeout_s=5.0, cpu_s=1.0, isolate_fs=False, network="block", user="")
    r = run_program("import socket\ntry:\n    socket.socket()\nexcept OSError as e:\n    print('blocked', e.errno)",
                    cfg)
    assert r.passed and r.stdout.startswith("blocked 101") and "socket creation blocked" in r.protections
    assert not any("namespace" in p for p in r.protections)
    assert run_program("while True:\n    pass", cfg).status is Status.TIMEOUT
