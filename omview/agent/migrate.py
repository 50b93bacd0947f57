"""L2 agent: live migration of a mosrun job with CRIU, both ends.

Source: pre-flight -> `criu dump --leave-stopped` -> images + the job's files to the target over one
`tar | ssh` stream -> target verifies sha256 and restores under a timeout -> on success the source
tree is killed, on any failure it is resumed (SIGCONT to every task). A journal per migration lets a
restarted source finish the decision, and `omview-agent mig-abort` fences a target over plain SSH
when its agent does not answer: under a lock it either reports "committed" or aborts for good.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omview.agent import criu as criumod
from omview.agent.jobrun import JobError, JobManager, alive, start_time
from omview.agent.jobs import Job, JobStore
from omview.agent.peers import PeerError, PeerLinks
from omview.agent.state import atomic_write
from omview.model.cluster import STD_SPEED, NodeInfo
from omview.model.errors import AgentFault
from omview.model.protocol import FaultCode

log = logging.getLogger(__name__)

MIG_DIR = "mig"
INCOMING_DIR = "incoming"
FAULT_DIR = "faults"
TRANSFER_TIMEOUT = 600.0
#: how long a source keeps trying to fence a target that stopped answering mid-restore
FENCE_WINDOW = 30.0
HISTORY_FILE = "migrations.jsonl"


class MigrationError(JobError):
    """A migration was refused or failed; the job kept running where it was (message says why)."""


@dataclass(frozen=True)
class Env:
    """What the migrator needs from the agent (all callables are thread-safe)."""

    state_dir: str
    node_id: Callable[[], int]
    nodes: Callable[[], dict[int, NodeInfo]]  # the latest cluster table snapshot, self included
    blocked: Callable[[], bool]
    criu: Callable[[], str | None]  # path of a working criu, None when CRIU does not work here
    publish: Callable[[str, dict[str, Any]], None]


# ---------------------------------------------------------------------------------- best node


def expected_rate(node: NodeInfo, *, here: bool) -> float:
    """Speed one more CPU-bound process would get on NODE (documented in docs/migration.md).

    demand x = load * speed / (100 * STD_SPEED) runnable processes; a newcomer gets
    speed * min(1, cpus / (x + 1)). On the node it already runs on it is part of x already.
    """
    speed = max(1, node.speed)
    x = max(0.0, node.load * speed / (100.0 * STD_SPEED))
    share = node.cpus / x if here else node.cpus / (x + 1.0)
    return speed * min(1.0, share) if share > 0 else float(speed)


def best_node(nodes: dict[int, NodeInfo], current: int, *, rss: int = 0,
              allowed: set[int] | None = None, margin: float = 1.0) -> int:  # fmt: skip
    """The node where a process now on CURRENT is expected to run fastest; CURRENT on ties.

    Candidates are up, not blocked and have at least RSS bytes of free memory. A different node
    must beat CURRENT by MARGIN (the balancer uses 1.3, the MOSIX stab factor).
    """
    here = nodes.get(current)
    best, best_rate = current, (expected_rate(here, here=True) * margin if here else -1.0)
    for nid in sorted(nodes):
        n = nodes[nid]
        if nid == current or not n.up or n.block or (allowed is not None and nid not in allowed):
            continue
        if rss and n.mem and n.mem < rss:
            continue
        rate = expected_rate(n, here=False)
        if rate > best_rate + 1e-9:
            best, best_rate = nid, rate
    return best


# ---------------------------------------------------------------------------------- fault hooks


def fault_hook(state_dir: str, name: str) -> str | None:
    """Test aid: the content of STATE_DIR/faults/NAME if that file exists (docs/migration.md)."""
    try:
        with open(os.path.join(state_dir, FAULT_DIR, name), encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _pause(state_dir: str, name: str) -> None:
    value = fault_hook(state_dir, name)
    if value is not None:
        secs = float(value or "5")
        log.warning("fault hook %s: pausing %.1f s", name, secs)
        time.sleep(min(secs, 120.0))


# ---------------------------------------------------------------------------------- target side


class Incoming:
    """One arriving migration's directory on the target, with its lock and markers."""

    def __init__(self, state_dir: str, mig_id: str) -> None:
        if not mig_id or "/" in mig_id or mig_id.startswith("."):
            raise MigrationError(FaultCode.BAD_ARGUMENT, f"bad migration id {mig_id!r}")
        self.dir = os.path.join(state_dir, INCOMING_DIR, mig_id)
        self.images = os.path.join(self.dir, "images")

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    @contextlib.contextmanager
    def locked(self) -> Any:
        fd = os.open(self.path("lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def marker(self, name: str) -> bool:
        return os.path.exists(self.path(name))

    def mark(self, name: str, text: str = "") -> None:
        atomic_write(self.path(name), text.encode())

    def read_pid(self, name: str) -> tuple[int, int] | None:
        try:
            with open(self.path(name), encoding="ascii") as fh:
                parts = fh.read().split()
            return int(parts[0]), int(parts[1]) if len(parts) > 1 else -1
        except (OSError, ValueError, IndexError):
            return None


def abort_incoming(state_dir: str, mig_id: str, jobs_dir: str | None = None) -> str:
    """Fence an arriving migration: 'committed' if the target already owns the job, else kill any
    (half) restored copy and answer 'aborted'. Safe to run twice, with or without the agent."""
    inc = Incoming(state_dir, mig_id)
    if not os.path.isdir(inc.dir):
        return "unknown"
    with inc.locked():
        if inc.marker("committed"):
            return "committed"
        inc.mark("aborted")
        crit = inc.read_pid("criu.pid")
        if crit and start_time(crit[0]) == crit[1]:
            criumod.kill_tree(crit[0])
        restored = inc.read_pid("restored.pid")
        if restored and start_time(restored[0]) is not None:
            criumod.kill_tree(restored[0])
        moved = inc.read_pid("moved")  # not a pid: presence means the job dir was moved in
        if moved is not None and jobs_dir:
            _move_job_dir_back(inc, jobs_dir)
    return "aborted"


def _move_job_dir_back(inc: Incoming, jobs_dir: str) -> None:
    try:
        with open(inc.path("jobdir"), encoding="utf-8") as fh:
            name = fh.read().strip()
    except OSError:
        return
    src = os.path.join(jobs_dir, name)
    if os.path.isdir(src):
        with contextlib.suppress(OSError):
            os.replace(src, os.path.join(inc.dir, f"{name}.aborted"))
    with contextlib.suppress(OSError):
        os.unlink(inc.path("moved"))


class Migrator:
    """Source and target sides of job migration for one agent."""

    def __init__(self, env: Env, store: JobStore, jobs: JobManager, peers: PeerLinks) -> None:
        self.env = env
        self.store = store
        self.jobs = jobs
        self.peers = peers
        self.mig_dir = os.path.join(env.state_dir, MIG_DIR)
        self.incoming_dir = os.path.join(env.state_dir, INCOMING_DIR)
        for d in (self.mig_dir, self.incoming_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self.lock = threading.Lock()
        self.count = 0
        self.recent: list[dict[str, Any]] = self._load_history()

    # ------------------------------------------------------------------ history
    def _load_history(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with contextlib.suppress(OSError):
            with open(os.path.join(self.env.state_dir, HISTORY_FILE), encoding="utf-8") as fh:
                for line in fh.readlines()[-200:]:
                    with contextlib.suppress(ValueError):
                        out.append(json.loads(line))
        return out

    def _record(self, rec: dict[str, Any]) -> None:
        self.recent.append(rec)
        del self.recent[:-200]
        with contextlib.suppress(OSError):
            with open(os.path.join(self.env.state_dir, HISTORY_FILE), "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, sort_keys=True) + "\n")

    # ------------------------------------------------------------------ source: pre-flight
    def resolve_target(self, job: Job, spec: str) -> int:
        me = self.env.node_id()
        nodes = self.env.nodes()
        if spec == "home":
            return job.home
        if spec == "best":
            rss = self.job_rss(job)
            return best_node(nodes, me, rss=rss)
        try:
            return int(spec, 0)
        except ValueError:
            raise MigrationError(
                FaultCode.BAD_ARGUMENT, f"target {spec!r} is not a node ID, 'home' or 'best'"
            ) from None

    def job_rss(self, job: Job) -> int:
        total = 0
        for pid in criumod.namespace_tasks(job.pid) if job.pid else []:
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
        nodes = self.env.nodes()
        info = nodes.get(target)
        if info is None:
            known = ", ".join(str(n) for n in sorted(nodes)) or "none"
            raise MigrationError(FaultCode.NO_SUCH_NODE, f"no node {target} in this cluster (known: {known})")
        if not info.up:
            raise MigrationError(FaultCode.NODE_DOWN, f"node {target} is down")
        if info.block:
            raise MigrationError(FaultCode.BLOCKED, f"node {target} blocks arriving processes")
        if job.lock:
            raise MigrationError(
                FaultCode.CANT_MOVE,
                f"job {job.id} is locked to node {me} (started with mosrun -h/--nomig/--runon, or locked "
                "with proc.lock; unlock it with proc.lock false)",
            )
        if self.env.criu() is None:
            raise MigrationError(FaultCode.NO_CRIU, f"CRIU does not work on node {me} (see node.info criu)")
        if not alive(job.pid, job.pid_start):
            raise MigrationError(FaultCode.NO_SUCH_PROCESS, f"job {job.id} ended meanwhile")
        return info

    # ------------------------------------------------------------------ source: the migration
    def migrate(self, job_id: str, spec: str, *, reason: str = "request") -> dict[str, Any]:
        """Move a job running here; returns the migration record. Raises MigrationError."""
        job = self.store.get(job_id)
        if job is None:
            raise MigrationError(FaultCode.NO_SUCH_PROCESS, f"no job {job_id} on node {self.env.node_id()}")
        target = self.resolve_target(job, spec)
        if spec == "best" and target == self.env.node_id():
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
        me = self.env.node_id()
        criu = self.env.criu()
        assert criu is not None
        mig_id = f"{me}-{target}-{int(time.time() * 1000)}-{job.home_pid}"
        work = os.path.join(self.mig_dir, mig_id)
        images = os.path.join(work, "images")
        os.makedirs(images, mode=0o700)
        rec: dict[str, Any] = {
            "id": mig_id, "job": job.id, "pid": job.home_pid, "source": me, "target": target, "reason": reason,
            "started": round(time.time(), 3), "bytes": 0, "dump_s": 0.0, "transfer_s": 0.0, "restore_s": 0.0,
            "frozen_s": 0.0, "total_s": 0.0, "result": "running", "method": "images", "error": "",
        }  # fmt: skip
        journal = os.path.join(work, "journal.json")

        def phase(name: str) -> None:
            atomic_write(
                journal,
                json.dumps(
                    {
                        "phase": name,
                        "job": job.id,
                        "target": target,
                        "address": self.peers.address(target),
                        "mig": mig_id,
                    }
                ).encode(),
            )

        t0 = time.monotonic()
        self.env.publish("migration.started", dict(rec))
        log.info("migration %s: job %s node %d -> %d (%s)", mig_id, job.id, me, target, reason)
        dumped = False
        prepared = False
        try:
            phase("prepare")
            rss = self.job_rss(job)
            try:
                self.peers.call(target, "peer.mig.prepare", purpose="mig", timeout=30, mig={
                    "id": mig_id, "job": job.id, "uid": job.uid, "bytes": rss + (1 << 20),
                    "cpu_flags": sorted(criumod.cpu_flags()),
                })  # fmt: skip
            except AgentFault as exc:
                raise MigrationError(FaultCode(exc.code), f"node {target} refused: {exc.message}") from None
            except PeerError as exc:
                raise MigrationError(FaultCode.NODE_DOWN, str(exc)) from None
            prepared = True
            self.jobs.relay_output(job)  # what the job printed so far goes out before it freezes
            phase("dump")
            frozen_at = time.monotonic()
            rc, rec["dump_s"], out = criumod.run_bounded(
                criumod.dump_argv(criu, job.pid, images), timeout=criumod.DUMP_TIMEOUT
            )
            dumped = True
            if rc != 0:
                why = "timed out" if rc == -9 else f"exit {rc}"
                raise MigrationError(
                    FaultCode.MIGRATION_FAILED,
                    f"criu dump {why}: {criumod.log_tail(os.path.join(images, 'dump.log'))} "
                    f"(log kept in {images}/dump.log)",
                )
            sums = criumod.checksums(images)
            rec["bytes"] = criumod.image_bytes(images)
            self.jobs.relay_output(job)  # frozen now: the files are final until it runs again
            phase("transfer")
            rec["transfer_s"] = self._transfer(job, target, mig_id, work)
            phase("restore")
            _pause(self.env.state_dir, "pause-before-restore-call")
            payload = {"id": mig_id, "sums": sums, "job": job.to_dict()}
            try:
                reply = self.peers.call(target, "peer.mig.restore", purpose="mig", retry=False,
                                        timeout=criumod.RESTORE_TIMEOUT + 30, mig=payload)  # fmt: skip
            except AgentFault as exc:
                raise MigrationError(FaultCode(exc.code), f"node {target}: {exc.message}") from None
            except PeerError as exc:
                # the target may or may not have restored it: fence it before deciding anything
                outcome = self.fence(target, mig_id)
                if outcome != "committed":
                    raise MigrationError(
                        FaultCode.MIGRATION_FAILED,
                        f"node {target} stopped answering during the restore ({exc}); fenced: {outcome}",
                    ) from None
                reply = {"pid": 0, "restore_s": 0.0, "fenced": True}
            rec["restore_s"] = float(reply.get("restore_s", 0.0))
            rec["frozen_s"] = round(time.monotonic() - frozen_at, 3)
            self._finish_source(job, target, rec)
            phase("done")
            shutil.rmtree(work, ignore_errors=True)
            rec["result"] = "ok"
            rec["total_s"] = round(time.monotonic() - t0, 3)
            for k in ("dump_s", "transfer_s", "restore_s"):
                rec[k] = round(float(rec[k]), 3)
            self.count += 1
            self._record(rec)
            self.jobs.deliver(job, "moved", {"where": target, "nmigs": job.nmigs, "record": rec})
            self.env.publish("migration.done", dict(rec))
            log.info("migration %s done: %.3f s total, %.3f s frozen, %d bytes", mig_id, rec["total_s"],
                     rec["frozen_s"], rec["bytes"])  # fmt: skip
            return rec
        except Exception as exc:
            err = exc if isinstance(exc, MigrationError) else MigrationError(
                FaultCode.MIGRATION_FAILED, f"{type(exc).__name__}: {exc}")  # fmt: skip
            if prepared:
                with contextlib.suppress(PeerError, AgentFault):
                    self.peers.call(target, "peer.mig.abort", purpose="mig", timeout=30, mig=mig_id)
            if dumped:
                n = criumod.resume(criumod.namespace_tasks(job.pid))
                log.warning("migration %s failed; resumed %d task(s) of job %s here", mig_id, n, job.id)
                with contextlib.suppress(OSError):
                    phase("failed")
            else:
                shutil.rmtree(work, ignore_errors=True)
            rec["result"] = "failed"
            rec["error"] = err.message + ("" if not dumped else f"; CRIU logs kept in {work}")
            rec["total_s"] = round(time.monotonic() - t0, 3)
            self._record(rec)
            log.warning("migration %s failed: %s", mig_id, rec["error"])
            self.env.publish("migration.failed", dict(rec))
            raise MigrationError(err.code, rec["error"]) from None

    def _transfer(self, job: Job, target: int, mig_id: str, work: str) -> float:
        """images/ and the job's directory, in one tar stream over SSH into the target's incoming dir."""
        t0 = time.monotonic()
        dest = os.path.join(self.incoming_dir, mig_id)  # same state_dir layout on every node
        tar = ["tar", "-c", "-f", "-", "-C", work, "images", "-C", self.store.jobs_dir, job.dirname]
        remote = self.peers.ssh_argv(target, "tar", "-x", "-f", "-", "-C", dest)
        stall = fault_hook(self.env.state_dir, "stall-transfer")
        p1 = subprocess.Popen(tar, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
        assert p1.stdout is not None
        if stall is None:
            p2 = subprocess.Popen(
                remote, stdin=p1.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/"
            )
            p1.stdout.close()
        else:
            p2 = subprocess.Popen(remote, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  cwd="/")  # fmt: skip
            self._stalling_copy(p1, p2, float(stall or "5"))  # returns when the stream has ended
            with contextlib.suppress(OSError, ValueError):
                p2.stdin.close()  # type: ignore[union-attr]
            p2.stdin = None  # communicate() below must not flush a pipe the copy already closed
        try:
            _, err2 = p2.communicate(timeout=TRANSFER_TIMEOUT)
            _, err1 = p1.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            for p in (p1, p2):
                p.kill()
                p.wait()
            raise MigrationError(
                FaultCode.MIGRATION_FAILED, f"copy to node {target} took over {TRANSFER_TIMEOUT:g} s"
            ) from None
        if p1.returncode != 0 or p2.returncode != 0:
            msg = (err2 or b"").decode(errors="replace").strip() or (err1 or b"").decode(
                errors="replace"
            ).strip()
            raise MigrationError(
                FaultCode.MIGRATION_FAILED,
                f"copying the images to node {target} failed (tar {p1.returncode}, ssh {p2.returncode}): {msg[-300:]}",
            )
        return time.monotonic() - t0

    @staticmethod
    def _stalling_copy(p1: subprocess.Popen[bytes], p2: subprocess.Popen[bytes], secs: float) -> None:
        """Fault hook stall-transfer: pass half a megabyte, then hold the stream open for SECS."""
        assert p1.stdout is not None and p2.stdin is not None
        sent = 0
        stalled = False
        try:
            while chunk := p1.stdout.read(65536):
                p2.stdin.write(chunk)
                sent += len(chunk)
                if not stalled and sent >= 512 * 1024:
                    p2.stdin.flush()
                    stalled = True
                    log.warning("fault hook stall-transfer: holding the stream for %.1f s", secs)
                    time.sleep(secs)
            p2.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            with contextlib.suppress(OSError):
                p1.kill()

    def _finish_source(self, job: Job, target: int, rec: dict[str, Any]) -> None:
        """The target owns the job now: end the stopped copy here, keep a forwarding record."""
        for pid in criumod.namespace_tasks(job.pid):
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

    # ------------------------------------------------------------------ source: recovery after a restart
    def recover(self) -> None:
        """Finish migrations a previous incarnation of this agent left half done."""
        for mig_id in sorted(os.listdir(self.mig_dir)):
            path = os.path.join(self.mig_dir, mig_id, "journal.json")
            try:
                with open(path, encoding="utf-8") as fh:
                    j = json.load(fh)
            except (OSError, ValueError):
                continue
            if j.get("phase") in ("done", "failed"):
                continue
            job = self.store.get(j.get("job", ""))
            target = int(j.get("target", 0))
            log.warning("migration %s was interrupted in phase %s; deciding now", mig_id, j.get("phase"))
            outcome = "aborted"
            if j.get("phase") in ("transfer", "restore", "prepare", "dump"):
                outcome = self.fence(target, mig_id)
            if job is not None and outcome == "committed":
                self._finish_source(job, target, {"id": mig_id, "result": "ok", "recovered": True})
                self.jobs.deliver(job, "moved", {"where": target, "nmigs": job.nmigs})
            elif job is not None and job.pid:
                n = criumod.resume(criumod.namespace_tasks(job.pid))
                log.warning("resumed %d task(s) of job %s after the interrupted migration", n, job.id)
            atomic_write(
                path, json.dumps({**j, "phase": "failed" if outcome != "committed" else "done"}).encode()
            )

    # ------------------------------------------------------------------ target side
    def prepare(self, mig: dict[str, Any]) -> dict[str, Any]:
        me = self.env.node_id()
        if self.env.blocked():
            raise MigrationError(FaultCode.BLOCKED, f"node {me} blocks arriving processes")
        if self.env.criu() is None:
            raise MigrationError(FaultCode.NO_CRIU, f"CRIU does not work on node {me}")
        missing = sorted(set(mig.get("cpu_flags", [])) - criumod.cpu_flags())
        if missing:
            raise MigrationError(
                FaultCode.CANT_MOVE,
                f"the CPU of node {me} lacks features the process may use: {' '.join(missing[:8])}",
            )
        need = int(mig.get("bytes", 0))
        st = os.statvfs(self.incoming_dir)
        free = st.f_bavail * st.f_frsize
        if free < need + (8 << 20):
            raise MigrationError(
                FaultCode.MIGRATION_FAILED,
                f"not enough space on node {me}: {free >> 20} MiB free in {self.incoming_dir}, "
                f"need about {need >> 20} MiB",
            )
        existing = self.store.get(str(mig.get("job")))
        if existing is not None and existing.where == me and existing.state == "running":
            raise MigrationError(FaultCode.BAD_ARGUMENT, f"job {existing.id} already runs on node {me}")
        inc = Incoming(self.env.state_dir, str(mig["id"]))
        os.makedirs(inc.images, mode=0o700, exist_ok=True)
        return {"incoming": inc.dir}

    def restore(self, mig: dict[str, Any]) -> dict[str, Any]:
        me = self.env.node_id()
        criu = self.env.criu()
        inc = Incoming(self.env.state_dir, str(mig["id"]))
        job = Job.from_dict(mig["job"])
        if not os.path.isdir(inc.dir):
            raise MigrationError(
                FaultCode.BAD_ARGUMENT, f"migration {mig['id']} was not prepared on node {me}"
            )
        if criu is None:
            raise MigrationError(FaultCode.NO_CRIU, f"CRIU does not work on node {me}")
        _pause(self.env.state_dir, "pause-before-restore")
        with inc.locked():
            if inc.marker("aborted"):
                raise MigrationError(FaultCode.MIGRATION_FAILED, f"migration {mig['id']} was aborted")
            if self.env.blocked():
                raise MigrationError(
                    FaultCode.BLOCKED, f"node {me} blocks arriving processes (set after the pre-flight)"
                )
        if fault_hook(self.env.state_dir, "corrupt-image") is not None:
            _corrupt_largest(inc.images)
        problems = criumod.verify(inc.images, dict(mig["sums"]))
        if problems:
            raise MigrationError(
                FaultCode.MIGRATION_FAILED,
                f"images arrived damaged on node {me}: {', '.join(problems[:5])}; nothing was restored",
            )
        dest = self.store.job_dir(job)
        src = os.path.join(inc.dir, job.dirname)
        if not os.path.isdir(src):
            raise MigrationError(FaultCode.MIGRATION_FAILED, f"the job's files did not arrive on node {me}")
        if os.path.exists(dest):
            os.replace(dest, f"{dest}.stale-{int(time.time())}")
        with inc.locked():
            if inc.marker("aborted"):
                raise MigrationError(FaultCode.MIGRATION_FAILED, f"migration {mig['id']} was aborted")
            inc.mark("jobdir", job.dirname)
            os.replace(src, dest)  # CRIU reopens the job's files at the very same path
            inc.mark("moved", "1")
        pidfile = inc.path("restored.pid.criu")
        extra: list[str] = []
        script = fault_hook(self.env.state_dir, "restore-action-script")
        if script:
            extra = ["--action-script", script]
        t0 = time.monotonic()
        proc = subprocess.Popen(
            criumod.restore_argv(criu, inc.images, pidfile, extra=extra), cwd="/", stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        inc.mark("criu.pid", f"{proc.pid} {start_time(proc.pid) or -1}")
        try:
            proc.communicate(timeout=criumod.RESTORE_TIMEOUT)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            criumod.kill_tree(proc.pid)
            proc.communicate()
            rc = -9
        restore_s = time.monotonic() - t0
        new_pid = 0
        with contextlib.suppress(OSError, ValueError):
            with open(pidfile, encoding="ascii") as fh:
                new_pid = int(fh.read().strip())
        new_start = start_time(new_pid) if new_pid else None
        if new_start is not None:
            inc.mark("restored.pid", f"{new_pid} {new_start}")
        logpath = os.path.join(inc.images, "restore.log")

        def undo(why: str) -> MigrationError:
            if new_pid and new_start is not None:
                criumod.kill_tree(new_pid)
            with inc.locked():
                _move_job_dir_back(inc, self.store.jobs_dir)
            return MigrationError(FaultCode.MIGRATION_FAILED, f"restore on node {me} failed: {why}")

        if rc != 0 or new_start is None:
            why = (
                f"criu restore timed out after {criumod.RESTORE_TIMEOUT:g} s"
                if rc == -9
                else f"criu restore exit {rc}"
            )
            raise undo(f"{why}: {criumod.log_tail(logpath)} (log kept in {logpath})")
        _pause(self.env.state_dir, "pause-after-restore")
        with inc.locked():
            if inc.marker("aborted"):
                aborted = True
            else:
                aborted = False
                job.where, job.pid, job.pid_start, job.state = me, new_pid, new_start, "running"
                job.nmigs += 1
                existing = self.store.get(job.id)
                if existing is not None and existing.home == me:
                    job.history = existing.history  # we are its home too: keep our copy of the history
                self.store.put(job)
                inc.mark("committed")
        if aborted:
            criumod.kill_tree(new_pid)
            raise MigrationError(
                FaultCode.MIGRATION_FAILED, f"migration {mig['id']} was aborted during the restore"
            )
        shutil.rmtree(inc.images, ignore_errors=True)
        log.info(
            "job %s arrived (migration %s): init pid %d, restore %.3f s",
            job.id,
            mig["id"],
            new_pid,
            restore_s,
        )
        return {"pid": new_pid, "restore_s": round(restore_s, 3), "node": me}

    def abort(self, mig_id: str) -> str:
        return abort_incoming(self.env.state_dir, mig_id, self.store.jobs_dir)

    def cleanup_incoming(self, max_age: float = 3600.0) -> None:
        """Drop arrival directories of finished or abandoned migrations."""
        now = time.time()
        for name in os.listdir(self.incoming_dir):
            path = os.path.join(self.incoming_dir, name)
            with contextlib.suppress(OSError):
                if now - os.path.getmtime(path) > max_age:
                    shutil.rmtree(path, ignore_errors=True)


def _corrupt_largest(images: str) -> None:
    """Fault hook corrupt-image: truncate the largest image (a short copy; the worst case for CRIU)."""
    files = [os.path.join(images, n) for n in os.listdir(images)]
    files = [f for f in files if os.path.isfile(f)]
    if files:
        big = max(files, key=os.path.getsize)
        log.warning("fault hook corrupt-image: truncating %s", big)
        with open(big, "r+b") as fh:
            fh.truncate(max(0, os.path.getsize(big) // 2))
