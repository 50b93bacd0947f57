"""Issue 13, "Also": a listening TCP socket and SysV shared memory, on a real namespace cluster. Both
were shown movable (`-` in `mps -c`) and the move failed at dump; now the reason shows up front (or,
where this node's CRIU can dump TCP sockets, the job moves and listens on the target)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from omview.agent import criu as criumod
from omview.agent.node import movable
from omview.testbed import Cluster
from tests.conftest import ClusterFactory
from tests.migration.helpers import PY, Deputy, all_up, call, migrate, wait

pytestmark = pytest.mark.cluster

LISTEN = (
    "import socket, time\n"
    "s = socket.create_server(('0.0.0.0', 0))\n"
    "print('port', s.getsockname()[1], flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept()\n"
    "    c.sendall(b'hello')\n"
    "    c.close()\n"
)
SHM = (
    "import ctypes, time\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.shmat.restype = ctypes.c_void_p\n"
    "i = libc.shmget(0, 4096, 0o1600)\n"
    "assert i >= 0\n"
    "libc.shmat(i, None, 0)\n"
    "libc.shmctl(i, 0, None)\n"  # IPC_RMID: the segment goes when the job ends
    "n = 0\n"
    "while True:\n"
    "    n += 1\n"
    "    print(n, flush=True)\n"
    "    time.sleep(0.2)\n"
)
GREET = "import socket, sys; print(socket.create_connection((sys.argv[1], int(sys.argv[2])), 5).recv(5).decode())"


def _job_row(cluster: Cluster, node: int, job: str) -> dict[str, Any]:
    rows = [r for r in call(cluster, node, "procs.list") if r["job"] == job and not r["helper_of"]]
    assert len(rows) == 1, rows
    return rows[0]


def _greet(cluster: Cluster, node: int, address: str, port: int) -> str:
    r = cluster.exec(node, [PY, "-c", GREET, address, str(port)], capture_output=True, text=True, timeout=30)
    return r.stdout.strip()


def test_a_job_listening_on_tcp_says_why_up_front_or_moves(make_cluster: ClusterFactory) -> None:
    cluster = all_up(make_cluster(2))
    criu = call(cluster, 1, "node.info")["criu"]["path"]
    # the agent's own probe, asked again here (cached per process): a real dump of a TCP socket
    trouble = criumod.probe_inet_sockets(criu)
    dep = Deputy(cluster, 1, [PY, "-c", LISTEN])
    try:
        dep.wait_started()
        line = dep.proc.stdout.readline().decode().split()
        assert line[0] == "port"
        port = int(line[1])
        if trouble:
            # this kernel (>= 6.16) with a CRIU that reads SO_PASSCRED of every socket: before, "-"
            # here and `criu dump` failed with "Can't get 1:16 opt: Operation not supported"
            why = wait(lambda: _job_row(cluster, 1, dep.job)["cantmove"], 20, "a cantmove reason")
            assert why.startswith("open TCP socket (this node's CRIU cannot dump TCP/UDP sockets"), why
            out = cluster.exec(1, ["mps", "-c"], capture_output=True, text=True, check=True).stdout
            assert any(ln.split()[0] == str(dep.pid) and "open TCP socket" in ln for ln in out.splitlines())
            r = migrate(cluster, 1, dep.pid, 2)
            assert r.returncode == 3 and "CANT_MOVE" in r.stderr and "open TCP socket" in r.stderr, r.stderr
            assert _greet(cluster, 1, "127.0.0.1", port) == "hello"  # untouched, still listening at home
        else:
            assert _job_row(cluster, 1, dep.job)["cantmove"] == ""
            r = migrate(cluster, 1, dep.pid, 2)
            assert r.returncode == 0, r.stderr
            wait(lambda: _job_row(cluster, 1, dep.job)["where"] == 2, 30, "the job on node 2")
            assert _greet(cluster, 2, "127.0.0.1", port) == "hello"  # it listens on node 2 now
    finally:
        dep.kill()


def test_a_plain_process_listening_on_tcp_gets_the_same_reason(make_cluster: ClusterFactory) -> None:
    cluster = all_up(make_cluster(2))
    trouble = criumod.probe_inet_sockets(call(cluster, 1, "node.info")["criu"]["path"])
    p = cluster.popen(1, ["setsid", PY, "-c", LISTEN], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert p.stdout is not None and p.stdout.readline().startswith(b"port")
        rows = call(cluster, 1, "procs.list", pid=p.pid)
        if not trouble:
            # a CRIU that dumps TCP sockets: a listening one is no reason (the job test moves one)
            assert "socket" not in rows[0]["cantmove"], rows
            return
        # before: "pid N in use on node 2" - the target's question, after every local rule passed
        assert rows[0]["cantmove"].startswith("open TCP socket"), rows
        r = migrate(cluster, 1, p.pid, 2)
        assert r.returncode == 3 and "open TCP socket" in r.stderr, r.stderr
    finally:
        p.kill()
        p.wait(10)


def test_a_job_with_sysv_shared_memory_says_why_up_front(make_cluster: ClusterFactory) -> None:
    cluster = all_up(make_cluster(2))
    dep = Deputy(cluster, 1, [PY, "-c", SHM])
    try:
        dep.wait_started()
        # before: the job row was "-" (only plain processes were checked) and the dump failed
        why = wait(lambda: _job_row(cluster, 1, dep.job)["cantmove"], 20, "a cantmove reason")
        assert why == movable.SYSV_SHM
        r = migrate(cluster, 1, dep.pid, 2)
        assert r.returncode == 3 and "SysV shared memory" in r.stderr, r.stderr
        assert dep.status()["state"] == "running" and dep.status()["where"] == 1
    finally:
        dep.kill()
