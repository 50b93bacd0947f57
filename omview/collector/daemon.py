"""L3 collector: the sampling loop and the daemon around it (PID file, signals, control socket).

``Collector`` is a loop over injected seams (source, writer, clock, wait) so tests drive it
with a synthetic cluster and a fake clock; ``serve`` wires in the real ones. Signal handlers
only set flags; the loop acts on them.
"""

from __future__ import annotations

import errno
import json
import logging
import logging.handlers
import os
import resource
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from omview.collector import control
from omview.collector.export import DEFAULT_METRICS_HOST, MetricsServer, MigrationStats
from omview.collector.source import Source, SourceUnavailable
from omview.collector.writer import CollectorError, HistoryWriter, compress_history, uncompressed_backups
from omview.model import records
from omview.model.cluster import NodeInfo

log = logging.getLogger("omview.collector")

#: fdatasync every history file this often (seconds): the bound on what a power loss can take.
DEFAULT_SYNC_EVERY = 60.0
LOG_FILE = "collector.log"
_MAX_LABEL = 200


class Clock(Protocol):
    """Monotonic time schedules the loop; wall time stamps the records."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


@dataclass
class Flags:
    """Set by signal handlers and the control socket, acted on by the loop."""

    stop: bool = False
    checkpoint: bool = False
    rotate: bool = False
    reopen_log: bool = False


def validate_label(label: str) -> str:
    """A checkpoint label: printable, one line, at most 200 characters."""
    if len(label) > _MAX_LABEL:
        raise CollectorError(f"checkpoint label is {len(label)} characters long; the limit is {_MAX_LABEL}")
    if not label.isprintable():
        raise CollectorError("checkpoint label must be one line of printable characters")
    return label


class Collector:
    """Samples the source every ``interval`` seconds into the writer; rotates every ``rotate_every``.

    Scheduling uses the monotonic clock, stamps use wall time; a wall clock that disagrees with
    the monotonic one by more than max(2 s, interval) is recorded as a clock jump.
    """

    def __init__(
        self,
        source: Source,
        writer: HistoryWriter,
        *,
        interval: float = 1.0,
        clock: Clock | None = None,
        rotate_every: float = records.ROTATE_SECONDS,
        sync_every: float = DEFAULT_SYNC_EVERY,
        compress: Callable[[str], None] | None = None,
        record_processes: bool = True,
    ) -> None:
        self.source = source
        self.writer = writer
        self.interval = interval
        self.clock: Clock = clock or SystemClock()
        self.rotate_every = rotate_every
        self.sync_every = sync_every
        self.compress = compress
        self.record_processes = record_processes
        self.flags = Flags()
        self.latest: list[NodeInfo] = []
        self.latest_time = 0.0
        self.migrations = MigrationStats()
        self.ticks = 0
        self.rotations: list[str] = []
        self._rotate_due = 0.0
        self._next_sync = 0.0
        self._wall_ref = 0.0
        self._mono_ref = 0.0
        self._outage: tuple[float, str] | None = None
        self._write_trouble: tuple[float, str] | None = None
        self._known: set[int] = set()
        self._pending_labels: list[str] = []

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Open the history (raises CollectorError) and plan the first rotation."""
        wall = self.clock.time()
        mono = self.clock.monotonic()
        for notice in self.writer.open(wall):
            log.info("%s", notice)
        # a continued history keeps its age: rotate 12 h after it was created, not after restart
        age = min(max(0.0, wall - self.writer.created), self.rotate_every)
        self._rotate_due = mono + self.rotate_every - age
        self._next_sync = mono + self.sync_every
        self._wall_ref, self._mono_ref = wall, mono

    def run(self, wait: Callable[[float], None]) -> None:
        """Loop until flags.stop; ``wait(seconds)`` sleeps, returning early on requests."""
        next_due = self.clock.monotonic()
        while not self.flags.stop:
            self.handle_flags()
            now = self.clock.monotonic()
            if now >= next_due:
                self.step()
                next_due += self.interval
                if next_due <= self.clock.monotonic():
                    # fell behind (suspend, slow disk): skip the missed ticks instead of bursting
                    next_due = self.clock.monotonic() + self.interval
                continue
            wait(next_due - now)
        self.handle_flags()

    def close(self) -> None:
        self.writer.close()
        self.source.close()

    # -- one tick -----------------------------------------------------------------------

    def step(self) -> None:
        """Take one sample of the cluster and append it."""
        wall = self.clock.time()
        mono = self.clock.monotonic()
        self._check_clock(wall, mono)
        try:
            nodes = self.source.nodes()
        except SourceUnavailable as exc:
            if self._outage is None:
                log.warning(
                    "cannot read the cluster table: %s; no samples until it is back (retrying every %.3g s)",
                    exc,
                    self.interval,
                )
                self._outage = (wall, str(exc))
            self._maybe_rotate(mono)
            return
        procs = None
        if self.record_processes:
            try:
                procs = self.source.processes()
            except SourceUnavailable as exc:
                log.warning("cannot read the process list this tick: %s", exc)
        events = self.source.events()
        if self._outage is not None:
            since, reason = self._outage
            log.info("the cluster table is back after %.0f s", wall - since)
            self._write_extra(lambda: self.writer.write_gap(since, f"agent unavailable: {reason}", wall))
            self._outage = None
        report = self.writer.write_tick(wall, nodes, procs)
        self.latest = nodes
        self.latest_time = wall
        self.ticks += 1
        ids = {n.id for n in nodes}
        for nid in sorted(ids - self._known):
            if self._known:
                log.info("node %d appeared in the cluster table", nid)
        for nid in sorted(self._known - ids):
            log.info("node %d left the cluster table", nid)
            events.append(("node.gone", {"node": nid}))
        self._known = ids
        for name, data in events:
            self.migrations.observe(name, data)
            try:
                self.writer.write_event(name, data, wall)
            except OSError as exc:
                log.debug("could not write event %s: %s", name, exc)
        if report.failures:
            path, err = report.failures[0]
            if self._write_trouble is None:
                log.error(
                    "cannot write the history (%s: %s); %s. The collector keeps sampling and writes again as soon as it can",
                    path,
                    err.strerror or err,
                    _advice(err),
                )
                self._write_trouble = (wall, f"{err.strerror or err}")
        elif self._write_trouble is not None:
            since, why = self._write_trouble
            log.info("writing the history again after %.0f s", wall - since)
            self._write_trouble = None
            self._write_extra(lambda: self.writer.write_gap(since, f"write failed: {why}", wall))
        if mono >= self._next_sync:
            self.writer.sync()
            self._next_sync = mono + self.sync_every
            foreign = self.writer.foreign_writes()
            if foreign:
                log.error(
                    "something else wrote to the history (%s); moving it aside, never appending after it",
                    "; ".join(foreign[:3]),
                )
                self._rotate_due = mono  # below, as a rotation: dated backup, new history
        self._maybe_rotate(mono)

    def _write_extra(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except OSError as exc:
            log.debug("could not write a cluster record: %s", exc)

    def _check_clock(self, wall: float, mono: float) -> None:
        expected = self._wall_ref + (mono - self._mono_ref)
        jump = wall - expected
        if abs(jump) > max(2.0, self.interval):
            log.warning(
                "the wall clock jumped by %+.1f s; stamps follow the new time, the schedule does not change",
                jump,
            )
            self._write_extra(lambda: self.writer.write_clock_jump(jump, wall))
        self._wall_ref, self._mono_ref = wall, mono

    def _maybe_rotate(self, mono: float) -> None:
        if mono >= self._rotate_due:
            try:
                self.rotate()
            except CollectorError as exc:
                log.error("%s", exc)
                self._rotate_due = mono + min(self.rotate_every, 600.0)

    # -- requests -----------------------------------------------------------------------

    def handle_flags(self) -> None:
        f = self.flags
        if f.checkpoint:
            f.checkpoint = False
            try:
                self.checkpoint("")
            except CollectorError as exc:
                log.error("%s", exc)
        if f.rotate:
            f.rotate = False
            try:
                self.rotate()
            except CollectorError as exc:
                log.error("%s", exc)
        if f.reopen_log:
            f.reopen_log = False
            _reopen_file_logs()

    def checkpoint(self, label: str) -> str:
        """Write a checkpoint marker now; returns a description."""
        label = validate_label(label)
        wall = self.clock.time()
        try:
            self.writer.write_checkpoint(label, wall)
        except OSError as exc:
            raise CollectorError(f"could not write the checkpoint: {exc.strerror or exc}") from exc
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))
        log.info("checkpoint %r at %s", label, stamp)
        return f"checkpoint {label!r} written at {stamp}" if label else f"checkpoint written at {stamp}"

    def rotate(self) -> str:
        """Save the current history to a dated backup and start a new one; returns the backup path."""
        backup = self.writer.rotate(self.clock.time())
        self._rotate_due = self.clock.monotonic() + self.rotate_every
        self.rotations.append(backup)
        log.info("history saved to %s; a new history started in %s", backup, self.writer.logdir)
        if self.compress is not None:
            self.compress(backup)
        return backup

    def control(self, verb: str, arg: str) -> str:
        """Dispatch one control-socket request."""
        if verb == "checkpoint":
            return self.checkpoint(arg)
        if verb == "rotate":
            return f"history saved to {self.rotate()}; a new one started in {self.writer.logdir}"
        if verb == "status" and arg == "json":
            # one line: the control protocol answers in one line (JSON has no newline without indent)
            return json.dumps({"pid": os.getpid(), "nodes": len(self.latest), "ticks": self.ticks,
                               "logdir": self.writer.logdir}, sort_keys=True)  # fmt: skip
        if verb == "status":
            return f"pid {os.getpid()}, {len(self.latest)} nodes, {self.ticks} ticks, writing to {self.writer.logdir}"
        raise CollectorError(f"unknown request {verb!r} (checkpoint, rotate, status)")


