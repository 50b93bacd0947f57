"""L2 agent: links to peer agents over SSH (``ssh -o BatchMode=yes <peer> omview-agent bridge``), one
persistent AgentClient per peer and purpose, reconnected on failure; the same SSH connection is
multiplexed (ControlMaster) for the bulk streams and fencing commands of migrations.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from omview.model.channel import PipeChannel
from omview.model.client import AgentClient
from omview.model.errors import AgentUnavailable, ConnectionLost, OmviewError, TransportError

log = logging.getLogger(__name__)

REMOTE_AGENT = "omview-agent"
#: aes128-gcm was the fastest cipher measured on this kind of host (feasibility §3)
CIPHERS = "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr"


class PeerError(OmviewError):
    """A peer agent could not be reached (the message says which and why)."""


class PeerLinks:
    """Blocking calls to peer agents; use from worker threads, never on the event loop."""

    def __init__(self, resolve: Callable[[int], str | None], run_dir: str, *, timeout: float = 10.0) -> None:
        self.resolve = resolve
        self.run_dir = run_dir
        self.timeout = timeout
        self._links: dict[tuple[int, str], AgentClient] = {}
        self._locks: dict[tuple[int, str], threading.Lock] = {}
        self._guard = threading.Lock()

    @property
    def sock_dir(self) -> str:
        """The agent's socket directory (run_dir is its peers/ subdirectory); the same on every node."""
        return os.path.dirname(self.run_dir.rstrip("/"))

    def address(self, node: int) -> str:
        addr = self.resolve(node)
        if not addr:
            raise PeerError(f"node {node} has no known address")
        return addr

    def ssh_argv(self, node: int, *command: str, connect_timeout: int = 5) -> list[str]:
        """ssh to NODE's address as root (the node's ssh config and keys), sharing one connection."""
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        return [
            "ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={self.run_dir}/ssh-%C", "-o", "ControlPersist=no",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-c", CIPHERS,
            "-l", "root", self.address(node), *command,
        ]  # fmt: skip

    def control_argv(self, node: int, *args: str) -> list[str]:
        """`ssh -O ...` against the master connection to NODE (forward, cancel, check)."""
        return ["ssh", "-o", "BatchMode=yes", "-o", f"ControlPath={self.run_dir}/ssh-%C", *args,
                "-l", "root", self.address(node)]  # fmt: skip

    def stream(self, node: int, remote_path: str, *, timeout: float = 10.0) -> socket.socket:
        """A connection to the Unix socket REMOTE_PATH on NODE, through the SSH master: a local socket
        forwarded with `ssh -O forward -L` (root-only, set up once per master and reused). Needs a
        live master, i.e. a peer link to NODE (call() makes one)."""
        local = os.path.join(self.run_dir, f"fwd-{node}.sock")
        with self._lock((node, "forward")):
            return self._stream(node, local, remote_path, timeout)

    def _stream(self, node: int, local: str, remote_path: str, timeout: float) -> socket.socket:
        for attempt in (1, 2):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(local)
                return sock
            except OSError as exc:
                sock.close()
                if attempt == 2:
                    raise PeerError(f"node {node}: no stream through ssh ({exc.strerror or exc})") from exc
            # no forward yet, or one of a master that is gone: (re)make it on the current master
            with contextlib.suppress(FileNotFoundError):
                os.unlink(local)
            old = os.umask(0o177)
            try:
                res = subprocess.run(self.control_argv(node, "-O", "forward", "-L", f"{local}:{remote_path}"),
                                     capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd="/")  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise PeerError(f"node {node}: ssh -O forward failed: {exc}") from exc
            finally:
                os.umask(old)
            if res.returncode != 0:
                msg = res.stderr.decode(errors="replace").strip()[-200:]
                raise PeerError(f"node {node}: ssh -O forward failed (exit {res.returncode}): {msg}")
        raise AssertionError("not reached")

    def _lock(self, key: tuple[int, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _drop(self, key: tuple[int, str]) -> None:
        client = self._links.pop(key, None)
        if client is not None:
            try:
                client.close()
            except OSError:
                pass

    def call(self, node: int, op: str, *, purpose: str = "ctl", timeout: float | None = None,
             retry: bool = True, **args: Any) -> Any:  # fmt: skip
        """One request to NODE's agent; AgentFault passes through, transport trouble -> PeerError."""
        key = (node, purpose)
        with self._lock(key):
            for attempt in (1, 2):
                client = self._links.get(key)
                try:
                    if client is None:
                        client = AgentClient(
                            PipeChannel(self.ssh_argv(node, REMOTE_AGENT, "bridge")),
                            client_name=f"omview-agent peer ({purpose})", timeout=self.timeout,
                        )  # fmt: skip
                        self._links[key] = client
                    return client.call(op, timeout=timeout, **args)
                except (TransportError, AgentUnavailable, TimeoutError, OSError, subprocess.TimeoutExpired) as exc:
                    # TimeoutExpired: the remote end closed but ssh lingers (a multiplexed stream is still open)
                    self._drop(key)
                    # only a broken *connection* is retried; a timeout may mean the peer is still working
                    if attempt == 2 or not retry or isinstance(exc, TimeoutError):
                        what = "did not answer in time" if isinstance(exc, TimeoutError) else str(exc)
                        raise PeerError(f"node {node}: {op} failed: {what}") from exc
                    log.info("link to node %d broke (%s); reconnecting", node, exc)
            raise AssertionError("not reached")

    def close(self) -> None:
        with self._guard:
            keys = list(self._links)
        for key in keys:
            self._drop(key)


__all__ = ["ConnectionLost", "PeerError", "PeerLinks"]
