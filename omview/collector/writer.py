"""L3 collector: the history writer (append-only files in the log directory, rotation, recovery).

Bytes come from omview.model.records (the shared format); this module owns the files: one
write() per record, rollback of short writes, crash recovery on open, the single-writer lock,
moving a history to its dated backup and compressing it there.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import lzma
import os
import shutil
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from omview import __version__
from omview.model import records
from omview.model.cluster import NodeInfo, ProcessInfo
from omview.model.errors import OmviewError

log = logging.getLogger(__name__)

LOCK_FILE = ".collector.lock"
_DIR_MODE = 0o755
_FILE_MODE = 0o644


class CollectorError(OmviewError):
    """The collector cannot do what was asked; the message says why and what to do."""


class HistoryBusy(CollectorError):
    """Another collector process holds the log directory."""


class _File:
    """One append-only history file; every record is a single write() that is undone if short."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
        self.size = os.fstat(self.fd).st_size

    def append(self, data: bytes) -> None:
        """Write data at the end; on failure the file is cut back to its previous size.

        Raises OSError (ENOSPC, EIO, ...) after the rollback.
        """
        try:
            n = os.write(self.fd, data)
        except OSError:
            self._rollback()
            raise
        if n != len(data):
            self._rollback()
            raise OSError(errno.ENOSPC, f"short write ({n} of {len(data)} bytes)", self.path)
        self.size += n

    def _rollback(self) -> None:
        # a record cut short by a full disk would be read as a torn tail; remove it so the
        # next record does not land behind garbage
        try:
            os.ftruncate(self.fd, self.size)
        except OSError as exc:
            log.warning(
                "could not cut %s back to %d bytes after a failed write: %s", self.path, self.size, exc
            )

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.size = size

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class TickReport:
    """What happened to one tick's writes."""

    tick: int
    written: bool  # the tick's time record is on disk
    nodes_written: int = 0
    failures: list[tuple[str, OSError]] = field(default_factory=list)
    new_nodes: list[int] = field(default_factory=list)


@dataclass
class _NodeState:
    file: _File
    encoder: records.NodeEncoder
    meta: tuple[str, str, str]


