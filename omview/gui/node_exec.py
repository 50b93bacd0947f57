"""L4 GUI support: running commands on a node, for the Collector menu and advanced execution.

A runner reaches one node the way the session reaches its agent: over SSH it keeps one SSH
connection to the node (opened on first use, shared by the threads that use the runner) and runs
each command on its own exec channel; when the GUI reaches the node's agent through a local Unix
socket, commands run here as local subprocesses. Runners block: call them from worker threads
only. ``deliverer`` is the worker threads' way back to a QObject in the GUI thread.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import shiboken6
from PySide6.QtCore import QObject

from omview.gui.connect import SshConnector, UnixConnector
from omview.model.channel import Channel, UnixChannel
from omview.model.errors import ConfigError, ConnectionLost
from omview.transport.ssh import SshConnection


class RunningCommand(Protocol):
    """A command started on a node whose output is read as it comes."""

    #: its PID on the node (None until known)
    pid: int | None

    def read(self, timeout: float, limit: int = 1 << 20) -> tuple[bytes, bytes]:
        """Wait up to ``timeout`` for output; (stdout, stderr) read so far, either may be empty."""

    @property
    def finished(self) -> bool:
        """It ended and everything it wrote was read."""

    @property
    def exit_status(self) -> int | None: ...

    def close(self) -> None: ...


class CommandRunner(Protocol):
    """Runs commands on one node."""

    #: extra collector options so it samples the agent the GUI reaches (--node SOCKET locally)
    node_args: tuple[str, ...]

    def describe(self) -> str: ...

    def command(self, command: str) -> list[str]:
        """``command`` (a setting such as "openmosixcollector") as argv for this node."""

    def run(self, argv: Sequence[str], timeout: float, *, idempotent: bool = False) -> tuple[int, str, str]:
        """Exit status, stdout and stderr; ``idempotent`` commands may be retried once."""

    def start(self, argv: Sequence[str]) -> RunningCommand:
        """Start a long-running command whose PID on the node is reported (``RunningCommand.pid``)."""

    def signal(self, pid: int, sig: signal.Signals) -> None:
        """Send ``sig`` to process ``pid`` on the node."""

    def open_agent(self) -> Channel:
        """A protocol channel to the node's agent, on this runner's connection."""

    def close(self) -> None: ...


class LocalProcess:
    """A local subprocess with piped stdout and stderr (implements RunningCommand)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self.pid: int | None = proc.pid
        self._sel = selectors.DefaultSelector()
        self._open = 0
        for stream, name in ((proc.stdout, "out"), (proc.stderr, "err")):
            if stream is not None:
                os.set_blocking(stream.fileno(), False)
                self._sel.register(stream, selectors.EVENT_READ, name)
                self._open += 1

    def read(self, timeout: float, limit: int = 1 << 20) -> tuple[bytes, bytes]:
        got = {"out": bytearray(), "err": bytearray()}
        wait: float | None = timeout
        while self._open and len(got["out"]) + len(got["err"]) < limit:
            events = self._sel.select(wait)
            if not events:
                break
            wait = 0  # drain what is there, then return
            for key, _ in events:
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if chunk:
                    got[key.data] += chunk
                else:
                    self._sel.unregister(key.fileobj)
                    self._open -= 1
        if not self._open and self._proc.poll() is None and timeout > 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout)
        return bytes(got["out"]), bytes(got["err"])

    @property
    def finished(self) -> bool:
        return not self._open and self._proc.poll() is not None

    @property
    def exit_status(self) -> int | None:
        code = self._proc.poll()
        # like a shell: 128+N for a command that died of signal N
        return 128 - code if code is not None and code < 0 else code

    def close(self) -> None:
        self._sel.close()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()
        if self._proc.poll() is None:
            # closing its pipes is what a lost SSH channel does to a remote command; reap it later
            threading.Thread(target=self._proc.wait, name="reap", daemon=True).start()


class LocalRunner:
    """The node is this machine (its agent is reached through a local socket): a subprocess."""

    def __init__(self, agent_socket: str | None = None) -> None:
        self.agent_socket = agent_socket
        self.node_args = ("--node", agent_socket) if agent_socket else ()

    def describe(self) -> str:
        return "this machine"

    def command(self, command: str) -> list[str]:
        argv = shlex.split(command)
        if argv and "/" not in argv[0]:
            # prefer the tool installed next to this GUI's Python (same omview version)
            sibling = Path(sys.executable).parent / argv[0]
            found = str(sibling) if sibling.is_file() else shutil.which(argv[0])
            if found:
                argv[0] = found
        return argv

    def run(self, argv: Sequence[str], timeout: float, *, idempotent: bool = False) -> tuple[int, str, str]:
        cp = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return cp.returncode, cp.stdout, cp.stderr

    def start(self, argv: Sequence[str]) -> RunningCommand:
        env = dict(os.environ)
        if self.agent_socket:
            env["OMVIEW_SOCKET"] = self.agent_socket  # the tool talks to the agent the GUI reaches
        # like an SSH login: the home directory, no terminal, its own session
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=os.path.expanduser("~"), env=env, start_new_session=True)  # fmt: skip
        return LocalProcess(proc)

    def signal(self, pid: int, sig: signal.Signals) -> None:
        os.kill(pid, sig)

    def open_agent(self) -> Channel:
        if not self.agent_socket:
            raise ConfigError("no agent socket is known for this machine")
        return UnixChannel(self.agent_socket, connect_timeout=5.0)

    def close(self) -> None:
        pass