def _advice(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full: free space there; samples are dropped until then"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the directory is not writable any more: fix its permissions or mount"
    if exc.errno == errno.EMFILE:
        return "too many open files: raise the collector's open-file limit (LimitNOFILE=)"
    return "check the disk and the log directory"


# ---------------------------------------------------------------------------------------
# The real daemon


def background_compressor() -> Callable[[str], None]:
    """Compress a rotated history in a thread, so sampling does not stop meanwhile."""

    def run(directory: str) -> None:
        def work() -> None:
            try:
                before, after = compress_history(directory)
                log.info("compressed %s: %d -> %d bytes", directory, before, after)
            except OSError as exc:
                log.error("could not compress %s (%s); it stays readable uncompressed", directory, exc)
            except Exception as exc:  # noqa: BLE001 - a bug must not end in a thread traceback
                # whatever a damaged backup holds, sampling goes on and the files stay readable
                log.error(
                    "could not compress %s (%s: %s); it stays readable uncompressed",
                    directory,
                    type(exc).__name__,
                    exc,
                )

        threading.Thread(target=work, name=f"compress {directory}", daemon=False).start()

    return run


class _Waiter:
    """Sleeps in select() on the control socket, the metrics socket and the signal wake-up pipe."""

    def __init__(self, server: control.ControlServer | None, metrics: MetricsServer | None) -> None:
        self.server = server
        self.metrics = metrics
        self.rfd, self.wfd = socket.socketpair()
        self.rfd.setblocking(False)
        self.wfd.setblocking(False)
        signal.set_wakeup_fd(self.wfd.fileno(), warn_on_full_buffer=False)

    def __call__(self, timeout: float) -> None:
        fds: list[Any] = [self.rfd]
        if self.server is not None:
            fds.append(self.server)
        if self.metrics is not None:
            fds.append(self.metrics)
        ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        for r in ready:
            if r is self.rfd:
                try:
                    while self.rfd.recv(512):
                        pass
                except BlockingIOError:
                    pass
            elif r is self.server:
                self.server.handle()
            elif r is self.metrics:
                self.metrics.handle()

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        self.rfd.close()
        self.wfd.close()


def _install_signals(flags: Flags) -> None:
    def on_stop(signum: int, frame: Any) -> None:
        flags.stop = True

    def on_hup(signum: int, frame: Any) -> None:
        flags.reopen_log = True

    def on_usr1(signum: int, frame: Any) -> None:
        flags.checkpoint = True

    def on_usr2(signum: int, frame: Any) -> None:
        flags.rotate = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGUSR2, on_usr2)


