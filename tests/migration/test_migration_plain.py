"""Issue 3, processes not started with mosrun, on a real namespace cluster: exact cantmove reasons
(PID in use on the target, session, TCP, terminal) and a tree that is the init of its own PID
namespace adopted and moved 1 -> 2 -> home without restart."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from omview.model import procfs
from omview.testbed import Cluster
from tests.migration.helpers import COUNTER, PY, alive, all_up, call, counts, migrate, wait

pytestmark = pytest.mark.cluster

LOOP = "import time\nwhile True: time.sleep(0.05)"
TCP = (
    "import socket, sys, time\n"
    "s = socket.create_server(('127.0.0.1', 0))\n"
    "c = socket.create_connection(s.getsockname())\n"
    "a, _ = s.accept()\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(0.05)\n"
)
PTY = (
    "import os, pty, sys, time\n"
    "pid, fd = pty.fork()\n"
    "if pid == 0:\n"
    "    print(os.ttyname(0), flush=True)\n"
    "    time.sleep(120)\n"
    "    os._exit(0)\n"
    "name = os.read(fd, 200).decode().strip()\n"
    "print(pid, name, flush=True)\n"
    "time.sleep(120)\n"
)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _state(pid: int) -> str | None:
    return procfs.state(pid)


def _cantmove(cluster: Cluster, node: int, pid: int) -> str:
    rows = call(cluster, node, "procs.list", pid=pid)
    assert len(rows) == 1, rows
    return str(rows[0]["cantmove"])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_plain_processes_get_exact_reasons(make_cluster: Callable[..., Cluster]) -> None:
    cluster = all_up(make_cluster(2))
    started: list[subprocess.Popen[bytes]] = []
    try:
        # a plain counter of node 1's root PID namespace, own session, no terminal: only its PID blocks it
        plain = cluster.popen(1, ["setsid", PY, "-c", LOOP], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(plain)
        wait(lambda: _comm(plain.pid) == "python3", 10, "the plain process to start in node 1")
        before = procfs.start_time(plain.pid)
        reason = f"pid {plain.pid} in use on node 2"
        seen: list[str] = []
        try:
            wait(lambda: seen.append(_cantmove(cluster, 1, plain.pid)) or seen[-1] == reason, 20, reason)
        except AssertionError:
            raise AssertionError(f"cantmove {seen[-1]!r}, want {reason!r}") from None
        r = migrate(cluster, 1, plain.pid, 2)
        assert r.returncode == 3 and "CANT_MOVE" in r.stderr and reason in r.stderr, r.stderr
        # untouched: same process (start time), running, not left stopped by anything
        assert alive(plain.pid) and _state(plain.pid) in ("S", "R")
        assert procfs.start_time(plain.pid) == before
        assert not call(cluster, 1, "job.list")

        # the same without setsid: its session leader (nsenter's caller) stays outside the tree
        nosid = cluster.popen(1, [PY, "-c", LOOP], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(nosid)
        wait(lambda: _comm(nosid.pid) == "python3", 10, "the second process to start")
        sid = procfs.read_stat(nosid.pid).session  # type: ignore[union-attr]
        why = f"session leader {sid} is outside its process tree"
        assert why in _cantmove(cluster, 1, nosid.pid)
        r = migrate(cluster, 1, nosid.pid, 2)
        assert r.returncode == 3 and why in r.stderr, r.stderr

        # a cwd that nsenter --wd opened outside the node's mount namespace
        wd = cluster.popen(1, ["--wd=/tmp", "setsid", PY, "-c", LOOP], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        started.append(wd)
        wait(lambda: _comm(wd.pid) == "python3", 10, "the third process to start")
        assert "is on a mount of another mount namespace" in _cantmove(cluster, 1, wd.pid)

        # an open TCP connection (over node 1's loopback)
        tcp = cluster.popen(1, ["setsid", PY, "-c", TCP], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        started.append(tcp)
        assert tcp.stdout is not None and tcp.stdout.readline().strip() == b"ready"
        assert _cantmove(cluster, 1, tcp.pid) == "open TCP connection"
        r = migrate(cluster, 1, tcp.pid, 2)
        assert r.returncode == 3 and "open TCP connection" in r.stderr, r.stderr

        # a process on a pty
        pty = cluster.popen(1, ["setsid", PY, "-c", PTY], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        started.append(pty)
        assert pty.stdout is not None
        child, name = pty.stdout.readline().decode().split()
        assert name.startswith("/dev/pts/")
        assert _cantmove(cluster, 1, int(child)) == f"attached to terminal {name}"
        r = migrate(cluster, 1, child, 2)
        assert r.returncode == 3 and f"attached to terminal {name}" in r.stderr, r.stderr
        # its parent: the child on the terminal is part of the tree that would move
        assert f"its child {child}: attached to terminal {name}" in _cantmove(cluster, 1, pty.pid)
        assert alive(plain.pid) and alive(int(child))
    finally:
        for p in started:
            _stop(p)
        with contextlib.suppress(NameError, ValueError, OSError):
            os.kill(int(child), signal.SIGKILL)


def test_own_pid_namespace_counter_moves_1_2_home(make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    cluster = all_up(make_cluster(2))
    work = tmp_path / "plainjob"
    work.mkdir()
    out, err = work / "out", work / "err"
    # started by hand, not with mosrun: its own PID namespace and session, output to files that both
    # nodes see (this /tmp is shared, so the file CRIU reopens on node 2 is the very same, same size).
    # unshare's own stderr goes elsewhere: it stays behind and reports its child's end, which must not
    # land in (and change the size of) the moved process's files. cd from inside node 1's mount
    # namespace: `nsenter --wd` opens the directory before it enters that namespace.
    inner = f"exec {PY} {COUNTER} 100 0.1 >{out} 2>{err}"
    cmd = f"cd {work} && exec unshare --pid --fork setsid sh -c '{inner}' </dev/null >{work}/unshare.log 2>&1"
    user = cluster.popen(1, ["sh", "-c", cmd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)  # fmt: skip
    pids: list[int] = []
    try:

        def init() -> int:
            with contextlib.suppress(OSError, ValueError):
                kids = Path(f"/proc/{user.pid}/task/{user.pid}/children").read_text().split()
                if kids and _comm(int(kids[0])) == "python3" and out.stat().st_size > 0:
                    return int(kids[0])
            return 0

        pid = wait(init, 15, "the counter to start and print")
        pids.append(pid)
        assert _cantmove(cluster, 1, pid) == ""
        r = migrate(cluster, 1, pid, 2)
        assert r.returncode == 0, r.stderr
        job = f"1:{pid}"
        st = call(cluster, 1, "job.status", job=job)
        assert st["adopted"] and st["where"] == 2 and st["home"] == 1 and st["nmigs"] == 1
        on2 = call(cluster, 2, "job.status", job=job)
        pids.append(on2["pid"])
        assert alive(on2["pid"]) and not alive(pid)
        mps = cluster.exec(1, ["mps", str(pid)], capture_output=True, text=True, timeout=30)
        row = mps.stdout.splitlines()[1].split()
        assert row[0] == str(pid) and row[2] == "2", mps.stdout  # N# = where it runs
        wait(lambda: "node2" in out.read_text(), 10, "the counter to count on node 2")
        r = migrate(cluster, 1, pid, "home")  # its original PID still names it on its home node
        assert r.returncode == 0, r.stderr
        back = call(cluster, 1, "job.status", job=job)
        assert back["where"] == 1 and back["nmigs"] == 2
        pids.append(back["pid"])
        assert alive(back["pid"]) and not alive(on2["pid"])
        # the agent that restored it is its subreaper: it collects the exit status
        done = wait(lambda: (s := call(cluster, 1, "job.status", job=job))["state"] == "exited" and s, 30,
                    "the counter to end")  # fmt: skip
        assert done["status"] == "exit 7"
        nums, hosts = counts(out.read_bytes())
        assert nums == list(range(100)), "the count must go on without restart, gap or repeat"
        assert hosts == {"node1", "node2"}
        assert err.read_text().strip() == "done"
        hist = call(cluster, 1, "migration.history")["migrations"]
        assert [(h["source"], h["target"], h["result"]) for h in hist] == [(1, 2, "ok")]
        user.wait(10)  # unshare, left behind on node 1, ended when its child moved away
    finally:
        for p in pids:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        _stop(user)
