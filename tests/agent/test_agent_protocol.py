"""Agent protocol over its real Unix socket: handshake, every op, and fault handling."""

from __future__ import annotations

import os
import socket
import stat
import time

import pytest

from omview.model import protocol
from omview.model.cluster import Flags, NodeInfo, ProcessInfo
from omview.model.errors import AgentFault
from omview.model.protocol import MAX_LINE, FaultCode
from tests.support.agents import Cluster, RawConn, fault_code, wait_for


def test_socket_permissions(shared_cluster: Cluster) -> None:
    a = shared_cluster.agents[0]
    assert stat.S_IMODE(os.stat(a.socket).st_mode) == 0o666
    assert stat.S_IMODE(os.stat(os.path.dirname(a.socket)).st_mode) == 0o755


def test_handshake_required_first(shared_cluster: Cluster) -> None:
    c = RawConn(shared_cluster.agents[0].socket)
    try:
        r = c.request(1, "node.info")
        assert fault_code(r) == FaultCode.HANDSHAKE_REQUIRED and r["id"] == 1
        assert "hello" in r["error"]["message"]
        r = c.request(2, "hello", protocol=protocol.PROTOCOL_VERSION + 41)
        assert fault_code(r) == FaultCode.VERSION_MISMATCH
        msg = r["error"]["message"]
        assert str(protocol.PROTOCOL_VERSION + 41) in msg and f"protocol {protocol.PROTOCOL_VERSION}" in msg
        # still not handshaken after a mismatch
        assert fault_code(c.request(3, "ping")) == FaultCode.HANDSHAKE_REQUIRED
        r = c.request("h", "hello", protocol=protocol.PROTOCOL_VERSION, client="raw test")
        res = r["result"]
        assert r["id"] == "h"
        assert res["protocol"] == protocol.PROTOCOL_VERSION and res["node"] == 1 and res["uid"] == 0
        assert res["agent"] and res["hostname"] == socket.gethostname()
        assert c.request(4, "ping")["result"]["pong"] is True
    finally:
        c.close()


def test_every_op_round_trips(shared_cluster: Cluster) -> None:
    a = shared_cluster.agents[0]
    with a.client() as c:
        assert set(protocol.OPS) >= {"hello", "ping"}
        me = c.node_info()
        assert me.id == 1 and me.address == "127.0.0.2" and me.up
        assert me.cpus == len(os.sched_getaffinity(0)) and me.tmem > 0 and 0 < me.mem <= me.tmem
        extra = c.call("node.info")
        assert extra["mode"] == "map" and extra["scope"] == "all" and "criu" in extra
        assert extra["warnings"] == []  # a loopback cluster address: no /etc/hosts trap to report
        stats = c.call("node.stats")
        assert {"forged", "replayed", "stale", "accepted"} <= set(stats["gossip"])
        assert stats["sampler"]["processes"] > 0
        nodes = wait_for(
            lambda: [n for n in c.nodes() if n.up] if all(n.up for n in c.nodes()) else None,
            10,
            "all three nodes up",
        )
        assert [n.id for n in c.nodes()] == [1, 2, 3]
        assert len(nodes) == 3 and all(isinstance(n, NodeInfo) for n in nodes)
        m = c.call("cluster.map")
        assert m == {
            "node": 1,
            "mode": "map",
            "entries": [{"base": 1, "address": "127.0.0.2", "count": 3}],
            "source": shared_cluster.map_path,
        }
        w = c.call("cluster.whois", query="2")
        assert w["id"] == 2 and w["address"] == "127.0.0.3"
        assert c.call("cluster.whois", query="127.0.0.4")["id"] == 3
        assert c.call("cluster.whois", query="0x0001")["address"] == "127.0.0.2"
        assert c.call("cluster.whois", query=socket.gethostname())["id"] == 1  # all share this host name
        with pytest.raises(AgentFault) as e:
            c.call("cluster.whois", query=" ")
        assert e.value.code == FaultCode.BAD_ARGUMENT
        with pytest.raises(AgentFault) as e:
            c.call("cluster.whois", query="99")
        assert e.value.code == FaultCode.NO_SUCH_NODE and "1, 2, 3" in e.value.message
        flags = c.flags()
        assert isinstance(flags, Flags) and flags.speed > 0
        assert c.set_flags(stay=True).stay is True
        assert c.set_flags(stay=False).stay is False
        for op in ("admin.expel", "admin.bring"):
            r = c.call(op)
            # no mosrun jobs on this node: nothing to send away or bring home, and the report says so
            assert r["moved"] == [] and r["failed"] == [] and " 0 " in r["message"]
        procs = c.processes()
        assert procs and all(isinstance(p, ProcessInfo) for p in procs)
        mine = c.processes(pid=os.getpid())
        assert len(mine) == 1 and mine[0].pid == os.getpid() and mine[0].home == 1 and mine[0].where == 1
        assert mine[0].user == "root" and mine[0].cmdline and mine[0].rss > 0
        locked = c.call("proc.lock", pid=os.getpid(), lock=True)
        assert locked["lock"] is True and c.processes(pid=os.getpid())[0].lock
        assert c.call("proc.lock", pid=os.getpid(), lock=False)["lock"] is False
        with pytest.raises(AgentFault) as e:
            c.processes(pid=4_000_000)
        assert e.value.code == FaultCode.NO_SUCH_PROCESS
        with pytest.raises(AgentFault) as e:
            c.call("proc.lock", pid=4_000_000, lock=True)
        assert e.value.code == FaultCode.NO_SUCH_PROCESS
        sub = c.call("events.subscribe", topics=["flags"])
        assert sub["topics"] == ["flags"] and "node.up" in sub["events"]
        c.set_flags(lstay=True)
        name, data = c.next_event(5)
        assert name == "flags.changed" and data["changed"] == ["lstay"] and data["flags"]["lstay"] is True
        assert c.call("events.unsubscribe") == {"topics": []}
        c.set_flags(lstay=False)
        assert c.call("ping")["pong"]
        with pytest.raises(TimeoutError):
            c.next_event(0.5)


