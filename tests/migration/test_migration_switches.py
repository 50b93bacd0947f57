"""Node switches and automatic balancing on the namespace cluster: block, expel, bring, lock, a
graceful stop that expels its guests, lstay, and 4 CPU burners spreading over 2 nodes of 2 CPUs."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from omview.testbed import Cluster
from tests.migration.helpers import COUNTER, PY, Deputy, all_up, call, counts, migrate, wait

pytestmark = pytest.mark.cluster

BURN = [PY, "-c", "while True: pass"]


def where(cluster: Cluster, dep: Deputy) -> int:
    return int(call(cluster, dep.node, "job.status", job=dep.job)["where"])


def test_block_expel_bring_lock_and_graceful_stop(make_cluster: Callable[..., Cluster]) -> None:
    cluster = all_up(make_cluster(3))
    a = Deputy(cluster, 1, [PY, COUNTER, "100000", "0.05"])
    b = Deputy(cluster, 3, [PY, COUNTER, "100000", "0.05"])
    c = Deputy(cluster, 1, [PY, COUNTER, "100000", "0.05"])
    try:
        for d in (a, b, c):
            d.wait_started()
        assert migrate(cluster, 1, a.pid, 2).returncode == 0
        assert migrate(cluster, 3, b.pid, 2).returncode == 0
        # block: node 2 refuses arrivals, its guests stay until expelled
        cluster.exec(2, ["mosctl", "block"], check=True, timeout=30)
        wait(
            lambda: {n["id"]: n for n in call(cluster, 1, "cluster.nodes")}[2]["block"],
            10,
            "node 1 to see the block",
        )
        r = migrate(cluster, 1, c.pid, 2)
        assert r.returncode == 3 and "BLOCKED" in r.stderr
        r = cluster.exec(2, ["mosctl", "expel"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "sent 2 guest job(s) away" in r.stdout, r.stdout + r.stderr
        assert (where(cluster, a), where(cluster, b)) == (1, 3)  # each went home
        cluster.exec(2, ["mosctl", "noblock"], check=True, timeout=30)
        wait(lambda: not {n["id"]: n for n in call(cluster, 1, "cluster.nodes")}[2]["block"], 10, "unblocked")
        # bring: node 1 calls back its jobs from wherever they run
        assert migrate(cluster, 1, a.pid, 3).returncode == 0
        assert migrate(cluster, 1, c.pid, 2).returncode == 0
        r = cluster.exec(1, ["mosctl", "bring"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "brought 2 job(s) home" in r.stdout, r.stdout + r.stderr
        assert (where(cluster, a), where(cluster, c)) == (1, 1)
        # lock: honoured by the CLI path (the balancer skips locked jobs too, see below)
        call(cluster, 1, "proc.lock", pid=a.pid, lock=True)
        r = migrate(cluster, 1, a.pid, 2)
        assert r.returncode == 3 and "locked" in r.stderr
        call(cluster, 1, "proc.lock", pid=a.pid, lock=False)
        # a graceful stop of node 2 sends its guest home first
        assert migrate(cluster, 1, a.pid, 2).returncode == 0
        cluster.agent_stop(2, timeout=60)
        assert where(cluster, a) == 1 and call(cluster, 1, "job.status", job=a.job)["state"] == "running"
    finally:
        for d in (a, b, c):
            d.kill()
    for d in (a, b, c):
        nums, _ = counts(d.out)
        assert nums == list(range(len(nums))) and len(nums) > 10


def test_balancer_spreads_burners_and_honours_lstay(make_cluster: Callable[..., Cluster]) -> None:
    cluster = all_up(make_cluster(2, cpus_per_node=2))
    cluster.exec(1, ["mosctl", "lstay"], check=True, timeout=30)
    burners = [Deputy(cluster, 1, BURN) for _ in range(4)]
    try:
        for d in burners:
            d.wait_started(pred=lambda st: st["pid"] > 0)
        time.sleep(8)  # several balancer rounds with a clearly loaded node 1
        assert [where(cluster, d) for d in burners] == [1, 1, 1, 1], "lstay: local jobs stay home"
        cluster.exec(1, ["mosctl", "nolstay"], check=True, timeout=30)

        def spread() -> bool:
            places = [where(cluster, d) for d in burners]
            return places.count(1) == 2 and places.count(2) == 2

        wait(spread, 60, "2 burners on each node", every=0.5)
        time.sleep(8)  # and it stays that way: the stab factor stops ping-pong
        assert spread()
        hist = call(cluster, 1, "migration.history")["migrations"]
        assert {h["reason"] for h in hist} == {"balance"} and len(hist) == 2
    finally:
        for d in burners:
            d.kill()
