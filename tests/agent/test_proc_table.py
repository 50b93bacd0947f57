"""procs.list's compact form (``table: true``, model/cluster.py proc_table): what it carries, the same
processes as the list of dicts from a real agent, and a client that falls back to dicts when an agent
older than the form refuses the argument."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from omview.model import protocol
from omview.model.channel import UnixChannel
from omview.model.client import AgentClient
from omview.model.cluster import PROC_COLUMNS, ProcessInfo, proc_table, procs_from_table
from omview.model.errors import AgentFault
from tests.support.agents import Cluster, wait_for

CRIU_PENDING = "CRIU check has not finished yet"

ROWS = [
    ProcessInfo(pid=7, ppid=1, uid=1000, user="alice", state="R", nice=-5, cpu=97.5, rss=123 << 20, threads=4,
                name="sim", cmdline=("/opt/sim", "--größe", "x y"), home=1, where=3, lock=True, nmigs=2,
                cantmove="", job="1:7"),
    ProcessInfo(pid=8, ppid=7, uid=0, user="root", state="S", nice=0, cpu=0.0, rss=0, threads=1, name="kworker",
                cmdline=(), home=1, where=1, cantmove="kernel thread", helper_of=7),
]  # fmt: skip


def test_table_round_trip_through_json() -> None:
    wire = json.loads(json.dumps(proc_table(ROWS)))
    assert wire["fields"] == list(PROC_COLUMNS) and len(wire["rows"]) == 2
    got = procs_from_table(wire)
    assert got == ROWS and all(isinstance(p.cmdline, tuple) for p in got)
    # frozen like every other ProcessInfo
    with pytest.raises(AttributeError):
        got[0].pid = 9  # type: ignore[misc]
    # the table is smaller than the dicts it replaces
    assert len(json.dumps(proc_table(ROWS * 100))) < 0.6 * len(json.dumps([p.to_dict() for p in ROWS * 100]))


def test_a_newer_agents_extra_column_is_ignored_and_a_short_row_refused() -> None:
    wire = proc_table(ROWS)
    wire["fields"].append("cgroup")
    for row in wire["rows"]:
        row.append("/user.slice")
    assert procs_from_table(wire) == ROWS
    bad = proc_table(ROWS)
    bad["rows"][1].pop()
    with pytest.raises(ValueError):
        procs_from_table(bad)


def test_a_real_agent_lists_the_same_processes_both_ways(cluster_factory: Callable[..., Cluster]) -> None:
    cl = cluster_factory(1).start()
    with cl.agents[0].client(timeout=30) as c:
        assert protocol.FEATURE_PROCS_TABLE in c.hello["features"]  # so the client asks for the table
        wait_for(lambda: c.processes(pid=os.getpid())[0].cantmove != CRIU_PENDING, 60, "the agent's criu check")
        dicts = {d["pid"]: ProcessInfo.from_dict(d) for d in c.call("procs.list")}
        table = {p.pid: p for p in procs_from_table(c.call("procs.list", table=True))}
        mine = os.getpid()
        assert mine in dicts and mine in table
        # the values that do not move between two listings
        same = dicts.keys() & table.keys()
        assert len(same) > 0.9 * len(dicts)
        for pid in same:
            a, b = dicts[pid], table[pid]
            # (cantmove and name too: other processes open sockets meanwhile, kernel workers rename)
            moving = {"cpu": 0.0, "rss": 0, "state": "", "threads": 0, "cantmove": "", "name": ""}
            assert replace(a, **moving) == replace(b, **moving)
        assert dicts[mine] == replace(table[mine], cpu=dicts[mine].cpu, rss=dicts[mine].rss,
                                      state=dicts[mine].state, threads=dicts[mine].threads)
        one = procs_from_table(c.call("procs.list", pid=mine, table=True))
        assert [p.pid for p in one] == [mine] and one[0].cmdline == dicts[mine].cmdline


class OldAgent:
    """An agent before the compact form, speaking the real protocol on a Unix socket: its hello lists
    no features, and its procs.list refuses ``table`` as that agent's parse_request did (BAD_ARGUMENT,
    unknown argument)."""

    def __init__(self, path: str) -> None:
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(path)
        self.server.listen(1)
        self.asked: list[dict[str, object]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn, conn.makefile("rb") as f:
            for line in f:
                raw = json.loads(line)
                self.asked.append(raw.get("args", {}))
                if raw["op"] == "procs.list" and "table" in raw.get("args", {}):
                    # what parse_request said before "table" was added to procs.list's OpSpec
                    conn.sendall(protocol.fault(raw["id"], protocol.FaultCode.BAD_ARGUMENT,
                                                "procs.list: unknown argument 'table' (takes: helpers, pid)"))
                    continue
                req = protocol.parse_request(line)
                if req.op == "hello":
                    conn.sendall(protocol.ok(req.id, {"node": 4, "protocol": protocol.PROTOCOL_VERSION, "uid": 0}))
                else:
                    conn.sendall(protocol.ok(req.id, [p.to_dict() for p in ROWS]))


@pytest.fixture
def old_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, OldAgent]]:
    path = str(tmp_path_factory.mktemp("old") / "agent.sock")
    agent = OldAgent(path)
    yield path, agent
    agent.server.close()


def test_the_client_falls_back_to_dicts_for_an_older_agent(old_agent: tuple[str, OldAgent]) -> None:
    path, agent = old_agent
    with AgentClient(UnixChannel(path), timeout=10) as c:
        with pytest.raises(AgentFault):  # what the old agent says to the compact form
            c.call("procs.list", table=True)
        assert c.processes() == ROWS
        assert c.processes() == ROWS
    # asked with table only by the explicit call (refused): the client saw no procs.table in hello
    procs_asks = [a for a in agent.asked if "protocol" not in a]
    assert procs_asks == [{"table": True}, {}, {}], procs_asks
