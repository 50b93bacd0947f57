"""L3 collector: one instance per PID file, and the control socket that -n / -r talk through.

The PID file is created with O_EXCL; a PID file whose process is gone (or is no collector)
is stale and is replaced. The control socket (mode 0600, next to the PID file) takes one
line - ``checkpoint LABEL``, ``rotate`` or ``status`` - and answers ``ok ...`` or ``error ...``.
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

log = logging.getLogger(__name__)

#: The original's name (/var/run/openMosixcollector.pid, capital M), under today's /run.
DEFAULT_PIDFILE = "/run/openMosixcollector.pid"
_MAX_REQUEST = 4096


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


def read_pid(pidfile: str) -> int | None:
    """The PID in the file, or None if there is no file or it holds no number."""
    try:
        with open(pidfile) as f:
            text = f.read(64).strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CollectorError(f"cannot read the PID file {pidfile}: {exc.strerror}") from exc
    return int(text) if text.isdigit() else None


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # the state letter follows the parenthesised command name
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"
    except (OSError, ValueError):
        return True


def is_collector(pid: int) -> bool:
    """True if the process's command line is an openmosixcollector (guards against reused PIDs)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return b"openmosixcollector" in cmd or b"omview.collector" in cmd


def running_pid(pidfile: str) -> int | None:
    """The PID of the live collector named by the PID file, else None."""
    pid = read_pid(pidfile)
    if pid is not None and pid_alive(pid) and is_collector(pid):
        return pid
    return None


class PidFile:
    """The single-instance guard; ``acquire`` raises AlreadyRunning or CollectorError."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.notices: list[str] = []
        self._mine = False

    def acquire(self) -> None:
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                pid = read_pid(self.path)
                if pid is not None and pid != os.getpid() and pid_alive(pid) and is_collector(pid):
                    raise AlreadyRunning(pid, self.path) from None
                why = (
                    "holds no PID"
                    if pid is None
                    else f"pid {pid} is gone"
                    if not pid_alive(pid)
                    else f"pid {pid} is not a collector"
                )
                self.notices.append(f"removed a stale PID file {self.path} ({why})")
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise CollectorError(
                        f"cannot remove the stale PID file {self.path}: {exc.strerror}"
                    ) from exc
                continue
            except OSError as exc:
                raise CollectorError(
                    f"cannot create the PID file {self.path}: {exc.strerror}; run as root or pass --pidfile"
                ) from exc
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self._mine = True
            return
        raise CollectorError(f"could not take the PID file {self.path}: other processes keep recreating it")

    def release(self) -> None:
        if self._mine and read_pid(self.path) == os.getpid():
            try:
                os.unlink(self.path)
            except OSError:
                pass
        self._mine = False


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
    pid = read_pid(pidfile)
    if pid is None:
        raise NotRunning(f"no openmosixcollector is running (no PID file at {pidfile})")
    if not pid_alive(pid) or not is_collector(pid):
        try:
            os.unlink(pidfile)
        except OSError:
            pass
        raise NotRunning(
            f"no openmosixcollector is running (removed the stale PID file {pidfile}, pid {pid})"
        )
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