class SshRunner:
    """The node over SSH: one connection, opened on first use and reused by every command."""

    def __init__(self, connector: SshConnector, address: str) -> None:
        self.node_args: tuple[str, ...] = ()
        self._connector = connector
        self._address = address
        self._conn: SshConnection | None = None
        self._lock = threading.Lock()  # job threads share the runner of their home node

    def describe(self) -> str:
        return self._connector.describe(self._address)

    def command(self, command: str) -> list[str]:
        return shlex.split(command)

    def _connection(self, *, fresh: bool = False) -> tuple[SshConnection, bool]:
        """The kept connection (a new one when there is none, it died, or ``fresh``); True if reused."""
        with self._lock:
            reused = not fresh and self._conn is not None and self._conn.alive
            if not reused:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                self._conn = SshConnection(self._connector.target(self._address))
            return self._conn, reused

    def run(self, argv: Sequence[str], timeout: float, *, idempotent: bool = False) -> tuple[int, str, str]:
        conn, reused = self._connection()
        try:
            status, out, err = conn.exec(argv, timeout=timeout)
        except ConnectionLost:
            if not (reused and idempotent):
                # never run a command that changes something twice: the first one may have done its work
                self.close()
                raise
            # the kept connection went stale (node rebooted, sshd restarted): one fresh try
            conn, _ = self._connection(fresh=True)
            status, out, err = conn.exec(argv, timeout=timeout)
        return status, out.decode(errors="replace"), err.decode(errors="replace")

    def _on_own_connection(self, fn: Callable[[SshConnection], Any]) -> Any:
        """FN on the kept connection; when that refuses another channel (sshd's MaxSessions, 10 by
        default) FN gets a connection of its own, and when it died, a new kept one."""
        conn, _ = self._connection()
        try:
            return fn(conn)
        except ConnectionLost:
            if conn.alive:
                extra = SshConnection(self._connector.target(self._address))
                try:
                    return fn(extra)
                except BaseException:
                    extra.close()
                    raise
            conn, _ = self._connection(fresh=True)
            return fn(conn)

    def start(self, argv: Sequence[str]) -> RunningCommand:
        def begin(conn: SshConnection) -> RunningCommand:
            proc = conn.start(argv, announce_pid=True)
            return proc if conn is self._conn else _Owning(proc, conn)

        return self._on_own_connection(begin)  # type: ignore[no-any-return]

    def signal(self, pid: int, sig: signal.Signals) -> None:
        def kill(conn: SshConnection) -> tuple[int, bytes, bytes]:
            try:
                return conn.exec(["kill", "-s", sig.name.removeprefix("SIG"), str(pid)], timeout=15.0)
            finally:
                if conn is not self._conn:
                    conn.close()

        status, _, raw = self._on_own_connection(kill)
        err = raw.decode(errors="replace")
        if status != 0:
            raise ProcessLookupError(f"kill {pid} on {self._address}: {err.strip() or f'exit status {status}'}")

    def open_agent(self) -> Channel:
        conn, _ = self._connection()
        return conn.open_bridge()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class _Owning:
    """A command on a connection of its own, closed with it."""

    def __init__(self, proc: RunningCommand, conn: SshConnection) -> None:
        self._proc = proc
        self._conn = conn

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def read(self, timeout: float, limit: int = 1 << 20) -> tuple[bytes, bytes]:
        return self._proc.read(timeout, limit)

    @property
    def finished(self) -> bool:
        return self._proc.finished

    @property
    def exit_status(self) -> int | None:
        return self._proc.exit_status

    def close(self) -> None:
        try:
            self._proc.close()
        finally:
            self._conn.close()


def runner_for(connector: object, address: str) -> CommandRunner:
    """How to run a command on ``address``, given the connector the session reaches it with."""
    route = getattr(connector, "connector_for", None)
    if callable(route):
        connector = route(address)
    if isinstance(connector, SshConnector):
        return SshRunner(connector, address)
    if isinstance(connector, UnixConnector):
        return LocalRunner(connector.socket_path(address))
    raise ConfigError(
        f"openmosixview cannot run commands on {address} through {type(connector).__name__}; "
        "connect over SSH or through the node's local agent socket"
    )


def deliverer(target: QObject, signal_name: str) -> Callable[[Any], bool]:
    """A worker thread's way back to ``target`` in the GUI thread, holding it only weakly.

    The returned function emits ``target.<signal_name>(item)`` (a queued connection carries it to
    the GUI thread) and returns False once the target is gone; ``None`` only asks whether it exists.
    """
    ref = weakref.ref(target)

    def deliver(item: Any) -> bool:
        obj = ref()
        if obj is None or not shiboken6.isValid(obj):
            return False
        if item is not None:
            try:
                getattr(obj, signal_name).emit(item)
            except RuntimeError:  # deleted between the check and the emit
                return False
        return True

    return deliver
