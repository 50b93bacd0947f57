"""L2 agent: live migration of a mosrun job with CRIU, both ends.

Source: pre-flight -> `criu dump --leave-stopped` into a tmpfs -> images + the job's files stream to
the target agent through the SSH master (sha256 while streaming) -> target restores under a timeout
-> on success the source tree is killed, on any failure it is resumed (SIGCONT to every task). Big
jobs use post-copy instead: the dump serves the pages (`--lazy-pages`) while the job already runs on
the target, and the source is ended only once every page has arrived; any failure before the target
resumed falls back to copying images. A journal per migration lets a restarted source finish the
decision, and `omview-agent mig-abort` fences a target over plain SSH when its agent does not
answer: under a lock it either reports "committed" or aborts for good.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omview.agent.jobs.run import JobError, JobManager, alive, start_time
from omview.agent.jobs.table import Job, JobStore
from omview.agent.migration import criu as criumod
from omview.agent.migration import stream as migstream
from omview.agent.peers.links import PeerError, PeerLinks
from omview.model.cluster import STD_SPEED, NodeInfo
from omview.model.errors import AgentFault
from omview.model.protocol import FaultCode
from omview.model.target import Target

log = logging.getLogger(__name__)

MIG_DIR = "mig"
INCOMING_DIR = "incoming"
FAULT_DIR = "faults"
TRANSFER_TIMEOUT = 600.0
#: the longest a post-copy may take to move every page once the job runs on the target
PAGES_TIMEOUT = 600.0
METHOD_IMAGES = "images"
METHOD_LAZY = "lazy"
#: post-copy from this resident size on. bench/migrate.py: a 10 MiB job is frozen 0.19 s when its
#: images are copied and 0.09 s with post-copy (whose pages then follow within about half a second);
#: from ~100 MB post-copy also wins on total time. Only tiny jobs, whose copy is over in a few tens of
#: milliseconds, copy images and so never depend on two nodes at once.
LAZY_MIN_BYTES = 8 << 20
#: images go to a tmpfs when it and the memory have room for them (plus these margins)
TMPFS = "/dev/shm"
TMPFS_MARGIN = 64 << 20
MEM_MARGIN = 512 << 20
STREAM_SOCKET = "mig.sock"
#: how long a source keeps trying to fence a target that stopped answering mid-restore
FENCE_WINDOW = 30.0
HISTORY_FILE = "migrations.jsonl"
#: no link warm-up on a node while an arrival it prepared has neither come in nor is this old
ARRIVAL_QUIET = 30.0


class MigrationError(JobError):
    """A migration was refused or failed; the job kept running where it was (message says why)."""


class _FallBack(Exception):
    """Post-copy failed before the job resumed on the target: the source copy is intact, copy images."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


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


def check_target(nodes: dict[int, NodeInfo], target: int) -> NodeInfo:
    """The target's row, if it is a known node that is up and accepts arrivals; else MigrationError."""
    info = nodes.get(target)
    if info is None:
        known = ", ".join(str(n) for n in sorted(nodes)) or "none"
        raise MigrationError(FaultCode.NO_SUCH_NODE, f"no node {target} in this cluster (known: {known})")
    if not info.up:
        raise MigrationError(FaultCode.NODE_DOWN, f"node {target} is down")
    if info.block:
        raise MigrationError(FaultCode.BLOCKED, f"node {target} blocks arriving processes")
    return info


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


