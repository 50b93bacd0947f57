"""L2 agent: the byte streams of a migration between two agents. They run over a Unix socket of the
target agent that the source's SSH master forwards (`ssh -O forward -L`), so no TCP port is ever
opened: image files stream with their sha256 computed on both ends while they pass, and the post-copy
page channel is handed to CRIU as an already connected socket (`--ps-socket`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_HEADER = 1 << 20
STALL_AFTER = 512 * 1024


class StreamError(Exception):
    """A stream broke or carried something unexpected (the message says what)."""


# ---------------------------------------------------------------------------------- framing


def send_line(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")


def recv_line(sock: socket.socket, limit: int = MAX_HEADER) -> dict[str, Any]:
    """One JSON line, read a byte at a time: nothing after the newline is consumed, because on a page
    channel the bytes that follow belong to CRIU."""
    buf = bytearray()
    while True:
        b = sock.recv(1)
        if not b:
            raise StreamError("the connection closed" + (" mid-line" if buf else ""))
        if b == b"\n":
            break
        buf += b
        if len(buf) > limit:
            raise StreamError("header line too long")
    try:
        obj = json.loads(buf)
    except ValueError:
        raise StreamError("not a JSON header line") from None
    if not isinstance(obj, dict):
        raise StreamError("header is not an object")
    return obj


def _recv_exact_into(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            raise StreamError("the connection closed in the middle of a file")
        got += n


# ---------------------------------------------------------------------------------- files


@dataclass(frozen=True)
class FileEntry:
    """One file of an image stream: DEST 'img' (flat image dir) or 'job' (relative to the incoming dir)."""

    dest: str
    name: str
    path: str  # source side only
    size: int
    mode: int
    uid: int
    gid: int
    mtime: float

    def wire(self) -> dict[str, Any]:
        return {"dest": self.dest, "name": self.name, "size": self.size, "mode": self.mode,
                "uid": self.uid, "gid": self.gid, "mtime": self.mtime}  # fmt: skip


def collect(images: str, job_root: str, job_dirname: str, skip: set[str]) -> list[FileEntry]:
    """Image files (flat, SKIP excluded) then the job's directory tree, as stream entries."""
    out: list[FileEntry] = []

    def entry(dest: str, name: str, path: str) -> FileEntry:
        st = os.stat(path)
        return FileEntry(dest, name, path, st.st_size, st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime)

    for name in sorted(os.listdir(images)):
        path = os.path.join(images, name)
        if name not in skip and os.path.isfile(path) and not os.path.islink(path):
            out.append(entry("img", name, path))
    base = os.path.join(job_root, job_dirname)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                out.append(entry("job", os.path.relpath(path, job_root), path))
    return out


def _big_buffers(sock: socket.socket) -> None:
    """Fewer wake-ups per megabyte: sshd writes 32 KiB channel packets into this socket."""
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)


def send_files(sock: socket.socket, files: list[FileEntry], *, stall: float | None = None,
               progress: Callable[[int], None] | None = None) -> dict[str, str]:  # fmt: skip
    """Manifest, the bytes of every file (hashed while read), then the sums; returns the sums.

    STALL (fault hook): hold the stream for that many seconds after the first 512 KiB. PROGRESS: called
    with the bytes sent so far after every chunk (it rate-limits itself).
    """
    _big_buffers(sock)
    send_line(sock, {"files": [f.wire() for f in files]})
    sums: dict[str, str] = {}
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    sent = 0
    for f in files:
        h = hashlib.sha256()
        left = f.size
        with open(f.path, "rb", buffering=0) as fh:
            while left > 0:
                n = fh.readinto(view[: min(CHUNK, left)])
                if not n:
                    raise StreamError(f"{f.path} shrank while it was being sent")
                h.update(view[:n])
                sock.sendall(view[:n])
                left -= n
                if stall is not None and sent < STALL_AFTER <= sent + n:
                    log.warning("fault hook stall-transfer: holding the stream for %.1f s", stall)
                    time.sleep(min(stall, 120.0))
                sent += n
                if progress is not None:
                    progress(sent)
        sums[f"{f.dest}:{f.name}"] = h.hexdigest()
    send_line(sock, {"sums": sums})
    return sums


def _safe_name(dest: str, name: str) -> bool:
    if not name or name.startswith("/") or "\0" in name:
        return False
    parts = name.split("/")
    if dest == "img":
        return len(parts) == 1 and name not in (".", "..")
    return dest == "job" and all(p not in ("", ".", "..") for p in parts)


