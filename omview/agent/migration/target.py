"""L2 agent: the target side of a live migration - make room for an arriving job (peer.mig.prepare),
receive its images and files (the receiver checks every sha256), restore it with CRIU (post-copy: with
a page daemon pulling its memory from the source), then commit it or undo every trace (peer.mig.restore).

An arrival's directory (Incoming) holds a lock and markers, so that a fence - peer.mig.abort, or
`omview-agent mig-abort` over plain SSH when this agent does not answer (abort_incoming) - either
finds the job committed here or makes sure no copy of it runs here. docs/migration.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from omview.agent import criu as criumod
from omview.agent.jobs.table import Job, JobStore
from omview.agent.migration import stream as migstream
from omview.agent.migration.common import (
    INCOMING_DIR,
    METHOD_LAZY,
    PAGES_TIMEOUT,
    STREAM_SOCKET,
    TRANSFER_TIMEOUT,
    Env,
    MigrationError,
    drop_images,
    image_dir,
    mark,
    remove_images,
    remove_tree,
)
from omview.agent.node import movable
from omview.model.cluster import NodeInfo
from omview.model.procfs import start_time
from omview.model.protocol import FaultCode

log = logging.getLogger(__name__)

#: no link warm-up on a node while an arrival it prepared has neither come in nor is this old
ARRIVAL_QUIET = 30.0
#: an arrival whose source node has been down this long is aborted even if the node stays away
ORPHAN_AFTER = 60.0
#: an arrival whose source stays up but that has had no restore request and no byte written for this
#: long is aborted too: the source gave up on it (its fence found no way here) and resumed its copy
IDLE_AFTER = 300.0
#: free space a target keeps beyond what an arrival needs
SPACE_MARGIN = 8 << 20


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
    def locked(self) -> Iterator[None]:
        fd = os.open(self.path("lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def marker(self, name: str) -> bool:
        return os.path.exists(self.path(name))

    def mark(self, name: str, text: str = "") -> None:
        mark(self.path(name), text)

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
        restored = inc.read_pid("restored.pid") or _restored_by_criu(inc)
        if restored and start_time(restored[0]) is not None:
            criumod.kill_tree(restored[0])
        moved = inc.read_pid("moved")  # not a pid: presence means the job dir was moved in
        if moved is not None and jobs_dir:
            _move_job_dir_back(inc, jobs_dir)
        drop_arrival(inc)
    return "aborted"


def _restored_by_criu(inc: Incoming) -> tuple[int, int] | None:
    """The copy CRIU restored when the agent died before recording it (between criu's exit and
    ``restored.pid``; bench/faults.py, kill-target: the copy ran on next to the source's resumed one).
    CRIU's own pidfile names it; it counts only if that process is a PID-namespace init other than
    ours that started no earlier than the restore (a reused PID is neither)."""
    found = inc.read_pid("restored.pid.criu")
    crit = inc.read_pid("criu.pid")
    if found is None or crit is None:
        return None
    pid = found[0]
    started = start_time(pid)
    if started is None or started < crit[1] or criumod.pidns_of(pid) in (None, criumod.own_pidns()):
        return None
    return pid, started


def recover_arrivals(state_dir: str, jobs_dir: str) -> list[str]:
    """At agent start: abort every arrival a previous incarnation left neither committed nor cleaned up.
    Its stream died with that agent; a source still waiting fences it and resumes its own copy. Left,
    its images (tmpfs memory) and the job's files would stay for good (found by bench/faults.py: the
    target agent killed mid-transfer). Returns the migration ids aborted."""
    done: list[str] = []
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(os.path.join(state_dir, INCOMING_DIR)), key=lambda e: e.name):
            if not entry.is_dir(follow_symlinks=False):
                continue
            inc = Incoming(state_dir, entry.name)
            if inc.marker("committed"):
                continue
            if not inc.marker("aborted") or any(e.is_dir() for e in os.scandir(inc.dir)):
                log.warning("arrival %s was left unfinished by a previous agent: aborting it", entry.name)
                abort_incoming(state_dir, entry.name, jobs_dir)
                done.append(entry.name)
    return done


def _idle_for(inc: Incoming) -> float:
    """Seconds since anything under the arrival's directory was written: its images (followed into
    /dev/shm) and the job's files, however deep (a transfer still coming in keeps writing; a wall
    clock, as file times are)."""
    newest = 0.0
    for top, _dirs, files in os.walk(inc.dir, followlinks=True):
        for name in (".", *files):
            with contextlib.suppress(OSError):
                newest = max(newest, os.stat(os.path.join(top, name)).st_mtime)
    return time.time() - newest


def drop_arrival(inc: Incoming) -> None:
    """A failed or aborted arrival: free its images (CRIU's logs stay) and drop the copy of the job's
    files it brought, which the job no longer needs (its own stay with the copy that runs on): left
    there, every failed migration would keep a copy of the job's whole output (bench/faults.py)."""
    drop_images(inc.images, inc.dir)
    with contextlib.suppress(OSError):
        for entry in os.scandir(inc.dir):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)


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