def _mark(path: str, text: str) -> None:
    """Write a small state file atomically. No fsync: these guard against a crashed *process*; a
    crashed host takes the stopped or restored job down with it anyway, and fsyncs cost milliseconds
    while the job is frozen."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _mem_available() -> int:
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return 0


def image_dir(link: str, name: str, need: int) -> str:
    """Make LINK the directory for NEED bytes of images: a fresh directory in the tmpfs (LINK is then a
    symlink to it) when the tmpfs and the memory have room, else a plain directory. Returns where."""
    try:
        st = os.statvfs(TMPFS)
        room = st.f_bavail * st.f_frsize >= need + TMPFS_MARGIN and _mem_available() >= need + MEM_MARGIN
    except OSError:
        room = False
    if room:
        real = os.path.join(TMPFS, name)
        os.makedirs(real, mode=0o700)
        os.symlink(real, link)
        return real
    os.makedirs(link, mode=0o700, exist_ok=True)
    return link


def remove_images(link: str) -> None:
    """Remove an image directory made by image_dir (the tmpfs copy too)."""
    if os.path.islink(link):
        real = os.path.realpath(link)
        if real.startswith(TMPFS + "/omview-"):
            shutil.rmtree(real, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(link)
    else:
        shutil.rmtree(link, ignore_errors=True)


def drop_images(link: str, keep_dir: str) -> None:
    """A failed or aborted migration: keep CRIU's logs in KEEP_DIR, free the images (tmpfs memory)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(link):
            if name.endswith(".log"):
                shutil.copy(os.path.join(link, name), os.path.join(keep_dir, name))
    remove_images(link)


