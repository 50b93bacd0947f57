"""Issue 13: what a hostile local user or damaged input must not be able to do to the agent."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from typing import Any

from omview.model.client import AgentClient
from omview.model.errors import AgentFault
from omview.model.protocol import FaultCode
from tests.support.agents import Cluster, RawConn, fault_code, wait_for
from tests.support.asuser import NOBODY, OTHER, connect_as, held_as, run_as


def _hello_conns(path: str, n: int) -> list[Any]:
    """N connections that said hello (or were refused): an attacker holding slots."""
    conns = []
    for _ in range(n):
        c = RawConn(path, timeout=5)
        try:
            c.hello()
        except (AssertionError, ConnectionError, OSError):
            pass
        conns.append(c)
    return conns


def _call_or_fault(path: str) -> Any:
    try:
        with AgentClient.local(path, client_name="probe") as c:
            return {"node": c.node_info().id}
    except AgentFault as exc:
        return {"fault": exc.code, "message": exc.message}
    except Exception as exc:  # noqa: BLE001 - what the user would see instead
        return {"other": repr(exc)}


def test_one_user_cannot_lock_out_root_or_other_users(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0].start()
    with held_as(NOBODY, lambda: _hello_conns(a.socket, 70)) as held:
        assert held == {"ok": 70}, held
        with a.client() as c:  # root's tools (mosctl status, the collector, the GUI) still get in
            assert c.node_info().id == 1
        assert run_as(OTHER, lambda: _call_or_fault(a.socket)) == {"node": 1}
        # the user holding the slots is told why, not "connection lost"
        seen = run_as(NOBODY, lambda: _call_or_fault(a.socket))
        assert seen.get("fault") == FaultCode.BUSY, seen
        assert f"uid {NOBODY}" in seen["message"] and "max_clients_per_user = 16" in seen["message"]


def test_connection_without_hello_is_closed_after_request_timeout(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0].start()
    idle = RawConn(a.socket)
    try:
        t0 = time.monotonic()
        r = idle.line()  # request_timeout is 1 s in test clusters
        assert fault_code(r) == FaultCode.TIMEOUT and "no hello" in r["error"]["message"], r
        assert time.monotonic() - t0 < 5
        idle.sock.settimeout(5)
        assert idle.sock.recv(10) == b""
    finally:
        idle.close()
    # one that trickles bytes without ever finishing a hello does not get more time
    trickle = RawConn(a.socket)
    try:
        t0 = time.monotonic()
        got: dict[str, Any] = {}
        trickle.sock.settimeout(0.3)
        while time.monotonic() - t0 < 5 and not got:
            try:
                trickle.send(b" ")
                got = trickle.line()
            except TimeoutError:
                continue
            except OSError:
                break
        assert fault_code(got) == FaultCode.TIMEOUT and time.monotonic() - t0 < 4, got
    finally:
        trickle.close()


def _events_until_exit(conn: RawConn, job_id: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = conn.line()
        if "event" in msg:
            seen.append(msg)
            if msg["event"] == "job.exit" and msg["data"].get("job") == job_id:
                return seen
    raise AssertionError(f"no job.exit for {job_id}: {seen}")


def test_other_users_job_output_does_not_leak_through_events(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0].start()
    secret = "s3cr3t-" + str(time.time_ns())
    spy = RawConn(a.socket, sock=connect_as(NOBODY, a.socket))
    mine = RawConn(a.socket)
    try:
        for c in (spy, mine):
            c.hello()
            assert "result" in c.request(1, "events.subscribe", topics=["*"])
        r = mine.request(2, "job.start", argv=["sh", "-c", 'echo "$SECRET"'], env={"SECRET": secret})
        assert "result" in r, r
        job_id = r["result"]["id"]
        root_saw = _events_until_exit(mine, job_id)
        spy_saw = _events_until_exit(spy, job_id)  # job.exit is public (job.list shows it too)
    finally:
        spy.close()
        mine.close()
    out = b"".join(base64.b64decode(e["data"]["data"]) for e in root_saw if e["event"] == "job.output")
    assert secret.encode() in out  # root, the owner, gets it
    leaked = [e for e in spy_saw if e["event"] == "job.output" or secret in json.dumps(e)]
    assert not leaked, leaked


UNPARSEABLE = [
    (b"[" * 100_000 + b"]" * 100_000, FaultCode.TOO_LARGE),
    (b'{"id":1,"op":"ping","args":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001, FaultCode.TOO_LARGE),
    (b'{"id":' + b"7" * 5000 + b',"op":"ping"}', FaultCode.MALFORMED),
    (b'{"id":' + b"7" * 30 + b',"op":"ping"}', FaultCode.MALFORMED),
    (b'{"id":"\\ud800","op":"ping"}', FaultCode.MALFORMED),
    (b'{"id":3,"op":"cluster.whois","args":{"query":"\\udfff"}}', FaultCode.MALFORMED),
    (b'{"id":4,"op":"procs.list","args":{"pid":' + b"9" * 40 + b"}}", FaultCode.BAD_ARGUMENT),
]


def test_unparseable_requests_get_a_fault_and_keep_the_connection(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0].start()
    conn = RawConn(a.socket)
    try:
        conn.hello()
        for line, code in UNPARSEABLE:
            conn.send(line + b"\n")
            r = conn.reply()
            assert fault_code(r) == code, (line[:60], r)
            assert conn.request(99, "ping")["result"]["pong"] is True  # still served
        # a surrogate *pair* is a real character, not damage
        conn.send(b'{"id":"\\ud83d\\ude00","op":"ping"}\n')
        assert conn.reply()["id"] == "\U0001f600"
    finally:
        conn.close()
    with a.client() as c:
        assert c.call("node.stats")["server"]["internal_errors"] == 0
    assert "Traceback" not in a.log(), a.log()


def test_job_output_offsets_are_validated(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0].start()
    conn = RawConn(a.socket)
    try:
        conn.hello()
        conn.request(1, "events.subscribe", topics=["job.exit"])
        r = conn.request(2, "job.start", argv=["sh", "-c", "echo hello-world"])
        job_id = r["result"]["id"]
        _events_until_exit(conn, job_id)
        for i, args in enumerate(({"offset": 10**30}, {"offset": -1}, {"offset": 0, "max": -1},
                                  {"offset": 0, "max": 0}, {"offset": 0, "max": 1 << 30})):  # fmt: skip
            r = conn.request(10 + i, "job.output", job=job_id, stream="out", **args)
            assert fault_code(r) == FaultCode.BAD_ARGUMENT, (args, r)
        r = conn.request(20, "job.output", job=job_id, stream="out", offset=0, max=5)
        assert base64.b64decode(r["result"]["data"]) == b"hello", r
        r = conn.request(21, "job.output", job=job_id, stream="out", offset=6)
        assert base64.b64decode(r["result"]["data"]) == b"world\n", r
    finally:
        conn.close()
    assert "Traceback" not in a.log()


GOOD_JOB = {"id": "2:4242", "home": 2, "home_pid": 4242, "argv": ["true"], "cwd": "/", "uid": 0, "gid": 0,
            "where": 1}  # fmt: skip
BAD_PEER_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("peer.mig.prepare", {"mig": {"id": None}}),
    ("peer.mig.prepare", {"mig": {"id": "../../x", "job": "1:2", "method": "images"}}),
    ("peer.mig.prepare", {"mig": {"id": "1-2-3-4", "job": "1:2", "method": "images", "bytes": "lots"}}),
    ("peer.mig.prepare", {"mig": {"id": "1-2-3-4", "job": "1:2", "method": "images", "cpu_flags": [1]}}),
    ("peer.mig.restore", {"mig": {"id": None}}),
    ("peer.mig.restore", {"mig": {"id": "1-2-3-4", "method": "images", "sums": {}, "job": {"id": 5}}}),
    ("peer.mig.restore", {"mig": {"id": "1-2-3-4", "method": "images", "sums": [], "job": GOOD_JOB}}),
    ("peer.mig.abort", {"mig": "../jobs"}),
    ("peer.mig.abort", {"mig": ""}),
    ("peer.job.launch", {"job": {}}),
    ("peer.job.launch", {"job": {**GOOD_JOB, "argv": "true"}}),
    ("peer.job.launch", {"job": {**GOOD_JOB, "uid": 10**30}}),
    ("peer.job.launch", {"job": {**GOOD_JOB, "cwd": "relative"}}),
    ("peer.job.launch", {"job": GOOD_JOB, "env": {"A": 1}}),
    ("peer.job.update", {"job": "1:2", "kind": "moved", "data": {}}),
    ("peer.job.update", {"job": "1:2", "kind": "moved", "data": {"where": "x"}}),
    ("peer.job.update", {"job": "1:2", "kind": "lock", "data": {"lock": "yes"}}),
    ("peer.job.update", {"job": "1:2", "kind": "nonsense", "data": {}}),
    ("peer.job.update", {"job": "nope", "kind": "lock", "data": {"lock": True}}),
    ("peer.job.signal", {"job": "1:2", "signal": 10**9}),
    ("peer.job.signal", {"job": "1:2", "signal": 9, "hops": -5}),
    ("peer.job.output", {"job": "1:2", "stream": "out", "offset": -1}),
    ("peer.job.output", {"job": "../x", "stream": "out", "offset": 0}),
    ("peer.job.migrate", {"job": "x", "target": "home"}),
    ("peer.proc.check", {"pids": [10**30], "files": []}),
    ("peer.proc.check", {"pids": [], "files": [{"path": "/tmp\0x"}]}),
    ("peer.proc.check", {"pids": [], "files": [{"path": "/tmp", "size": "big"}]}),
    ("peer.proc.check", {"pids": [], "files": ["/tmp"]}),
]


def test_malformed_peer_requests_are_bad_arguments_and_leave_no_files(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0].start()
    conn = RawConn(a.socket)
    try:
        conn.hello()
        for i, (op, args) in enumerate(BAD_PEER_REQUESTS):
            r = conn.request(i, op, **args)
            assert fault_code(r) == FaultCode.BAD_ARGUMENT, (op, args, r)
    finally:
        conn.close()
    incoming = os.path.join(a.state_dir, "incoming")
    assert not os.path.exists(os.path.join(incoming, "None"))
    assert not os.path.exists("/dev/shm/omview-in-None")
    assert not os.listdir(incoming) if os.path.isdir(incoming) else True
    with a.client() as c:
        assert c.call("node.stats")["server"]["internal_errors"] == 0
    assert "Traceback" not in a.log(), a.log()


def test_sighup_stops_the_agent_as_cleanly_as_sigterm(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(2)
    cl.start()
    a, b = cl.agents
    watcher = RawConn(b.socket)
    try:
        watcher.hello()
        watcher.request(1, "events.subscribe", topics=["node.down"])

        def b_sees_a_up() -> bool:
            nodes = watcher.request(2, "cluster.nodes")["result"]
            return any(n["id"] == 1 and n["status"] == "up" for n in nodes)

        wait_for(b_sees_a_up, 10, "node 2 to see node 1 up")
        pid_file = a.socket[: -len(".sock")] + ".pid"
        assert os.path.exists(pid_file)
        assert a.proc is not None
        t0 = time.monotonic()
        a.proc.send_signal(signal.SIGHUP)
        assert a.proc.wait(15) == 0
        ev = watcher.line()  # the leave datagram: long before down_after (3 s) would notice
        assert ev["event"] == "node.down" and ev["data"]["node"] == 1 and ev["data"]["reason"] == "left", ev
        assert time.monotonic() - t0 < 2.5
    finally:
        watcher.close()
    assert not os.path.exists(a.socket) and not os.path.exists(pid_file)
    log = a.log()
    assert "SIGHUP received: stopping" in log and "stopped" in log and "Traceback" not in log, log


def test_jobs_of_one_deputy_in_one_second_all_start(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    """Found by the fuzz test: the second leftover job directory of one second was INTERNAL."""
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0].start()
    conn = RawConn(a.socket)
    try:
        conn.hello()
        conn.request(1, "events.subscribe", topics=["job.exit"])
        for i in range(4):
            r = conn.request(10 + i, "job.start", argv=["true"])
            assert "result" in r, r
            _events_until_exit(conn, r["result"]["id"])
    finally:
        conn.close()
    assert "Traceback" not in a.log()
