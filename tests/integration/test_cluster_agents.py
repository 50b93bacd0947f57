"""Issue 2 acceptance on a real namespace cluster: membership, gossip, SSH bridge, CLI, scope."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from omview.model.channel import PipeChannel, UnixChannel
from omview.model.client import AgentClient
from omview.model.cluster import NodeInfo
from omview.model.errors import HostKeyError
from omview.testbed import Cluster
from omview.transport.ssh import SshConnection, SshTarget

pytestmark = pytest.mark.cluster


def _client(cluster: Cluster, node: int) -> AgentClient:
    return AgentClient(UnixChannel(cluster.agent_socket(node)), client_name="tests")


def _table(cluster: Cluster, node: int) -> dict[int, NodeInfo]:
    with _client(cluster, node) as c:
        return {n.id: n for n in c.nodes()}


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_every_agent_holds_the_whole_table(cluster3: Cluster) -> None:
    addresses = {n.id: n.address for n in cluster3.nodes}

    def all_up() -> bool:
        return all(
            {i: (n.status, n.address) for i, n in _table(cluster3, node).items()}
            == {i: ("up", a) for i, a in addresses.items()}
            for node in addresses
        )

    _wait(all_up, 10, "all three agents to list all three nodes up")
    with _client(cluster3, 2) as c:
        assert c.node_id == 2
        info = c.node_info()
        assert (info.id, info.hostname, info.address) == (2, "node2", addresses[2])
        assert info.cpus == cluster3.cpus_per_node
        assert info.tmem == cluster3.mem_per_node


def test_bridge_over_paramiko_with_strict_known_hosts(cluster3: Cluster) -> None:
    target = SshTarget.from_ssh_config("node3", str(cluster3.ssh_config_path), agent_command=cluster3.agent_command)
    assert target.known_hosts == str(cluster3.known_hosts_path)
    conn = SshConnection(target)
    try:
        with AgentClient(conn.open_bridge(), client_name="tests") as client:
            assert client.node_id == 3
            assert client.call("ping") is not None
            # the same channel keeps serving: many requests, one login
            for _ in range(50):
                assert client.node_info().id == 3
    finally:
        conn.close()


def test_unknown_and_changed_host_keys_are_refused(cluster3: Cluster, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    base = SshTarget.from_ssh_config("node1", str(cluster3.ssh_config_path))
    with pytest.raises(HostKeyError) as unknown:
        SshConnection(SshTarget.from_ssh_config("node1", str(cluster3.ssh_config_path), known_hosts=str(empty)))
    assert not unknown.value.known and unknown.value.fingerprint.startswith("SHA256:")
    # node2's key written down for node1's address: a changed key, refused as a possible attack
    lines = cluster3.known_hosts_path.read_text().splitlines()
    node2_key = next(line for line in lines if line.startswith("node2,")).split(None, 1)[1]
    wrong = tmp_path / "wrong_hosts"
    wrong.write_text(f"{base.address} {node2_key}\n")
    with pytest.raises(HostKeyError) as changed:
        SshConnection(SshTarget.from_ssh_config("node1", str(cluster3.ssh_config_path), known_hosts=str(wrong)))
    assert changed.value.known
    assert "MISMATCH" in str(changed.value)


def test_bridge_over_openssh_client(cluster3: Cluster) -> None:
    with AgentClient(PipeChannel(cluster3.ssh_argv(1, "omview-agent", "bridge")), client_name="tests") as c:
        assert c.node_id == 1
        assert {n.id for n in c.nodes()} == {1, 2, 3}


def test_settings_gossip_to_other_nodes(cluster3: Cluster) -> None:
    """mosctl in node 1 changes its speed; node 3 learns it through gossip."""
    old = _table(cluster3, 1)[1].speed
    try:
        r = cluster3.exec(1, ["mosctl", "setspeed", "7609"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        r = cluster3.exec(1, ["mosctl", "getspeed"], capture_output=True, text=True, timeout=30)
        assert r.stdout.strip() == "7609"
        _wait(lambda: _table(cluster3, 3)[1].speed == 7609, 10, "node 3 to see node 1's new speed")
    finally:
        cluster3.exec(1, ["mosctl", "setspeed", str(old)], timeout=30, check=True)


def test_each_node_reports_only_its_own_processes(cluster3: Cluster) -> None:
    burner = cluster3.popen(2, [sys.executable, "-c", "while True: pass"])
    try:
        def seen(node: int) -> bool:
            with _client(cluster3, node) as c:
                return any(p.pid == burner.pid for p in c.processes())

        # nsenter execs the command, so the burner's PID is the Popen's PID
        _wait(lambda: seen(2), 10, "node 2 to list its burner")
        assert not seen(1) and not seen(3)
        _wait(lambda: _table(cluster3, 2)[2].load >= 40, 20, "node 2's load to rise")
        assert _table(cluster3, 2)[1].load < 40, "node 1 must not count node 2's burner"
    finally:
        burner.kill()
        burner.wait(timeout=10)


def _all_see_all_up(cluster: Cluster) -> bool:
    ids = {n.id for n in cluster.nodes}
    return all({i for i, n in _table(cluster, node).items() if n.up} == ids for node in ids)


def _join_leave(cluster: Cluster) -> None:
    # every agent must know node 3 before it leaves: with autodiscovery an agent lists only the nodes
    # it has heard from, and a leave from a node it never heard of has no entry to mark down
    _wait(lambda: _all_see_all_up(cluster), 10, "every agent to list all nodes up")
    cluster.agent_stop(3)  # graceful: announces leaving
    _wait(lambda: not _table(cluster, 1)[3].up and not _table(cluster, 2)[3].up, 5, "node 3 down after stop")
    cluster.agent_start(3)
    took = _wait(lambda: _table(cluster, 1)[3].up and _table(cluster, 2)[3].up, 10, "node 3 up again")
    assert took <= 3.0, f"a joining node took {took:.1f} s to appear"
    cluster.agent_kill(3)  # crash: no goodbye, peers notice the silence
    _wait(lambda: not _table(cluster, 1)[3].up, 20, "node 3 marked down after its agent died")
    cluster.agent_start(3)
    _wait(lambda: _table(cluster, 2)[3].up, 10, "node 3 up after restart")


def test_join_and_leave_with_a_map_file(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(3)
    with _client(cluster, 1) as c:
        m = c.call("cluster.map")
    assert m["mode"] == "map"
    _join_leave(cluster)


def test_join_and_leave_with_autodiscovery(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(3, discovery=True)
    with _client(cluster, 2) as c:
        assert c.call("cluster.map")["mode"] == "discovery"
    _join_leave(cluster)


def test_flags_survive_an_agent_restart(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(2, cpus_per_node=4)
    for verb in ("block", "lstay", "quiet", "stay"):
        r = cluster.exec(2, ["mosctl", verb], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    cluster.exec(2, ["mosctl", "setspeed", "15217"], check=True, timeout=30)
    cluster.agent_restart(2)
    with _client(cluster, 2) as c:
        flags = c.flags()
        info = c.node_info()
    assert (flags.block, flags.lstay, flags.quiet, flags.stay, flags.speed) == (True, True, True, True, 15217)
    assert info.cpus == 4
    # a quiet node is still up (heartbeats) and flagged quiet at its peers
    _wait(lambda: _table(cluster, 1)[2].up and _table(cluster, 1)[2].quiet, 10, "node 1 to see node 2 quiet")
    r = cluster.exec(2, ["mosctl", "status"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "block" in r.stdout


def test_showmap_and_exec_exit_status(cluster3: Cluster) -> None:
    r = cluster3.exec(2, ["showmap"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    first = cluster3.nodes[0].address
    assert r.stdout.splitlines()[0] == "My Node-Id: 0x0002"
    assert f"0x0001       {first:<16} 3" in r.stdout
    r = cluster3.exec(3, ["mosctl", "isup", "2"], capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout.strip()) == (0, "up")
    r = subprocess.run(
        [sys.executable, "-m", "omview.testbed", "exec", "--state", str(cluster3.state_dir), "1", "--",
         "sh", "-c", "exit 7"],
        timeout=30,
    )
    assert r.returncode == 7