def remove_tree(path: str) -> None:
    """rmtree PATH, including tmpfs image directories its 'images' symlink points to."""
    remove_images(os.path.join(path, "images"))
    shutil.rmtree(path, ignore_errors=True)


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
        _mark(self.path(name), text)

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
        for name in ("criu.pid", "lazy.pid"):
            crit = inc.read_pid(name)
            if crit and start_time(crit[0]) == crit[1]:
                criumod.kill_tree(crit[0])
        restored = inc.read_pid("restored.pid")
        if restored and start_time(restored[0]) is not None:
            criumod.kill_tree(restored[0])
        moved = inc.read_pid("moved")  # not a pid: presence means the job dir was moved in
        if moved is not None and jobs_dir:
            _move_job_dir_back(inc, jobs_dir)
        drop_images(inc.images, inc.dir)
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
        self._streams_lock = threading.Lock()
        self._page_socks: dict[str, socket.socket] = {}
        self._arrivals: dict[str, tuple[float, str]] = {}  # prepared here: mig id -> (when, job id)
        criumod.pipe_lease_settle()
        self.listener: migstream.Listener | None = None
        try:
            self.listener = migstream.Listener(os.path.join(peers.sock_dir, STREAM_SOCKET), self._on_stream)
        except OSError as exc:
            log.error("cannot listen for migration streams (%s): arrivals will fail", exc)

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
        now = time.monotonic()
        for mid, (at, job_id) in list(self._arrivals.items()):
            there = self.store.get(job_id)
            if now - at > ARRIVAL_QUIET or (there is not None and there.where == me and there.state == "running"):
                self._arrivals.pop(mid, None)
        if self.jobs.migrating or self._arrivals:
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

    # ------------------------------------------------------------------ source: the migration
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
        rss = self.job_rss(job)
        forced = fault_hook(self.env.state_dir, "method")  # tests: force "images" or "lazy"
        method = forced if forced in (METHOD_IMAGES, METHOD_LAZY) else (
            METHOD_LAZY if rss >= LAZY_MIN_BYTES else METHOD_IMAGES)  # fmt: skip
        t0 = time.monotonic()
        note = ""
        if method == METHOD_LAZY:
            try:
                return self._attempt(job, target, reason, METHOD_LAZY, rss, t0)
            except _FallBack as fb:
                note = f"post-copy failed before the job resumed on node {target} ({fb.why}); copied images"
                log.warning("migration of job %s: %s", job.id, note)
        return self._attempt(job, target, reason, METHOD_IMAGES, rss, t0, note=note)

    def _attempt(self, job: Job, target: int, reason: str, method: str, rss: int, t0: float, *,
                 note: str = "") -> dict[str, Any]:  # fmt: skip
        me = self.env.node_id()
        criu = self.env.criu()
        assert criu is not None
        mig_id = f"{me}-{target}-{int(time.time() * 1000)}-{job.home_pid}"
        work = os.path.join(self.mig_dir, mig_id)
        os.makedirs(work, mode=0o700)
        rec: dict[str, Any] = {
            "id": mig_id, "job": job.id, "pid": job.home_pid, "source": me, "target": target, "reason": reason,
            "started": round(time.time(), 3), "bytes": 0, "dump_s": 0.0, "transfer_s": 0.0, "restore_s": 0.0,
            "frozen_s": 0.0, "resumed_s": 0.0, "pages_s": 0.0, "total_s": 0.0, "result": "running",
            "method": method, "error": "", "note": note, "phases": {}, "rss": rss,
        }  # fmt: skip
        journal = os.path.join(work, "journal.json")
        lazy = method == METHOD_LAZY
        address = self.peers.address(target)

        def phase(name: str, **extra: Any) -> None:
            _mark(journal, json.dumps({"phase": name, "job": job.id, "target": target, "address": address,
                                       "mig": mig_id, "method": method, **extra}))  # fmt: skip

        def lap(name: str, since: float) -> float:
            now = time.monotonic()
            rec["phases"][name] = round(now - since, 4)
            return now

        self.env.publish("migration.started", dict(rec))
        log.info("migration %s: job %s node %d -> %d (%s, %s)", mig_id, job.id, me, target, reason, method)
        dumped = False
        prepared = False
        resumed_there = False
        dump: subprocess.Popen[bytes] | None = None
        lease = False
        data: socket.socket | None = None
        images = os.path.join(work, "images")
        try:
            phase("prepare")
            t = time.monotonic()
            try:
                reply = self.peers.call(target, "peer.mig.prepare", purpose="mig", timeout=30, mig={
                    "id": mig_id, "job": job.id, "uid": job.uid, "bytes": rss + (1 << 20), "method": method,
                    "cpu_flags": sorted(criumod.cpu_flags()),
                })  # fmt: skip
            except AgentFault as exc:
                raise MigrationError(FaultCode(exc.code), f"node {target} refused: {exc.message}") from None
            except PeerError as exc:
                raise MigrationError(FaultCode.NODE_DOWN, str(exc)) from None
            prepared = True
            t = lap("prepare", t)
            if lazy and not (reply.get("lazy") and criumod.lazy_supported(criu)):
                raise _FallBack("userfaultfd post-copy is not available on both nodes")
            # the streams go through the SSH master before the freeze, so their set-up costs no frozen time
            remote = os.path.join(self.peers.sock_dir, STREAM_SOCKET)
            pages: socket.socket | None = None
            try:
                data = self.peers.stream(target, remote)
                migstream.send_line(data, {"mig": mig_id, "kind": "images"})
                if lazy:
                    pages = self.peers.stream(target, remote)
                    migstream.send_line(pages, {"mig": mig_id, "kind": "pages"})
                    ack = migstream.recv_line(pages)
                    if not ack.get("ok"):
                        raise _FallBack(f"node {target} did not take the page channel: {ack.get('error')}")
                    pages.settimeout(None)  # CRIU gets this fd: it must be a plain blocking socket
            except (PeerError, OSError, migstream.StreamError) as exc:
                if pages is not None:
                    pages.close()
                if lazy:
                    raise _FallBack(f"no page channel: {exc}") from None
                raise MigrationError(FaultCode.MIGRATION_FAILED, f"no stream to node {target}: {exc}") from None
            image_dir(images, f"omview-out-{mig_id}", 4 << 20 if lazy else rss + (8 << 20))
            if lazy:
                try:
                    lease = criumod.pipe_lease_acquire(mig_id)
                except OSError as exc:
                    raise _FallBack(f"cannot raise fs.pipe-max-size for post-copy: {exc}") from None
            t = lap("streams", t)
            self.jobs.relay_output(job)  # what the job printed so far goes out before it freezes
            phase("dump")
            t = frozen_at = time.monotonic()
            if lazy:
                assert pages is not None
                dump = subprocess.Popen(
                    criumod.lazy_dump_argv(criu, job.pid, images, pages.fileno()), cwd="/",
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    pass_fds=[pages.fileno()], start_new_session=True,
                )  # fmt: skip
                pages.close()
                dumped = True
                phase("dump", dump_pid=dump.pid, dump_start=start_time(dump.pid) or -1)
                if lease:
                    criumod.pipe_lease_add_pid(mig_id, dump.pid)
                self._await_lazy_server(dump, images)
            else:
                rc, _, _ = criumod.run_bounded(
                    criumod.dump_argv(criu, job.pid, images), timeout=criumod.DUMP_TIMEOUT
                )
                dumped = True
                if rc != 0:
                    why = "timed out" if rc == -9 else f"exit {rc}"
                    raise MigrationError(
                        FaultCode.MIGRATION_FAILED,
                        f"criu dump {why}: {criumod.log_tail(os.path.join(images, 'dump.log'))}",
                    )
            t = lap("dump", t)
            rec["dump_s"] = rec["phases"]["dump"]
            rec["bytes"] = criumod.image_bytes(images)
            sums = self._send_images(data, job, target, images)
            data.close()  # an open forwarded channel would keep the SSH master from noticing a lost peer
            data = None
            t = lap("transfer", t)
            rec["transfer_s"] = rec["phases"]["transfer"]
            _pause(self.env.state_dir, "pause-before-restore-call")
            payload = {"id": mig_id, "sums": sums, "job": job.to_dict(), "method": method}
            call_at = time.monotonic()
            try:
                reply = self.peers.call(target, "peer.mig.restore", purpose="mig", retry=False,
                                        timeout=criumod.RESTORE_TIMEOUT + (PAGES_TIMEOUT if lazy else 30),
                                        mig=payload)  # fmt: skip
            except AgentFault as exc:
                if lazy and "after the job resumed" not in exc.message:
                    raise _FallBack(f"node {target}: {exc.message}") from None
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
            done_at = time.monotonic()
            lap("restore", t)
            rec["restore_s"] = float(reply.get("restore_s", 0.0))
            resumed_at = call_at + float(reply["resumed_after"]) if reply.get("resumed_after") else done_at
            resumed_at = min(resumed_at, done_at)
            resumed_there = True
            rec["frozen_s"] = round(resumed_at - frozen_at, 3)
            rec["resumed_s"] = round(resumed_at - t0, 3)
            if lazy:
                rec["pages_s"] = round(done_at - resumed_at, 3)
                assert dump is not None
                try:  # every page is on the target: the dump ends by itself
                    rc = dump.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    criumod.kill_tree(dump.pid)
                    rc = dump.wait()
                if rc != 0:
                    log.warning("migration %s: criu dump exit %d after the target had every page (%s)", mig_id,
                                rc, criumod.log_tail(os.path.join(images, "dump.log")))  # fmt: skip
            self._finish_source(job, target, rec)
            phase("done")
            remove_tree(work)
            rec["result"] = "ok"
            rec["total_s"] = round(time.monotonic() - t0, 3)
            for k in ("dump_s", "transfer_s", "restore_s"):
                rec[k] = round(float(rec[k]), 3)
            self.count += 1
            self._record(rec)
            self.jobs.deliver(job, "moved", {"where": target, "nmigs": job.nmigs, "record": rec})
            self.env.publish("migration.done", dict(rec))
            log.info("migration %s done (%s): %.3f s total, %.3f s frozen, %d bytes", mig_id, method,
                     rec["total_s"], rec["frozen_s"], rec["bytes"])  # fmt: skip
            return rec
        except Exception as exc:
            fallback = isinstance(exc, _FallBack)
            if isinstance(exc, MigrationError):
                err = exc
            elif fallback:
                err = MigrationError(FaultCode.MIGRATION_FAILED, exc.why)  # type: ignore[attr-defined]
            else:
                err = MigrationError(FaultCode.MIGRATION_FAILED, f"{type(exc).__name__}: {exc}")
            if prepared:
                with contextlib.suppress(PeerError, AgentFault):
                    self.peers.call(target, "peer.mig.abort", purpose="mig", timeout=30, mig=mig_id)
            if dump is not None and dump.poll() is None:
                criumod.kill_tree(dump.pid)  # the target copy is fenced: stop serving pages
                with contextlib.suppress(subprocess.TimeoutExpired):
                    dump.wait(timeout=10)
            if dumped:
                n = criumod.resume(criumod.job_tasks(job.pid))
                log.warning("migration %s failed; resumed %d task(s) of job %s here", mig_id, n, job.id)
                with contextlib.suppress(OSError):
                    phase("failed")
                # keep CRIU's log, free the (tmpfs) images
                with contextlib.suppress(OSError):
                    shutil.copy(os.path.join(images, "dump.log"), os.path.join(work, "dump.log"))
                remove_images(images)
            else:
                remove_tree(work)
            rec["result"] = "fell back" if fallback and not resumed_there else "failed"
            rec["error"] = err.message + ("" if not dumped else f"; CRIU logs kept in {work}")
            if resumed_there:
                rec["error"] += "; the job had resumed on the target and went on from the frozen state here"
            rec["total_s"] = round(time.monotonic() - t0, 3)
            self._record(rec)
            log.warning("migration %s failed: %s", mig_id, rec["error"])
            self.env.publish("migration.failed", dict(rec))
            if fallback and not resumed_there:
                raise _FallBack(rec["error"]) from None
            raise MigrationError(err.code, rec["error"]) from None
        finally:
            if data is not None:
                data.close()
            if lease:
                if dump is not None and dump.poll() is None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        dump.wait(timeout=10)
                criumod.pipe_lease_release(mig_id)

    def _await_lazy_server(self, dump: subprocess.Popen[bytes], images: str) -> None:
        """Wait until the lazy dump has written every image but the pages and serves those."""
        log_path = os.path.join(images, "dump.log")
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

    def _send_images(self, data: socket.socket | None, job: Job, target: int, images: str) -> dict[str, str]:
        """images/ and the job's directory over the stream; the target checks every sha256."""
        assert data is not None
        stall = fault_hook(self.env.state_dir, "stall-transfer")
        try:
            data.settimeout(TRANSFER_TIMEOUT)
            files = migstream.collect(images, self.store.jobs_dir, job.dirname, set(criumod.LOG_NAMES))
            sums = migstream.send_files(data, files, stall=float(stall or "5") if stall is not None else None)
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
        return sums

    def _finish_source(self, job: Job, target: int, rec: dict[str, Any]) -> None:
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
            dump_pid = int(j.get("dump_pid", 0))
            if dump_pid and start_time(dump_pid) == j.get("dump_start"):
                if outcome != "committed":
                    criumod.kill_tree(dump_pid)  # a post-copy source still serving pages to a fenced target
                else:
                    with contextlib.suppress(OSError):  # committed: the target has every page already
                        os.kill(dump_pid, signal.SIGKILL)
            remove_images(os.path.join(self.mig_dir, mig_id, "images"))
            if job is not None and outcome == "committed":
                self._finish_source(job, target, {"id": mig_id, "result": "ok", "recovered": True})
                self.jobs.deliver(job, "moved", {"where": target, "nmigs": job.nmigs})
            elif job is not None and job.pid:
                n = criumod.resume(criumod.job_tasks(job.pid))
                log.warning("resumed %d task(s) of job %s after the interrupted migration", n, job.id)
            _mark(path, json.dumps({**j, "phase": "failed" if outcome != "committed" else "done"}))

    # ------------------------------------------------------------------ target side
    def _on_stream(self, conn: socket.socket, head: dict[str, Any]) -> bool:
        """A stream from a source agent (through its SSH master): images, or a page channel to keep."""
        me = self.env.node_id()
        inc = Incoming(self.env.state_dir, str(head.get("mig", "")))
        if not os.path.isdir(inc.dir) or inc.marker("aborted"):
            migstream.send_line(conn, {"ok": False, "error": f"migration {head.get('mig')} is not prepared on "
                                                             f"node {me}"})  # fmt: skip
            return False
        if head.get("kind") == "pages":
            conn.settimeout(None)  # CRIU gets this fd: it must be a plain blocking socket
            with self._streams_lock:
                self._page_socks[os.path.basename(inc.dir)] = conn
            migstream.send_line(conn, {"ok": True})
            return True
        if head.get("kind") != "images":
            return False
        conn.settimeout(TRANSFER_TIMEOUT)
        damage = fault_hook(self.env.state_dir, "corrupt-image") is not None
        try:
            res = migstream.receive_files(conn, inc.images, inc.dir, damage_largest=damage, node=me)
        except (OSError, migstream.StreamError) as exc:
            log.warning("migration %s: image stream broke: %s", head.get("mig"), exc)
            return False
        try:
            inc.mark("received.json", json.dumps(res))
        except OSError as exc:
            res["ok"] = False
            res["error"] = res["error"] or f"cannot write in {inc.dir} on node {me}: {exc.strerror}"
        migstream.send_line(conn, {k: res[k] for k in ("ok", "error", "problems", "bytes")})
        return False

    def _take_page_sock(self, mig_id: str) -> socket.socket | None:
        with self._streams_lock:
            return self._page_socks.pop(mig_id, None)

    def prepare(self, mig: dict[str, Any]) -> dict[str, Any]:
        me = self.env.node_id()
        if self.env.blocked():
            raise MigrationError(FaultCode.BLOCKED, f"node {me} blocks arriving processes")
        criu = self.env.criu()
        if criu is None:
            raise MigrationError(FaultCode.NO_CRIU, f"CRIU does not work on node {me}")
        missing = sorted(set(mig.get("cpu_flags", [])) - criumod.cpu_flags())
        if missing:
            raise MigrationError(
                FaultCode.CANT_MOVE,
                f"the CPU of node {me} lacks features the process may use: {' '.join(missing[:8])}",
            )
        lazy = mig.get("method") == METHOD_LAZY
        need = int(mig.get("bytes", 0))
        existing = self.store.get(str(mig.get("job")))
        if existing is not None and existing.where == me and existing.state == "running":
            raise MigrationError(FaultCode.BAD_ARGUMENT, f"job {existing.id} already runs on node {me}")
        inc = Incoming(self.env.state_dir, str(mig["id"]))
        os.makedirs(inc.dir, mode=0o700, exist_ok=True)
        where = image_dir(inc.images, f"omview-in-{mig['id']}", 4 << 20 if lazy else need)
        # the images need room where they go; the job's own files always go next to the jobs dir
        checks = [(where, 0 if lazy else need), (self.incoming_dir, 0)]
        for path, want in checks:
            st = os.statvfs(path)
            free = st.f_bavail * st.f_frsize
            if free < want + (8 << 20):
                remove_tree(inc.dir)
                raise MigrationError(
                    FaultCode.MIGRATION_FAILED,
                    f"not enough space on node {me}: {free >> 20} MiB free in {path}, need about {want >> 20} MiB",
                )
        self._arrivals[str(mig["id"])] = (time.monotonic(), str(mig.get("job")))  # see warm_links()
        return {"incoming": inc.dir, "images": where, "lazy": lazy and criumod.lazy_supported(criu)}

    def restore(self, mig: dict[str, Any]) -> dict[str, Any]:
        me = self.env.node_id()
        criu = self.env.criu()
        t_call = time.monotonic()
        inc = Incoming(self.env.state_dir, str(mig["id"]))
        job = Job.from_dict(mig["job"])
        lazy = mig.get("method") == METHOD_LAZY
        pages = self._take_page_sock(str(mig["id"])) if lazy else None
        try:
            return self._restore(mig, inc, job, criu, me, t_call, pages)
        except MigrationError:
            if os.path.isdir(inc.dir):
                drop_images(inc.images, inc.dir)
            raise
        finally:
            if pages is not None:
                pages.close()

    def _restore(self, mig: dict[str, Any], inc: Incoming, job: Job, criu: str | None, me: int, t_call: float,
                 pages: socket.socket | None) -> dict[str, Any]:  # fmt: skip
        lazy = mig.get("method") == METHOD_LAZY
        if not os.path.isdir(inc.dir):
            raise MigrationError(
                FaultCode.BAD_ARGUMENT, f"migration {mig['id']} was not prepared on node {me}"
            )
        if criu is None:
            raise MigrationError(FaultCode.NO_CRIU, f"CRIU does not work on node {me}")
        if lazy and pages is None:
            raise MigrationError(FaultCode.MIGRATION_FAILED, f"no page channel for {mig['id']} on node {me}")
        _pause(self.env.state_dir, "pause-before-restore")
        with inc.locked():
            if inc.marker("aborted"):
                raise MigrationError(FaultCode.MIGRATION_FAILED, f"migration {mig['id']} was aborted")
            if self.env.blocked():
                raise MigrationError(
                    FaultCode.BLOCKED, f"node {me} blocks arriving processes (set after the pre-flight)"
                )
        # the receiver hashed every byte as it arrived and compared with the source's sums
        try:
            with open(inc.path("received.json"), encoding="utf-8") as fh:
                got = json.load(fh)
        except (OSError, ValueError):
            raise MigrationError(FaultCode.MIGRATION_FAILED, f"the images did not arrive on node {me}") from None
        expected = dict(mig["sums"])
        problems = list(got.get("problems", []))
        if not problems and got.get("sums") != expected:
            problems = [f"{k.split(':', 1)[1]} differs (sha256)" for k in sorted(expected)
                        if got.get("sums", {}).get(k) != expected[k]] or ["the file set differs"]  # fmt: skip
        if problems:
            raise MigrationError(
                FaultCode.MIGRATION_FAILED,
                f"images arrived damaged on node {me}: {', '.join(problems[:5])}; nothing was restored",
            )
        if not got.get("ok"):
            raise MigrationError(FaultCode.MIGRATION_FAILED, f"the images did not arrive whole: {got.get('error')}")
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
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pidfile)
        extra: list[str] = []
        script = fault_hook(self.env.state_dir, "restore-action-script")
        if script:
            extra = ["--action-script", script]
        lazyd: subprocess.Popen[bytes] | None = None
        if lazy:
            assert pages is not None
            extra.append("--lazy-pages")
            lazyd = self._start_lazy_daemon(criu, inc, pages)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            criumod.restore_argv(criu, inc.images, pidfile, extra=extra), cwd="/", stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        inc.mark("criu.pid", f"{proc.pid} {start_time(proc.pid) or -1}")
        restoring = threading.Event()
        restoring.set()
        if lazyd is not None:
            # a page daemon that dies while the restore waits for it leaves the restore hanging
            def watch(daemon: subprocess.Popen[bytes] = lazyd) -> None:
                daemon.wait()
                if restoring.is_set() and daemon.returncode != 0:
                    log.warning("criu lazy-pages exit %s during the restore; stopping the restore", daemon.returncode)
                    criumod.kill_tree(proc.pid)

            threading.Thread(target=watch, name="lazy-watch", daemon=True).start()
        try:
            proc.communicate(timeout=criumod.RESTORE_TIMEOUT)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            criumod.kill_tree(proc.pid)
            proc.communicate()
            rc = -9
        restoring.clear()
        restore_s = time.monotonic() - t0
        resumed_after = time.monotonic() - t_call
        new_pid = 0
        with contextlib.suppress(OSError, ValueError):
            with open(pidfile, encoding="ascii") as fh:
                new_pid = int(fh.read().strip())
        new_start = start_time(new_pid) if new_pid else None
        if new_start is not None:
            inc.mark("restored.pid", f"{new_pid} {new_start}")
        logpath = os.path.join(inc.dir, "restore.log")  # where drop_images keeps it after a failure

        def undo(why: str) -> MigrationError:
            if new_pid and new_start is not None:
                criumod.kill_tree(new_pid)
            if lazyd is not None and lazyd.poll() is None:
                criumod.kill_tree(lazyd.pid)
                lazyd.wait()
            with inc.locked():
                _move_job_dir_back(inc, self.store.jobs_dir)
            return MigrationError(FaultCode.MIGRATION_FAILED, f"restore on node {me} failed: {why}")

        if rc != 0 or new_start is None:
            why = (
                f"criu restore timed out after {criumod.RESTORE_TIMEOUT:g} s"
                if rc == -9
                else f"criu restore exit {rc}"
            )
            tail = criumod.log_tail(os.path.join(inc.images, "restore.log"))
            raise undo(f"{why}: {tail} (log kept in {logpath})")
        pages_s = 0.0
        if lazyd is not None:
            # the job runs here now, but its memory is still arriving: it needs both nodes until the
            # daemon has every page. Only then is the migration committed (and the source ended).
            try:
                lrc = lazyd.wait(timeout=PAGES_TIMEOUT)
            except subprocess.TimeoutExpired:
                criumod.kill_tree(lazyd.pid)
                lrc = lazyd.wait()
            pages_s = time.monotonic() - t0 - restore_s
            if lrc != 0:
                lazylog = os.path.join(inc.images, "lazy.log")
                with contextlib.suppress(OSError):
                    shutil.copy(lazylog, os.path.join(inc.dir, "lazy.log"))
                lazylog = os.path.join(inc.dir, "lazy.log")
                raise undo(f"post-copy failed after the job resumed (criu lazy-pages exit {lrc}: "
                           f"{criumod.log_tail(lazylog)}); the copy here was killed")  # fmt: skip
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
        remove_images(inc.images)
        log.info("job %s arrived (migration %s): init pid %d, restore %.3f s, pages %.3f s", job.id, mig["id"],
                 new_pid, restore_s, pages_s)  # fmt: skip
        return {"pid": new_pid, "restore_s": round(restore_s, 3), "node": me,
                "resumed_after": round(resumed_after, 4), "pages_s": round(pages_s, 3)}  # fmt: skip

    def _start_lazy_daemon(self, criu: str, inc: Incoming, pages: socket.socket) -> subprocess.Popen[bytes]:
        """`criu lazy-pages` on the page channel; returns once it is ready for the restore."""
        r, w = os.pipe()
        try:
            lazyd = subprocess.Popen(
                criumod.lazy_pages_argv(criu, inc.images, pages.fileno(), w), cwd="/", stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=[pages.fileno(), w],
                start_new_session=True,
            )  # fmt: skip
            os.close(w)
            w = -1
            inc.mark("lazy.pid", f"{lazyd.pid} {start_time(lazyd.pid) or -1}")
            ready, _, _ = select.select([r], [], [], 30.0)
            if not ready or os.read(r, 1) != b"\0":
                criumod.kill_tree(lazyd.pid)
                lazyd.wait()
                raise MigrationError(
                    FaultCode.MIGRATION_FAILED,
                    f"criu lazy-pages did not start: {criumod.log_tail(os.path.join(inc.images, 'lazy.log'))}",
                )
            return lazyd
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)

    def abort(self, mig_id: str) -> str:
        sock = self._take_page_sock(mig_id)
        if sock is not None:
            sock.close()
        return abort_incoming(self.env.state_dir, mig_id, self.store.jobs_dir)

    def cleanup_incoming(self, max_age: float = 3600.0) -> None:
        """Drop arrival directories (and tmpfs images) of finished or abandoned migrations."""
        now = time.time()
        for name in os.listdir(self.incoming_dir):
            path = os.path.join(self.incoming_dir, name)
            with contextlib.suppress(OSError):
                if now - os.path.getmtime(path) > max_age:
                    remove_tree(path)
