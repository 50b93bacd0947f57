"""L2 agent: the source side of a live migration of a mosrun job with CRIU.

pre-flight -> peer.mig.prepare -> `criu dump --leave-stopped` into a tmpfs -> images + the job's files
stream to the target agent through the SSH master (sha256 while streaming) -> peer.mig.restore -> on
success the source tree is killed, on any failure it is resumed (SIGCONT to every task). Big jobs use
post-copy instead: the dump serves the pages (`--lazy-pages`) while the job already runs on the
target, and the source is ended only once every page has arrived; any failure before the target
resumed falls back to copying images. A journal per migration lets a restarted source finish the
decision (recover), fencing the target first. The target side is migration/target.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from omview.agent import criu as criumod
from omview.agent.jobs.run import JobError, JobManager
from omview.agent.jobs.table import Job, JobStore
from omview.agent.migration import stream as migstream
from omview.agent.migration.common import (
    METHOD_IMAGES,
    METHOD_LAZY,
    MIG_DIR,
    PAGES_TIMEOUT,
    STREAM_SOCKET,
    TRANSFER_TIMEOUT,
    Env,
    MigrationError,
    image_dir,
    mark,
    remove_images,
    remove_tree,
)
from omview.agent.migration.placement import best_node, check_target, expected_rate
from omview.agent.node import movable
from omview.agent.peers.links import PeerError, PeerLinks
from omview.model.cluster import NodeInfo
from omview.model.errors import AgentFault
from omview.model.procfs import alive, start_time
from omview.model.protocol import FaultCode
from omview.model.target import Target

log = logging.getLogger(__name__)

#: post-copy from this resident size on. bench/migrate.py: a 10 MiB job is frozen 0.19 s when its
#: images are copied and 0.09 s with post-copy (whose pages then follow within about half a second);
#: from ~100 MB post-copy also wins on total time. Only tiny jobs, whose copy is over in a few tens of
#: milliseconds, copy images and so never depend on two nodes at once.
LAZY_MIN_BYTES = 8 << 20
#: how long a source keeps trying to fence a target that stopped answering mid-restore
FENCE_WINDOW = 30.0
HISTORY_FILE = "migrations.jsonl"
HISTORY_KEEP = 200
#: a running migration's progress event (migration.phase) while its images are copied comes at most
#: this often; each change of phase is published at once (at most four per migration)
PHASE_EVERY = 0.25


class PhaseEvents:
    """migration.phase events of one migration (docs/agent.md, "Migration events"): each phase when it
    starts - checking (the target makes room), dumping (the job is frozen), copying (with bytes sent of
    total_bytes, repeated at most every PHASE_EVERY s), restoring or post-copy (the target restores; a
    post-copy job runs there while its pages follow)."""

    def __init__(self, publish: Callable[[str, dict[str, Any]], None], rec: dict[str, Any], t0: float) -> None:
        self._publish = publish
        self._base = {k: rec[k] for k in ("id", "job", "pid", "source", "target", "method")}
        self._t0 = t0
        self._last = 0.0
        self._total = 0

    def phase(self, name: str, *, sent: int = 0, total: int = 0) -> None:
        self._total = total
        self._emit(name, sent)

    def copied(self, sent: int) -> None:
        """Bytes sent so far; published when PHASE_EVERY has passed or the copy is complete."""
        if time.monotonic() - self._last >= PHASE_EVERY or sent >= self._total:
            self._emit("copying", sent)

    def _emit(self, name: str, sent: int) -> None:
        now = self._last = time.monotonic()
        self._publish("migration.phase", {**self._base, "phase": name, "bytes": sent, "total_bytes": self._total,
                                          "elapsed_s": round(now - self._t0, 3)})  # fmt: skip


class _FallBack(Exception):
    """Post-copy failed before the job resumed on the target: the source copy is intact, copy images."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class SourceSide:
    """Departures from this node: proc.migrate, the balancer and expel land in migrate()."""

    def __init__(self, env: Env, store: JobStore, jobs: JobManager, peers: PeerLinks, *,
                 expecting: Callable[[], bool]) -> None:  # fmt: skip
        """EXPECTING says whether an arrival to this node is under way (no link warm-up meanwhile)."""
        self.env = env
        self.store = store
        self.jobs = jobs
        self.peers = peers
        self.expecting = expecting
        self.mig_dir = os.path.join(env.state_dir, MIG_DIR)
        os.makedirs(self.mig_dir, mode=0o700, exist_ok=True)
        self.lock = threading.Lock()
        self.count = 0
        self.recent: list[dict[str, Any]] = self._load_history()
        criumod.pipe_lease_settle()

    # ------------------------------------------------------------------ history
    def _load_history(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with contextlib.suppress(OSError):
            with open(os.path.join(self.env.state_dir, HISTORY_FILE), encoding="utf-8") as fh:
                for line in fh.readlines()[-HISTORY_KEEP:]:
                    with contextlib.suppress(ValueError):
                        out.append(json.loads(line))
        return out

    def record(self, rec: dict[str, Any]) -> None:
        self.recent.append(rec)
        del self.recent[:-HISTORY_KEEP]
        with contextlib.suppress(OSError):
            with open(os.path.join(self.env.state_dir, HISTORY_FILE), "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, sort_keys=True) + "\n")

    # ------------------------------------------------------------------ pre-flight
    def resolve_target(self, job: Job, spec: Target) -> int:
        if spec.is_home:
            return job.home
        if spec.is_best:
            return best_node(self.env.nodes(), self.env.node_id(), rss=self.job_rss(job))
        return spec.node

    def job_rss(self, job: Job) -> int:
        total = 0
        for pid in criumod.job_tasks(job.pid):
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{pid}/statm", encoding="ascii") as fh:
                    total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return total

    def preflight(self, job: Job, target: int) -> NodeInfo:
        me = self.env.node_id()
        if job.state != "running":
            raise MigrationError(FaultCode.NO_SUCH_PROCESS, f"job {job.id} is not running ({job.status})")
        if job.where != me:
            raise MigrationError(
                FaultCode.NO_SUCH_PROCESS, f"job {job.id} runs on node {job.where}, not here"
            )
        if target == me:
            raise MigrationError(FaultCode.BAD_ARGUMENT, f"job {job.id} already runs on node {me}")
        if job.id in self.jobs.migrating:
            raise MigrationError(FaultCode.BUSY, f"job {job.id} is being migrated already")
        info = check_target(self.env.nodes(), target)
        if job.lock:
            raise MigrationError(
                FaultCode.CANT_MOVE,
                f"job {job.id} is locked to node {me} (started with mosrun -h/--nomig/--runon, or locked "
                "with proc.lock; unlock it with proc.lock false)",
            )
        if self.env.criu() is None:
            raise MigrationError(FaultCode.NO_CRIU, f"CRIU does not work on node {me} (see node.info criu)")
        why = movable.job_reason(job.uid, job.gid, criumod.job_tasks(job.pid))
        if why:
            raise MigrationError(FaultCode.CANT_MOVE, f"job {job.id} cannot move: {why}")
        if not alive(job.pid, job.pid_start):
            raise MigrationError(FaultCode.NO_SUCH_PROCESS, f"job {job.id} ended meanwhile")
        return info

    def warm_links(self, nodes: dict[int, NodeInfo] | None = None) -> None:
        """Open the links a migration from here would use before one is asked for, so its prepare
        phase does not pay for a new SSH connection and bridge (~0.3 s). Only while jobs that may
        move run here (and CRIU works), to their home nodes first, then to the nodes that
        expected_rate() ranks highest; plus, for this node's jobs running elsewhere, the control link
        a request forwarded to them (migrate, signal) takes. Nothing new opens while a migration
        from or to this node runs. PeerLinks.warm() keeps at most WARM_PEERS such links per kind and
        works in the background: this never blocks (the agent calls it every tick)."""
        me = self.env.node_id()
        if self.expecting() or self.jobs.migrating:
            return  # a migration from or to here runs: opening links now would cost it CPU, maybe frozen time
        jobs = [j for j in self.store.all() if j.state == "running"]
        movable = [j for j in jobs if j.where == me and not j.lock]
        table = self.env.nodes() if nodes is None else nodes
        up = {nid: n for nid, n in table.items() if nid != me and n.up}
        wanted: list[int] = []
        if movable and self.env.criu() is not None:
            wanted = list(dict.fromkeys(j.home for j in movable if j.home in up and not up[j.home].block))
            wanted += sorted((nid for nid in up if nid not in wanted and not up[nid].block),
                             key=lambda nid: (-expected_rate(up[nid], here=False), nid))  # fmt: skip
        away = list(dict.fromkeys(j.where for j in jobs if j.home == me and j.where != me and j.where in up))
        # called with empty lists too: that is how idle warm links get closed
        self.peers.warm(wanted, purpose="mig", forward=os.path.join(self.peers.sock_dir, STREAM_SOCKET))
        self.peers.warm(away, purpose="ctl")

    # ------------------------------------------------------------------ the migration
    def migrate(self, job_id: str, spec: Target, *, reason: str = "request") -> dict[str, Any]:
        """Move a job running here; returns the migration record. Raises MigrationError."""
        job = self.store.get(job_id)
        if job is None:
            raise MigrationError(FaultCode.NO_SUCH_PROCESS, f"no job {job_id} on node {self.env.node_id()}")
        target = self.resolve_target(job, spec)
        if spec.is_best and target == self.env.node_id():
            raise MigrationError(
                FaultCode.BAD_ARGUMENT, f"job {job.id} already runs on the best node ({target})"
            )
        with self.lock:
            self.preflight(job, target)
            self.jobs.migrating[job.id] = []
        try:
            return self._migrate(job, target, reason)
        finally:
            pending = self.jobs.migrating.pop(job.id, [])
            for sig in pending:
                with contextlib.suppress(JobError):
                    self.jobs.signal(job.id, sig)

    def _migrate(self, job: Job, target: int, reason: str) -> dict[str, Any]:
        """Post-copy for big jobs, falling back to an image copy while the job has not resumed there."""
        rss = self.job_rss(job)
        forced = self.env.faults.value("method")  # tests: force "images" or "lazy"
        method = forced if forced in (METHOD_IMAGES, METHOD_LAZY) else (
            METHOD_LAZY if rss >= LAZY_MIN_BYTES else METHOD_IMAGES)  # fmt: skip
        t0 = time.monotonic()
        note = ""
        if method == METHOD_LAZY:
            try:
                return _Attempt(self, job, target, reason, METHOD_LAZY, rss, t0).run()
            except _FallBack as fb:
                note = f"post-copy failed before the job resumed on node {target} ({fb.why}); copied images"
                log.warning("migration of job %s: %s", job.id, note)
        return _Attempt(self, job, target, reason, METHOD_IMAGES, rss, t0, note=note).run()

    def finish(self, job: Job, target: int) -> None:
        """The target owns the job now: end the stopped copy here, keep a forwarding record."""
        for pid in criumod.job_tasks(job.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        proc = self.jobs.procs.pop(job.id, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        with self.store.lock:
            job.where = target
            job.pid = job.pid_start = 0
            job.nmigs += 1  # the history entry arrives with the "moved" news to the home node
            self.store.save()
        shutil.rmtree(self.store.job_dir(job), ignore_errors=True)

    def fence(self, target: int, mig_id: str) -> str:
        """Make sure the target will not run the job unless it already committed; bounded retries."""
        deadline = time.monotonic() + FENCE_WINDOW
        last = ""
        while time.monotonic() < deadline:
            try:
                return str(self.peers.call(target, "peer.mig.abort", purpose="fence", timeout=15, mig=mig_id))
            except (PeerError, AgentFault) as exc:
                last = str(exc)
            # the agent does not answer: go around it, straight to the node over SSH
            try:
                res = subprocess.run(
                    self.peers.ssh_argv(target, "omview-agent", "mig-abort", mig_id),
                    capture_output=True, timeout=20, stdin=subprocess.DEVNULL, cwd="/",
                )  # fmt: skip
                out = res.stdout.decode(errors="replace").strip().splitlines()
                if res.returncode == 0 and out and out[-1] in ("committed", "aborted", "unknown"):
                    return out[-1]
                last = res.stderr.decode(errors="replace").strip()[-200:]
            except (subprocess.TimeoutExpired, OSError, PeerError) as exc:
                last = str(exc)
            time.sleep(1.0)
        log.error(
            "could not fence node %d for migration %s (%s); resuming the source copy", target, mig_id, last
        )
        return f"unreachable ({last})"

    # ------------------------------------------------------------------ recovery after a restart
    def recover(self) -> None:
        """Finish migrations a previous incarnation of this agent left half done."""
        for mig_id in sorted(os.listdir(self.mig_dir)):
            path = os.path.join(self.mig_dir, mig_id, "journal.json")
            try:
                with open(path, encoding="utf-8") as fh:
                    j = json.load(fh)
            except (OSError, ValueError):
                continue
            if j.get("phase") not in ("done", "failed"):
                self._recover_one(mig_id, path, j)
            else:  # killed between deciding and freeing the images (bench/faults.py, kill-source)
                remove_images(os.path.join(self.mig_dir, mig_id, "images"))

    def _recover_one(self, mig_id: str, path: str, j: dict[str, Any]) -> None:
        """Fence the target, then end the source copy (committed there) or resume it (anything else)."""
        job = self.store.get(j.get("job", ""))
        if job is None:
            self._decide(mig_id, path, j, None)
            return
        # the job watcher must not take the stopped copy that finish() kills for the job's end and
        # report "signal 9" home (fault campaign, kill-source seeds 1324 and 1423: the deputy exited 137
        # while the job ran on the target)
        self.jobs.migrating.setdefault(job.id, [])
        try:
            self._decide(mig_id, path, j, job)
        finally:
            for sig in self.jobs.migrating.pop(job.id, []):  # signals queued meanwhile, as migrate() does
                with contextlib.suppress(JobError):
                    self.jobs.signal(job.id, sig)

    def _decide(self, mig_id: str, path: str, j: dict[str, Any], job: Job | None) -> None:
        target = int(j.get("target", 0))
        log.warning("migration %s was interrupted in phase %s; deciding now", mig_id, j.get("phase"))
        outcome = "aborted"
        if j.get("phase") in ("transfer", "restore", "prepare", "dump"):
            outcome = self.fence(target, mig_id)
        dump_pid = int(j.get("dump_pid", 0))
        if dump_pid and start_time(dump_pid) == j.get("dump_start"):
            if outcome != "committed":
                criumod.kill_tree(dump_pid)  # a post-copy source still serving pages to a fenced target
            else:
                with contextlib.suppress(OSError):  # committed: the target has every page already
                    os.kill(dump_pid, signal.SIGKILL)
        remove_images(os.path.join(self.mig_dir, mig_id, "images"))
        if job is not None and outcome == "committed":
            self.finish(job, target)
            self.jobs.deliver(job, "moved", {"where": target, "nmigs": job.nmigs})
        elif job is not None and job.pid:
            n = criumod.resume(criumod.job_tasks(job.pid))
            log.warning("resumed %d task(s) of job %s after the interrupted migration", n, job.id)
        mark(path, json.dumps({**j, "phase": "failed" if outcome != "committed" else "done"}))


class _Attempt:
    """One try at moving JOB to TARGET by METHOD: its record, its journal and what to undo on failure."""

    def __init__(self, side: SourceSide, job: Job, target: int, reason: str, method: str, rss: int,
                 t0: float, *, note: str = "") -> None:  # fmt: skip
        self.side, self.env, self.job, self.target, self.method, self.t0 = side, side.env, job, target, method, t0
        me = self.env.node_id()
        criu = self.env.criu()
        assert criu is not None
        self.criu = criu
        self.lazy = method == METHOD_LAZY
        self.mig_id = f"{me}-{target}-{int(time.time() * 1000)}-{job.home_pid}"
        self.work = os.path.join(side.mig_dir, self.mig_id)
        os.makedirs(self.work, mode=0o700)
        self.images = os.path.join(self.work, "images")
        self.journal = os.path.join(self.work, "journal.json")
        self.address = side.peers.address(target)
        self.rec: dict[str, Any] = {
            "id": self.mig_id, "job": job.id, "pid": job.home_pid, "source": me, "target": target,
            "reason": reason, "started": round(time.time(), 3), "bytes": 0, "dump_s": 0.0, "transfer_s": 0.0,
            "restore_s": 0.0, "frozen_s": 0.0, "resumed_s": 0.0, "pages_s": 0.0, "total_s": 0.0,
            "result": "running", "method": method, "error": "", "note": note, "phases": {}, "rss": rss,
        }  # fmt: skip
        # what has happened so far decides the rollback
        self.prepared = False  # the target made room: tell it to abort
        self.dumped = False  # the job is frozen here: resume it
        self.resumed_there = False  # the job ran on the target already (post-copy): say so
        self.dump: subprocess.Popen[bytes] | None = None  # the post-copy dump serving pages
        self.lease = False  # raised fs.pipe-max-size for this post-copy
        self.data: socket.socket | None = None
        self.pages: socket.socket | None = None
        self.frozen_at = 0.0
        self.sums: dict[str, str] = {}  # sha256 of every file sent, for the target to compare
        self.events = PhaseEvents(self.env.publish, self.rec, t0)

    def phase(self, name: str, **extra: Any) -> None:
        """The journal recover() reads after a restart."""
        mark(self.journal, json.dumps({"phase": name, "job": self.job.id, "target": self.target,
                                       "address": self.address, "mig": self.mig_id, "method": self.method,
                                       **extra}))  # fmt: skip

    def lap(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.rec["phases"][name] = round(now - since, 4)
        return now

    def run(self) -> dict[str, Any]:
        rec = self.rec
        self.env.publish("migration.started", dict(rec))
        log.info("migration %s: job %s node %d -> %d (%s, %s)", self.mig_id, self.job.id, rec["source"],
                 self.target, rec["reason"], self.method)  # fmt: skip
        try:
            self.phase("prepare")
            self.events.phase("checking")
            t = self._prepare(time.monotonic())
            t = self._open_streams(t)
            self.side.jobs.relay_output(self.job)  # what the job printed so far goes out before it freezes
            self.phase("dump")
            self.events.phase("dumping")
            t = self._dump()
            t = self._transfer(t)
            self._restore_there(t)
            self._succeeded()
            return rec
        except Exception as exc:
            raise self._failed(exc) from None
        finally:
            self._release()

    def _call(self, op: str, **args: Any) -> Any:
        """A request to the target; a refusal or no answer becomes a MigrationError."""
        try:
            return self.side.peers.call(self.target, op, purpose="mig", timeout=30, **args)
        except AgentFault as exc:
            raise MigrationError(FaultCode(exc.code), f"node {self.target} refused: {exc.message}") from None
        except PeerError as exc:
            raise MigrationError(FaultCode.NODE_DOWN, str(exc)) from None

    def _prepare(self, t: float) -> float:
        """The target makes room (and says whether it can take post-copy)."""
        reply = self._call("peer.mig.prepare", mig={
            "id": self.mig_id, "job": self.job.id, "uid": self.job.uid, "bytes": self.rec["rss"] + (1 << 20),
            "method": self.method, "cpu_flags": sorted(criumod.cpu_flags()),
        })  # fmt: skip
        self.prepared = True
        t = self.lap("prepare", t)
        if self.lazy and not (reply.get("lazy") and criumod.lazy_supported(self.criu)):
            raise _FallBack("userfaultfd post-copy is not available on both nodes")
        return t

    def _open_streams(self, t: float) -> float:
        """The image stream (and the page channel) through the SSH master, before the freeze, so their
        set-up costs no frozen time; the image directory; the pipe-size lease of a post-copy."""
        remote = os.path.join(self.side.peers.sock_dir, STREAM_SOCKET)
        try:
            self.data = self.side.peers.stream(self.target, remote)
            migstream.send_line(self.data, {"mig": self.mig_id, "kind": "images"})
            if self.lazy:
                self.pages = self.side.peers.stream(self.target, remote)
                migstream.send_line(self.pages, {"mig": self.mig_id, "kind": "pages"})
                ack = migstream.recv_line(self.pages)
                if not ack.get("ok"):
                    raise _FallBack(f"node {self.target} did not take the page channel: {ack.get('error')}")
                self.pages.settimeout(None)  # CRIU gets this fd: it must be a plain blocking socket
        except (PeerError, OSError, migstream.StreamError) as exc:
            if self.lazy:
                raise _FallBack(f"no page channel: {exc}") from None
            raise MigrationError(FaultCode.MIGRATION_FAILED, f"no stream to node {self.target}: {exc}") from None
        image_dir(self.images, f"omview-out-{self.mig_id}", 4 << 20 if self.lazy else self.rec["rss"] + (8 << 20))
        if self.lazy:
            try:
                self.lease = criumod.pipe_lease_acquire(self.mig_id)
            except OSError as exc:
                raise _FallBack(f"cannot raise fs.pipe-max-size for post-copy: {exc}") from None
        return self.lap("streams", t)

    def _dump(self) -> float:
        """Freeze the job: dump everything (image copy) or all but the pages, then serve those (post-copy)."""
        t = self.frozen_at = time.monotonic()
        if self.lazy:
            self._dump_lazy()
        else:
            rc, _, _ = criumod.run_bounded(
                criumod.dump_argv(self.criu, self.job.pid, self.images), timeout=criumod.DUMP_TIMEOUT
            )
            self.dumped = True
            if rc != 0:
                why = "timed out" if rc == -9 else f"exit {rc}"
                raise MigrationError(
                    FaultCode.MIGRATION_FAILED,
                    f"criu dump {why}: {criumod.log_tail(os.path.join(self.images, 'dump.log'))}",
                )
        t = self.lap("dump", t)
        self.rec["dump_s"] = self.rec["phases"]["dump"]
        self.rec["bytes"] = criumod.image_bytes(self.images)
        return t

    def _dump_lazy(self) -> None:
        pages = self.pages
        assert pages is not None
        self.dump = dump = subprocess.Popen(
            criumod.lazy_dump_argv(self.criu, self.job.pid, self.images, pages.fileno()), cwd="/",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=[pages.fileno()], start_new_session=True,
        )  # fmt: skip
        pages.close()
        self.pages = None
        self.dumped = True
        self.phase("dump", dump_pid=dump.pid, dump_start=start_time(dump.pid) or -1)
        if self.lease:
            criumod.pipe_lease_add_pid(self.mig_id, dump.pid)
        self._await_lazy_server(dump)

    def _await_lazy_server(self, dump: subprocess.Popen[bytes]) -> None:
        """Wait until the lazy dump has written every image but the pages and serves those."""
        log_path = os.path.join(self.images, "dump.log")
        deadline = time.monotonic() + criumod.DUMP_TIMEOUT
        seen = 0
        while True:
            with contextlib.suppress(OSError):
                with open(log_path, "rb") as fh:
                    fh.seek(max(0, seen - len(criumod.LAZY_READY)))
                    chunk = fh.read()
                    if criumod.LAZY_READY in chunk:
                        return
                    seen = fh.tell()
            if dump.poll() is not None:
                raise _FallBack(f"criu dump --lazy-pages exit {dump.returncode}: {criumod.log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise _FallBack(f"criu dump --lazy-pages did not get ready in {criumod.DUMP_TIMEOUT:g} s")
            time.sleep(0.001)

    def _transfer(self, t: float) -> float:
        """images/ and the job's directory over the stream; the target checks every sha256."""
        data = self.data
        assert data is not None
        target = self.target
        stall = self.env.faults.seconds("stall-transfer")
        try:
            data.settimeout(TRANSFER_TIMEOUT)
            files = migstream.collect(self.images, self.side.store.jobs_dir, self.job.dirname,
                                      set(criumod.LOG_NAMES))  # fmt: skip
            total = sum(f.size for f in files)
            self.events.phase("copying", total=total)
            self.sums = migstream.send_files(data, files, stall=stall, progress=self.events.copied)
            # what went over the wire (images but CRIU's logs, and the job's own files), as the
            # copying events said: the images directory alone counts the logs and misses the files
            self.rec["bytes"] = total
            answer = migstream.recv_line(data)
        except (OSError, migstream.StreamError) as exc:
            raise MigrationError(
                FaultCode.MIGRATION_FAILED, f"copying the images to node {target} failed: {exc}"
            ) from None
        if answer.get("problems"):
            raise MigrationError(
                FaultCode.MIGRATION_FAILED,
                f"images arrived damaged on node {target}: {', '.join(answer['problems'][:5])}; nothing was restored",
            )
        if not answer.get("ok"):
            raise MigrationError(
                FaultCode.MIGRATION_FAILED, f"copying the images to node {target} failed: {answer.get('error')}"
            )
        data.close()  # an open forwarded channel would keep the SSH master from noticing a lost peer
        self.data = None
        t = self.lap("transfer", t)
        self.rec["transfer_s"] = self.rec["phases"]["transfer"]
        return t

    def _restore_there(self, t: float) -> None:
        """peer.mig.restore, and when it resumed there (frozen time); a post-copy's dump then ends."""
        rec = self.rec
        self.env.faults.pause("pause-before-restore-call")
        self.events.phase("post-copy" if self.lazy else "restoring")
        call_at = time.monotonic()
        reply = self._call_restore()
        done_at = time.monotonic()
        self.lap("restore", t)
        rec["restore_s"] = float(reply.get("restore_s", 0.0))
        resumed_at = call_at + float(reply["resumed_after"]) if reply.get("resumed_after") else done_at
        resumed_at = min(resumed_at, done_at)
        self.resumed_there = True
        rec["frozen_s"] = round(resumed_at - self.frozen_at, 3)
        rec["resumed_s"] = round(resumed_at - self.t0, 3)
        if self.lazy:
            rec["pages_s"] = round(done_at - resumed_at, 3)
            self._end_lazy_dump()

    def _call_restore(self) -> dict[str, Any]:
        # the tree is frozen: its files now are the ones CRIU will reopen on the target (checked there)
        payload = {"id": self.mig_id, "sums": self.sums, "job": self.job.to_dict(), "method": self.method,
                   "files": movable.tree_files(self.job.pid)}  # fmt: skip
        target = self.target
        try:
            return dict(self.side.peers.call(
                target, "peer.mig.restore", purpose="mig", retry=False,
                timeout=criumod.RESTORE_TIMEOUT + (PAGES_TIMEOUT if self.lazy else 30), mig=payload,
            ))  # fmt: skip
        except AgentFault as exc:
            if self.lazy and "after the job resumed" not in exc.message:
                raise _FallBack(f"node {target}: {exc.message}") from None
            raise MigrationError(FaultCode(exc.code), f"node {target}: {exc.message}") from None
        except PeerError as exc:
            # the target may or may not have restored it: fence it before deciding anything
            outcome = self.side.fence(target, self.mig_id)
            if outcome != "committed":
                raise MigrationError(
                    FaultCode.MIGRATION_FAILED,
                    f"node {target} stopped answering during the restore ({exc}); fenced: {outcome}",
                ) from None
            return {"pid": 0, "restore_s": 0.0, "fenced": True}

    def _end_lazy_dump(self) -> None:
        """Every page is on the target: the dump ends by itself."""
        dump = self.dump
        assert dump is not None
        try:
            rc = dump.wait(timeout=30)
        except subprocess.TimeoutExpired:
            criumod.kill_tree(dump.pid)
            rc = dump.wait()
        if rc != 0:
            log.warning("migration %s: criu dump exit %d after the target had every page (%s)", self.mig_id,
                        rc, criumod.log_tail(os.path.join(self.images, "dump.log")))  # fmt: skip

    def _succeeded(self) -> None:
        rec, job = self.rec, self.job
        self.side.finish(job, self.target)
        self.phase("done")
        remove_tree(self.work)
        rec["result"] = "ok"
        rec["total_s"] = round(time.monotonic() - self.t0, 3)
        for k in ("dump_s", "transfer_s", "restore_s"):
            rec[k] = round(float(rec[k]), 3)
        self.side.count += 1
        self.side.record(rec)
        self.side.jobs.deliver(job, "moved", {"where": self.target, "nmigs": job.nmigs, "record": rec})
        self.env.publish("migration.done", dict(rec))
        log.info("migration %s done (%s): %.3f s total, %.3f s frozen, %d bytes", self.mig_id, self.method,
                 rec["total_s"], rec["frozen_s"], rec["bytes"])  # fmt: skip

    def _failed(self, exc: Exception) -> Exception:
        """Roll back and record the failure; the error to raise (_FallBack while a post-copy can still
        be retried as an image copy)."""
        rec = self.rec
        fallback = isinstance(exc, _FallBack)
        if isinstance(exc, MigrationError):
            err = exc
        elif isinstance(exc, _FallBack):
            err = MigrationError(FaultCode.MIGRATION_FAILED, exc.why)
        else:
            err = MigrationError(FaultCode.MIGRATION_FAILED, f"{type(exc).__name__}: {exc}")
        self._roll_back()
        rec["result"] = "fell back" if fallback and not self.resumed_there else "failed"
        rec["error"] = err.message + ("" if not self.dumped else f"; CRIU logs kept in {self.work}")
        if self.resumed_there:
            rec["error"] += "; the job had resumed on the target and went on from the frozen state here"
        rec["total_s"] = round(time.monotonic() - self.t0, 3)
        self.side.record(rec)
        log.warning("migration %s failed: %s", self.mig_id, rec["error"])
        self.env.publish("migration.failed", dict(rec))
        if fallback and not self.resumed_there:
            return _FallBack(rec["error"])
        return MigrationError(err.code, rec["error"])

    def _roll_back(self) -> None:
        """Abort the target, stop serving pages, resume the job here; keep CRIU's log, free the images."""
        if self.prepared:
            try:
                self.side.peers.call(self.target, "peer.mig.abort", purpose="mig", timeout=30, mig=self.mig_id)
            except PeerError:
                # the link broke (maybe that was the fault): the arrival must still go or its images stay
                # on the target for good (bench/faults.py, cut-ssh); fence() retries over a new link, then
                # plain SSH. Not waited for: nothing was restored there, the job resumes here meanwhile.
                threading.Thread(target=self.side.fence, args=(self.target, self.mig_id), name="abort-arrival",
                                 daemon=True).start()  # fmt: skip
            except AgentFault:
                pass
        dump = self.dump
        if dump is not None and dump.poll() is None:
            criumod.kill_tree(dump.pid)  # the target copy is fenced: stop serving pages
            with contextlib.suppress(subprocess.TimeoutExpired):
                dump.wait(timeout=10)
        if not self.dumped:
            remove_tree(self.work)
            return
        n = criumod.resume(criumod.job_tasks(self.job.pid))
        log.warning("migration %s failed; resumed %d task(s) of job %s here", self.mig_id, n, self.job.id)
        with contextlib.suppress(OSError):
            self.phase("failed")
        with contextlib.suppress(OSError):  # the images (tmpfs memory) go, CRIU's log stays
            shutil.copy(os.path.join(self.images, "dump.log"), os.path.join(self.work, "dump.log"))
        remove_images(self.images)

    def _release(self) -> None:
        for sock in (self.data, self.pages):
            if sock is not None:
                sock.close()
        if self.lease:
            dump = self.dump
            if dump is not None and dump.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    dump.wait(timeout=10)
            criumod.pipe_lease_release(self.mig_id)
