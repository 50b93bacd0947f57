"""L2 agent: links to peer agents over SSH (``ssh -o BatchMode=yes <peer> omview-agent bridge``), one
persistent AgentClient per peer and purpose, reconnected on failure; the same SSH connection is
multiplexed (ControlMaster) for the bulk streams and fencing commands of migrations. ``warm()`` opens
a few links in the background before a migration needs them (a cold link costs ~0.3 s).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from omview.model.channel import PipeChannel
from omview.model.client import AgentClient
from omview.model.errors import AgentUnavailable, ConnectionLost, OmviewError, TransportError
from omview.model.hosts import HostError, check_host

log = logging.getLogger(__name__)

REMOTE_AGENT = "omview-agent"
#: aes128-gcm was the fastest cipher measured on this kind of host (feasibility §3)
CIPHERS = "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr"
#: Speculative ("warm") links a node keeps at most, per purpose: opening a link costs a new SSH
#: connection (~0.2 s on the test VM) plus the remote bridge's start (~0.07 s), all of which a cold
#: migration spends in its prepare phase. Each warm link holds an ssh client here and an sshd + bridge
#: process on the peer, so the count is bounded per node (O(N) cluster-wide, never N^2).
WARM_PEERS = 3
#: a warm link no migration used and nobody asked for again is closed after this long
WARM_IDLE = 300.0
#: after a failed warm-up the node is not tried again for this long (a 5 s ssh timeout per tick
#: would be a waste; a real call still tries at once)
WARM_RETRY = 30.0
#: the most a new link's opening (ssh login, the remote bridge's start, hello) may take: a call
#: allows it its own timeout up to this, a warm-up (nobody waits for it) all of it. A login costs
#: ~0.2 s here but ~14 s between emulated VMs (docs/cluster.md), where a 10 s allowance meant no
#: warm-up ever succeeded and every first migration to a node failed in its prepare
LINK_OPEN_MAX = 60.0


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
        self._closed = False
        # warm-up bookkeeping (under _guard): links warm() opened that no call used yet -> when warm()
        # last wanted them; links being warmed now; failed warm-ups -> when; idle links being closed
        self._spec: dict[tuple[int, str], float] = {}
        self._warming: set[tuple[int, str]] = set()
        self._warm_failed: dict[tuple[int, str], float] = {}
        self._closing: set[tuple[int, str]] = set()
        self._masters: dict[int, subprocess.Popen[bytes]] = {}  # _own_master()'s, per node

    @property
    def sock_dir(self) -> str:
        """The agent's socket directory (run_dir is its peers/ subdirectory); the same on every node."""
        return os.path.dirname(self.run_dir.rstrip("/"))

    def address(self, node: int) -> str:
        """NODE's address for ssh; one that is no host name (a map file or config typo, never a
        peer's say) is refused so it cannot become an ssh option."""
        addr = self.resolve(node)
        if not addr:
            raise PeerError(f"node {node} has no known address")
        try:
            return check_host(addr)
        except HostError as exc:
            raise PeerError(f"node {node}: {exc}") from None

    def ssh_argv(self, node: int, *command: str, connect_timeout: int = 5) -> list[str]:
        """ssh to NODE's address as root (the node's ssh config and keys), sharing one connection."""
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        return [
            "ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={self.run_dir}/ssh-%C", "-o", "ControlPersist=no",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-c", CIPHERS,
            "-l", "root", "--", self.address(node), *command,
        ]  # fmt: skip

    def control_argv(self, node: int, *args: str) -> list[str]:
        """`ssh -O ...` against the master connection to NODE (forward, cancel, check)."""
        return ["ssh", "-o", "BatchMode=yes", "-o", f"ControlPath={self.run_dir}/ssh-%C", *args,
                "-l", "root", "--", self.address(node)]  # fmt: skip

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
            self._forward(node, local, remote_path, timeout)
        raise AssertionError("not reached")

    def _forward(self, node: int, local: str, remote_path: str, timeout: float) -> None:
        try:
            self._forward_once(node, local, remote_path, timeout)
        except PeerError:
            if not self._own_master(node):
                raise  # a master runs: the forward failed for another reason, which the error says
            self._forward_once(node, local, remote_path, timeout)

    def _own_master(self, node: int) -> bool:
        """Start a master connection of our own to NODE if none runs; True if one was started. Links
        normally provide the master (ControlMaster=auto), but a link that lost the race to become it
        runs without one, and a master link that was dropped takes it away: seen between emulated VMs,
        where a 14 s login let two links start at once and the master's open then timed out."""
        if subprocess.run(self.control_argv(node, "-O", "check"), capture_output=True, stdin=subprocess.DEVNULL,
                          timeout=10, cwd="/").returncode == 0:  # fmt: skip
            return False
        old = self._masters.pop(node, None)
        if old is not None:
            _end(old)
        argv = ["ControlMaster=yes" if a == "ControlMaster=auto" else a for a in self.ssh_argv(node)]
        argv[1:1] = ["-N"]  # no command: only the connection
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd="/")  # fmt: skip
        self._masters[node] = proc
        deadline = time.monotonic() + LINK_OPEN_MAX
        while time.monotonic() < deadline and proc.poll() is None:
            if subprocess.run(self.control_argv(node, "-O", "check"), capture_output=True, stdin=subprocess.DEVNULL,
                              timeout=10, cwd="/").returncode == 0:  # fmt: skip
                log.info("own ssh master to node %d for stream forwards", node)
                return True
            time.sleep(0.2)
        raise PeerError(f"node {node}: no ssh master connection for a stream forward (login did not finish)")

    def _forward_once(self, node: int, local: str, remote_path: str, timeout: float) -> None:
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

    def _lock(self, key: tuple[int, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _drop(self, key: tuple[int, str]) -> None:
        with self._guard:
            self._spec.pop(key, None)
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
                        client = self._open(node, purpose, min(max(self.timeout, timeout or 0.0), LINK_OPEN_MAX))
                    with self._guard:
                        self._spec.pop(key, None)  # a warm link in use is a link like any other now
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

    def _open(self, node: int, purpose: str, timeout: float) -> AgentClient:
        """A new link (caller holds its lock): ssh (a new connection, or a session on the master) runs
        the peer's bridge, then the hello handshake, within TIMEOUT; its calls then default to ours."""
        t0 = time.monotonic()
        client = AgentClient(
            PipeChannel(self.ssh_argv(node, REMOTE_AGENT, "bridge")),
            client_name=f"omview-agent peer ({purpose})", timeout=timeout,
        )  # fmt: skip
        client.timeout = self.timeout
        self._links[(node, purpose)] = client
        log.info("link to node %d (%s) open in %.3f s", node, purpose, time.monotonic() - t0)
        return client

    # ------------------------------------------------------------------ warm-up
    def warm(self, nodes: Iterable[int], *, purpose: str = "mig", forward: str | None = None) -> None:
        """Open links to NODES (most wanted first) in background threads, so the next call to one of
        them finds the link ready; never blocks. At most WARM_PEERS speculative links per purpose stay
        open; one not wanted for WARM_IDLE seconds is closed. FORWARD: also set up the stream forward to that
        remote socket path (see stream()). Call it again whenever the wish list may have changed."""
        now = time.monotonic()
        start: list[tuple[int, str]] = []
        idle: list[tuple[int, str]] = []
        with self._guard:
            if self._closed:
                return
            for node in nodes:
                key = (node, purpose)
                if key in self._spec:
                    self._spec[key] = now
                if key in self._links or key in self._warming:
                    continue
                if now - self._warm_failed.get(key, -WARM_RETRY) < WARM_RETRY:
                    continue
                if sum(1 for k in (*self._spec, *self._warming) if k[1] == purpose) >= WARM_PEERS:
                    continue  # full; later nodes of the list still get their timestamps refreshed
                self._warming.add(key)
                start.append(key)
            idle = [key for key in self._spec if key not in self._closing and self._idle(key, now)]
            self._closing.update(idle)
        for key in idle:
            threading.Thread(target=self._close_idle, args=(key,), name=f"omview-unwarm-{key[0]}",
                             daemon=True).start()  # fmt: skip
        for key in start:
            threading.Thread(target=self._warm_one, args=(key, forward), name=f"omview-warm-{key[0]}",
                             daemon=True).start()  # fmt: skip

    def _idle(self, key: tuple[int, str], now: float) -> bool:
        """(under _guard) A warm link nobody used nor wanted for WARM_IDLE, and the only link to its
        node: another link may be a session on this link's ssh, were it the master, which waits for
        its sessions and then gets killed by PipeChannel.close()."""
        at = self._spec.get(key)
        return at is not None and now - at > WARM_IDLE and not any(k[0] == key[0] and k != key for k in list(self._links))

    def _close_idle(self, key: tuple[int, str]) -> None:
        try:
            with self._lock(key):  # not while a call uses it
                with self._guard:
                    idle = self._idle(key, time.monotonic())
                if idle:
                    log.info("closing the unused warm link to node %d (%s)", *key)
                    self._drop(key)
        finally:
            with self._guard:
                self._closing.discard(key)

    def _warm_one(self, key: tuple[int, str], forward: str | None) -> None:
        node, purpose = key
        try:
            with self._lock(key):
                if key not in self._links and not self._closed:
                    self._open(node, purpose, LINK_OPEN_MAX)
                    with self._guard:
                        self._spec[key] = time.monotonic()
        except (OmviewError, OSError, TimeoutError, subprocess.TimeoutExpired) as exc:
            with self._guard:
                self._warm_failed[key] = time.monotonic()
            log.info("cannot warm up the link to node %d: %s", node, exc)
            return
        finally:
            with self._guard:
                self._warming.discard(key)
            if self._closed:  # close() ran meanwhile: leave no link behind
                with self._lock(key):
                    self._drop(key)
        if forward is None or self._closed:
            return
        local = os.path.join(self.run_dir, f"fwd-{node}.sock")
        try:
            with self._lock((node, "forward")):
                if not os.path.exists(local):  # a stale one is remade by stream() when it fails
                    self._forward(node, local, forward, self.timeout)
        except PeerError as exc:
            log.info("cannot set up the stream forward to node %d ahead of time: %s", node, exc)

    def close(self) -> None:
        with self._guard:
            self._closed = True
            keys = list(self._links)
        for key in keys:
            self._drop(key)
        for node in list(self._masters):
            _end(self._masters.pop(node))


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Stop an ssh master we started (by its PID) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


__all__ = ["ConnectionLost", "PeerError", "PeerLinks"]
