"""L2 agent: ``omview-agent bridge`` copies stdin/stdout to the agent socket unchanged, for one
long-lived ``ssh root@node omview-agent bridge`` channel per node; ends when either side closes.
"""

from __future__ import annotations

import errno
import os
import select
import socket

from omview.model.errors import AgentUnavailable

CHUNK = 256 * 1024


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise AgentUnavailable(
            f"no omview agent answers on {path} ({exc.strerror}); start it with "
            "'systemctl start omview-agent' or 'omview-agent run'"
        ) from None
    return sock


def bridge(path: str, stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """Copy until the agent closes (0) or stdout breaks (0); raises AgentUnavailable."""
    sock = connect(path)
    sfd = sock.fileno()
    stdin_open = True
    try:
        while True:
            watch = [sfd, stdin_fd] if stdin_open else [sfd]
            ready, _, _ = select.select(watch, [], [])
            if stdin_open and stdin_fd in ready:
                data = os.read(stdin_fd, CHUNK)
                if data:
                    sock.sendall(data)
                else:
                    stdin_open = False
                    # half-close: the agent answers what it already has, then closes its side
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        return 0
            if sfd in ready:
                try:
                    data = sock.recv(CHUNK)
                except ConnectionResetError:
                    return 0
                if not data:
                    return 0
                try:
                    _write_all(stdout_fd, data)
                except OSError as exc:
                    if exc.errno in (errno.EPIPE, errno.EBADF):
                        return 0  # the SSH side went away
                    raise
    except BrokenPipeError:
        return 0
    finally:
        sock.close()
