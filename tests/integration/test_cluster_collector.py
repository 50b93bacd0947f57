"""Issue 5 on the namespace cluster: the collector inside a node records every node, its own
node's processes and node events; -d/-n/-r/-k end to end; --node HOST over real SSH."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from omview.model import records
from omview.testbed import Cluster

pytestmark = pytest.mark.cluster


def _collector(cluster: Cluster, node: int, *args: str) -> subprocess.CompletedProcess[str]:
    return cluster.exec(node, [sys.executable, "-m", "omview.collector", *args],
                        capture_output=True, text=True, timeout=60)


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _ticks(logdir: Path) -> int:
    try:
        return len(records.History.open(str(logdir)).ticks)
    except (OSError, records.FormatError):
        return 0


def test_collector_daemon_in_a_node(make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    cluster = make_cluster(3)
    logdir = tmp_path / "history"
    # node 1's /run is its own tmpfs, so the PID file and control socket live in the node
    opts = ["--logdir", str(logdir), "--interval", "0.3", "--pidfile", "/run/omview/collector.pid"]
    job = cluster.popen(1, [sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        r = _collector(cluster, 1, "-d", *opts)
        assert r.returncode == 0, r.stderr
        _wait(lambda: _ticks(logdir) >= 5, 30, "five samples")
        assert _collector(cluster, 1, "-n", "before the outage", *opts).returncode == 0
        cluster.agent_stop(3)
        time.sleep(2)
        cluster.agent_start(3)
        _wait(lambda: _ticks(logdir) >= 15, 30, "samples after node 3 came back")
        r = _collector(cluster, 1, "-r", *opts)
        assert r.returncode == 0 and "saved to" in r.stdout, r.stdout + r.stderr
        _wait(lambda: _ticks(logdir) >= 2, 30, "samples in the new history")
        r = _collector(cluster, 1, "-k", *opts)
        assert r.returncode == 0, r.stderr
        assert _collector(cluster, 1, "-k", *opts).returncode == 1  # nothing left to stop
    finally:
        job.kill()
        job.wait(timeout=10)
    backups = [h for h in records.list_histories(str(logdir)) if h != str(logdir)]
    assert len(backups) == 1
    old = records.History.open(backups[0])
    assert old.problems == []
    assert old.node_ids() == [1, 2, 3]
    assert {old.nodes[n.id].address for n in cluster.nodes} == {n.address for n in cluster.nodes}
    assert [c.label for c in old.checkpoints] == ["before the outage"]
    s3 = old.series(3)
    assert 0 in set(s3.status) and s3.status[-1] == 1, "node 3 recorded down, then up again"
    assert {e.name for e in old.events} >= {"node.down", "node.up"}
    pids_seen = {p.pid for p in old.processes().at(old.end)}
    assert job.pid in pids_seen, "the collector's own node lists its processes"
    other = cluster.popen(2, ["true"])
    other.wait(timeout=10)
    new = records.History.open(str(logdir))
    assert new.problems == [] and len(new.ticks) >= 2


def test_collector_reaches_a_node_over_ssh(cluster3: Cluster, tmp_path: Path) -> None:
    """--node HOST samples a remote agent through `ssh HOST omview-agent bridge` from another node."""
    logdir = tmp_path / "remote-history"
    opts = ["--logdir", str(logdir), "--interval", "0.3", "--node", "node3",
            "--pidfile", "/run/omview/collector-remote.pid"]
    r = _collector(cluster3, 1, "-d", *opts)
    assert r.returncode == 0, r.stderr
    try:
        _wait(lambda: _ticks(logdir) >= 4, 30, "samples through ssh")
    finally:
        assert _collector(cluster3, 1, "-k", *opts).returncode == 0
    h = records.History.open(str(logdir))
    assert h.node_ids() == [1, 2, 3]
    node3 = next(n for n in cluster3.nodes if n.id == 3)
    # the process list comes from the sampled node (node 3), not from where the collector runs
    pids = {p.pid for p in h.processes().at(h.end)}
    assert node3.agent_pid in pids, "node 3's own agent is in the recorded process list"
    assert all(n.agent_pid not in pids for n in cluster3.nodes if n.id != 3)
    assert h.nodes[3].address == node3.address
