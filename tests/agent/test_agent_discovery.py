"""Multicast autodiscovery between two network namespaces joined by a veth pair (root only); the
namespaces have this test's own names and are deleted afterwards, agents are stopped by PID.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from omview.model.mapfile import node_id_from_ipv4
from tests.support.agents import Cluster, wait_for


def sh(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=30)


@pytest.fixture
def veth_pair() -> Iterator[tuple[str, str, str, str, str, str]]:
    """Two namespaces A and B, veth A<->B, addresses 10.251.X.1 and .2 (X from our PID)."""
    tag = f"{os.getpid() % 100000}"
    ns_a, ns_b = f"omvh2a{tag}", f"omvh2b{tag}"
    if_a, if_b = f"h2a{tag}", f"h2b{tag}"
    x = os.getpid() % 250 + 1
    addr_a, addr_b = f"10.251.{x}.1", f"10.251.{x}.2"
    try:
        sh("ip", "netns", "add", ns_a)
        sh("ip", "netns", "add", ns_b)
        sh("ip", "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
        for ns, iface, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", iface)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", iface, "up")
        yield ns_a, ns_b, if_a, if_b, addr_a, addr_b
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def nodes(agent) -> dict[int, tuple[str, str]]:  # type: ignore[no-untyped-def]
    with agent.client() as c:
        return {n.id: (n.status, n.address) for n in c.nodes()}


def test_discovery_on_an_interface(cluster_factory, veth_pair) -> None:  # type: ignore[no-untyped-def]
    ns_a, ns_b, if_a, if_b, addr_a, addr_b = veth_pair
    cl: Cluster = cluster_factory(2, process_scope="netns", down_after=3.0)
    a, b = cl.agents
    for agent, ns, iface in ((a, ns_a, if_a), (b, ns_b, if_b)):
        for k in ("map_file", "address"):
            agent.settings.pop(k)
        agent.settings.update(discovery=True, interface=iface)
        agent.wrap = ["ip", "netns", "exec", ns]
    b.settings["node_id"] = 4242  # explicit IDs are allowed too
    id_a = node_id_from_ipv4(addr_a)
    a.start()
    with a.client() as c:
        assert c.hello["node"] == id_a
        assert c.call("cluster.map")["mode"] == "discovery"
        c.call("events.subscribe", topics=["node"])
        b.start()
        joined = wait_for(lambda: nodes(a).get(4242), 6, "node B discovered by A")
        assert joined == ("up", addr_b)
        name, data = c.next_event(5)
        assert (name, data["node"], data["address"]) == ("node.joined", 4242, addr_b)
    wait_for(lambda: nodes(b).get(id_a) == ("up", addr_a), 6, "node A discovered by B")
    with b.client() as c:
        m = c.call("cluster.map")
        assert m["mode"] == "discovery" and m["node"] == 4242
        assert m["entries"] == sorted(
            [{"base": id_a, "address": addr_a, "count": 1}, {"base": 4242, "address": addr_b, "count": 1}],
            key=lambda e: e["base"],
        )
        # netns scope: B's processes are the agent (and its helpers), not this test
        assert os.getpid() not in {p.pid for p in c.processes()}
        assert c.call("node.stats")["gossip"]["forged"] == 0
    # B leaves gracefully: A shows it down at once; B comes back: up again, no restart of A
    b.stop()
    wait_for(lambda: nodes(a)[4242][0] == "down", 2, "B down on A right after leaving")
    b.start()
    wait_for(lambda: nodes(a)[4242][0] == "up", 6, "B up again on A")
    # A switches to a static map on the same address and back to discovery, live
    with a.client() as c:
        entries = [{"base": 1, "address": addr_a, "count": 1}, {"base": 4242, "address": addr_b, "count": 1}]
        r = c.call("map.set", entries=entries, source="/etc/openmosix.map")
        assert r["mode"] == "map" and r["node"] == 1
        wait_for(lambda: nodes(a) == {1: ("up", addr_a), 4242: ("up", addr_b)}, 6, "B up on A in map mode")
        r = c.call("map.set", entries=[])
        assert r["mode"] == "discovery" and r["node"] == id_a
        wait_for(lambda: nodes(a).get(4242, ("",))[0] == "up", 6, "B up on A after returning to discovery")
