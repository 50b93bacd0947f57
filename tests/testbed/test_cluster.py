"""omview-cluster: real netns nodes with real sshd, exec into nodes, agents, teardown (root only)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from omview.model.channel import PipeChannel, UnixChannel
from omview.model.client import AgentClient
from omview.model.procfs import alive
from omview.testbed import Cluster, ClusterError, Names, leftovers, teardown
from omview.testbed.api import choose_subnet, parse_size
from tests.conftest import ClusterFactory, require_root

pytestmark = pytest.mark.timeout(120)


def _ssh(cluster: Cluster, node: int | str, command: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cluster.ssh_argv(node, command), capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


def _pid_alive(pid: int | None) -> bool:
    return alive(pid, None)


# ------------------------------------------------------------------ pure helpers (no root needed)


def test_names_fit_interface_limit_and_differ_per_state_dir() -> None:
    a, b = Names.for_state("/tmp/x/a"), Names.for_state("/tmp/x/b")
    assert a.tag != b.tag
    for names in (a, b):
        assert len(names.bridge) <= 15
        assert len(names.veth(200)) <= 15
        assert names.netns(3).startswith(names.netns_prefix)
    # the same dir spelled differently is the same cluster
    assert Names.for_state("/tmp/x/a/../a") == a


def test_choose_subnet_skips_used_networks() -> None:
    import ipaddress

    tag = "000005"  # starts at X=5
    assert choose_subnet(tag, []) == 5
    used = [ipaddress.IPv4Network("10.77.5.0/24"), ipaddress.IPv4Network("10.77.6.128/25")]
    assert choose_subnet(tag, used) == 7
    # a very wide route does not block our more specific /24
    assert choose_subnet(tag, [ipaddress.IPv4Network("10.0.0.0/8")]) == 5
    # but a /16 covering all of 10.77 does
    with pytest.raises(ClusterError, match="no free"):
        choose_subnet(tag, [ipaddress.IPv4Network("10.77.0.0/16")])


def test_parse_size() -> None:
    assert parse_size("2G") == 2 * 1024**3
    assert parse_size("512M") == 512 * 1024**2
    assert parse_size("1.5GiB") == int(1.5 * 1024**3)
    assert parse_size("4096") == 4096
    with pytest.raises(ClusterError, match="bad size"):
        parse_size("lots")


# ------------------------------------------------------------------ shared 3-node cluster


@pytest.mark.cluster
def test_every_node_reachable_over_strict_ssh(cluster3: Cluster) -> None:
    venv_bin = str(Path(cluster3.agent_command).parent)
    for n in cluster3.nodes:
        cp = _ssh(cluster3, n.name, "hostname; echo $OMVIEW_NODE; command -v omview-agent; echo $SSH_CONNECTION")
        assert cp.returncode == 0, cp.stderr
        host, node_env, agent, conn = cp.stdout.splitlines()
        assert host == n.name
        assert node_env == str(n.id)
        assert agent == f"{venv_bin}/omview-agent"  # the venv is on PATH in ssh sessions
        assert conn.split()[2] == n.address


@pytest.mark.cluster
def test_ssh_rejects_a_wrong_host_key(cluster3: Cluster, tmp_path: Path) -> None:
    lines = cluster3.known_hosts_path.read_text().splitlines()
    key1 = lines[0].split(maxsplit=1)[1]
    bad = tmp_path / "known_hosts"
    # node2's entry now carries node1's key: the check must refuse node2
    bad.write_text("\n".join(lines[:1] + [f"node2,{cluster3.node(2).address} {key1}"] + lines[2:]) + "\n")
    argv = cluster3.ssh_argv(2, "true")
    argv[3:3] = ["-o", f"UserKnownHostsFile={bad}", "-o", "LogLevel=ERROR"]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert cp.returncode == 255
    assert "verification failed" in cp.stderr or "IDENTIFICATION HAS CHANGED" in cp.stderr
    # and an unknown host is refused too (StrictHostKeyChecking yes, BatchMode)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    argv[4] = f"UserKnownHostsFile={empty}"
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert cp.returncode == 255, cp.stdout


@pytest.mark.cluster
def test_node_to_node_ssh(cluster3: Cluster) -> None:
    n1, n3 = cluster3.node(1), cluster3.node(3)
    # from inside an ssh session on node1: plain `ssh node3` works (node's /etc/ssh/ssh_config)
    cp = _ssh(cluster3, 1, "ssh node3 'echo $(hostname) $SSH_CONNECTION'")
    assert cp.returncode == 0, cp.stderr
    host, src, _sport, dst, _dport = cp.stdout.split()
    assert (host, src, dst) == ("node3", n1.address, n3.address)
    # and from a command exec'd into node2
    cp2 = cluster3.exec(2, ["ssh", "node1", "hostname"], capture_output=True, text=True, timeout=30)
    assert (cp2.returncode, cp2.stdout.strip()) == (0, "node1"), cp2.stderr


@pytest.mark.cluster
def test_exec_runs_inside_the_node(cluster3: Cluster) -> None:
    for n in cluster3.nodes:
        cp = cluster3.exec(n.id, ["sh", "-c", "hostname; echo $OMVIEW_NODE; ip -4 -o addr show eth0"],
                           capture_output=True, text=True, timeout=30)
        assert cp.returncode == 0, cp.stderr
        host, env, addr = cp.stdout.splitlines()
        assert (host, env) == (n.name, str(n.id))
        assert f"inet {n.address}/24" in addr
    # exit status and stdin pass through
    assert cluster3.exec(2, ["sh", "-c", "exit 7"], timeout=30).returncode == 7
    cp = cluster3.exec(3, ["tr", "a-z", "A-Z"], input="hello\n", capture_output=True, text=True, timeout=30)
    assert cp.stdout == "HELLO\n"


@pytest.mark.cluster
def test_each_node_has_its_own_omview_dirs(cluster3: Cluster) -> None:
    key = cluster3.key_path.read_text().strip()
    assert len(bytes.fromhex(key)) == 32
    for n in cluster3.nodes:
        cp = cluster3.exec(n.id, ["cat", "/etc/omview/agent.toml"], capture_output=True, timeout=30)
        conf = tomllib.loads(cp.stdout.decode())
        assert conf["node_id"] == n.id
        assert conf["address"] == n.address
        assert conf["interface"] == "eth0"
        assert conf["process_scope"] == "netns"
        assert conf["test_mode"] is True  # the migration tests' fault hooks work here only
        assert conf["cpus"] == cluster3.cpus_per_node and conf["memory"] == cluster3.mem_per_node
        assert conf["map_file"] == "/etc/omview/openmosix.map"
        mapline = cluster3.exec(n.id, ["grep", "-v", "^#", "/etc/omview/openmosix.map"],
                                capture_output=True, text=True, timeout=30).stdout.split()
        assert mapline == ["1", cluster3.node(1).address, "3"]
        st = cluster3.exec(n.id, ["stat", "-c", "%a", "/etc/omview/cluster.key"],
                           capture_output=True, text=True, timeout=30).stdout.strip()
        assert st == "600"
        got = cluster3.exec(n.id, ["cat", "/etc/omview/cluster.key"], capture_output=True, text=True, timeout=30)
        assert got.stdout.strip() == key
    # /var/lib/omview is private per node and the host's stays untouched
    marker = f"probe-{os.getpid()}"
    cluster3.exec(1, ["touch", f"/var/lib/omview/{marker}"], check=True, timeout=30)
    try:
        assert cluster3.exec(2, ["test", "-e", f"/var/lib/omview/{marker}"], timeout=30).returncode == 1
        assert not Path(f"/var/lib/omview/{marker}").exists()
        assert (Path(cluster3.node(1).dir) / "var-lib-omview" / marker).exists()
    finally:
        cluster3.exec(1, ["rm", "-f", f"/var/lib/omview/{marker}"], timeout=30)
    assert not Path("/etc/omview/agent.toml").exists()


@pytest.mark.cluster
def test_cli_status_json(cluster3: Cluster) -> None:
    cp = subprocess.run([sys.executable, "-m", "omview.testbed", "status", "--state", str(cluster3.state_dir),
                         "--json"], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    st = json.loads(cp.stdout)
    assert [n["name"] for n in st["nodes"]] == ["node1", "node2", "node3"]
    # the documented shape (docs/cluster.md)
    assert set(st) == {"state_dir", "bridge", "subnet", "ssh_config", "agent_command", "nodes"}
    assert set(st["nodes"][0]) == {"id", "name", "address", "netns", "holder_pid", "holder_alive", "sshd_pid",
                                   "sshd_alive", "agent_pid", "agent_alive"}  # fmt: skip
    assert all(n["holder_alive"] and n["sshd_alive"] for n in st["nodes"])
    assert st["bridge"] == cluster3.bridge
    recorded = json.loads(cluster3.json_path.read_text())
    assert recorded["agent_command"] == cluster3.agent_command
    assert Path(recorded["agent_command"]).is_absolute()


# ------------------------------------------------------------------ clusters of their own


@pytest.mark.cluster
def test_up_down_leaves_nothing(make_cluster: ClusterFactory) -> None:
    c = make_cluster(3, agent=False, cpus_per_node=2, mem_per_node=512 * 1024**2)
    assert sorted(leftovers(c.state_dir)) == sorted(
        [f"netns {n.netns}" for n in c.nodes] + [f"link {n.veth}" for n in c.nodes] + [f"link {c.bridge}"]
    )
    conf = tomllib.loads((Path(c.node(2).dir) / "etc-omview" / "agent.toml").read_text())
    assert (conf["cpus"], conf["memory"]) == (2, 512 * 1024**2)
    pids = [p for n in c.nodes for p in (n.holder_pid, n.sshd_pid)]
    assert all(_pid_alive(p) for p in pids)
    assert _ssh(c, 3, "hostname").stdout.strip() == "node3"
    with pytest.raises(ClusterError, match="already up"):
        Cluster.up(c.state_dir, 2, agent=False)
    # an arrival its agent never finished (e.g. peer.mig.prepare {"id": null} before it was validated):
    # incoming/<id> linking to images in the host's /dev/shm, which no agent removes once the node is gone
    var = Path(c.node(2).dir) / "var-lib-omview"
    shm = Path(f"/dev/shm/omview-in-None-{c.bridge}")
    shm.mkdir()
    (shm / "pages-1.img").write_bytes(b"x")
    (var / "incoming" / "None").mkdir(parents=True)
    (var / "incoming" / "None" / "images").symlink_to(shm)
    done = teardown(c.state_dir)
    assert any("bridge" in d for d in done)
    assert not shm.exists() and not (var / "incoming" / "None").exists()
    assert leftovers(c.state_dir) == []
    assert not any(_pid_alive(p) for p in pids)
    assert not c.json_path.exists()
    assert teardown(c.state_dir) == []  # idempotent


@pytest.mark.cluster
def test_two_clusters_side_by_side(make_cluster: ClusterFactory) -> None:
    a = make_cluster(2, agent=False)
    b = make_cluster(2, agent=False)
    assert a.bridge != b.bridge and a.subnet != b.subnet
    assert {n.netns for n in a.nodes}.isdisjoint(n.netns for n in b.nodes)
    for c in (a, b):
        cp = _ssh(c, 2, "echo $(hostname) $SSH_CONNECTION")
        assert cp.returncode == 0, cp.stderr
        assert cp.stdout.split()[0] == "node2" and cp.stdout.split()[3] == c.node(2).address
    # a's key opens nothing in b
    cfg = a.state_dir / "cross_ssh_config"
    cfg.write_text(b.ssh_config_path.read_text().replace(str(b.identity_path), str(a.identity_path)))
    cp = subprocess.run(["ssh", "-F", str(cfg), "node1", "true"], capture_output=True, text=True, timeout=30,
                        stdin=subprocess.DEVNULL)
    assert cp.returncode == 255
    teardown(a.state_dir)
    assert leftovers(a.state_dir) == []
    assert _ssh(b, 1, "hostname").stdout.strip() == "node1"  # b is unaffected


@pytest.mark.cluster
def test_down_after_a_crash(make_cluster: ClusterFactory) -> None:
    c = make_cluster(2, agent=False)
    sshds = [n.sshd_pid for n in c.nodes]
    # a stray process in a node (like a job) must go too
    stray = c.popen(1, ["setsid", "sleep", "600"], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10  # nsenter must have entered the node before the holder dies
    while Path(f"/proc/{stray.pid}/comm").read_text().strip() != "sleep" and time.monotonic() < deadline:
        time.sleep(0.01)
    c.json_path.unlink()
    for n in c.nodes:
        assert n.holder_pid
        os.kill(n.holder_pid, signal.SIGKILL)
    done = teardown(c.state_dir)
    assert any("netns" in d for d in done)
    assert leftovers(c.state_dir) == []
    assert stray.wait(timeout=10) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while any(_pid_alive(p) for p in sshds) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_pid_alive(p) for p in sshds)
    assert teardown(c.state_dir) == []


@pytest.mark.cluster
def test_cli_up_exec_down(tmp_path: Path) -> None:
    require_root()
    state = tmp_path / "cli"
    cli = [sys.executable, "-m", "omview.testbed"]
    try:
        cp = subprocess.run([*cli, "up", "--state", str(state), "--nodes", "2", "--no-agent",
                             "--cpus-per-node", "3", "--mem-per-node", "1G"],
                            capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        assert "node2" in cp.stdout
        cp = subprocess.run([*cli, "exec", "--state", str(state), "2", "--", "sh", "-c", "cat; hostname; exit 3"],
                            input="from stdin\n", capture_output=True, text=True, timeout=30)
        assert (cp.returncode, cp.stdout) == (3, "from stdin\nnode2\n")
        conf = tomllib.loads((state / "nodes" / "1" / "etc-omview" / "agent.toml").read_text())
        assert (conf["cpus"], conf["memory"]) == (3, 1024**3)
        cp = subprocess.run([*cli, "exec", "--state", str(state), "9", "--", "true"],
                            capture_output=True, text=True, timeout=30)
        assert cp.returncode == 1 and "no node '9'" in cp.stderr
    finally:
        cp = subprocess.run([*cli, "down", "--state", str(state)], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert leftovers(state) == []
    cp = subprocess.run([*cli, "down", "--state", str(state)], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0 and "nothing was left" in cp.stdout


@pytest.mark.cluster
def test_discovery_cluster(make_cluster: ClusterFactory) -> None:
    c = make_cluster(2, discovery=True)
    etc = Path(c.node(1).dir) / "etc-omview"
    conf = tomllib.loads((etc / "agent.toml").read_text())
    assert conf["discovery"] is True and "map_file" not in conf
    assert not (etc / "openmosix.map").exists()
    # multicast beacons cross the bridge (snooping off): node 1 learns node 2 without a map
    seen: list[int] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with AgentClient(UnixChannel(c.agent_socket(1))) as a:
            seen = sorted(n.id for n in a.nodes() if n.up)
        if seen == [1, 2]:
            break
        time.sleep(0.2)
    assert seen == [1, 2]


@pytest.mark.cluster
def test_agents_answer_over_ssh_bridge(cluster3: Cluster) -> None:
    for n in cluster3.nodes:
        with AgentClient(PipeChannel(cluster3.ssh_argv(n.id, "omview-agent", "bridge"))) as a:
            assert a.node_id == n.id
            info = a.node_info()
            assert (info.address, info.hostname, info.cpus) == (n.address, n.name, cluster3.cpus_per_node)
            assert info.tmem == cluster3.mem_per_node


def test_bad_input_is_refused() -> None:
    require_root()
    with pytest.raises(ClusterError, match="under /run"):
        Cluster.up("/run/omview-cluster-test", 2, agent=False)
    with pytest.raises(ClusterError, match="--nodes"):
        Cluster.up("/tmp/omview-cluster-never", 0, agent=False)
    with pytest.raises(ClusterError, match="no cluster in"):
        Cluster.load("/tmp/omview-cluster-never-made")


# ------------------------------------------------------------------ agents


@pytest.mark.cluster
def test_agent_missing_or_failing_is_reported(make_cluster: ClusterFactory) -> None:
    c = make_cluster(2, agent=True)
    c.agent_stop(2)
    (Path(c.node(2).dir) / "etc-omview" / "agent.toml").write_text("node_id = [broken\n")
    with pytest.raises(ClusterError, match="agent on node 2 did not start"):
        c.agent_start(2, timeout=15)


@pytest.mark.cluster
def test_agent_lifecycle(make_cluster: ClusterFactory) -> None:
    c = make_cluster(2)
    for n in c.nodes:
        assert n.agent_alive()
        assert Path(c.agent_socket(n.id)).exists()
    first = c.node(1).agent_pid
    c.agent_kill(1)
    assert not _pid_alive(first)
    assert Cluster.load(c.state_dir).node(1).agent_pid is None
    pid = c.agent_start(1)
    assert pid != first and _pid_alive(pid)
    c.agent_stop(1)
    assert not _pid_alive(pid)
    pid2 = c.agent_restart(2)
    assert _pid_alive(pid2) and Cluster.load(c.state_dir).node(2).agent_pid == pid2
    # the agent runs in its node: same netns as the holder
    assert os.readlink(f"/proc/{pid2}/ns/net") == os.readlink(f"/proc/{c.node(2).holder_pid}/ns/net")
