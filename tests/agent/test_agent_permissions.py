"""SO_PEERCRED permissions: a non-root caller (uid 65534 in a forked child) may read, not steer."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from omview.model.client import AgentClient
from omview.model.errors import AgentFault
from omview.model.protocol import FaultCode
from tests.support.agents import Cluster

NOBODY = 65534


def as_nobody(socket_path: str, foreign_pid: int) -> dict[str, Any]:
    """Run the checks in a child that dropped to uid 65534; return what it saw."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        os.close(rd)
        out: dict[str, Any] = {}
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with AgentClient.local(socket_path, client_name="nobody") as c:
                out["hello_uid"] = c.hello["uid"]
                out["node"] = c.node_info().id
                out["nodes"] = len(c.nodes())
                out["flags"] = c.flags().to_dict()
                out["procs"] = len(c.processes())
                out["stats"] = "gossip" in c.call("node.stats")
                for op, args in (
                    ("flags.set", {"block": True}),
                    ("map.off", {}),
                    ("map.set", {"entries": []}),
                    ("admin.expel", {}),
                    ("proc.lock", {"pid": foreign_pid, "lock": True}),
                ):
                    try:
                        c.call(op, **args)
                        out[op] = "allowed"
                    except AgentFault as exc:
                        out[op] = [exc.code, exc.message]
                # own process: allowed
                out["own_lock"] = c.call("proc.lock", pid=os.getpid(), lock=True)["lock"]
        except BaseException as exc:  # report, never raise in the child
            out["error"] = repr(exc)
        os.write(wr, json.dumps(out).encode())
        os._exit(0)
    os.close(wr)
    chunks = []
    while True:
        data = os.read(rd, 65536)
        if not data:
            break
        chunks.append(data)
    os.close(rd)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


def test_non_root_reads_but_cannot_steer(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0].start()
    sleeper = subprocess.Popen(["sleep", "60"])  # a root-owned process
    try:
        seen = as_nobody(a.socket, sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert "error" not in seen, seen
    assert seen["hello_uid"] == NOBODY and seen["node"] == 1 and seen["nodes"] == 1
    assert seen["procs"] > 0 and seen["stats"] is True
    assert seen["flags.set"] == [FaultCode.PERMISSION_DENIED, f"flags.set needs root (you are uid {NOBODY})"]
    for op in ("map.off", "map.set", "admin.expel"):
        assert seen[op][0] == FaultCode.PERMISSION_DENIED, (op, seen[op])
    code, msg = seen["proc.lock"]
    assert code == FaultCode.PERMISSION_DENIED and f"belongs to uid 0; you (uid {NOBODY})" in msg
    assert seen["own_lock"] is True
    with a.client() as c:  # nothing changed for root
        assert c.flags().block is False and c.call("cluster.map")["mode"] == "map"