def test_cantmove_reasons(shared_cluster: Cluster) -> None:
    with shared_cluster.agents[0].client() as c:
        procs = {p.pid: p for p in c.processes()}
        assert procs[1].cantmove in ("system process (pid 1)", "kernel thread")
        assert procs[2].cantmove == "kernel thread"
        agent_pid = shared_cluster.agents[0].proc.pid  # type: ignore[union-attr]
        assert procs[agent_pid].cantmove == "the omview agent itself"
        # this test process holds no terminal and no TCP connection (pytest runs without a tty in CI)
        with socket.create_server(("127.0.0.1", 0)) as srv:
            cli = socket.create_connection(srv.getsockname())
            conn, _ = srv.accept()
            try:
                me = c.processes(pid=os.getpid())[0]
                assert me.cantmove == "open TCP connection"
            finally:
                cli.close()
                conn.close()
        me = c.processes(pid=os.getpid())[0]
        assert me.cantmove != "open TCP connection"


def test_flag_validation(shared_cluster: Cluster) -> None:
    with shared_cluster.agents[1].client() as c:
        cases = [
            ({"speed": 0}, "speed must be 1..10000000"),
            ({"speed": 10**7 + 1}, "speed must be 1..10000000"),
            ({"decay_interval": 0}, "decay_interval must be 1..3600"),
            ({"slow_decay": 1001}, "slow_decay must be 0..1000"),
            ({"fast_decay": -1}, "fast_decay must be 0..1000"),
            ({}, "needs at least one flag"),
        ]
        before = c.flags()
        for args, text in cases:
            with pytest.raises(AgentFault) as e:
                c.call("flags.set", **args)
            assert e.value.code == FaultCode.BAD_ARGUMENT and text in e.value.message, e.value.message
        with pytest.raises(AgentFault) as e:
            c.call("flags.set", block="yes")
        assert e.value.code == FaultCode.BAD_ARGUMENT
        assert c.flags() == before


def test_too_large_line_keeps_connection(shared_cluster: Cluster) -> None:
    c = RawConn(shared_cluster.agents[0].socket)
    try:
        c.hello()
        c.send(b'{"id": 5, "op": "ping", "pad": "' + b"x" * (MAX_LINE + 10) + b'"}\n')
        r = c.reply()
        assert fault_code(r) == FaultCode.TOO_LARGE and str(MAX_LINE) in r["error"]["message"]
        assert c.request(6, "ping")["result"]["pong"] is True
        # exactly at the limit but not JSON: MALFORMED, not TOO_LARGE
        c.send(b"y" * MAX_LINE + b"\n")
        assert fault_code(c.reply()) == FaultCode.MALFORMED
        assert c.request(7, "ping")["id"] == 7
    finally:
        c.close()