_file_handler: logging.Handler | None = None


def _setup_file_log(logdir: str) -> None:
    global _file_handler
    if _file_handler is not None:
        return
    handler = logging.handlers.WatchedFileHandler(os.path.join(logdir, LOG_FILE))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s"))
    root = logging.getLogger("omview")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    _file_handler = handler


def _reopen_file_logs() -> None:
    if isinstance(_file_handler, logging.handlers.WatchedFileHandler):
        _file_handler.reopenIfNeeded()


def _raise_nofile_limit() -> None:
    # one descriptor per node file: lift the soft limit to the hard one for big clusters
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


@dataclass
class Options:
    logdir: str
    pidfile: str
    interval: float = 1.0
    node: str | None = None
    rotate_every: float = records.ROTATE_SECONDS
    sync_every: float = DEFAULT_SYNC_EVERY
    metrics_port: int | None = None
    metrics_host: str = DEFAULT_METRICS_HOST
    processes: bool = True


def serve(opts: Options, source: Source, ready: Callable[[str | None], None] | None = None) -> None:
    """Run the collector until SIGTERM. ``ready(None)`` once running, ``ready(message)`` on failure.

    Raises CollectorError (already running, log directory unusable, ...) after calling ready.
    """
    _raise_nofile_limit()
    pidfile = control.PidFile(opts.pidfile)
    writer = HistoryWriter(opts.logdir, interval=opts.interval)
    collector = Collector(
        source,
        writer,
        interval=opts.interval,
        rotate_every=opts.rotate_every,
        sync_every=opts.sync_every,
        compress=background_compressor(),
        record_processes=opts.processes,
    )
    server: control.ControlServer | None = None
    metrics: MetricsServer | None = None
    waiter: _Waiter | None = None
    try:
        try:
            pidfile.acquire()
            try:
                os.makedirs(writer.logdir, exist_ok=True)
                _setup_file_log(writer.logdir)
            except OSError:
                pass  # start() below says what is wrong with the directory
            for notice in pidfile.notices:
                log.warning("%s", notice)
            collector.start()
            server = control.ControlServer(control.control_path(opts.pidfile), collector.control)
            if opts.metrics_port is not None:
                metrics = MetricsServer(opts.metrics_port, collector, opts.metrics_host)
            _install_signals(collector.flags)
            waiter = _Waiter(server, metrics)
        except CollectorError as exc:
            if ready is not None:
                ready(str(exc))
            raise
        log.info(
            "openmosixcollector started (pid %d): every %.3g s into %s%s",
            os.getpid(),
            opts.interval,
            writer.logdir,
            f", metrics on {metrics.address}" if metrics else "",
        )
        for backup in uncompressed_backups(writer.logdir):
            log.info("compressing %s (left uncompressed earlier)", backup)
            if collector.compress is not None:
                collector.compress(backup)
        if ready is not None:
            ready(None)
        collector.run(waiter)
        log.info("openmosixcollector stopping (pid %d)", os.getpid())
    finally:
        if waiter is not None:
            waiter.close()
        if metrics is not None:
            metrics.close()
        if server is not None:
            server.close()
        collector.close()
        pidfile.release()
