"""Issue 2 on the namespace cluster: every mosctl verb inside a node, a non-root caller, forged gossip."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from omview.model.channel import UnixChannel
from omview.model.client import AgentClient
from omview.testbed import Cluster

pytestmark = pytest.mark.cluster


def mosctl(cluster: Cluster, node: int, *args: str, user: int | None = None) -> tuple[int, str, str]:
    argv = ["mosctl", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    r = cluster.exec(node, argv, capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout.strip(), r.stderr.strip()


def status(cluster: Cluster, node: int) -> dict[str, Any]:
    rc, out, err = mosctl(cluster, node, "status", "--json")
    assert rc == 0, err
    return json.loads(out)


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_every_mosctl_verb_round_trips(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(3, cpus_per_node=2)
    _wait(lambda: mosctl(cluster, 1, "isup", "3")[0] == 0, 10, "node 3 up at node 1")
    for on, off, flag in (("stay", "nostay", "stay"), ("lstay", "nolstay", "lstay"),
                          ("block", "noblock", "block"), ("quiet", "noquiet", "quiet")):
        assert mosctl(cluster, 2, on)[0] == 0
        assert status(cluster, 2)["flags"][flag] is True, on
        assert mosctl(cluster, 2, off)[0] == 0
        assert status(cluster, 2)["flags"][flag] is False, off
    assert mosctl(cluster, 2, "setspeed", "7609")[0] == 0
    assert mosctl(cluster, 2, "getspeed")[1] == "7609"
    _wait(lambda: mosctl(cluster, 1, "getspeed", "2")[1] == "7609", 10, "node 1 to learn node 2's speed")
    assert mosctl(cluster, 2, "setdecay", "2", "950", "900")[0] == 0
    rc, out, _ = mosctl(cluster, 2, "getdecay", "--json")
    assert rc == 0 and json.loads(out) == {"decay_interval": 2, "slow_decay": 950, "fast_decay": 900}
    for verb in ("getload", "getmem", "getfree", "getutil"):
        for node_arg in ((), ("3",)):
            rc, out, err = mosctl(cluster, 2, verb, *node_arg)
            assert rc == 0 and out.isdigit(), (verb, node_arg, out, err)
    rc, out, _ = mosctl(cluster, 1, "getmem")
    assert 0 < int(out) <= cluster.mem_per_node
    node3 = cluster.node(3)
    rc, out, _ = mosctl(cluster, 1, "whois", "3")
    assert rc == 0 and node3.address in out
    rc, out, _ = mosctl(cluster, 1, "whois", node3.address)
    assert rc == 0 and "3" in out.split()
    for verb in ("expel", "bring"):
        assert mosctl(cluster, 3, verb)[0] == 0
    for verb in ("nomfs", "mfs", "gettune", "getyard"):
        rc, _, err = mosctl(cluster, 1, verb)
        assert rc == 2 and "not applicable" in err
    cluster.agent_stop(3)
    _wait(lambda: mosctl(cluster, 1, "isup", "3")[:2] == (1, "down"), 10, "node 3 down at node 1")
    rc, _, err = mosctl(cluster, 1, "whois", "99")
    assert rc == 3 and "NO_SUCH_NODE" in err


def test_status_reports_criu(cluster3: Cluster) -> None:
    """mosctl status names the CRIU the node uses, its version, and that `criu check` passed."""
    def checked() -> bool:
        return bool(status(cluster3, 1)["criu"].get("checked"))

    _wait(checked, 60, "the agent's criu check")
    criu = status(cluster3, 1)["criu"]
    assert criu["ok"] is True and criu["version"].startswith("4."), criu
    rc, out, _ = mosctl(cluster3, 1, "status")
    line = next(x for x in out.splitlines() if x.strip().lower().startswith("criu"))
    assert "available" in line and f"version {criu['version']}" in line, line


def test_a_non_root_caller_reads_but_cannot_change(cluster3: Cluster) -> None:
    rc, out, _ = mosctl(cluster3, 2, "getspeed", user=65534)
    assert rc == 0 and out.isdigit()
    before = status(cluster3, 2)["flags"]["block"]
    rc, _, err = mosctl(cluster3, 2, "block", user=65534)
    assert rc == 3 and "PERMISSION_DENIED" in err and "needs root" in err
    assert status(cluster3, 2)["flags"]["block"] == before


FORGE = r"""
import hashlib, hmac, json, os, socket, sys, time
target, port, addr = sys.argv[1], int(sys.argv[2]), sys.argv[3]
payload = json.dumps({"t": "info", "node": 3, "addr": addr, "boot": "ee" * 8, "seq": 1 << 40,
    "ts": time.time(), "info": {"id": 3, "address": addr, "load": 99999, "speed": 1}, "window": []}).encode()
good_mac_wrong_key = hmac.new(os.urandom(32), b"OMV1" + payload, hashlib.sha256).digest()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    s.sendto(b"OMV1" + good_mac_wrong_key + payload, (target, port))
"""


def test_forged_gossip_from_a_node_address_is_ignored(cluster3: Cluster) -> None:
    """Node 3's own address sends datagrams signed with the wrong key: node 1 drops and counts them."""
    node1, node3 = cluster3.node(1), cluster3.node(3)
    with AgentClient(UnixChannel(cluster3.agent_socket(1))) as c:
        before = c.call("node.stats")["gossip"]["forged"]
        speed_before = next(n.speed for n in c.nodes() if n.id == 3)
    r = cluster3.exec(3, [sys.executable, "-c", FORGE, node1.address, "5428", node3.address],
                      capture_output=True, text=True, timeout=30, env=dict(os.environ))
    assert r.returncode == 0, r.stderr

    def counted() -> bool:
        with AgentClient(UnixChannel(cluster3.agent_socket(1))) as c:
            return c.call("node.stats")["gossip"]["forged"] >= before + 5

    _wait(counted, 10, "node 1 to count five forged datagrams")
    with AgentClient(UnixChannel(cluster3.agent_socket(1))) as c:
        row = next(n for n in c.nodes() if n.id == 3)
    assert row.speed == speed_before and row.load < 99999