class HistoryWriter:
    """Writes one history directory: ``cluster``, ``node<ID>`` per node and ``procs``.

    ``open()`` takes an exclusive lock on the directory (one writer, ever), finishes an
    interrupted rotation, and either continues the history found there (cutting off a torn
    tail) or starts a new one. Every ``write_*`` method writes whole records or nothing.
    """

    def __init__(self, logdir: str, *, interval: float, key_every: int = records.KEY_EVERY) -> None:
        self.logdir = os.path.abspath(logdir).rstrip("/") or "/"
        self.interval = interval
        self.key_every = key_every
        self.tick = 0
        self.history_id = ""
        self.created = 0.0
        self._lock_fd = -1
        self._cluster: _File | None = None
        self._procs: _File | None = None
        self._proc_enc = records.ProcEncoder(key_every)
        self._nodes: dict[int, _NodeState] = {}

    # -- opening ------------------------------------------------------------------------

    def open(self, wall: float) -> list[str]:
        """Lock the directory and get a history ready to append to; returns notices for the log.

        Raises CollectorError when the directory cannot be created or written, HistoryBusy
        when another collector holds it.
        """
        notices: list[str] = []
        try:
            os.makedirs(self.logdir, mode=_DIR_MODE, exist_ok=True)
        except OSError as exc:
            raise CollectorError(
                f"cannot create the log directory {self.logdir}: {exc.strerror}; "
                "create it, make it writable, or choose another with --logdir"
            ) from exc
        if not os.access(self.logdir, os.W_OK | os.X_OK):
            raise CollectorError(
                f"the log directory {self.logdir} is not writable for this user; "
                "fix its permissions, run as root, or choose another with --logdir"
            )
        self._lock(notices)
        try:
            for name in os.listdir(self.logdir):
                if name.endswith(".new"):
                    # a header being written when the last collector died; never a history yet
                    _unlink_quiet(os.path.join(self.logdir, name))
            notices += self._finish_partial_rotations()
            files = records.history_files(self.logdir)
            if records.CLUSTER_FILE in files and not files[records.CLUSTER_FILE].endswith(
                records.COMPRESSED_SUFFIX
            ):
                notices += self._resume(wall)
            elif files:
                backup = self._move_aside(wall)
                notices.append(
                    f"the history files in {self.logdir} had no usable cluster file; moved them to {backup}"
                )
            if self._cluster is None:
                self._create(wall)
                notices.append(f"started a new history in {self.logdir}")
            self._write_session(wall)
        except BaseException:
            self.close()
            raise
        return notices

    def _lock(self, notices: list[str]) -> None:
        path = os.path.join(self.logdir, LOCK_FILE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise CollectorError(
                f"cannot create {path}: {exc.strerror}; check the log directory's permissions"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise HistoryBusy(
                f"another collector (pid {holder or '?'}) is writing to {self.logdir}; "
                "stop it first (openmosixcollector -k) or use another --logdir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _create(self, wall: float) -> None:
        self.history_id = uuid.uuid4().hex[:16]
        self.created = wall
        self.tick = 0
        self._cluster = self._new_file(records.CLUSTER_FILE, "cluster")
        self._proc_enc = records.ProcEncoder(self.key_every)

    def _new_file(self, name: str, kind: str, **extra: Any) -> _File:
        path = os.path.join(self.logdir, name)
        tmp = path + ".new"
        # the header is written under a temporary name and renamed, so a crash never leaves a
        # history file without a complete header
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, _FILE_MODE)
        try:
            data = records.encode_header(kind, self.history_id, self.created, self.interval, **extra)
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write of the header", tmp)
        except OSError:
            os.close(fd)
            _unlink_quiet(tmp)
            raise
        os.close(fd)
        os.rename(tmp, path)
        return _File(path)

    def _resume(self, wall: float) -> list[str]:
        """Continue the history in logdir, or move it aside if any file of it is damaged.

        A torn tail (the last record cut short by a crash) is cut off and the history goes on.
        Anything else that readers would skip - damaged bytes, an ill-typed record, garbage at
        the end, a file with a bad header or of another history - is never appended to: the
        whole history moves to a dated backup (readers skip the damage there and count it) and
        a new one starts.
        """
        path = os.path.join(self.logdir, records.CLUSTER_FILE)
        with open(path, "rb") as f:
            buf = f.read()
        try:
            meta, start = records.decode_header(buf, path)
        except records.HistoryFormatError as exc:
            backup = self._move_aside(wall)
            return [f"cannot continue the history in {self.logdir} ({exc}); moved it to {backup}"]
        self.history_id = str(meta.get("history", ""))
        self.created = float(meta.get("created", wall))
        damage: list[str] = []
        cuts: list[tuple[str, int, int]] = []  # (path, keep, size): torn tails to cut off
        frames, res = records.scan_frames(buf, start)
        _tail(path, len(buf), res, [], cuts)  # garbage at the end: named by the readers' check below
        last_tick = -1
        for fr in frames:
            if fr.rtype == records.T_TICK:
                try:
                    last_tick = max(last_tick, records.decode_tick(fr.payload)[0])
                except records.BadRecord:
                    pass  # damage, reported by the readers' check below
        damage += _reader_problems(self.logdir)  # cluster and procs: bad records, damaged bytes, tails
        nodes: dict[int, str] = {}
        for name, fpath in records.history_files(self.logdir).items():
            nid = records.node_id_of(name)
            if nid is None or fpath.endswith(records.COMPRESSED_SUFFIX):
                continue
            last_tick = max(last_tick, self._check_node(fpath, damage, cuts))
            nodes[nid] = fpath
        procs = os.path.join(self.logdir, records.PROCS_FILE)
        has_procs = os.path.exists(procs)
        if has_procs:
            own = self._read_own(procs, [])  # a bad header: named by the readers' check above
            if own is not None:
                _tail(procs, len(own[0]), records.scan_frames(*own)[1], [], cuts)
        if damage:
            self.history_id = ""
            backup = self._move_aside(wall)
            more = f"; and {len(damage) - 3} more" if len(damage) > 3 else ""
            return [
                f"the history in {self.logdir} is damaged ({'; '.join(damage[:3])}{more}); never appending "
                f"after damage: moved it to {backup} (readers skip the damage there and count it)"
            ]
        notices: list[str] = []
        for fpath, keep, size in cuts:
            notices.append(f"{fpath}: cut off {size - keep} bytes of an unfinished record at the end")
            os.truncate(fpath, keep)
        self._cluster = _File(path)
        for nid, fpath in nodes.items():
            # the encoder starts empty, so this node's next record is a key frame
            self._nodes[nid] = _NodeState(_File(fpath), records.NodeEncoder(self.key_every), ("", "", ""))
        if has_procs:
            self._procs = _File(procs)
        self.tick = last_tick + 1
        notices.append(f"continuing the history in {self.logdir} at tick {self.tick}")
        return notices

    def _read_own(self, path: str, damage: list[str]) -> tuple[bytes, int] | None:
        """A file of this history and where its records start; None (and a damage note) if not."""
        with open(path, "rb") as f:
            buf = f.read()
        try:
            meta, start = records.decode_header(buf, path)
        except records.HistoryFormatError as exc:
            damage.append(str(exc))
            return None
        if meta.get("history") != self.history_id:
            damage.append(f"{path}: belongs to another history")
            return None
        return buf, start

    def _check_node(self, path: str, damage: list[str], cuts: list[tuple[str, int, int]]) -> int:
        """The last tick of a node file; checks its header and everything from its last key frame.

        The part before the last key frame is not read again (it can be 12 h of samples of many
        nodes); readers skip damage there up to the next key frame.
        """
        own = self._read_own(path, damage)
        if own is None:
            return -1
        buf, start = own
        key = records.last_key_offset(buf, start)
        last = -1

        def emit(tick: int, values: list[int]) -> None:
            nonlocal last
            last = tick

        res = records.NodeDecoder().decode(buf, key if key >= 0 else start, emit)
        if res.damaged:
            damage.append(f"{path}: {res.damaged} damaged bytes")
        _tail(path, len(buf), res, damage, cuts)
        return last

    def _write_session(self, wall: float) -> None:
        assert self._cluster is not None
        rec = {
            "tick": self.tick,
            "t": round(wall, 3),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "interval": self.interval,
            "writer": f"omview {__version__}",
        }
        self._cluster.append(records.json_frame(records.T_SESSION, rec))

    # -- writing ------------------------------------------------------------------------

    def write_tick(
        self, wall: float, nodes: Sequence[NodeInfo], procs: Sequence[ProcessInfo] | None
    ) -> TickReport:
        """Append one sample of every node (and the process list) at wall time ``wall``."""
        assert self._cluster is not None, "open() first"
        tick = self.tick
        report = TickReport(tick, False)
        try:
            # the time record goes first: a sample whose tick has no time could not be placed
            self._cluster.append(records.tick_frame(tick, wall))
        except OSError as exc:
            report.failures.append((self._cluster.path, exc))
            return report
        report.written = True
        self.tick += 1
        for info in nodes:
            try:
                st = self._node_state(info, tick, wall, report)
                data = st.encoder.encode(tick, records.node_values(info))
                st.file.append(data)
                st.encoder.commit()
                report.nodes_written += 1
            except OSError as exc:
                report.failures.append((os.path.join(self.logdir, f"{records.NODE_PREFIX}{info.id}"), exc))
        if procs is not None:
            try:
                if self._procs is None:
                    self._procs = self._new_file(records.PROCS_FILE, "procs")
                    self._proc_enc = records.ProcEncoder(self.key_every)
                data2 = self._proc_enc.encode(tick, procs)
                if data2 is not None:
                    self._procs.append(data2)
                self._proc_enc.commit()
            except OSError as exc:
                report.failures.append((os.path.join(self.logdir, records.PROCS_FILE), exc))
        return report

    def _node_state(self, info: NodeInfo, tick: int, wall: float, report: TickReport) -> _NodeState:
        st = self._nodes.get(info.id)
        meta = (info.address, info.hostname, info.version)
        if st is None:
            f = self._new_file(f"{records.NODE_PREFIX}{info.id}", "node", node=info.id)
            st = _NodeState(f, records.NodeEncoder(self.key_every), ("", "", ""))
            self._nodes[info.id] = st
            report.new_nodes.append(info.id)
        if st.meta != meta:
            assert self._cluster is not None
            rec = {
                "tick": tick,
                "t": round(wall, 3),
                "id": info.id,
                "address": meta[0],
                "hostname": meta[1],
                "version": meta[2],
            }
            self._cluster.append(records.json_frame(records.T_NODE, rec))
            st.meta = meta
        return st

    def write_checkpoint(self, label: str, wall: float) -> None:
        """Append a checkpoint marker (raises OSError if it could not be written)."""
        assert self._cluster is not None
        rec = {"tick": max(self.tick - 1, 0), "t": round(wall, 3), "label": label}
        self._cluster.append(records.json_frame(records.T_CHECKPOINT, rec))

    def write_event(self, name: str, data: Any, wall: float) -> None:
        assert self._cluster is not None
        rec = {"tick": max(self.tick - 1, 0), "t": round(wall, 3), "name": name, "data": data}
        self._cluster.append(records.json_frame(records.T_EVENT, rec))

    def write_clock_jump(self, jump: float, wall: float) -> None:
        assert self._cluster is not None
        rec = {"tick": self.tick, "t": round(wall, 3), "jump": round(jump, 3)}
        self._cluster.append(records.json_frame(records.T_CLOCK, rec))

    def write_gap(self, since: float, reason: str, wall: float) -> None:
        assert self._cluster is not None
        rec = {"tick": self.tick, "t": round(wall, 3), "since": round(since, 3), "reason": reason}
        self._cluster.append(records.json_frame(records.T_GAP, rec))

    def sync(self) -> None:
        """fdatasync every open history file (the power-loss bound, see docs/collector.md)."""
        for f in self._files():
            try:
                f.sync()
            except OSError as exc:
                log.warning("fdatasync %s failed: %s", f.path, exc)

    def foreign_writes(self) -> list[str]:
        """Open history files whose size is not what this writer wrote (something else wrote to them).

        Checked at every sync: appending behind bytes of unknown content would hide damage.
        """
        out = []
        for f in self._files():
            try:
                size = os.fstat(f.fd).st_size
            except OSError:
                continue
            if size != f.size:
                out.append(f"{f.path} has {size} bytes, {f.size} were written")
        return out

    def _files(self) -> list[_File]:
        out = [st.file for st in self._nodes.values()]
        out += [f for f in (self._cluster, self._procs) if f is not None]
        return out

    @property
    def node_count(self) -> int:
        return len(self._nodes)

    # -- rotation -----------------------------------------------------------------------

    def rotate(self, wall: float) -> str:
        """Move the current history to ``<logdir>-<UTC date>Z`` and start a new one; returns the backup.

        Raises CollectorError if the files could not be moved; the current history then stays
        in place and is still written to.
        """
        self.sync()
        self._close_files()
        try:
            backup = self._move_aside(wall)
        except OSError as exc:
            self._reopen_after_failed_rotation(wall)
            raise CollectorError(
                f"could not save the history to a dated backup: {exc}; still writing to {self.logdir}"
            ) from exc
        self._create(wall)
        self._write_session(wall)
        return backup

    def _reopen_after_failed_rotation(self, wall: float) -> None:
        notices = (
            self._resume(wall) if os.path.exists(os.path.join(self.logdir, records.CLUSTER_FILE)) else []
        )
        if self._cluster is None:
            self._create(wall)
        for n in notices:
            log.info("%s", n)

    def _move_aside(self, wall: float) -> str:
        """Move the history files to a new dated backup directory; the cluster file moves last."""
        backup = records.backup_dir_name(self.logdir, wall)
        partial = backup + ".partial"
        os.mkdir(partial, _DIR_MODE)
        moved: list[tuple[str, str]] = []
        try:
            files = records.history_files(self.logdir)
            names = sorted(n for n in files if n != records.CLUSTER_FILE)
            if records.CLUSTER_FILE in files:
                names.append(records.CLUSTER_FILE)
            for name in names:
                src = files[name]
                dst = os.path.join(partial, os.path.basename(src))
                _move(src, dst)
                moved.append((src, dst))
            # leftovers of earlier trouble (renamed-aside node files) travel with their history
            for name in os.listdir(self.logdir):
                if ".bad-" in name:
                    _move(os.path.join(self.logdir, name), os.path.join(partial, name))
            _fsync_dir(partial)
            os.rename(partial, backup)
            _fsync_dir(os.path.dirname(backup) or ".")
            _fsync_dir(self.logdir)
        except OSError:
            for src, dst in reversed(moved):
                try:
                    _move(dst, src)
                except OSError as exc2:
                    log.error("could not move %s back to %s: %s", dst, src, exc2)
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return backup

    def _finish_partial_rotations(self) -> list[str]:
        """A crash during rotation leaves ``<backup>.partial``: move the rest and rename it."""
        notices: list[str] = []
        parent, base = os.path.split(self.logdir)
        for name in sorted(os.listdir(parent or "/")):
            if not (name.startswith(base + "-") and name.endswith(".partial")):
                continue
            if not records.is_backup_name(base, name[: -len(".partial")]):
                continue
            partial = os.path.join(parent, name)
            for src in records.history_files(self.logdir).values():
                _move(src, os.path.join(partial, os.path.basename(src)))
            final = partial[: -len(".partial")]
            os.rename(partial, final)
            notices.append(f"finished a rotation interrupted by a crash: {final}")
        return notices

    def close(self) -> None:
        """Sync and close the files and release the directory lock."""
        self.sync()
        self._close_files()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _close_files(self) -> None:
        for f in self._files():
            f.close()
        self._nodes.clear()
        self._cluster = None
        self._procs = None


def _tail(
    path: str, size: int, res: records.ScanResult, damage: list[str], cuts: list[tuple[str, int, int]]
) -> None:
    """Sort what follows a file's last good record: a record cut short is cut off, garbage is damage."""
    if res.end >= size:
        return
    if res.bad_tail:
        damage.append(f"{path}: {size - res.end} bytes at the end are no record")
    else:
        cuts.append((path, res.end, size))


def _reader_problems(logdir: str) -> list[str]:
    """What the readers would skip in the cluster and process files (bad records, damaged bytes)."""
    try:
        h = records.History(logdir)
        h.processes()
    except records.HistoryFormatError as exc:
        return [str(exc)]
    return h.problems


def compress_history(directory: str, preset: int = 6) -> tuple[int, int]:
    """Compress every history file in a backup directory to ``<name>.xz``; returns (bytes before, after).

    Each file is compressed to a temporary name, synced and renamed before the original is
    removed, so an interruption leaves either form complete (readers accept both). A file that
    cannot be read or written does not stop the others: the first such OSError is raised at the end.
    """
    before = after = 0
    failed: OSError | None = None
    for name, path in records.history_files(directory).items():
        if path.endswith(records.COMPRESSED_SUFFIX):
            continue
        try:
            size, packed = _compress_file(directory, name, path, preset)
        except OSError as exc:
            log.warning("%s: not compressed (%s)", path, exc.strerror or exc)
            failed = failed or exc
            continue
        before += size
        after += packed
    _fsync_dir(directory)
    if failed is not None:
        raise failed
    return before, after


def _compress_file(directory: str, name: str, path: str, preset: int) -> tuple[int, int]:
    with open(path, "rb") as f:
        data = f.read()
    body = data
    if records.node_id_of(name) is not None:
        # columns of deltas compress far better than the live records with their check bytes;
        # a file that is no intact live node file (damaged header or records, garbage) is kept as
        # it is, so the damage stays for inspection and readers report what they would have found
        try:
            body = records.pack_node_file(data, path)
        except (records.HistoryFormatError, ValueError, OverflowError) as exc:
            log.warning("%s: kept as it is, not transcoded (%s)", path, exc)
    packed = lzma.compress(body, preset=preset)
    dst = os.path.join(directory, name + records.COMPRESSED_SUFFIX)
    tmp = dst + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(packed)
            f.flush()
            os.fdatasync(f.fileno())
        os.rename(tmp, dst)
    except OSError:
        _unlink_quiet(tmp)
        raise
    os.unlink(path)
    return len(data), len(packed)


def uncompressed_backups(logdir: str) -> list[str]:
    """Dated backups of logdir that still hold uncompressed history files (an interrupted compression)."""
    out = []
    logdir = os.path.abspath(logdir).rstrip("/")
    for d in records.list_histories(logdir):
        if d == logdir:
            continue
        if any(not p.endswith(records.COMPRESSED_SUFFIX) for p in records.history_files(d).values()):
            out.append(d)
    return out


def _move(src: str, dst: str) -> None:
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # the log directory is a mount point of its own: copy, then remove
        shutil.copy2(src, dst)
        os.unlink(src)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
