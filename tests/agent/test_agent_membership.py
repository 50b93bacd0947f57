"""Cluster membership with real agents: join, leave, crash, restart, setpe -w / -off."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from omview.model.errors import AgentFault
from omview.model.procfs import start_time
from omview.model.protocol import FaultCode
from tests.support.agents import Cluster, wait_for


def statuses(agent) -> dict[int, str]:  # type: ignore[no-untyped-def]
    with agent.client() as c:
        return {n.id: n.status for n in c.nodes()}


def test_join_leave_crash_restart(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(3)
    a1, a2, a3 = cl.agents
    a1.start()
    # alone: the others are listed from the map, down, never heard of
    with a1.client() as c:
        rows = {n.id: n for n in c.nodes()}
        assert rows[1].up and rows[2].status == "down" and rows[3].status == "down"
        assert rows[2].age == -1.0 and rows[2].address == "127.0.0.3"
        c.call("events.subscribe", topics=["node"])
        # a joining node is announced to everyone at once (well under down_after)
        t0 = time.monotonic()
        a2.start()
        a3.start()
        seen: set[int] = set()
        while seen != {2, 3}:
            name, data = c.next_event(5)
            if name == "node.up":
                seen.add(data["node"])
        assert time.monotonic() - t0 < 6
        assert statuses(a1) == {1: "up", 2: "up", 3: "up"}
        # graceful stop: peers are told, so node 3 is down immediately, not after down_after
        t0 = time.monotonic()
        assert a3.stop() == 0
        name, data = c.next_event(5)
        while not (name == "node.down" and data["node"] == 3):
            name, data = c.next_event(5)
        assert data["reason"] == "left" and time.monotonic() - t0 < 1.5
        # a crash (SIGKILL, no goodbye): down after down_after (3 s), never sooner than ~down_after
        t0 = time.monotonic()
        a2.stop(sig=signal.SIGKILL)
        name, data = c.next_event(10)
        while not (name == "node.down" and data["node"] == 2):
            name, data = c.next_event(10)
        took = time.monotonic() - t0
        assert data["reason"] == "silent" and 1.5 < took < 6, took
        assert statuses(a1) == {1: "up", 2: "down", 3: "down"}
        # restart: up again, without restarting node 1
        a2.start()
        wait_for(lambda: statuses(a1)[2] == "up", 5, "node 2 up again on node 1")
    # and node 2 sees node 1 with fresh, relayed data
    with a2.client() as c2:
        wait_for(lambda: {n.id: n.status for n in c2.nodes()}[1] == "up", 5, "node 1 up on node 2")
        row = next(n for n in c2.nodes() if n.id == 1)
        assert 0 <= row.age < 3 and row.speed > 0 and row.tmem > 0


def test_window_relays_information(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    """With fanout 1 a node still learns about everybody via the windows of others."""
    cl: Cluster = cluster_factory(3, gossip_fanout=1, down_after=6.0)
    cl.start()
    for a in cl.agents:
        wait_for(lambda a=a: set(statuses(a).values()) == {"up"}, 10, f"{a.name} sees all up")
    with cl.agents[0].client() as c:
        stats = c.call("node.stats")["gossip"]
    assert stats["accepted"] > 0 and stats["forged"] == stats["replayed"] == stats["stale"] == 0


def test_map_set_off_and_rejoin(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(3)
    cl.start()
    a1, a2, a3 = cl.agents
    for a in cl.agents:
        wait_for(lambda a=a: set(statuses(a).values()) == {"up"}, 10, f"all up on {a.name}")
    with a1.client() as c:
        c.call("events.subscribe", topics=["map.changed"])
        # a bad map is refused with the entry named; nothing changes
        with pytest.raises(AgentFault) as e:
            c.call(
                "map.set",
                entries=[
                    {"base": 1, "address": "127.0.0.2", "count": 1},
                    {"base": 1, "address": "127.0.0.9", "count": 1},
                ],
                source="/x/new.map",
            )
        assert e.value.code == FaultCode.BAD_ARGUMENT
        assert "/x/new.map" in e.value.message and "node ID 1 is already defined on line 1" in e.value.message
        with pytest.raises(AgentFault) as e:
            c.call("map.set", entries=[{"base": 1, "address": "node1", "count": 3}], source="/x/new.map")
        assert "entry 1" in e.value.message and "needs an IP address" in e.value.message
        # my own address must be in it (setpe's rule)
        with pytest.raises(AgentFault) as e:
            c.call("map.set", entries=[{"base": 1, "address": "127.0.0.3", "count": 2}], source="/x/new.map")
        assert (
            "the supplied table is well-formatted, but my IP address (127.0.0.2) is not there!"
            in e.value.message
        )
        assert c.call("cluster.map")["entries"] == [{"base": 1, "address": "127.0.0.2", "count": 3}]
        # setpe -off: leave; the table shows only this node, peers see it leave at once
        with a2.client() as c2:
            c2.call("events.subscribe", topics=["node.down"])
            off = c.call("map.off")
            assert off["mode"] == "off" and off["entries"] == []
            name, data = c2.next_event(3)
            assert name == "node.down" and data["node"] == 1 and data["reason"] == "left"
        assert statuses(a1) == {1: "up"}
        name, data = c.next_event(5)
        assert name == "map.changed" and data["mode"] == "off"
        assert c.node_info().up
        # back: an empty map means "as configured" (the map file), and the persisted map is dropped
        r = c.call("map.set", entries=[])
        assert r["mode"] == "map" and r["entries"] == [{"base": 1, "address": "127.0.0.2", "count": 3}]
        assert not os.path.exists(os.path.join(a1.state_dir, "map.json"))
        name, data = c.next_event(5)
        assert name == "map.changed" and data["mode"] == "map"
        wait_for(lambda: set(statuses(a1).values()) == {"up"}, 6, "all up after rejoining")
        with a2.client() as c2:
            wait_for(lambda: {n.id: n.status for n in c2.nodes()}[1] == "up", 6, "node 2 sees node 1 back")
        # a valid new map: node 3 renumbered to 7, node 2 dropped; applied live and persisted
        new = [
            {"base": 1, "address": "127.0.0.2", "count": 1},
            {"base": 7, "address": "127.0.0.4", "count": 1},
        ]
        r = c.call("map.set", entries=new, source="/x/new.map")
        assert r["mode"] == "map" and r["entries"] == new and r["node"] == 1
        name, data = c.next_event(5)
        assert name == "map.changed" and data["entries"] == new
        assert sorted(statuses(a1)) == [1, 7]
        with open(os.path.join(a1.state_dir, "map.json"), encoding="utf-8") as fh:
            assert json.load(fh)["entries"] == new
        # node 3 (127.0.0.4) still gossips as node 3, which this map does not allow: dropped, counted
        wait_for(lambda: c.call("node.stats")["gossip"]["unknown_sender"] > 0, 5, "unknown sender counted")
        assert statuses(a1)[7] == "down"


def test_persisted_map_survives_restart(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(2)
    a1 = cl.agents[0].start()
    new = [{"base": 5, "address": "127.0.0.2", "count": 2}]
    with a1.client() as c:
        assert c.call("map.set", entries=new, source="/etc/openmosix.map")["node"] == 5
    a1.stop()
    a1.start()
    with a1.client() as c:
        assert c.hello["node"] == 5
        r = c.call("cluster.map")
        assert r["entries"] == new and r["source"] == "/etc/openmosix.map"


def test_flags_and_locks_persist_across_restart(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0].start()
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        with a.client() as c:
            speed = c.flags().speed
            c.set_flags(block=True, quiet=True, decay_interval=2, slow_decay=900, fast_decay=500)
            assert c.call("proc.lock", pid=sleeper.pid, lock=True)["lock"] is True
        # the lock is keyed by (pid, start time), so a reused PID cannot inherit it
        start = start_time(sleeper.pid)
        with open(os.path.join(a.state_dir, "locks.json"), encoding="utf-8") as fh:
            assert json.load(fh)["locks"] == [[sleeper.pid, start]]
        with open(os.path.join(a.state_dir, "flags.json"), encoding="utf-8") as fh:
            saved = json.load(fh)
        assert saved["block"] is True and saved["fast_decay"] == 500
        assert a.stop() == 0
        a.start()
        with a.client() as c:
            f = c.flags()
            assert (f.block, f.quiet, f.decay_interval, f.slow_decay, f.fast_decay) == (
                True,
                True,
                2,
                900,
                500,
            )
            assert f.speed == speed  # calibrated once, then kept
            assert c.processes(pid=sleeper.pid)[0].lock is True
            me = c.node_info()
            assert me.block and me.quiet
    finally:
        sleeper.kill()
        sleeper.wait()
    # a new process that reuses nothing of the old one is not locked; the dead one is pruned
    with a.client() as c:
        other = subprocess.Popen(["sleep", "60"])
        try:
            assert c.processes(pid=other.pid)[0].lock is False
        finally:
            other.kill()
            other.wait()


def test_quiet_node_stays_up_and_quiet(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(2, down_after=3.0)
    cl.start()
    a1, a2 = cl.agents
    wait_for(lambda: statuses(a1)[2] == "up", 5, "node 2 up")
    with a2.client() as c2:
        c2.set_flags(quiet=True)
    with a1.client() as c:
        wait_for(lambda: next(n for n in c.nodes() if n.id == 2).quiet, 5, "node 2 shown quiet")
        time.sleep(4)  # longer than down_after: the heartbeat keeps it up
        row = next(n for n in c.nodes() if n.id == 2)
        assert row.up and row.quiet and row.age < 3
