"""procs.list never waits for the peer it asks which PIDs are taken (agent/peers/pidcheck.py), on a
real namespace cluster: with node 2's agent stopped (SIGSTOP, by PID) node 1 still answers at once,
keeps the reason it already had, and names a new process's taken PID once node 2 answers again."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from omview.testbed import Cluster
from tests.migration.helpers import PY, all_up, call, wait

pytestmark = pytest.mark.cluster

LOOP = "import time\nwhile True: time.sleep(0.05)"
#: the peer call the listing used to wait for timed out after 5 s; a listing of one PID takes far less
PROMPT = 3.0


def _plain(cluster: Cluster) -> subprocess.Popen[bytes]:
    """A process of node 1's root PID namespace (shared with node 2 here: its PID is taken there)."""
    p = cluster.popen(1, ["setsid", PY, "-c", LOOP], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)  # fmt: skip
    wait(lambda: _comm(p.pid) == "python3", 10, "the plain process to start in node 1")
    return p


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _timed_reason(cluster: Cluster, pid: int) -> tuple[float, str]:
    t0 = time.monotonic()
    rows = call(cluster, 1, "procs.list", pid=pid)
    took = time.monotonic() - t0
    assert len(rows) == 1, rows
    return took, str(rows[0]["cantmove"])


def test_listing_does_not_wait_for_a_stopped_peer(make_cluster: Callable[..., Cluster]) -> None:
    cluster = all_up(make_cluster(2))
    peer = cluster.node(2).agent_pid
    assert peer is not None
    started: list[subprocess.Popen[bytes]] = []
    stopped = False
    try:
        first = _plain(cluster)
        started.append(first)
        old = f"pid {first.pid} in use on node 2"
        wait(lambda: _timed_reason(cluster, first.pid)[1] == old, 30, old)

        second = _plain(cluster)  # PIDs node 2 has not been asked about yet
        started.append(second)
        os.kill(peer, signal.SIGSTOP)
        stopped = True
        # while node 2 is still listed up (gossip marks it down after a few seconds): every listing
        # would have asked it and waited; now each answers from the last answer, asking in the background
        took: list[float] = []
        for _ in range(10):
            t, why = _timed_reason(cluster, second.pid)
            took.append(t)
            assert "in use" not in why, why  # nobody answered for this PID
            t, why = _timed_reason(cluster, first.pid)
            took.append(t)
            assert why == old or why == "", why  # the last answer, or none once node 2 is down
        assert max(took) < PROMPT, f"listings took {took}"
        t0 = time.monotonic()
        full = call(cluster, 1, "procs.list")
        assert time.monotonic() - t0 < PROMPT and any(r["pid"] == second.pid for r in full)

        os.kill(peer, signal.SIGCONT)
        stopped = False
        new = f"pid {second.pid} in use on node 2"
        seen: list[str] = []
        try:
            wait(lambda: seen.append(_timed_reason(cluster, second.pid)[1]) or seen[-1] == new, 60, new)
        except AssertionError:
            raise AssertionError(f"cantmove {seen[-1]!r}, want {new!r}") from None
    finally:
        if stopped:
            os.kill(peer, signal.SIGCONT)
        for p in started:
            if p.poll() is None:
                p.kill()
            p.wait(10)