class TargetSide:
    """Arrivals on this node: the stream listener, peer.mig.prepare / restore / abort."""

    def __init__(self, env: Env, store: JobStore, sock_dir: str) -> None:
        self.env = env
        self.store = store
        self.incoming_dir = os.path.join(env.state_dir, INCOMING_DIR)
        os.makedirs(self.incoming_dir, mode=0o700, exist_ok=True)
        self._streams_lock = threading.Lock()
        self._page_socks: dict[str, socket.socket] = {}
        self._arrivals: dict[str, tuple[float, str]] = {}  # prepared here: mig id -> (when, job id)
        #: arrivals prepared here and not yet restored or ended: mig id -> [source node, source seen down,
        #: prepared at]
        self._open: dict[str, list[Any]] = {}
        self._restoring: set[str] = set()
        self.listener: migstream.Listener | None = None
        recover_arrivals(env.state_dir, store.jobs_dir)
        try:
            self.listener = migstream.Listener(os.path.join(sock_dir, STREAM_SOCKET), self._on_stream)
        except OSError as exc:
            log.error("cannot listen for migration streams (%s): arrivals will fail", exc)

    def expecting(self) -> bool:
        """Whether an arrival prepared here has neither come in nor is ARRIVAL_QUIET old (the source
        side opens no new links meanwhile)."""
        me = self.env.node_id()
        now = time.monotonic()
        for mid, (at, job_id) in list(self._arrivals.items()):
            there = self.store.get(job_id)
            if now - at > ARRIVAL_QUIET or (there is not None and there.where == me and there.state == "running"):
                self._arrivals.pop(mid, None)
        return bool(self._arrivals)

    # ------------------------------------------------------------------ streams from the source
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
        damage = self.env.faults.on("corrupt-image")
        flip = self.env.faults.number("flip-image-byte")
        try:
            res = migstream.receive_files(conn, inc.images, inc.dir, damage_largest=damage, flip=flip, node=me)
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

    # ------------------------------------------------------------------ peer.mig.prepare
    def prepare(self, mig: dict[str, Any]) -> dict[str, Any]:
        me = self.env.node_id()
        criu = self._can_receive(mig)
        lazy = mig.get("method") == METHOD_LAZY
        need = int(mig.get("bytes", 0))
        existing = self.store.get(str(mig.get("job")))
        if existing is not None and existing.where == me and existing.state == "running":
            raise MigrationError(FaultCode.BAD_ARGUMENT, f"job {existing.id} already runs on node {me}")
        inc = Incoming(self.env.state_dir, str(mig["id"]))
        os.makedirs(inc.dir, mode=0o700, exist_ok=True)
        where = image_dir(inc.images, f"omview-in-{mig['id']}", 4 << 20 if lazy else need)
        # the images need room where they go; the job's own files always go next to the jobs dir
        self._check_space(inc, [(where, 0 if lazy else need), (self.incoming_dir, 0)])
        self._arrivals[str(mig["id"])] = (time.monotonic(), str(mig.get("job")))  # see expecting()
        with contextlib.suppress(ValueError):  # the id starts with the source's node id (source.py)
            self._open[str(mig["id"])] = [int(str(mig["id"]).split("-", 1)[0]), False, time.monotonic()]
        return {"incoming": inc.dir, "images": where, "lazy": lazy and criumod.lazy_supported(criu)}

    def _can_receive(self, mig: dict[str, Any]) -> str:
        """This node takes arrivals, has a working CRIU (its path is returned) and the CPU features."""
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
        return criu

    def _check_space(self, inc: Incoming, checks: list[tuple[str, int]]) -> None:
        for path, want in checks:
            st = os.statvfs(path)
            free = st.f_bavail * st.f_frsize
            if free < want + SPACE_MARGIN:
                remove_tree(inc.dir)
                raise MigrationError(
                    FaultCode.MIGRATION_FAILED,
                    f"not enough space on node {self.env.node_id()}: {free >> 20} MiB free in {path}, need "
                    f"about {want >> 20} MiB",
                )

    # ------------------------------------------------------------------ peer.mig.restore
    def restore(self, mig: dict[str, Any]) -> dict[str, Any]:
        t_call = time.monotonic()
        inc = Incoming(self.env.state_dir, str(mig["id"]))
        job = Job.from_dict(mig["job"])
        lazy = mig.get("method") == METHOD_LAZY
        pages = self._take_page_sock(str(mig["id"])) if lazy else None
        self._restoring.add(str(mig["id"]))
        try:
            return self._restore(mig, inc, job, t_call, lazy, pages)
        except MigrationError:
            if os.path.isdir(inc.dir):
                drop_arrival(inc)
            raise
        finally:
            self._restoring.discard(str(mig["id"]))
            self._open.pop(str(mig["id"]), None)
            if pages is not None:
                pages.close()

    def abort_orphans(self, nodes: dict[int, NodeInfo]) -> list[str]:
        """Abort the arrivals whose source node went down before asking for the restore, once it is
        back (a rebooted machine has no journal to fence us with) or ORPHAN_AFTER seconds later, and
        those idle for IDLE_AFTER seconds while their source stayed up (it could not reach us to
        abort them: its SSH to us cut for longer than its fence window). Safe even if the source was
        only cut off: its restore request then finds the arrival aborted and it resumes its own copy,
        as after a fence. Without this a source machine that died mid-transfer left the images here
        for good (tests/vm/test_vm_kill.py)."""
        done = []
        now = time.monotonic()
        for mid, entry in list(self._open.items()):
            source, down_since, prepared_at = entry
            inc = Incoming(self.env.state_dir, mid)
            if not os.path.isdir(inc.dir) or inc.marker("committed") or inc.marker("aborted"):
                self._open.pop(mid, None)
                continue
            info = nodes.get(source)
            if mid in self._restoring or info is None:
                continue
            if not info.up:
                entry[1] = down_since or now
            if entry[1] and (info.up or now - entry[1] >= ORPHAN_AFTER):
                why = "went down before the restore"
            elif info.up and now - prepared_at >= IDLE_AFTER and _idle_for(inc) >= IDLE_AFTER:
                why = f"stayed up but sent nothing for {IDLE_AFTER:.0f} s"
            else:
                continue
            log.warning("migration %s: source node %d %s; aborting the arrival", mid, source, why)
            self.abort(mid)
            self._open.pop(mid, None)
            done.append(mid)
        return done

    def _restore(self, mig: dict[str, Any], inc: Incoming, job: Job, t_call: float, lazy: bool,
                 pages: socket.socket | None) -> dict[str, Any]:  # fmt: skip
        """Check, restore, wait for the pages (post-copy), commit; undo on any failure after the restore."""
        me = self.env.node_id()
        criu = self._ready_to_restore(mig, inc, lazy, pages)
        self._verify_images(mig, inc)
        self._check_files(mig, job)
        self._move_job_dir_in(mig, inc, job)
        pidfile = inc.path("restored.pid.criu")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pidfile)
        extra: list[str] = []
        script = self.env.faults.value("restore-action-script")
        if script:
            extra = ["--action-script", script]
        lazyd: subprocess.Popen[bytes] | None = None
        if pages is not None:
            extra.append("--lazy-pages")
            lazyd = self._start_lazy_daemon(criu, inc, pages)
        t0 = time.monotonic()
        rc = self._run_restore(criu, inc, pidfile, extra, lazyd)
        restore_s = time.monotonic() - t0
        resumed_after = time.monotonic() - t_call
        new_pid, new_start = self._restored_pid(inc, pidfile)
        undo = functools.partial(self._undo, inc, new_pid, new_start, lazyd)
        if rc != 0 or new_start is None:
            why = f"criu restore timed out after {criumod.RESTORE_TIMEOUT:g} s" if rc == -9 else f"criu restore exit {rc}"
            tail = criumod.log_tail(os.path.join(inc.images, "restore.log"))
            # drop_images keeps the log in the arrival's directory after a failure
            raise undo(f"{why}: {tail} (log kept in {os.path.join(inc.dir, 'restore.log')})")
        pages_s = 0.0
        if lazyd is not None:
            pages_s = self._await_pages(inc, lazyd, undo) - t0 - restore_s
        self.env.faults.pause("pause-after-restore")
        self._commit(mig, inc, job, new_pid, new_start)
        remove_images(inc.images)
        log.info("job %s arrived (migration %s): init pid %d, restore %.3f s, pages %.3f s", job.id, mig["id"],
                 new_pid, restore_s, pages_s)  # fmt: skip
        return {"pid": new_pid, "restore_s": round(restore_s, 3), "node": me,
                "resumed_after": round(resumed_after, 4), "pages_s": round(pages_s, 3)}  # fmt: skip

    def _ready_to_restore(self, mig: dict[str, Any], inc: Incoming, lazy: bool, pages: socket.socket | None) -> str:
        """The arrival was prepared, is not aborted, CRIU works (its path is returned), the node takes it."""
        me = self.env.node_id()
        if not os.path.isdir(inc.dir):
            raise MigrationError(FaultCode.BAD_ARGUMENT, f"migration {mig['id']} was not prepared on node {me}")
        criu = self.env.criu()
        if criu is None:
            raise MigrationError(FaultCode.NO_CRIU, f"CRIU does not work on node {me}")
        if lazy and pages is None:
            raise MigrationError(FaultCode.MIGRATION_FAILED, f"no page channel for {mig['id']} on node {me}")
        self.env.faults.pause("pause-before-restore")
        with inc.locked():
            if inc.marker("aborted"):
                raise MigrationError(FaultCode.MIGRATION_FAILED, f"migration {mig['id']} was aborted")
            if self.env.blocked():
                raise MigrationError(
                    FaultCode.BLOCKED, f"node {me} blocks arriving processes (set after the pre-flight)"
                )
        return criu

    def _verify_images(self, mig: dict[str, Any], inc: Incoming) -> None:
        """The receiver hashed every byte as it arrived: compare with the source's sums."""
        me = self.env.node_id()
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

    def _check_files(self, mig: dict[str, Any], job: Job) -> None:
        """CRIU reopens the job's files by path, as root, following symbolic links, and compares only
        their size: check here, just before, that each is what the source had open (type, owner, mode,
        no link on the way) and that the job's owner may open it (issue 13, defect 3). The job's own
        directory arrives with it and is not checked."""
        own = self.store.job_dir(job).rstrip("/") + "/"
        files = [f for f in mig.get("files", []) if not (str(f["path"]) + "/").startswith(own)]
        problems = movable.check_here(self.env.node_id(), [], files, job.where, owner=(job.uid, job.gid))
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise MigrationError(
                FaultCode.CANT_MOVE,
                f"job {job.id} cannot be restored on node {self.env.node_id()}: {'; '.join(problems[:3])}{more}",
            )

    def _move_job_dir_in(self, mig: dict[str, Any], inc: Incoming, job: Job) -> None:
        """The job's files to where they were on the source: CRIU reopens them at the very same path."""
        dest = self.store.job_dir(job)
        src = os.path.join(inc.dir, job.dirname)
        if not os.path.isdir(src):
            raise MigrationError(
                FaultCode.MIGRATION_FAILED, f"the job's files did not arrive on node {self.env.node_id()}"
            )
        if os.path.exists(dest):
            os.replace(dest, f"{dest}.stale-{int(time.time())}")
        with inc.locked():
            if inc.marker("aborted"):
                raise MigrationError(FaultCode.MIGRATION_FAILED, f"migration {mig['id']} was aborted")
            inc.mark("jobdir", job.dirname)
            os.replace(src, dest)
            inc.mark("moved", "1")

    def _run_restore(self, criu: str, inc: Incoming, pidfile: str, extra: list[str],
                     lazyd: subprocess.Popen[bytes] | None) -> int:  # fmt: skip
        """`criu restore` under RESTORE_TIMEOUT; its exit code, -9 when it timed out."""
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
        return rc

    @staticmethod
    def _restored_pid(inc: Incoming, pidfile: str) -> tuple[int, int | None]:
        """The restored init's PID (0 if none) and start time (None if it is not alive); recorded for a fence."""
        new_pid = 0
        with contextlib.suppress(OSError, ValueError):
            with open(pidfile, encoding="ascii") as fh:
                new_pid = int(fh.read().strip())
        new_start = start_time(new_pid) if new_pid else None
        if new_start is not None:
            inc.mark("restored.pid", f"{new_pid} {new_start}")
        return new_pid, new_start

    def _undo(self, inc: Incoming, new_pid: int, new_start: int | None, lazyd: subprocess.Popen[bytes] | None,
              why: str) -> MigrationError:  # fmt: skip
        """Kill what was restored and the page daemon, put the job's files back; the error to raise."""
        if new_pid and new_start is not None:
            criumod.kill_tree(new_pid)
        if lazyd is not None and lazyd.poll() is None:
            criumod.kill_tree(lazyd.pid)
            lazyd.wait()
        with inc.locked():
            _move_job_dir_back(inc, self.store.jobs_dir)
        return MigrationError(FaultCode.MIGRATION_FAILED, f"restore on node {self.env.node_id()} failed: {why}")

    def _await_pages(self, inc: Incoming, lazyd: subprocess.Popen[bytes],
                     undo: Callable[[str], MigrationError]) -> float:  # fmt: skip
        """Post-copy: the job runs here now but its memory is still arriving, so it needs both nodes
        until the page daemon has every page; only then may it commit. Returns when (monotonic)."""
        try:
            lrc = lazyd.wait(timeout=PAGES_TIMEOUT)
        except subprocess.TimeoutExpired:
            criumod.kill_tree(lazyd.pid)
            lrc = lazyd.wait()
        done = time.monotonic()
        if lrc != 0:
            lazylog = os.path.join(inc.dir, "lazy.log")
            with contextlib.suppress(OSError):
                shutil.copy(os.path.join(inc.images, "lazy.log"), lazylog)
            raise undo(f"post-copy failed after the job resumed (criu lazy-pages exit {lrc}: "
                       f"{criumod.log_tail(lazylog)}); the copy here was killed")  # fmt: skip
        return done

    def _commit(self, mig: dict[str, Any], inc: Incoming, job: Job, new_pid: int, new_start: int) -> None:
        """Under the arrival's lock: the job is ours now, unless a fence aborted it meanwhile."""
        me = self.env.node_id()
        with inc.locked():
            aborted = inc.marker("aborted")
            if not aborted:
                job.where, job.pid, job.pid_start, job.state = me, new_pid, new_start, "running"
                job.nmigs += 1
                existing = self.store.get(job.id)
                if existing is not None and existing.home == me:
                    job.history = existing.history  # we are its home too: keep our copy of the history
                self.store.put(job)
                inc.mark("committed")
        if aborted:
            criumod.kill_tree(new_pid)
            raise MigrationError(FaultCode.MIGRATION_FAILED, f"migration {mig['id']} was aborted during the restore")

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

    # ------------------------------------------------------------------ peer.mig.abort
    def abort(self, mig_id: str) -> str:
        sock = self._take_page_sock(mig_id)
        if sock is not None:
            sock.close()
        return abort_incoming(self.env.state_dir, mig_id, self.store.jobs_dir)
