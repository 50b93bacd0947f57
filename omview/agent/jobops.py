"""L2 agent: the protocol operations of mosrun jobs and migration (job.*, proc.migrate, admin.expel
and admin.bring, the peer.* requests agents send each other); blocking work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from omview.agent.jobs import wire
from omview.agent.jobs.run import JobError, JobManager
from omview.agent.jobs.table import CHUNK, HINTS, STREAMS, Job, JobStore, parse_job_id, set_aside
from omview.agent.migration.balancer import Balancer
from omview.agent.migration.common import MigrationError
from omview.agent.migration.placement import best_node, check_target, tree_rss
from omview.agent.migration.source import SourceSide
from omview.agent.migration.target import TargetSide
from omview.agent.node import movable
from omview.agent.node.procs import ProcessLister, real_uid
from omview.agent.node.view import NodeView
from omview.agent.peers.links import PeerError, PeerLinks
from omview.agent.server import Connection, Handler, OpFault
from omview.model.errors import AgentFault
from omview.model.procfs import read_stat, start_time
from omview.model.protocol import FaultCode
from omview.model.target import BEST, HOME, Target, TargetError, parse_target

log = logging.getLogger(__name__)

MAX_ARGV = 4096
SIGNALS = {int(s) for s in signal.Signals}


def _fault(exc: JobError) -> OpFault:
    return OpFault(exc.code, exc.message)


def _output_args(op: str, args: dict[str, Any]) -> tuple[str, int, int]:
    """stream, offset and max of job.output / peer.job.output, checked: a bad one is the caller's
    mistake (BAD_ARGUMENT), never clamped into a different answer."""
    stream, offset, limit = args["stream"], args["offset"], args.get("max", CHUNK)
    if stream not in STREAMS:
        raise OpFault(
            FaultCode.BAD_ARGUMENT, f"{op}: stream must be one of {', '.join(STREAMS)}, not {stream!r}"
        )
    if offset < 0:
        raise OpFault(FaultCode.BAD_ARGUMENT, f"{op}: offset must be 0 or more, not {offset}")
    if not 1 <= limit <= CHUNK:
        raise OpFault(FaultCode.BAD_ARGUMENT, f"{op}: max must be between 1 and {CHUNK} bytes, not {limit}")
    return stream, offset, limit


def _hops(op: str, args: dict[str, Any]) -> int:
    """How often a request was forwarded already (the forwarding node refuses more than 3)."""
    hops = args.get("hops", 0)
    if not 0 <= hops <= 10:
        raise OpFault(FaultCode.BAD_ARGUMENT, f"{op}: hops must be between 0 and 10, not {hops}")
    return int(hops)


def _target(text: str) -> Target:
    try:
        return parse_target(text)
    except TargetError as exc:
        raise OpFault(FaultCode.BAD_ARGUMENT, str(exc)) from None


class JobOps:
    """The handlers, with the parts of the agent they use (handed over by core.Agent)."""

    def __init__(self, *, node: NodeView, store: JobStore, jobs: JobManager, peers: PeerLinks,
                 lister: ProcessLister, source: SourceSide, target: TargetSide, balancer: Balancer,
                 pool: Executor, worker: Executor, criu: Callable[[], str | None]) -> None:  # fmt: skip
        """POOL runs launches, migrations and peer calls; WORKER is the agent's one /proc thread;
        CRIU gives the path of a working criu here, None when CRIU does not work."""
        self.node = node
        self.store = store
        self.jobs = jobs
        self.peers = peers
        self.lister = lister
        self.source = source
        self.target = target
        self.balancer = balancer
        self.pool = pool
        self.worker = worker
        self.criu = criu

    def table(self) -> dict[str, Handler]:
        return {
            "job.start": self.job_start,
            "job.list": self.job_list,
            "job.status": self.job_status,
            "job.signal": self.job_signal,
            "job.output": self.job_output,
            "proc.migrate": self.proc_migrate,
            "migration.history": self.migration_history,
            "balancer.decisions": self.balancer_decisions,
            "admin.expel": self.admin_expel,
            "admin.bring": self.admin_bring,
            "peer.job.launch": self.peer_job_launch,
            "peer.job.update": self.peer_job_update,
            "peer.job.signal": self.peer_job_signal,
            "peer.job.output": self.peer_job_output,
            "peer.job.migrate": self.peer_job_migrate,
            "peer.mig.prepare": self.peer_mig_prepare,
            "peer.mig.restore": self.peer_mig_restore,
            "peer.mig.abort": self.peer_mig_abort,
            "peer.proc.check": self.peer_proc_check,
        }

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        except JobError as exc:
            raise _fault(exc) from None

    @property
    def me(self) -> int:
        return self.node.node_id

    def _job(self, job_id: str) -> Job:
        if parse_job_id(job_id) is None:
            raise OpFault(FaultCode.BAD_ARGUMENT, f"{job_id!r} is not a job id (HOME:HOMEPID, e.g. 1:4242)")
        job = self.store.get(job_id)
        if job is None:
            raise OpFault(FaultCode.NO_SUCH_PROCESS, f"no job {job_id} known on node {self.me}")
        return job

    @staticmethod
    def _own(conn: Connection, job: Job) -> None:
        if conn.uid != 0 and conn.uid != job.uid:
            raise OpFault(
                FaultCode.PERMISSION_DENIED,
                f"job {job.id} belongs to uid {job.uid}; you (uid {conn.uid}) may only act on your own jobs",
            )

    def _node_spec(self, text: str) -> int:
        try:
            node = int(text, 0)
        except ValueError:
            raise OpFault(FaultCode.BAD_ARGUMENT, f"node {text!r} is not a node ID") from None
        nodes = self.node.fresh_nodes()
        if node not in nodes:
            known = ", ".join(str(n) for n in sorted(nodes)) or "none"
            raise OpFault(FaultCode.NO_SUCH_NODE, f"no node {node} in this cluster (known: {known})")
        if not nodes[node].up:
            raise OpFault(FaultCode.NODE_DOWN, f"node {node} is down")
        if nodes[node].block and node != self.me:
            raise OpFault(FaultCode.BLOCKED, f"node {node} blocks arriving processes")
        return node

    # ------------------------------------------------------------------ job.start (the deputy's request)
    async def job_start(self, conn: Connection, args: dict[str, Any]) -> Any:
        argv = args["argv"]
        if not argv or len(argv) > MAX_ARGV or not all(isinstance(a, str) and "\0" not in a for a in argv):
            raise OpFault(FaultCode.BAD_ARGUMENT, "job.start: argv must be a non-empty list of strings")
        if not argv[0]:
            raise OpFault(FaultCode.BAD_ARGUMENT, "job.start: the command (argv[0]) is empty")
        cwd = args.get("cwd") or "/"
        if not os.path.isabs(cwd):
            raise OpFault(FaultCode.BAD_ARGUMENT, f"job.start: cwd must be an absolute path, not {cwd!r}")
        env = args.get("env") or {}
        if not all(isinstance(k, str) and isinstance(v, str) and "=" not in k and "\0" not in k + v
                   for k, v in env.items()):  # fmt: skip
            raise OpFault(FaultCode.BAD_ARGUMENT, "job.start: env must map names to strings")
        hints = args.get("hints") or []
        bad = [h for h in hints if h not in HINTS]
        if bad:
            raise OpFault(
                FaultCode.BAD_ARGUMENT, f"job.start: unknown hint {bad[0]!r} (hints: {', '.join(HINTS)})"
            )
        home_start = start_time(conn.pid)
        if home_start is None:
            raise OpFault(FaultCode.BAD_ARGUMENT, f"job.start: the calling process {conn.pid} is gone")
        job_id = f"{self.me}:{conn.pid}"
        old = self.store.get(job_id)
        if old is not None and old.state == "running" and old.home_start == home_start:
            raise OpFault(FaultCode.BAD_ARGUMENT, f"process {conn.pid} already is the deputy of job {job_id}")
        where = self.me
        if args.get("node"):
            where = self._node_spec(args["node"])
        elif args.get("nodes"):
            allowed = set()
            for n in args["nodes"]:
                allowed.add(self._node_spec(str(n)))
            where = best_node(self.node.fresh_nodes(), -1, allowed=allowed)
            if where == -1:
                raise OpFault(FaultCode.NODE_DOWN, "none of the nodes given can take the job")
        try:
            pw_gid = os.stat(f"/proc/{conn.pid}").st_gid
        except OSError:
            pw_gid = conn.gid
        job = Job(
            id=job_id, home=self.me, home_pid=conn.pid, home_start=home_start, argv=list(argv), cwd=cwd,
            uid=conn.uid, gid=conn.gid if conn.gid >= 0 else pw_gid, where=where, lock=bool(args.get("lock")),
            hints=list(hints), created=round(time.time(), 3),
        )  # fmt: skip
        if where == self.me:
            job = await self._run(self.jobs.launch, job, env)
        else:
            self.store.put(job)

            def remote() -> Any:
                try:
                    return self.peers.call(where, "peer.job.launch", timeout=30, job=job.to_dict(), env=env)
                except AgentFault as exc:
                    raise JobError(FaultCode(exc.code), f"node {where}: {exc.message}") from None
                except PeerError as exc:
                    raise JobError(FaultCode.NODE_DOWN, str(exc)) from None

            try:
                reply = await self._run(remote)
            except OpFault:
                self.store.remove(job.id)
                raise
            job.pid = 0
            job.where = int(reply.get("where", where))
            self.store.put(job)
        return job.public()

    async def job_list(self, conn: Connection, args: dict[str, Any]) -> Any:
        return [self._shown(j) for j in self.store.all()]

    async def job_status(self, conn: Connection, args: dict[str, Any]) -> Any:
        return self._shown(self._job(args["job"]))

    def _shown(self, job: Job) -> dict[str, Any]:
        """The job's record plus, on the node it runs on, the balancer's CPU statistic of it (percent
        of one CPU, per its decay hint; None elsewhere or before the first sample): why it moves or not."""
        stat = self.balancer.cpu(job) if job.where == self.me else None
        return {**job.public(), "balance_cpu": None if stat is None else round(stat, 1)}

    async def job_signal(self, conn: Connection, args: dict[str, Any]) -> Any:
        job = self._job(args["job"])
        self._own(conn, job)
        sig = args["signal"]
        if sig not in SIGNALS:
            raise OpFault(FaultCode.BAD_ARGUMENT, f"job.signal: {sig} is not a signal number")
        return await self._run(self.jobs.signal, job.id, sig)

    async def job_output(self, conn: Connection, args: dict[str, Any]) -> Any:
        stream, offset, limit = _output_args("job.output", args)
        job = self._job(args["job"])
        self._own(conn, job)
        return await self._run(self.jobs.output, job.id, stream, offset, limit)

    # ------------------------------------------------------------------ migration requests
    async def proc_migrate(self, conn: Connection, args: dict[str, Any]) -> Any:
        target = _target(args["target"])
        if "job" in args:
            job = self._job(args["job"])
        elif "pid" in args:
            pid = args["pid"]
            if pid <= 0:
                raise OpFault(FaultCode.BAD_ARGUMENT, f"proc.migrate: bad PID {pid}")
            found = await asyncio.get_running_loop().run_in_executor(self.worker, self.jobs.job_of_pid, pid)
            if found is None:
                if not os.path.exists(f"/proc/{pid}") or not self.lister.scope.contains(pid):
                    raise OpFault(FaultCode.NO_SUCH_PROCESS, f"no process {pid} on node {self.me}")
                uid = real_uid(pid)
                if uid is None:
                    raise OpFault(FaultCode.NO_SUCH_PROCESS, f"no process {pid} on node {self.me}")
                if conn.uid != 0 and conn.uid != uid:
                    raise OpFault(
                        FaultCode.PERMISSION_DENIED,
                        f"process {pid} belongs to uid {uid}; you (uid {conn.uid}) may only move your own",
                    )
                return await self._run(self.migrate_plain, pid, target)
            job = found
        else:
            raise OpFault(FaultCode.BAD_ARGUMENT, "proc.migrate needs pid or job")
        self._own(conn, job)
        return await self._run(self.migrate_anywhere, job.id, target, "request")

    def migrate_plain(self, pid: int, spec: Target) -> dict[str, Any]:
        """A process not started with mosrun: check it here and on the target, then adopt it as a job
        (home = this node, home PID = PID) and move it like one; on failure it stays a plain process."""
        me = self.me
        lister = self.lister
        cache: dict[Any, set[str]] = {}
        st = read_stat(pid)
        why = lister.blocked(st, cache) if st is not None else f"process {pid} ended meanwhile"
        f = None
        if not why:
            f = movable.facts(pid, my_ns=lister.agent_ns, blocked=lambda p: lister.blocked_pid(p, cache))
            why = f.reason
        if why or f is None:
            raise MigrationError(FaultCode.CANT_MOVE, f"process {pid} cannot move: {why}")
        if spec.is_home:
            raise MigrationError(FaultCode.BAD_ARGUMENT, f"process {pid} already runs on its home node {me}")
        nodes = self.node.fresh_nodes()
        if spec.is_best:
            target = best_node(nodes, me, rss=tree_rss(f.pids))  # only a node with room for it
            if target == me:
                raise MigrationError(FaultCode.BAD_ARGUMENT, f"process {pid} already runs on the best node ({me})")
        else:
            target = spec.node
        if target == me:
            raise MigrationError(FaultCode.BAD_ARGUMENT, f"process {pid} already runs on node {me}")
        check_target(nodes, target)
        if self.criu() is None:
            raise MigrationError(FaultCode.NO_CRIU, f"CRIU does not work on node {me} (see node.info criu)")
        try:
            reply = self.peers.call(target, "peer.proc.check", timeout=30, pids=f.pids, files=f.files,
                                      source=me)  # fmt: skip
        except AgentFault as exc:
            raise MigrationError(FaultCode(exc.code), f"node {target}: {exc.message}") from None
        except PeerError as exc:
            raise MigrationError(FaultCode.NODE_DOWN, str(exc)) from None
        problems = list(reply.get("problems", []))
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise MigrationError(FaultCode.CANT_MOVE, f"process {pid} cannot move: {'; '.join(problems[:3])}{more}")
        job = self._adopt(pid)
        try:
            return self.source.migrate(job.id, Target.to_node(target), reason="request")
        except JobError:
            cur = self.store.get(job.id)
            if cur is not None and cur.where == me:
                self.store.remove(job.id)  # rolled back: a plain process again
                shutil.rmtree(self.store.job_dir(job), ignore_errors=True)
            raise

    def _adopt(self, pid: int) -> Job:
        me = self.me
        pid_start = start_time(pid)
        if pid_start is None:
            raise MigrationError(FaultCode.NO_SUCH_PROCESS, f"process {pid} ended meanwhile")
        raw = b""
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                raw = fh.read()
        argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a] or [f"pid {pid}"]
        cwd = "/"
        with contextlib.suppress(OSError):
            cwd = os.readlink(f"/proc/{pid}/cwd")
        st = os.stat(f"/proc/{pid}")
        job = Job(
            id=f"{me}:{pid}", home=me, home_pid=pid, home_start=pid_start, argv=argv, cwd=cwd, uid=st.st_uid,
            gid=st.st_gid, where=me, pid=pid, pid_start=pid_start, created=round(time.time(), 3), adopted=True,
        )  # fmt: skip
        d = self.store.job_dir(job)
        if os.path.isdir(d):
            set_aside(d)
        os.makedirs(d, mode=0o755)
        # the process's output stays where its fds point; the job's directory (which travels with it)
        # only says where it came from
        with open(os.path.join(d, "adopted"), "w", encoding="utf-8") as fh:
            fh.write(f"{me}:{pid} {pid_start} {' '.join(argv)[:1000]}\n")
        self.store.put(job)
        log.info("adopted process %d as job %s (%s)", pid, job.id, " ".join(argv)[:200])
        return job

    def migrate_anywhere(self, job_id: str, target: Target, reason: str) -> dict[str, Any]:
        """Migrate a job wherever it runs (forwarded to the hosting agent when that is not us)."""
        job = self.store.get(job_id)
        if job is None:
            raise MigrationError(FaultCode.NO_SUCH_PROCESS, f"no job {job_id}")
        if job.where == self.me:
            return self.source.migrate(job_id, target, reason=reason)
        if job.state != "running":
            raise MigrationError(FaultCode.NO_SUCH_PROCESS, f"job {job_id} is not running ({job.status})")
        try:
            return dict(
                self.peers.call(job.where, "peer.job.migrate", timeout=600, job=job_id, target=str(target))
            )
        except AgentFault as exc:
            raise MigrationError(FaultCode(exc.code), exc.message) from None
        except PeerError as exc:
            raise MigrationError(FaultCode.NODE_DOWN, str(exc)) from None

    async def migration_history(self, conn: Connection, args: dict[str, Any]) -> Any:
        limit = max(1, min(int(args.get("limit", 50)), 200))
        return {
            "node": self.me,
            "nmigs": self.source.count,
            "migrations": self.source.recent[-limit:],
        }

    async def balancer_decisions(self, conn: Connection, args: dict[str, Any]) -> Any:
        """The balancer's last decisions (moves and holds, with reasons), oldest first."""
        limit = int(args.get("limit", 20))
        if not 1 <= limit <= 100:
            raise OpFault(FaultCode.BAD_ARGUMENT, f"balancer.decisions: limit must be 1..100, not {limit}")
        b = self.balancer
        return {"node": self.me, "enabled": b.enabled, "moves": b.moves, "decisions": b.decisions(limit)}

    # ------------------------------------------------------------------ node switches
    def expel_all(self) -> dict[str, Any]:
        """Send every guest home, or to the best node when home is down or blocked."""
        moved: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for job in self.store.all():
            if job.where != self.me or job.home == self.me or job.state != "running":
                continue
            home = self.node.fresh_nodes().get(job.home)
            spec = Target(HOME) if home is not None and home.up and not home.block else Target(BEST)
            try:
                rec = self.source.migrate(job.id, spec, reason="expel")
                moved.append({"job": job.id, "to": rec["target"]})
            except JobError as exc:
                failed.append({"job": job.id, "error": exc.message})
        return {
            "message": f"node {self.me}: sent {len(moved)} guest job(s) away"
            + (f", {len(failed)} could not move" if failed else ""),
            "moved": moved, "failed": failed,
        }  # fmt: skip

    async def admin_expel(self, conn: Connection, args: dict[str, Any]) -> Any:
        return await self._run(self.expel_all)

    async def admin_bring(self, conn: Connection, args: dict[str, Any]) -> Any:
        def bring() -> dict[str, Any]:
            moved, failed = [], []
            for job in self.store.all():
                if job.home != self.me or job.where == self.me or job.state != "running":
                    continue
                try:
                    self.migrate_anywhere(job.id, Target.to_node(self.me), "bring")
                    moved.append({"job": job.id, "from": job.where})
                except JobError as exc:
                    failed.append({"job": job.id, "error": exc.message})
            return {
                "message": f"node {self.me}: brought {len(moved)} job(s) home"
                + (f", {len(failed)} could not come" if failed else ""),
                "moved": moved, "failed": failed,
            }  # fmt: skip

        return await self._run(bring)

    # ------------------------------------------------------------------ peer requests
    async def peer_job_launch(self, conn: Connection, args: dict[str, Any]) -> Any:
        job = wire.job_record("peer.job.launch", args["job"])
        env = args.get("env") or {}
        if not all(isinstance(v, str) and "=" not in k and "\0" not in k + v for k, v in env.items()):
            raise wire.bad("peer.job.launch", "env must map names to strings")
        job.where = self.me
        if self.node.flags.block:
            raise OpFault(FaultCode.BLOCKED, f"node {self.me} blocks arriving processes")
        job = await self._run(self.jobs.launch, job, env)
        return {"job": job.id, "where": self.me, "pid": job.pid}

    async def peer_job_update(self, conn: Connection, args: dict[str, Any]) -> Any:
        kind, data = args["kind"], args["data"]
        wire.job_id("peer.job.update", args["job"])
        wire.update("peer.job.update", kind, data)
        if kind == "lock":
            await self._run(lambda: self.jobs.set_lock(args["job"], bool(data.get("lock")), from_peer=True))
        else:
            await self._run(self.jobs.on_update, args["job"], kind, data)
        return {"ok": True}

    async def peer_job_signal(self, conn: Connection, args: dict[str, Any]) -> Any:
        wire.job_id("peer.job.signal", args["job"])
        if args["signal"] not in SIGNALS:
            raise wire.bad("peer.job.signal", f"{args['signal']} is not a signal number")
        return await self._run(self.jobs.signal, args["job"], args["signal"], _hops("peer.job.signal", args))

    async def peer_job_output(self, conn: Connection, args: dict[str, Any]) -> Any:
        stream, offset, limit = _output_args("peer.job.output", args)
        job_id = wire.job_id("peer.job.output", args["job"])
        return await self._run(self.jobs.output, job_id, stream, offset, limit, _hops("peer.job.output", args))

    async def peer_job_migrate(self, conn: Connection, args: dict[str, Any]) -> Any:
        job_id = wire.job_id("peer.job.migrate", args["job"])
        return await self._run(self.migrate_anywhere, job_id, _target(args["target"]), "request")

    async def peer_mig_prepare(self, conn: Connection, args: dict[str, Any]) -> Any:
        wire.migration("peer.mig.prepare", args["mig"], restore=False)
        return await self._run(self.target.prepare, args["mig"])

    async def peer_mig_restore(self, conn: Connection, args: dict[str, Any]) -> Any:
        wire.migration("peer.mig.restore", args["mig"], restore=True)
        return await self._run(self.target.restore, args["mig"])

    async def peer_proc_check(self, conn: Connection, args: dict[str, Any]) -> Any:
        pids, files = wire.proc_check("peer.proc.check", args["pids"], args["files"])
        problems = await self._run(movable.check_here, self.me, pids, files, args.get("source", 0))
        if self.node.flags.block:
            problems.insert(0, f"node {self.me} blocks arriving processes")
        # pids_used: the same PIDs as data, for callers that act on them (procs.list's reasons)
        return {"node": self.me, "problems": problems, "pids_used": movable.pids_in_use(pids)}

    async def peer_mig_abort(self, conn: Connection, args: dict[str, Any]) -> Any:
        return await self._run(self.target.abort, wire.mig_id("peer.mig.abort", args["mig"]))
