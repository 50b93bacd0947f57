"""L2 agent: signal, renice and /proc status of any process the caller may touch (proc.signal,
proc.renice, proc.status) - what the process box's migrator does to a process (docs/agent.md).

Rights as for every op: root may act on every process, anyone else on their own (the process's real
uid, or a job's owner). A PID that is a mosrun job's row (its deputy, or any task of it here) means
the job's program: acted on where the job runs now, forwarded there with ``job`` when that is another
node. The job's plumbing (jobinit, the PID namespace's init) is never signalled or reniced itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from omview.agent.jobs.rows import JOBINIT
from omview.agent.jobs.run import JobManager
from omview.agent.jobs.table import Job, parse_job_id
from omview.agent.node.procs import real_uid
from omview.agent.node.sampler import Scope
from omview.agent.node.view import NodeView
from omview.agent.peers.links import PeerError, PeerLinks
from omview.agent.server import Connection, Handler, OpFault
from omview.model.errors import AgentFault
from omview.model.procfs import HZ, read_stat
from omview.model.protocol import FaultCode

SIGNALS = {int(s) for s in signal.Signals}
#: the lines of /proc/PID/status proc.status returns (the migrator's status pane)
STATUS_FIELDS = ("Name", "State", "Tgid", "Pid", "PPid", "TracerPid", "Uid", "Gid", "VmSize", "VmRSS", "Threads",
                 "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")  # fmt: skip


def read_status(pid: int) -> dict[str, str] | None:
    """The STATUS_FIELDS of /proc/PID/status (None when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    out: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in STATUS_FIELDS:
            out[key] = " ".join(value.split())
    return out


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task") if t.isdigit()]
    except OSError:
        return []


def _is_jobinit(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return JOBINIT.encode() in fh.read(4096)
    except OSError:
        return False


class ProcCtl:
    """The three handlers, with the parts of the agent they use (handed over by core.Agent)."""

    def __init__(self, *, node: NodeView, scope: Scope, jobs: JobManager, peers: PeerLinks, pool: Executor) -> None:
        self.node = node
        self.scope = scope
        self.jobs = jobs
        self.peers = peers
        self.pool = pool

    def table(self) -> dict[str, Handler]:
        return {"proc.signal": self.proc_signal, "proc.renice": self.proc_renice, "proc.status": self.proc_status}

    # -- handlers (event loop) --
    async def proc_signal(self, conn: Connection, args: dict[str, Any]) -> Any:
        sig = args["signal"]
        if sig not in SIGNALS:
            raise OpFault(FaultCode.BAD_ARGUMENT, f"proc.signal: {sig} is not a signal number")
        return await self._run(self._act, conn, args, "proc.signal", lambda pid: os.kill(pid, sig), {"signal": sig})

    async def proc_renice(self, conn: Connection, args: dict[str, Any]) -> Any:
        nice = args["nice"]
        if not -20 <= nice <= 19:
            raise OpFault(FaultCode.BAD_ARGUMENT, f"proc.renice: nice must be -20..19, not {nice}")

        def renice(pid: int) -> None:
            st = read_stat(pid)
            # as renice(1): only root makes a process faster
            if conn.uid != 0 and st is not None and nice < st.nice:
                raise OpFault(FaultCode.PERMISSION_DENIED,
                              f"only root may lower a nice value (process {pid} has {st.nice}, asked {nice})")  # fmt: skip
            for tid in _threads(pid) or [pid]:
                os.setpriority(os.PRIO_PROCESS, tid, nice)

        return await self._run(self._act, conn, args, "proc.renice", renice, {"nice": nice})

    async def proc_status(self, conn: Connection, args: dict[str, Any]) -> Any:
        return await self._run(self._status, conn, args)

    # -- the work (pool threads) --
    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _target(self, conn: Connection, args: dict[str, Any]) -> tuple[Job | None, int]:
        """The job (or plain PID) the request names, after the rights check."""
        me = self.node.node_id
        if "job" in args:
            if parse_job_id(args["job"]) is None:
                raise OpFault(FaultCode.BAD_ARGUMENT, f"{args['job']!r} is not a job id (HOME:HOMEPID)")
            job = self.jobs.store.get(args["job"])
            if job is None or job.state != "running":
                raise OpFault(FaultCode.NO_SUCH_PROCESS, f"no running job {args['job']} on node {me}")
        elif "pid" in args:
            pid = args["pid"]
            if pid <= 0:
                raise OpFault(FaultCode.BAD_ARGUMENT, f"bad PID {pid}")
            job = self.jobs.job_of_pid(pid)
            if job is None:
                uid = real_uid(pid) if self.scope.contains(pid) else None
                if uid is None:
                    raise OpFault(FaultCode.NO_SUCH_PROCESS, f"no process {pid} on node {me}")
                if conn.uid != 0 and uid != conn.uid:
                    raise OpFault(FaultCode.PERMISSION_DENIED,
                                  f"process {pid} belongs to uid {uid}; you (uid {conn.uid}) may only act on your "
                                  "own processes")  # fmt: skip
                return None, pid
        else:
            raise OpFault(FaultCode.BAD_ARGUMENT, "give pid or job")
        if conn.uid != 0 and conn.uid != job.uid:
            raise OpFault(FaultCode.PERMISSION_DENIED,
                          f"job {job.id} belongs to uid {job.uid}; you (uid {conn.uid}) may only act on your own "
                          "processes")  # fmt: skip
        return job, 0

    def _program(self, job: Job) -> list[int]:
        """The job's own processes here: every task but its jobinit."""
        tasks = next((pids for j, pids in self.jobs.tasks_here() if j.id == job.id), [])
        return [p for p in tasks if not (p == job.pid and _is_jobinit(p))]

    def _forward(self, job: Job, op: str, extra: dict[str, Any]) -> Any:
        try:
            return self.peers.call(job.where, op, job=job.id, **extra)
        except AgentFault as exc:
            raise OpFault(FaultCode(exc.code), exc.message) from None
        except PeerError as exc:
            raise OpFault(FaultCode.NODE_DOWN, f"job {job.id} runs on node {job.where}, which does not answer: {exc}") from None

    def _act(self, conn: Connection, args: dict[str, Any], op: str, fn: Callable[[int], None],
             extra: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        job, pid = self._target(conn, args)
        me = self.node.node_id
        if job is not None and job.where != me:
            return dict(self._forward(job, op, extra))
        pids = self._program(job) if job is not None else [pid]
        if not pids:
            raise OpFault(FaultCode.NO_SUCH_PROCESS, f"job {job.id if job else pid} has no process on node {me}")
        done = []
        for p in pids:
            try:
                fn(p)
                done.append(p)
            except ProcessLookupError:
                continue  # ended meanwhile
            except PermissionError as exc:
                raise OpFault(FaultCode.PERMISSION_DENIED, f"process {p}: {exc.strerror}") from None
        if not done:
            raise OpFault(FaultCode.NO_SUCH_PROCESS, f"process {pids[0]} ended meanwhile")
        return {"node": me, "pids": done, **({"job": job.id} if job else {}), **extra}

    def _status(self, conn: Connection, args: dict[str, Any]) -> dict[str, Any]:
        job, pid = self._target(conn, args)
        me = self.node.node_id
        if job is not None and job.where != me:
            return dict(self._forward(job, "proc.status", {}))
        pids = self._program(job) if job is not None else [pid]
        status = read_status(pids[0]) if pids else None
        if status is None:
            raise OpFault(FaultCode.NO_SUCH_PROCESS, f"process {pids[0] if pids else pid} ended meanwhile")
        st = read_stat(pids[0])
        times = {} if st is None else {"utime": st.utime / HZ, "stime": st.stime / HZ, "cutime": st.cutime / HZ,
                                       "cstime": st.cstime / HZ, "nice": st.nice}  # fmt: skip
        return {"node": me, "pid": pids[0], **({"job": job.id} if job else {}), "status": status, "stat": times}