def test_half_sent_line_times_out_without_disturbing_others(shared_cluster: Cluster) -> None:
    a = shared_cluster.agents[0]
    slow = RawConn(a.socket)
    other = RawConn(a.socket)
    try:
        slow.hello()
        other.hello()
        slow.send(b'{"id": 9, "op": "pi')
        t0 = time.monotonic()
        # the other client is served normally meanwhile
        assert other.request(1, "ping")["result"]["pong"] is True
        r = slow.reply()
        waited = time.monotonic() - t0
        assert fault_code(r) == FaultCode.TIMEOUT and 0.8 <= waited < 5, (r, waited)
        with pytest.raises(ConnectionError):
            slow.line()
        assert other.request(2, "ping")["result"]["pong"] is True
    finally:
        slow.close()
        other.close()


def test_idle_connection_is_not_timed_out(shared_cluster: Cluster) -> None:
    c = RawConn(shared_cluster.agents[2].socket)
    try:
        c.hello()
        time.sleep(2.0)  # request_timeout is 1 s, but no partial line is pending
        assert c.request(1, "ping")["result"]["pong"] is True
    finally:
        c.close()


def test_busy_beyond_max_clients(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl = cluster_factory(1, max_clients=2)
    a = cl.agents[0].start()
    held = [RawConn(a.socket), RawConn(a.socket)]
    try:
        for h in held:
            h.hello()
        extra = RawConn(a.socket)
        r = extra.line()
        assert fault_code(r) == FaultCode.BUSY and "max_clients = 2" in r["error"]["message"]
        with pytest.raises(ConnectionError):
            extra.line()
        extra.close()
        held.pop().close()
        time.sleep(0.2)
        again = RawConn(a.socket)
        again.hello()
        assert again.request(1, "ping")["result"]["pong"]
        again.close()
    finally:
        for h in held:
            h.close()


def test_stale_socket_is_replaced_and_live_one_refused(cluster_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cl = cluster_factory(1)
    a = cl.agents[0]
    os.makedirs(os.path.dirname(a.socket), exist_ok=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(a.socket)  # a socket file nobody listens on, as a crashed agent leaves it
    dead.close()
    a.start()
    # a second agent on the same socket must refuse to start, not steal it
    import subprocess

    from tests.support.agents import PY, REPO

    res = subprocess.run(
        [PY, "-m", "omview.agent", "run", "--config", a.config],
        env=a.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 1
    assert "another omview agent is already serving this socket" in res.stderr, res.stderr
    with a.client() as c:
        assert c.call("ping")["pong"]


def _cantmove(agent, pid: int) -> str:  # type: ignore[no-untyped-def]
    """The process's cantmove reason once the agent's criu check has finished."""
    found: list[str] = []

    def settled() -> bool:
        with agent.client() as c:
            reason = c.processes(pid=pid)[0].cantmove
        found.append(reason)
        return reason != "CRIU check has not finished yet"

    wait_for(settled, 10, "the criu check to finish")
    return found[-1]


def test_criu_location_and_check_decide_cantmove(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    # stdio not inherited from pytest: its capture file is deleted, a reason of its own (open file deleted)
    sleeper = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        cl = cluster_factory(1, criu="/bin/false")  # "criu check" fails
        a = cl.agents[0].start()
        assert _cantmove(a, sleeper.pid) == "CRIU is not available on this node"
        with a.client() as c:
            criu = c.call("node.info")["criu"]
        assert (
            criu["checked"] and not criu["ok"] and criu["path"] == "/bin/false" and "failed" in criu["detail"]
        )
        a.stop()
        a.settings["criu"] = "/bin/true"  # passes "criu check"
        a.start()
        assert _cantmove(a, sleeper.pid) == ""  # nothing else stops a plain sleeper (no other node here)
        a.stop()
        a.settings["criu"] = "/nonexistent/criu"
        a.start()
        assert _cantmove(a, sleeper.pid) == "CRIU is not available on this node"
        with a.client() as c:
            assert "is not an executable file" in c.call("node.info")["criu"]["detail"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_sigint_stops_cleanly_and_removes_the_socket(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    import signal

    cl = cluster_factory(1)
    a = cl.agents[0].start()
    assert os.path.exists(a.socket)
    assert a.stop(sig=signal.SIGINT) == 0
    assert not os.path.exists(a.socket)
    assert "stopping: telling the cluster this node leaves" in a.log() and "Traceback" not in a.log()
