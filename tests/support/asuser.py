"""Run test code as a real unprivileged uid (a forked child that dropped root), for per-user checks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

NOBODY = 65534
#: a second unprivileged uid, for "one user must not lock out another"
OTHER = 65533


def _drop(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _read_all(fd: int) -> bytes:
    chunks = []
    while data := os.read(fd, 65536):
        chunks.append(data)
    os.close(fd)
    return b"".join(chunks)


def run_as(uid: int, fn: Callable[[], Any]) -> Any:
    """fn() in a child running as UID; its JSON-able result, or {"error": repr} when it raised."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        os.close(rd)
        try:
            _drop(uid)
            out = fn()
        except BaseException as exc:  # report, never raise in the child
            out = {"error": repr(exc)}
        os.write(wr, json.dumps(out).encode())
        os._exit(0)
    os.close(wr)
    data = _read_all(rd)
    os.waitpid(pid, 0)
    return json.loads(data)


@contextlib.contextmanager
def held_as(uid: int, setup: Callable[[], Any]) -> Iterator[Any]:
    """A child running as UID that runs setup() (e.g. opens connections), reports its JSON-able result
    and then keeps everything open until the block ends (it is killed by PID)."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rd)
        try:
            _drop(uid)
            keep = setup()
            os.write(wr, json.dumps({"ok": len(keep) if isinstance(keep, list) else True}).encode())
        except BaseException as exc:
            os.write(wr, json.dumps({"error": repr(exc)}).encode())
        os.close(wr)
        signal.pause()
        os._exit(0)
    os.close(wr)
    try:
        yield json.loads(_read_all(rd))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def connect_as(uid: int, path: str) -> socket.socket:
    """A socket connected to PATH by a child running as UID: the kernel's SO_PEERCRED (taken at
    connect) names UID, while this process keeps using the socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _drop(uid)
            sock.connect(path)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sock.close()
        raise ConnectionError(f"uid {uid} could not connect to {path}")
    return sock
