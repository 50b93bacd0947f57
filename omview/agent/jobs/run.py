"""L2 agent: running mosrun jobs - launch (detached, own PID namespace and session, no shell), watch
them (this agent is a child subreaper, so restored jobs are its children), relay their output and
exit status to the home node, route signals and output requests to wherever a job runs.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from omview.agent import criu as criumod
from omview.agent.jobs.awaystats import AwayStats
from omview.agent.jobs.hostwatch import HostWatch
from omview.agent.jobs.table import (
    CHUNK,
    STREAMS,
    Job,
    JobStore,
    file_size,
    launch_argv,
    prune_set_aside,
    read_chunk,
    read_status,
    set_aside,
)
from omview.agent.peers.links import PeerError, PeerLinks
from omview.model import procfs
from omview.model.errors import AgentFault
from omview.model.procfs import alive, start_time
from omview.model.protocol import FaultCode

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: after a failed relay to a node, leave it alone this long (a down home must not stall the others)
RELAY_BACKOFF = 3.0


class JobError(Exception):
    """A job request that cannot be served; carries the protocol fault to answer with."""

    def __init__(self, code: FaultCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def become_subreaper() -> bool:
    """Orphans below the agent (restored jobs, criu -d daemons) become its children, not init's."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class JobManager:
    """Owns this node's view of jobs; blocking methods run in worker threads."""

    def __init__(
        self,
        *,
        store: JobStore,
        peers: PeerLinks,
        node_id: Callable[[], int],
        publish: Callable[[str, dict[str, Any]], None],
        log_dir: str,
    ) -> None:
        self.store = store
        self.peers = peers
        self.node_id = node_id
        self.publish = publish  # thread-safe
        self.log_dir = log_dir
        os.makedirs(log_dir, mode=0o755, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        #: jobs being migrated from here: job id -> signals that arrived meanwhile
        self.migrating: dict[str, list[int]] = {}
        self._backoff: dict[int, float] = {}
        #: wait statuses of reaped children (restored trees are ours: their exit status is only here)
        self.reaped: dict[int, int] = {}
        self._tick_lock = threading.Lock()
        self._prune_set_aside()
        #: home side: the programs of our jobs running elsewhere, as their hosts report them
        self.away = AwayStats()
        #: home side: our jobs whose hosting node went down (the deputy is told; lost if it returns without them)
        self.hosts = HostWatch(store, peers, node_id, publish)

    # ------------------------------------------------------------------ launch
    def launch(self, job: Job, env: dict[str, str]) -> Job:
        """Start JOB here (its record says where=this node); returns it with pid set."""
        me = self.node_id()
        d = self.store.job_dir(job)
        if os.path.isdir(d):
            # a leftover of an earlier job with the same id (home PID reused after a reboot)
            set_aside(d)
        os.makedirs(d, mode=0o755)
        if not os.path.isdir(job.cwd):
            raise JobError(FaultCode.BAD_ARGUMENT, f"working directory {job.cwd} does not exist on node {me}")
        env = dict(env) or {"PATH": DEFAULT_PATH, "HOME": "/"}
        env.setdefault("PATH", DEFAULT_PATH)
        logf = os.path.join(self.log_dir, f"{job.dirname}.unshare.log")
        with open(logf, "ab") as out:
            try:
                proc = subprocess.Popen(
                    launch_argv(job, d), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    cwd="/", env=env, start_new_session=True, close_fds=True,
                )  # fmt: skip
            except OSError as exc:
                raise JobError(FaultCode.INTERNAL, f"cannot start unshare: {exc.strerror}") from None
        deadline = time.monotonic() + 10.0
        init = 0
        while time.monotonic() < deadline:
            kids = procfs.task_children(proc.pid)
            if kids:
                init = kids[0]
                break
            if proc.poll() is not None:
                break
            time.sleep(0.005)
        st = start_time(init) if init else None
        if not init or st is None:
            proc.poll()
            with contextlib.suppress(OSError):
                tail = open(logf, encoding="utf-8", errors="replace").read().strip().splitlines()[-3:]
            raise JobError(
                FaultCode.INTERNAL,
                f"the job did not start on node {me} (unshare exit {proc.returncode}): {' | '.join(tail)}",
            )
        self.procs[job.id] = proc
        job.where, job.pid, job.pid_start, job.state = me, init, st, "running"
        self.store.put(job)
        log.info("job %s started: %s (init pid %d)", job.id, " ".join(job.argv)[:200], init)
        self.deliver(job, "started", {"node": me, "pid": init})
        return job

    # ------------------------------------------------------------------ delivery to the home node
    def deliver(self, job: Job, kind: str, data: dict[str, Any]) -> bool:
        """Tell JOB's home agent (possibly ourselves) about output, exit, arrival... True when it took it."""
        if job.home == self.node_id():
            self.on_update(job.id, kind, data)
            return True
        until = self._backoff.get(job.home, 0.0)
        if time.monotonic() < until:
            return False
        try:
            self.peers.call(job.home, "peer.job.update", job=job.id, kind=kind, data=data)
            return True
        except (PeerError, AgentFault) as exc:
            log.warning("cannot reach home node %d of job %s: %s", job.home, job.id, exc)
            self._backoff[job.home] = time.monotonic() + RELAY_BACKOFF
            return False

    def on_update(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        """Home side: news about one of our jobs from the node that hosts it."""
        job = self.store.get(job_id)
        if kind == "output":
            self.publish("job.output", {"job": job_id, **data})
            return
        if job is None:
            log.warning("news %r about unknown job %s ignored", kind, job_id)
            return
        if kind == "exit":
            with self.store.lock:
                job.state, job.status = "exited", data.get("status")
                if job.home == self.node_id() and job.where != self.node_id():
                    job.where = int(data.get("node", job.where))
                self.store.save()
            self.publish("job.exit", {"job": job_id, **data})
        elif kind == "moved":
            with self.store.lock:
                job.where = int(data["where"])
                job.nmigs = int(data.get("nmigs", job.nmigs))
                if data.get("record"):
                    job.history.append(data["record"])
                    del job.history[:-50]
                self.store.save()
            self.publish("job.moved", {"job": job_id, "where": job.where, "nmigs": job.nmigs})
        elif kind == "started":
            self.publish("job.started", {"job": job_id, "node": data.get("node"), "pid": data.get("pid")})
        elif kind == "lock":
            with self.store.lock:
                job.lock = bool(data["lock"])
                self.store.save()
        elif kind == "stats":
            self.away.put(job_id, int(data.get("node", job.where)), data)
        elif kind == "lost":
            with self.store.lock:
                job.state, job.status = "lost", data.get("status", "signal 9")
                self.store.save()
            self.publish("job.exit", {"job": job_id, **data})

    # ------------------------------------------------------------------ the watcher (a worker thread)
    def has_work(self) -> bool:
        """Whether tick() has anything to do: a job in the table or a child to reap. Cheap (a dict's
        size and one waitid), so the event loop asks before handing tick() to a thread."""
        return not self.store.empty() or _any_zombie_child()

    def tick(self) -> None:
        """Reap, relay output, report exits; called about 5 times a second from one thread."""
        if not self._tick_lock.acquire(blocking=False):
            return
        try:
            self._reap_orphans()
            me = self.node_id()
            for job in self.store.all():
                if job.id in self.migrating:
                    continue
                if job.where == me and job.state == "running":
                    self._watch(job)
                elif job.where == me and job.state in ("exited", "lost") and not job.exit_reported:
                    self._report_exit(job)
                if job.home == me and job.state == "running" and job.home_start and not job.adopted:
                    if not alive(job.home_pid, job.home_start):
                        self._deputy_gone(job)
        except Exception:
            log.exception("job watcher failed")
        finally:
            self._tick_lock.release()

    def _reap_orphans(self) -> None:
        """Collect zombie children we do not track elsewhere (restored jobs, criu -d daemons)."""
        if not _any_zombie_child():
            return  # one system call, where the scan reads the children file of every agent thread
        mine = {p.pid for p in self.procs.values()}
        for pid in self._zombie_children():
            if pid in mine:
                continue
            self._reap(pid)

    def _reap(self, pid: int) -> None:
        with contextlib.suppress(ChildProcessError, OSError):
            got, status = os.waitpid(pid, os.WNOHANG)
            if got:
                self.reaped[got] = status
                while len(self.reaped) > 256:
                    del self.reaped[next(iter(self.reaped))]

    def _zombie_children(self) -> list[int]:
        me = os.getpid()
        out: list[int] = []
        try:
            tids = os.listdir(f"/proc/{me}/task")
        except OSError:
            return out
        for tid in tids:
            out.extend(pid for pid in procfs.task_children(me, int(tid)) if procfs.state(pid) == "Z")
        return out

    def relay_output(self, job: Job) -> None:
        for stream in STREAMS:
            attr = f"{stream}_sent"
            for _ in range(16):  # bounded per tick, so one chatty job cannot starve the others
                offset = getattr(job, attr)
                data = read_chunk(self.store.file(job, stream), offset)
                if not data:
                    break
                payload = {"stream": stream, "offset": offset, "data": base64.b64encode(data).decode(),
                           "node": self.node_id()}  # fmt: skip
                if not self.deliver(job, "output", payload):
                    return
                setattr(job, attr, offset + len(data))
                if len(data) < CHUNK:
                    break

    def _watch(self, job: Job) -> None:
        proc = self.procs.get(job.id)
        if proc is not None:
            proc.poll()  # reaps unshare when the job ends
        if job.pid and procfs.state(job.pid) == "Z":
            self._reap(job.pid)
        before = (job.out_sent, job.err_sent)
        self.relay_output(job)
        if alive(job.pid, job.pid_start):
            if (job.out_sent, job.err_sent) != before:
                self.store.save()
            return
        # ended: its files are final now; the exit status is what jobinit wrote (absent: init was killed)
        self.relay_output(job)
        status = read_status(self.store.file(job, "status"))
        raw = self.reaped.pop(job.pid, None)
        if status is None and raw is not None:  # no jobinit (an adopted tree): the wait status we reaped
            status = f"signal {os.WTERMSIG(raw)}" if os.WIFSIGNALED(raw) else f"exit {os.WEXITSTATUS(raw)}"
        with self.store.lock:
            job.state = "exited"
            job.status = status or "signal 9"
            self.store.save()
        self.procs.pop(job.id, None)
        log.info("job %s ended: %s", job.id, job.status)
        self._prune_set_aside()
        self._report_exit(job)

    def _prune_set_aside(self) -> None:
        n = prune_set_aside(self.store.jobs_dir)
        if n:
            log.info("removed %d job director%s of earlier jobs with a reused id", n, "y" if n == 1 else "ies")

    def _report_exit(self, job: Job) -> None:
        self.relay_output(job)
        data = {
            "status": job.status, "node": self.node_id(),
            "out_size": file_size(self.store.file(job, "out")), "err_size": file_size(self.store.file(job, "err")),
        }  # fmt: skip
        from omview.agent.jobs.table import exit_code

        data["exit_code"] = exit_code(job.status)
        if self.deliver(job, "exit", data):
            with self.store.lock:
                job.exit_reported = True
                self.store.save()

    def _deputy_gone(self, job: Job) -> None:
        """openMosix semantics: without its deputy the job cannot go on."""
        log.warning("deputy %d of job %s is gone; ending the job", job.home_pid, job.id)
        with self.store.lock:
            job.home_start = 0  # act once
            self.store.save()
        try:
            self.signal(job.id, signal.SIGKILL)
        except JobError as exc:
            log.warning("could not end job %s: %s", job.id, exc.message)

    # ------------------------------------------------------------------ signals and output requests
    def signal(self, job_id: str, sig: int, hops: int = 0) -> dict[str, Any]:
        job = self.store.get(job_id)
        if job is None:
            raise JobError(FaultCode.NO_SUCH_PROCESS, f"no job {job_id} known on node {self.node_id()}")
        if job.state != "running":
            raise JobError(FaultCode.NO_SUCH_PROCESS, f"job {job_id} already ended ({job.status})")
        if job.where == self.node_id():
            pending = self.migrating.get(job_id)
            if pending is not None:
                pending.append(sig)  # delivered where the job runs once the migration is over
                return {"job": job_id, "node": job.where, "queued": True}
            try:
                os.kill(job.pid, sig)
            except ProcessLookupError:
                raise JobError(FaultCode.NO_SUCH_PROCESS, f"job {job_id} ended meanwhile") from None
            return {"job": job_id, "node": job.where, "queued": False}
        if hops > 3:
            raise JobError(FaultCode.INTERNAL, f"job {job_id}: signal forwarded too often")
        try:
            return dict(self.peers.call(job.where, "peer.job.signal", job=job_id, signal=sig, hops=hops + 1))
        except AgentFault as exc:
            raise JobError(FaultCode(exc.code), exc.message) from None
        except PeerError as exc:
            raise JobError(FaultCode.NODE_DOWN, str(exc)) from None

    def output(self, job_id: str, stream: str, offset: int, limit: int, hops: int = 0) -> dict[str, Any]:
        job = self.store.get(job_id)
        if job is None:
            raise JobError(FaultCode.NO_SUCH_PROCESS, f"no job {job_id} known on node {self.node_id()}")
        if stream not in STREAMS:
            raise JobError(FaultCode.BAD_ARGUMENT, f"stream must be one of {', '.join(STREAMS)}")
        if job.where == self.node_id():
            path = self.store.file(job, stream)
            data = read_chunk(path, max(0, offset), max(1, min(limit, CHUNK)))
            return {"job": job_id, "stream": stream, "offset": offset, "size": file_size(path),
                    "data": base64.b64encode(data).decode()}  # fmt: skip
        if hops > 3:
            raise JobError(FaultCode.INTERNAL, f"job {job_id}: output request forwarded too often")
        try:
            return dict(self.peers.call(job.where, "peer.job.output", job=job_id, stream=stream, offset=offset,
                                        max=limit, hops=hops + 1))  # fmt: skip
        except AgentFault as exc:
            raise JobError(FaultCode(exc.code), exc.message) from None
        except PeerError as exc:
            raise JobError(FaultCode.NODE_DOWN, str(exc)) from None

    def set_lock(self, job_id: str, lock: bool, *, from_peer: bool = False) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise JobError(FaultCode.NO_SUCH_PROCESS, f"no job {job_id}")
        with self.store.lock:
            job.lock = lock
            self.store.save()
        me = self.node_id()
        if not from_peer:
            for other in {job.home, job.where} - {me}:
                with contextlib.suppress(PeerError, AgentFault):
                    self.peers.call(other, "peer.job.update", job=job_id, kind="lock", data={"lock": lock})
        return job

    # ------------------------------------------------------------------ lookups
    def job_of_pid(self, pid: int) -> Job | None:
        """The job a local PID belongs to: its deputy (home side) or any task of its namespace."""
        me = self.node_id()
        for job in self.store.all():
            if job.state != "running":
                continue
            if job.home == me and job.home_pid == pid and alive(job.home_pid, job.home_start or -1):
                return job
        owner = self.local_tasks().get(pid)
        if owner is not None:
            return owner
        for job in self.store.all():  # a deputy whose start time was not recorded
            if job.home == me and job.home_pid == pid and job.state == "running" and not job.adopted:
                return job
        if start_time(pid) is None:
            # an adopted process keeps its original PID as its name on its home node once that PID is
            # gone there (it moved away, or came back with a new global PID)
            for job in self.store.all():
                if job.adopted and job.home == me and job.home_pid == pid and job.state == "running":
                    return job
        return None

    def local_tasks(self) -> dict[int, Job]:
        """PID -> job for every task of every job running here, and for the deputies of our jobs."""
        me = self.node_id()
        out: dict[int, Job] = {}
        for job in self.store.all():
            if job.state == "running" and job.home == me and not job.adopted:
                out[job.home_pid] = job  # a deputy (an adopted job's home PID is not one)
        for job, pids in self.tasks_here():
            for pid in pids:
                out[pid] = job
        return out

    def tasks_here(self) -> list[tuple[Job, list[int]]]:
        """Every job running here with all its tasks, from one pass over /proc for all jobs (what
        criu.job_tasks gives for one): a namespace init's whole namespace, or an adopted tree of our
        own namespace by parentage."""
        me = self.node_id()
        own = criumod.own_pidns()
        by_ns: dict[int, tuple[Job, list[int]]] = {}
        trees: list[Job] = []
        for job in self.store.all():
            if job.state != "running" or job.where != me or not job.pid:
                continue
            ns = criumod.pidns_of(job.pid)
            if ns is not None and ns != own:
                by_ns[ns] = (job, [])
            elif ns is not None:
                trees.append(job)
        if by_ns:
            for pid in procfs.all_pids():
                ns = criumod.pidns_of(pid)
                if ns in by_ns:
                    by_ns[ns][1].append(pid)
        children = procfs.children_map() if trees else None  # one /proc pass for all of them
        return [*by_ns.values(), *((job, [job.pid, *criumod.descendants(job.pid, children)]) for job in trees)]


def _any_zombie_child() -> bool:
    """Whether any child of this process (of any of its threads: Linux waits for those too) has ended
    and waits to be reaped; looks without reaping it (WNOWAIT), so Popen.poll still gets its own."""
    try:
        return os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # no children at all
        return False
