"""L0 model: byte channels that carry protocol lines (stdlib only).

``UnixChannel`` reaches the agent on this node, ``PipeChannel`` wraps a child process such as
``ssh node omview-agent bridge``. Both live here, below the agent, so the agent itself can talk
to its peers without leaving the standard library; the paramiko channel is in omview.transport.ssh.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time
from collections.abc import Sequence
from typing import Protocol

from omview.model.errors import AgentUnavailable, ConnectionLost
from omview.model.paths import socket_path


class Channel(Protocol):
    """A bidirectional line channel to one agent."""

    def send(self, data: bytes) -> None:
        """Write bytes; raises ConnectionLost when the peer is gone."""

    def recv_line(self, timeout: float | None) -> bytes:
        """Next full line without its newline; raises TimeoutError or ConnectionLost."""

    def close(self) -> None:
        """Release the channel; safe to call twice."""


class LineBuffer:
    """Splits a byte stream into lines; shared by the channels below."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def pop_line(self) -> bytes | None:
        nl = self._buf.find(b"\n")
        if nl < 0:
            return None
        line = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        return line

    def feed(self, data: bytes) -> None:
        self._buf += data


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no reply from the agent in time")
    return left


class UnixChannel:
    """The local agent's Unix socket."""

    def __init__(self, path: str | None = None, *, connect_timeout: float = 5.0) -> None:
        self.path = path or socket_path()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(connect_timeout)
        try:
            self._sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self._sock.close()
            raise AgentUnavailable(
                f"no omview agent is running on this node (nothing listens on {self.path}); "
                "start it with 'systemctl start omview-agent' or 'omview-agent run'"
            ) from exc
        except PermissionError as exc:
            self._sock.close()
            raise AgentUnavailable(f"not allowed to open {self.path}: {exc.strerror}") from exc
        except OSError as exc:
            self._sock.close()
            raise AgentUnavailable(f"cannot reach the agent at {self.path}: {exc}") from exc
        self._buf = LineBuffer()

    def send(self, data: bytes) -> None:
        try:
            self._sock.settimeout(30)
            self._sock.sendall(data)
        except OSError as exc:
            raise ConnectionLost(f"agent connection lost while sending: {exc}") from exc

    def recv_line(self, timeout: float | None) -> bytes:
        deadline = _deadline(timeout)
        while True:
            line = self._buf.pop_line()
            if line is not None:
                return line
            self._sock.settimeout(_remaining(deadline))
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no reply from the agent in time") from None
            except OSError as exc:
                raise ConnectionLost(f"agent connection lost: {exc}") from exc
            if not chunk:
                raise ConnectionLost("the agent closed the connection")
            self._buf.feed(chunk)

    def close(self) -> None:
        self._sock.close()


class PipeChannel:
    """A child process that speaks the protocol on stdin/stdout (e.g. ssh ... bridge)."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self._proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._out = self._proc.stdout.fileno()
        self._buf = LineBuffer()

    def send(self, data: bytes) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise ConnectionLost(f"{self.argv[0]} exited: {self._stderr()}") from exc

    def _stderr(self) -> str:
        if self._proc.poll() is None or self._proc.stderr is None:
            return "still running"
        return self._proc.stderr.read().decode(errors="replace").strip() or f"exit {self._proc.returncode}"

    def recv_line(self, timeout: float | None) -> bytes:
        deadline = _deadline(timeout)
        while True:
            line = self._buf.pop_line()
            if line is not None:
                return line
            ready, _, _ = select.select([self._out], [], [], _remaining(deadline))
            if not ready:
                raise TimeoutError("no reply from the agent in time")
            chunk = os.read(self._out, 65536)
            if not chunk:
                self._proc.wait(timeout=5)
                raise ConnectionLost(f"{self.argv[0]} exited: {self._stderr()}")
            self._buf.feed(chunk)

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()
