"""Sandbox launcher, run as `python -I -S _sandbox_child.py CONFIG_JSON`: isolates, limits and execs one program.

Standalone on purpose (imports nothing from redraft, so no torch import per program). Steps: new network, mount and
PID namespaces where the OS allows; the whole filesystem remounted read-only except the program's working directory;
a PID-1 reaper that kills everything left in the namespace when the program ends; rlimits; privileges dropped to
the configured uid/gid; exec of the program. Each step that cannot be applied is recorded, never silently assumed.
"""

import ctypes
import json
import os
import resource
import signal
import stat
import sys
import traceback

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
_KEEP_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
               "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
LIBC = ctypes.CDLL(None, use_errno=True)
# user="unique": uid = gid = this base + the launcher's pid (unique among running sandboxes, unused on the host)
UNIQUE_ID_BASE = 0x20000000


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(LIBC.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _unshare(flags):
    return LIBC.unshare(ctypes.c_int(flags)) == 0


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _namespaces(cfg, applied):
    """Enter new namespaces; returns (net, mnt, pid) booleans."""
    want_net, want_fs = cfg["network"] == "deny", cfg["isolate_fs"]
    uid, gid = os.getuid(), os.getgid()
    base = (CLONE_NEWNET if want_net else 0) | (CLONE_NEWNS | CLONE_NEWPID if want_fs else 0)
    if base == 0:
        return False, False, False
    user = 0 if os.geteuid() == 0 else CLONE_NEWUSER
    for flags in (base | user, (CLONE_NEWNET | user) if want_net else 0):
        if flags and _unshare(flags):
            if user:
                _write("/proc/self/setgroups", "deny")
                _write("/proc/self/uid_map", f"0 {uid} 1")
                _write("/proc/self/gid_map", f"0 {gid} 1")
                applied.append("user-namespace")
            net, mnt, pid = bool(flags & CLONE_NEWNET), bool(flags & CLONE_NEWNS), bool(flags & CLONE_NEWPID)
            applied.extend(n for n, ok in (("network-namespace", net), ("mount-namespace", mnt),
                                           ("pid-namespace", pid)) if ok)
            return net, mnt, pid
    return False, False, False


def _mounts():
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            point = parts[4].encode().decode("unicode_escape")
            out.append((point, set(parts[5].split(","))))
    return out


def _blocking_ancestor(path, uid):
    """The outermost directory above `path` that `uid` cannot traverse (None if all can be traversed)."""
    parts = os.path.realpath(path).split(os.sep)[1:]
    cur = ""
    for part in parts[:-1]:
        cur += os.sep + part
        st = os.stat(cur)
        if uid != 0 and not (st.st_mode & stat.S_IXOTH) and st.st_uid != uid:
            return cur
    return None


def _isolate_fs(cfg, applied, failed):
    """Read-only view of every mount except the working dir; hide an untraversable interpreter ancestor (e.g. /root)
    behind a tmpfs that exposes only the interpreter prefix."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    if cfg["drop_to"] is not None:
        prefix = os.path.realpath(cfg["prefix"])
        blocker = _blocking_ancestor(os.path.join(prefix, "x"), cfg["drop_to"][0])
        if blocker is not None:
            stage = cfg["stage"]
            _mount(prefix, stage, None, MS_BIND | MS_REC)
            _mount("tmpfs", blocker, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=64k")
            os.makedirs(prefix, mode=0o755, exist_ok=True)
            _mount(stage, prefix, None, MS_BIND | MS_REC)
            applied.append(f"hid {blocker} except {prefix}")
    work = os.path.realpath(cfg["workdir"])
    _mount(work, work, None, MS_BIND)
    for point, opts in reversed(_mounts()):
        if point == work:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for name, bit in _KEEP_FLAGS.items():
            if name in opts:
                flags |= bit
        try:
            _mount(None, point, None, flags)
        except OSError:
            failed.append(point)
    if "/" not in failed:
        applied.append("read-only filesystem outside the working dir")


def _limits(cfg):
    lim = cfg["limits"]
    cpu = max(1, int(lim["cpu_s"] + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    mem = lim["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_bytes"], lim["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["processes"], lim["processes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"], lim["open_files"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _exec_program(cfg, net):
    os.chdir(cfg["workdir"])
    _limits(cfg)
    if cfg["drop_to"] is not None:
        uid, gid = cfg["drop_to"]
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    LIBC.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    work = cfg["workdir"]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}
    entry = cfg["entry"] if net or cfg["network"] == "allow" else cfg["boot"]  # boot blocks sockets, runs entry
    os.execve(cfg["python"], [cfg["python"], "-I", entry], env)


def _reap(child, pid_ns, report):
    """Wait for the program; as PID 1 also reap orphans. Then kill whatever is left in the namespace."""
    result = None
    while True:
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            break
        if pid == child:
            result = {"exited": os.WIFEXITED(status),
                      "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                      "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                      "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss}
            report.write(json.dumps(result) + "\n")
            report.flush()
            if pid_ns:
                os.kill(-1, signal.SIGKILL)  # PID 1 of our own namespace: reaches only the sandboxed processes
            else:
                break
    return result


def main():
    cfg = json.loads(sys.argv[1])
    report = open(cfg["report"], "w", buffering=1)
    applied, failed = [], []
    try:
        if cfg["drop_to"] == "unique":
            cfg["drop_to"] = [UNIQUE_ID_BASE + os.getpid()] * 2
        if cfg["drop_to"] is not None:
            work = cfg["workdir"]
            for path in [work] + [os.path.join(work, f) for f in os.listdir(work)]:
                os.chown(path, *cfg["drop_to"])
        net, mnt, pid_ns = _namespaces(cfg, applied)
        if mnt:
            _isolate_fs(cfg, applied, failed)
        if cfg["drop_to"] is not None:
            applied.append(f"uid/gid {cfg['drop_to'][0]}/{cfg['drop_to'][1]}")
        report.write(json.dumps({"applied": applied, "remount_failed": failed, "network_namespace": net}) + "\n")
    except Exception:
        report.write(json.dumps({"error": traceback.format_exc()}) + "\n")
        os._exit(70)
    init = os.fork()
    if init == 0:
        try:
            child = os.fork()
            if child == 0:
                try:
                    report.close()
                    _exec_program(cfg, net)
                except BaseException:
                    sys.stderr.write("redraft-sandbox: could not start the program\n" + traceback.format_exc())
                    sys.stderr.flush()
                finally:
                    os._exit(71)
            result = _reap(child, pid_ns, report)
            os._exit(0 if result is not None else 70)
        except BaseException:
            report.write(json.dumps({"error": traceback.format_exc()}) + "\n")
            os._exit(70)
    _, status = os.waitpid(init, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 70)


if __name__ == "__main__":
    main()
