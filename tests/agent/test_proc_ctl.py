"""proc.signal, proc.renice, proc.status (issue 9): on any process the caller may touch; uid 65534
is refused on root's process and allowed on its own."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

from omview.model.client import AgentClient
from omview.model.errors import AgentFault
from omview.model.procfs import read_stat
from omview.model.protocol import FaultCode
from tests.support.agents import Cluster

NOBODY = 65534


def _state(pid: int) -> str:
    st = read_stat(pid)
    return st.state if st is not None else "-"


def _until(pred: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_signal_renice_status_of_a_plain_process(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0].start()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert _until(lambda: _state(sleeper.pid) == "S" and "sleep" in open(f"/proc/{sleeper.pid}/comm").read())
        with a.client() as c:
            got = c.call("proc.status", pid=sleeper.pid)
            assert got["pid"] == sleeper.pid and got["node"] == 1
            assert set(got["stat"]) == {"utime", "stime", "cutime", "cstime", "nice"}
            st = got["status"]
            assert st["Name"] == "sleep" and st["State"].startswith("S") and st["Pid"] == str(sleeper.pid)
            assert {"PPid", "TracerPid", "Uid", "Gid", "VmSize", "VmRSS", "Threads",
                    "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"} <= set(st)  # fmt: skip
            c.call("proc.signal", pid=sleeper.pid, signal=19)  # SIGSTOP
            assert _until(lambda: _state(sleeper.pid) == "T")
            c.call("proc.signal", pid=sleeper.pid, signal=18)  # SIGCONT
            assert _until(lambda: _state(sleeper.pid) == "S")
            assert c.call("proc.renice", pid=sleeper.pid, nice=7)["nice"] == 7
            assert c.processes(sleeper.pid)[0].nice == 7
            c.call("proc.renice", pid=sleeper.pid, nice=-3)  # root may make it faster
            assert c.processes(sleeper.pid)[0].nice == -3
            for op, args in (("proc.signal", {"signal": 999}), ("proc.renice", {"nice": 40})):
                try:
                    c.call(op, pid=sleeper.pid, **args)
                    raise AssertionError(f"{op} {args} accepted")
                except AgentFault as exc:
                    assert exc.code == FaultCode.BAD_ARGUMENT
            c.call("proc.signal", pid=sleeper.pid, signal=9)
            sleeper.wait(5)
            try:
                c.call("proc.status", pid=sleeper.pid)
                raise AssertionError("status of an ended process")
            except AgentFault as exc:
                assert exc.code == FaultCode.NO_SUCH_PROCESS
    finally:
        sleeper.kill()
        sleeper.wait()


def _as_nobody(socket_path: str, foreign_pid: int) -> dict[str, Any]:
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        os.close(rd)
        out: dict[str, Any] = {}
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            own = subprocess.Popen(["sleep", "30"])
            with AgentClient.local(socket_path, client_name="nobody") as c:
                for op, args in (("proc.signal", {"signal": 19}), ("proc.renice", {"nice": 5}), ("proc.status", {})):
                    try:
                        c.call(op, pid=foreign_pid, **args)
                        out[op] = "allowed"
                    except AgentFault as exc:
                        out[op] = [exc.code, exc.message]
                out["own_renice"] = c.call("proc.renice", pid=own.pid, nice=5)["nice"]
                try:
                    c.call("proc.renice", pid=own.pid, nice=0)
                    out["own_faster"] = "allowed"
                except AgentFault as exc:
                    out["own_faster"] = [exc.code, exc.message]
                out["own_status"] = c.call("proc.status", pid=own.pid)["status"]["Name"]
                out["own_kill"] = c.call("proc.signal", pid=own.pid, signal=9)["pids"]
            own.wait(5)
        except BaseException as exc:  # report, never raise in the child
            out["error"] = repr(exc)
        os.write(wr, json.dumps(out).encode())
        os._exit(0)
    os.close(wr)
    chunks = []
    while data := os.read(rd, 65536):
        chunks.append(data)
    os.close(rd)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


def test_non_root_acts_on_its_own_processes_only(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0].start()
    sleeper = subprocess.Popen(["sleep", "60"])  # root's
    try:
        assert _until(lambda: _state(sleeper.pid) == "S")
        seen = _as_nobody(a.socket, sleeper.pid)
        assert "error" not in seen, seen
        for op in ("proc.signal", "proc.renice", "proc.status"):
            code, msg = seen[op]
            assert code == FaultCode.PERMISSION_DENIED and f"belongs to uid 0; you (uid {NOBODY})" in msg, (op, msg)
        assert _state(sleeper.pid) == "S" and read_stat(sleeper.pid).nice == 0  # type: ignore[union-attr]
        assert seen["own_renice"] == 5 and seen["own_status"] == "sleep" and len(seen["own_kill"]) == 1
        assert seen["own_faster"][0] == FaultCode.PERMISSION_DENIED and "only root" in seen["own_faster"][1]
    finally:
        sleeper.kill()
        sleeper.wait()
