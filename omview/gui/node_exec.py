"""L4 GUI support (no Qt): running commands on a node, for the Collector menu, agent start/stop
and advanced execution.

Over SSH a runner runs each command on its own exec channel of the node link's one SSH
connection (omview.gui.links owns it); when the GUI reaches the node's agent through a local Unix
socket, commands run here as local subprocesses. Runners block: only links.py's lane threads
call them.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from omview.model.errors import ConnectionLost
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

    def run_bytes(self, argv: Sequence[str], timeout: float) -> tuple[int, bytes, str]:
        """Exit status, stdout as bytes (a file's content) and stderr; retried once on a stale connection."""

    def start(self, argv: Sequence[str]) -> RunningCommand:
        """Start a long-running command whose PID on the node is reported (``RunningCommand.pid``)."""

    def signal(self, pid: int, sig: signal.Signals) -> None:
        """Send ``sig`` to process ``pid`` on the node."""


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
        self.node_args: tuple[str, ...] = ("--node", agent_socket) if agent_socket else ()

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
        status, out, err = self.run_bytes(argv, timeout)
        return status, out.decode(errors="replace"), err

    def run_bytes(self, argv: Sequence[str], timeout: float) -> tuple[int, bytes, str]:
        cp = subprocess.run(list(argv), capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return cp.returncode, cp.stdout, cp.stderr.decode(errors="replace")

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



class SshRunner:
    """The node over SSH: every command is an exec channel on the node's one connection.

    ``connection(fresh=False)`` is the node link's connection (reopened when it died, or with
    ``fresh``); the runner never opens a connection of its own and never closes the shared one."""

    def __init__(self, connection: Callable[..., SshConnection], where: str) -> None:
        self.node_args: tuple[str, ...] = ()
        self._connection = connection
        self._where = where

    def describe(self) -> str:
        return self._where

    def command(self, command: str) -> list[str]:
        return shlex.split(command)

    def run(self, argv: Sequence[str], timeout: float, *, idempotent: bool = False) -> tuple[int, str, str]:
        status, out, err = self._exec(argv, timeout, idempotent)
        return status, out.decode(errors="replace"), err.decode(errors="replace")

    def run_bytes(self, argv: Sequence[str], timeout: float) -> tuple[int, bytes, str]:
        status, out, err = self._exec(argv, timeout, True)  # reading only: safe to retry
        return status, out, err.decode(errors="replace")

    def _exec(self, argv: Sequence[str], timeout: float, idempotent: bool) -> tuple[int, bytes, bytes]:
        conn = self._connection()
        try:
            return conn.exec(argv, timeout=timeout)
        except ConnectionLost:
            if not idempotent or conn.alive:
                # never run a command that changes something twice: the first one may have done its work
                raise
            # the kept connection went stale (node rebooted, sshd restarted): one fresh try
            return self._connection(fresh=True).exec(argv, timeout=timeout)

    def _channel(self, fn: Callable[[SshConnection], Any]) -> Any:
        """FN on the node's connection; once more on a new one when it had died."""
        conn = self._connection()
        try:
            return fn(conn)
        except ConnectionLost as exc:
            if conn.alive:
                # sshd refuses more channels on this connection (MaxSessions, 10 by default)
                raise ConnectionLost(f"{exc} (the node's sshd allows no more sessions on the GUI's "
                                     "connection: raise MaxSessions in its sshd_config)") from exc  # fmt: skip
            return fn(self._connection())

    def start(self, argv: Sequence[str]) -> RunningCommand:
        return self._channel(lambda conn: conn.start(argv, announce_pid=True))

    def signal(self, pid: int, sig: signal.Signals) -> None:
        kill = ["kill", "-s", sig.name.removeprefix("SIG"), str(pid)]
        status, _, raw = self._channel(lambda conn: conn.exec(kill, timeout=15.0))
        err = raw.decode(errors="replace")
        if status != 0:
            raise ProcessLookupError(f"kill {pid} on {self._where}: {err.strip() or f'exit status {status}'}")
