"""``omview-agent bridge``, slow event subscribers, and handler exceptions becoming INTERNAL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import pytest

from omview.agent.server import Connection, Server
from omview.model import protocol
from omview.model.channel import PipeChannel
from omview.model.client import AgentClient
from omview.model.errors import ConnectionLost
from omview.model.protocol import FaultCode, Request
from tests.support.agents import REPO, Cluster, RawConn, fault_code


def bridge_argv(socket_path: str | None = None) -> list[str]:
    argv = [sys.executable, "-m", "omview.agent", "bridge"]
    return argv + (["--socket", socket_path] if socket_path else [])


def test_bridge_carries_the_protocol(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0].start()
    env_before = os.environ.get("OMVIEW_SOCKET")
    os.environ["OMVIEW_SOCKET"] = a.socket  # the bridge finds the socket like the CLI does
    try:
        chan = PipeChannel(bridge_argv())
    finally:
        if env_before is None:
            del os.environ["OMVIEW_SOCKET"]
        else:
            os.environ["OMVIEW_SOCKET"] = env_before
    with AgentClient(chan, client_name="bridge-test") as c:
        assert c.hello["node"] == 1 and c.node_info().id == 1
        c.call("events.subscribe", topics=["flags.changed"])
        c.set_flags(stay=True)
        assert c.next_event(5)[0] == "flags.changed"
        # fast: a thousand round trips through python + the bridge
        t0 = time.monotonic()
        for _ in range(1000):
            c.call("ping")
        assert time.monotonic() - t0 < 10
        big = c.processes()  # a large reply crosses the bridge intact
        assert len(big) > 10
    # closing stdin ends the bridge cleanly
    assert chan._proc.wait(5) == 0  # noqa: SLF001


def test_bridge_ends_when_the_agent_goes(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0].start()
    chan = PipeChannel(bridge_argv(a.socket))
    c = AgentClient(chan)
    assert c.call("ping")["pong"]
    a.stop()
    with pytest.raises(ConnectionLost):
        c.call("ping", timeout=5)
    assert chan._proc.wait(5) == 0  # noqa: SLF001
    c.close()


def test_bridge_without_agent_says_so() -> None:
    res = subprocess.run(
        bridge_argv("/nonexistent/omview.sock"),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 2 and "no omview agent answers on /nonexistent/omview.sock" in res.stderr


def test_slow_subscriber_loses_events_not_memory(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0].start()
    slow = RawConn(a.socket, timeout=20)
    slow.hello()
    slow.request(1, "events.subscribe", topics=["map.changed"])
    # big events: maps of 200 nodes (each event ~9 KB); the slow client reads nothing meanwhile
    maps = [
        [{"base": 1, "address": "127.0.0.2", "count": 1}]
        + [{"base": 100 + i, "address": f"127.0.{k}.{i + 1}", "count": 1} for i in range(200)]
        for k in (50, 60)
    ]
    with a.client(timeout=30) as c:
        for n in range(240):
            c.call("map.set", entries=maps[n % 2], source=f"/tmp/map{n % 2}")
        stats = c.call("node.stats")["server"]
        assert stats["events_dropped"] > 0, stats
        c.call("map.set", entries=[])  # one more event after the backlog: carries the drop notice
    # every event is either delivered or counted in an events.dropped notice, none silently lost
    delivered = dropped = 0
    while delivered + dropped < 241:
        msg = slow.line()
        if msg["event"] == "events.dropped":
            dropped += msg["data"]["count"]
        else:
            assert msg["event"] == "map.changed"
            delivered += 1
    assert dropped > 0 and delivered + dropped == 241, (delivered, dropped)
    assert slow.request(2, "ping")["result"]["pong"] is True
    slow.close()


def test_handler_exception_becomes_internal_and_server_keeps_serving() -> None:
    """The Server with a dispatcher that fails: the client gets INTERNAL, the next request works."""

    async def dispatch(conn: Connection, req: Request) -> Any:
        if req.op == "hello":
            conn.handshaken = True
            return {"node": 1}
        if req.op == "node.info":
            raise RuntimeError("boom in the handler")
        return {"pong": True}

    async def scenario(path: str) -> list[dict[str, Any]]:
        srv = Server(path, dispatch, request_timeout=5, max_clients=4)
        await srv.start()
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            out = []
            for i, op in enumerate(("hello", "node.info", "ping")):
                args = {"protocol": protocol.PROTOCOL_VERSION} if op == "hello" else None
                writer.write(protocol.request(i, op, args))
                out.append(protocol.parse_reply(await reader.readline()))
            writer.close()
            return out
        finally:
            await srv.stop()

    with tempfile.TemporaryDirectory() as d:
        replies = asyncio.run(scenario(os.path.join(d, "s.sock")))
    assert replies[0]["result"] == {"node": 1}
    assert fault_code(replies[1]) == FaultCode.INTERNAL
    msg = replies[1]["error"]["message"]
    assert "RuntimeError: boom in the handler" in msg and "agent log" in msg
    assert replies[2]["result"] == {"pong": True}
