"""L3 collector: one instance per PID file, and the control socket that -n / -r talk through.

The PID file follows omview.model.pidfile (as the agent's does): one whose process is gone (or is
no collector) is stale and is replaced; one that cannot be read or holds no PID is an error, never
overwritten. The control socket (mode 0600, next to the PID file) takes one line -
``checkpoint LABEL``, ``rotate`` or ``status`` - and answers ``ok ...`` or ``error ...``.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from omview.collector.writer import CollectorError
from omview.model import pidfile as pidfiles
from omview.model.pidfile import PidFileError, PidFileHeld, command_line, pid_alive

log = logging.getLogger(__name__)

#: The original's name (/var/run/openMosixcollector.pid, capital M), under today's /run.
DEFAULT_PIDFILE = "/run/openMosixcollector.pid"
_MAX_REQUEST = 4096
#: how the PID file's reasons name the collector ("pid N is not a collector")
COLLECTOR = "a collector"


class AlreadyRunning(CollectorError):
    """A live collector holds the PID file."""

    def __init__(self, pid: int, pidfile: str) -> None:
        super().__init__(
            f"openmosixcollector is already running (pid {pid}, PID file {pidfile}); stop it with -k first"
        )
        self.pid = pid


class NotRunning(CollectorError):
    """No collector is running for this PID file."""


def control_path(pidfile: str) -> str:
    """The control socket that belongs to a PID file: same name with ``.sock``."""
    base = pidfile[:-4] if pidfile.endswith(".pid") else pidfile
    return base + ".sock"


def _runs_collector(args: list[str]) -> bool:
    return any("openmosixcollector" in a or "omview.collector" in a for a in args)


def is_collector(pid: int) -> bool:
    """True if the process's command line is an openmosixcollector (guards against reused PIDs)."""
    args = command_line(pid)
    return args is not None and _runs_collector(args)


def _holder(pidfile: str) -> tuple[int | None, str]:
    """pidfile.holder for the collector; a PID file that cannot be used is a CollectorError."""
    try:
        return pidfiles.holder(pidfile, _runs_collector, COLLECTOR)
    except PidFileError as exc:
        raise CollectorError(str(exc)) from None


def running_pid(pidfile: str) -> int | None:
    """The PID of the live collector named by the PID file, else None."""
    return _holder(pidfile)[0]


class PidFile(pidfiles.PidFile):
    """The single-instance guard; ``acquire`` raises AlreadyRunning or CollectorError."""

    def __init__(self, path: str) -> None:
        super().__init__(path, _runs_collector, COLLECTOR)
        self.notices: list[str] = []

    def acquire(self) -> None:
        try:
            super().acquire()
        except PidFileHeld as held:
            raise AlreadyRunning(held.pid, self.path) from None
        except PidFileError as exc:
            raise CollectorError(f"{exc}; run as root or pass --pidfile") from None
        if self.replaced:
            self.notices.append(f"removed a stale PID file {self.path} ({self.replaced})")


def read_request(listener: socket.socket, end: bytes, limit: int, timeout: float) -> tuple[socket.socket, bytes] | None:
    """Accept one waiting client of a non-blocking listener and read its request up to END (at most
    LIMIT bytes); None when nobody was waiting. The caller answers on, and closes, the connection."""
    try:
        conn, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        return None
    conn.settimeout(timeout)
    data = b""
    try:
        while end not in data and len(data) < limit:
            chunk = conn.recv(limit)
            if not chunk:
                break
            data += chunk
    except OSError:
        conn.close()
        raise
    return conn, data


class ControlServer:
    """The daemon's end of the control socket; ``handle`` serves one pending request."""

    def __init__(self, path: str, handler: Callable[[str, str], str]) -> None:
        self.path = path
        self._handler = handler
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(path)
        except OSError as exc:
            self.sock.close()
            raise CollectorError(f"cannot create the control socket {path}: {exc.strerror}") from exc
        finally:
            os.umask(old)
        self.sock.listen(4)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def handle(self) -> None:
        try:
            got = read_request(self.sock, b"\n", _MAX_REQUEST, 2.0)
        except OSError as exc:
            log.warning("control request failed: %s", exc)
            return
        if got is None:
            return
        conn, data = got
        with conn:
            line = data.split(b"\n", 1)[0].decode("utf-8", errors="replace")
            verb, _, arg = line.partition(" ")
            try:
                reply = "ok " + self._handler(verb, arg)
            except CollectorError as exc:
                reply = f"error {exc}"
            try:
                conn.sendall(reply.replace("\n", " ").encode() + b"\n")
            except OSError as exc:
                log.warning("control request failed: %s", exc)

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def request(pidfile: str, line: str, timeout: float = 60.0) -> str:
    """Send one control line to the running collector; returns its answer without ``ok``.

    Raises NotRunning when no collector runs, CollectorError when it answered ``error``.
    """
    path = control_path(pidfile)
    if running_pid(pidfile) is None:
        raise NotRunning(
            f"no openmosixcollector is running (PID file {pidfile}); start it with 'openmosixcollector -d'"
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                raise NotRunning(f"the collector does not answer on {path}: {exc.strerror}") from exc
            raise CollectorError(f"cannot reach the collector at {path}: {exc.strerror}") from exc
        sock.sendall(line.encode() + b"\n")
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise CollectorError(f"the collector did not answer within {timeout:.0f} s") from None
    finally:
        sock.close()
    reply = data.decode(errors="replace").strip()
    if reply.startswith("ok"):
        return reply[3:]
    if reply.startswith("error "):
        raise CollectorError(reply[6:])
    raise CollectorError(f"unexpected answer from the collector: {reply!r}")


def stop(pidfile: str, timeout: float = 20.0) -> int:
    """Send SIGTERM to the running collector and wait for it to exit; returns its PID.

    Raises NotRunning (a stale PID file is removed and said so) or CollectorError on timeout.
    """
    pid, why = _holder(pidfile)
    if pid is None and not why:
        raise NotRunning(f"no openmosixcollector is running (no PID file at {pidfile})")
    if pid is None:
        try:
            os.unlink(pidfile)
        except OSError:
            pass
        raise NotRunning(f"no openmosixcollector is running (removed the stale PID file {pidfile}: {why})")
    try:
        os.kill(pid, signal.SIGTERM)
    except PermissionError as exc:
        raise CollectorError(f"not allowed to stop pid {pid}: run as the collector's user or root") from exc
    except ProcessLookupError:
        return pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return pid
        time.sleep(0.05)
    raise CollectorError(
        f"openmosixcollector (pid {pid}) did not stop within {timeout:.0f} s; it is still running"
    )