def receive_files(sock: socket.socket, images: str, job_root: str, *, damage_largest: bool = False,
                  flip: int | None = None, node: int = 0) -> dict[str, Any]:  # fmt: skip
    """Counterpart of send_files. Writes images into IMAGES and job files below JOB_ROOT, hashing as
    they arrive, and compares with the sender's sums. A write error (disk full) does not stop the
    reading: the stream is drained so the sender gets a clear answer instead of a broken pipe.

    Returns {"ok", "error", "sums", "problems", "bytes"}. DAMAGE_LARGEST (fault hook corrupt-image)
    keeps only the first half of the largest file, like a copy cut short. FLIP (fault hook
    flip-image-byte) inverts one byte as it comes off the wire, before it is hashed, as a faulty link
    would: image file FLIP % count, at offset FLIP // count % its size.
    """
    _big_buffers(sock)
    head = recv_line(sock)
    files = head.get("files")
    if not isinstance(files, list):
        raise StreamError("the stream has no file list")
    largest = max(range(len(files)), key=lambda i: int(files[i].get("size", 0))) if files else -1
    flip_at = _flip_target(files, flip)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    got: dict[str, str] = {}
    error = ""
    total = 0
    for i, f in enumerate(files):
        dest, name, size = str(f.get("dest")), str(f.get("name")), int(f.get("size", -1))
        if size < 0 or not _safe_name(dest, name):
            raise StreamError(f"refusing file {dest}:{name!r} (unsafe name or size)")
        path = os.path.join(images if dest == "img" else job_root, name)
        keep = size // 2 if (damage_largest and i == largest) else size
        fd = -1
        if not error:
            try:
                if dest == "job":
                    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            except OSError as exc:
                error = f"cannot write {name} on node {node}: {exc.strerror}"
        h = hashlib.sha256()
        left, written = size, 0
        try:
            while left > 0:
                n = min(CHUNK, left)
                _recv_exact_into(sock, view[:n])
                if flip_at is not None and flip_at[0] == i and 0 <= flip_at[1] - (size - left) < n:
                    view[flip_at[1] - (size - left)] ^= 0xFF
                left -= n
                if written < keep:
                    part = view[: min(n, keep - written)]
                    h.update(part)
                    if fd >= 0:
                        try:
                            _write_all(fd, part)
                        except OSError as exc:
                            error = error or f"writing {name} on node {node} failed: {exc.strerror}"
                            os.close(fd)
                            fd = -1
                    written += len(part)
        finally:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.fchmod(fd, int(f.get("mode", 0o600)) & 0o7777)
                    os.fchown(fd, int(f.get("uid", 0)), int(f.get("gid", 0)))
                    os.utime(fd, (time.time(), float(f.get("mtime", time.time()))))
                os.close(fd)
        total += size
        got[f"{dest}:{name}"] = h.hexdigest()
    tail = recv_line(sock)
    sums = tail.get("sums")
    if not isinstance(sums, dict):
        raise StreamError("the stream has no checksums at its end")
    problems = [f"{k.split(':', 1)[1]} missing" for k in sorted(set(sums) - set(got))]
    problems += [f"{k.split(':', 1)[1]} differs (sha256)" for k in sorted(got) if k in sums and sums[k] != got[k]]
    return {"ok": not error and not problems, "error": error, "problems": problems, "sums": got, "bytes": total}


def _flip_target(files: list[Any], flip: int | None) -> tuple[int, int] | None:
    """(file index, offset) of the byte the flip-image-byte hook inverts: among the non-empty images."""
    if flip is None:
        return None
    images = [i for i, f in enumerate(files) if f.get("dest") == "img" and int(f.get("size", 0)) > 0]
    if not images:
        return None
    i = images[flip % len(images)]
    return i, flip // len(images) % int(files[i]["size"])


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


# ---------------------------------------------------------------------------------- the target's socket

Handler = Callable[[socket.socket, dict[str, Any]], bool]


class Listener:
    """Accepts stream connections on a root-only Unix socket; HANDLER(conn, header) runs in a thread
    per connection and returns True when it kept the connection (a page channel), else it is closed."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.sock.listen(16)
        self._thread = threading.Thread(target=self._accept_loop, name="mig-listener", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), name="mig-stream", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        keep = False
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != 0:  # sshd (root) forwards the source agent's streams; nobody else may talk here
                log.warning("migration stream from uid %d refused", uid)
                return
            conn.settimeout(60.0)
            head = recv_line(conn)
            keep = self.handler(conn, head)
        except (OSError, StreamError) as exc:
            log.warning("migration stream failed: %s", exc)
        finally:
            if not keep:
                with contextlib.suppress(OSError):
                    conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
