"""L1 transport: SSH to a node with paramiko (the only module that imports paramiko).

One ``SshConnection`` per node holds one TCP connection; ``open_bridge()`` starts
``omview-agent bridge`` on it as one long-lived exec channel that carries protocol lines, so a
request costs one round trip, not one ssh login. Host keys are always checked against
known_hosts: an unknown or changed key raises HostKeyError with the key's fingerprint, and only
an explicit ``accept_host_key`` call adds a key.
"""

from __future__ import annotations

import os
import select
import shlex
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import paramiko

from omview.model.channel import LineBuffer
from omview.model.errors import (
    AgentUnavailable,
    AuthenticationError,
    ConnectionLost,
    HostKeyError,
    TransportError,
)

DEFAULT_AGENT_COMMAND = "omview-agent"


@dataclass(frozen=True)
class SshTarget:
    """Where and how to log in to one node."""

    host: str  # what the user typed (alias in ssh_config, hostname or address)
    hostname: str = ""  # resolved address; defaults to host
    port: int = 22
    user: str = "root"
    identity_files: tuple[str, ...] = ()
    known_hosts: str = field(default_factory=lambda: os.path.expanduser("~/.ssh/known_hosts"))
    allow_agent: bool = True  # ssh-agent identities
    connect_timeout: float = 5.0
    agent_command: str = DEFAULT_AGENT_COMMAND

    @property
    def address(self) -> str:
        return self.hostname or self.host

    @classmethod
    def from_ssh_config(cls, host: str, config_path: str | None = None, **overrides: object) -> SshTarget:
        """Resolve ``host`` through an OpenSSH client config (default ~/.ssh/config) if present."""
        path = Path(config_path or os.path.expanduser("~/.ssh/config"))
        target = cls(host=host)
        if path.exists():
            cfg = paramiko.SSHConfig.from_path(str(path)).lookup(host)
            known = cfg.get("userknownhostsfile")
            idents = tuple(os.path.expanduser(p) for p in cfg.get("identityfile", []))
            target = replace(
                target,
                hostname=cfg.get("hostname", host),
                port=int(cfg.get("port", 22)),
                user=cfg.get("user", target.user),
                identity_files=idents,
                known_hosts=os.path.expanduser(known.split()[0]) if known else target.known_hosts,
                allow_agent=cfg.get("identitiesonly", "no").lower() != "yes",
                connect_timeout=float(cfg.get("connecttimeout", target.connect_timeout)),
            )
        return replace(target, **overrides)  # type: ignore[arg-type]


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """Refuse unknown host keys, keeping the key so the GUI can show its fingerprint."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyError(
            f"{hostname} is not in known_hosts; its {key.get_name()} key fingerprint is "
            f"{key.fingerprint}. Verify it on the node (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) "
            "and accept it explicitly.",
            host=hostname,
            fingerprint=key.fingerprint,
            known=False,
        )


def fetch_host_key(target: SshTarget) -> paramiko.PKey:
    """Read a node's host key without authenticating (to show it before accepting)."""
    sock = _dial(target)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=target.connect_timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError) as exc:
        raise TransportError(f"cannot read the host key of {target.host}: {exc}") from exc
    finally:
        transport.close()


def accept_host_key(target: SshTarget, key: paramiko.PKey) -> None:
    """Add a node's key to known_hosts: only ever called on an explicit user decision."""
    path = Path(target.known_hosts)
    path.parent.mkdir(parents=True, exist_ok=True)
    host = target.address if target.port == 22 else f"[{target.address}]:{target.port}"
    with path.open("a") as fh:
        fh.write(f"{host} {key.get_name()} {key.get_base64()}\n")


def _dial(target: SshTarget) -> socket.socket:
    try:
        sock = socket.create_connection((target.address, target.port), timeout=target.connect_timeout)
    except TimeoutError as exc:
        raise TransportError(f"{target.host} ({target.address}:{target.port}): connection timed out") from exc
    except OSError as exc:
        raise TransportError(
            f"cannot reach {target.host} ({target.address}:{target.port}): {exc.strerror or exc}"
        ) from exc
    # paramiko leaves Nagle on; every small write would then wait ~40 ms for a delayed ACK
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class SshConnection:
    """One authenticated SSH connection to a node."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target
        self._client = paramiko.SSHClient()
        if os.path.exists(target.known_hosts):
            self._client.load_host_keys(target.known_hosts)
        self._client.set_missing_host_key_policy(_RefuseUnknown())
        sock = _dial(target)
        try:
            self._client.connect(
                target.address,
                port=target.port,
                username=target.user,
                key_filename=list(target.identity_files) or None,  # type: ignore[arg-type]  # paramiko takes a list too; types-paramiko says str
                allow_agent=target.allow_agent,
                look_for_keys=not target.identity_files,
                timeout=target.connect_timeout,
                banner_timeout=target.connect_timeout,
                auth_timeout=target.connect_timeout,
                channel_timeout=target.connect_timeout,
                sock=sock,
            )
        except HostKeyError:
            sock.close()
            raise
        except paramiko.BadHostKeyException as exc:
            sock.close()
            raise HostKeyError(
                f"HOST KEY MISMATCH for {target.host}: known_hosts has a different key "
                f"(offered {exc.key.get_name()} {exc.key.fingerprint}). This may be an attack or a "
                f"reinstalled node; fix {target.known_hosts} only after checking the node.",
                host=target.host,
                fingerprint=exc.key.fingerprint,
                known=True,
            ) from exc
        except paramiko.AuthenticationException as exc:
            sock.close()
            raise AuthenticationError(
                f"{target.user}@{target.host} refused our keys: {exc}; check the identity file and "
                "the node's authorized_keys"
            ) from exc
        except (paramiko.SSHException, OSError) as exc:
            sock.close()
            raise TransportError(f"SSH to {target.host} failed: {exc}") from exc

    def exec(self, argv: Sequence[str], *, timeout: float = 30.0) -> tuple[int, bytes, bytes]:
        """Run one command (argv, quoted here and nowhere else); returns (status, stdout, stderr)."""
        try:
            _, out, err = self._client.exec_command(shlex.join(argv), timeout=timeout)
            stdout, stderr = out.read(), err.read()
            return out.channel.recv_exit_status(), stdout, stderr
        except (paramiko.SSHException, OSError) as exc:
            raise ConnectionLost(f"{self.target.host}: {exc}") from exc

    def start(self, argv: Sequence[str], *, announce_pid: bool = False) -> SshProcess:
        """Start one command (argv, quoted here) on its own exec channel and return at once.

        With ``announce_pid`` the login shell first prints its PID and then execs the command, so
        ``SshProcess.pid`` is the command's PID on the node (the shell must be POSIX: sh, bash).
        """
        command = shlex.join(argv)
        if announce_pid:
            command = f"echo $$; exec {command}"
        try:
            chan = self._client.get_transport().open_session(timeout=self.target.connect_timeout)  # type: ignore[union-attr]
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, AttributeError) as exc:
            raise ConnectionLost(f"{self.target.host}: cannot start {argv[0] if argv else 'a command'}: {exc}") from exc
        return SshProcess(chan, announce_pid)

    def open_bridge(self) -> SshChannel:
        """Start ``omview-agent bridge`` on the node as one long-lived channel."""
        try:
            chan = self._client.get_transport().open_session(timeout=self.target.connect_timeout)  # type: ignore[union-attr]
            chan.exec_command(shlex.join([*shlex.split(self.target.agent_command), "bridge"]))
        except (paramiko.SSHException, OSError, AttributeError) as exc:
            raise ConnectionLost(f"{self.target.host}: cannot open the agent channel: {exc}") from exc
        return SshChannel(chan, self.target.host)

    @property
    def alive(self) -> bool:
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        self._client.close()


class SshChannel:
    """A protocol line channel over one paramiko exec channel (implements transport.Channel)."""

    def __init__(self, chan: paramiko.Channel, host: str) -> None:
        self._chan = chan
        self._host = host
        self._buf = LineBuffer()
        self._send_lock = threading.Lock()

    def send(self, data: bytes) -> None:
        with self._send_lock:
            try:
                self._chan.sendall(data)
            except (OSError, paramiko.SSHException) as exc:
                raise self._lost(f"sending failed: {exc}") from exc

    def _lost(self, what: str) -> Exception:
        err = b""
        while self._chan.recv_stderr_ready():
            err += self._chan.recv_stderr(65536)
        text = err.decode(errors="replace").strip()
        status = self._chan.exit_status if self._chan.exit_status_ready() else None
        if status == 127:
            return AgentUnavailable(f"{self._host}: omview-agent is not installed there ({text})")
        if text:
            return AgentUnavailable(f"{self._host}: agent bridge ended: {text}")
        return ConnectionLost(f"{self._host}: {what}")

    def recv_line(self, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            line = self._buf.pop_line()
            if line is not None:
                return line
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"{self._host}: no reply from the agent in time")
            self._chan.settimeout(left)
            try:
                chunk = self._chan.recv(65536)
            except TimeoutError:
                raise TimeoutError(f"{self._host}: no reply from the agent in time") from None
            except (OSError, paramiko.SSHException) as exc:
                raise self._lost(str(exc)) from exc
            if not chunk:
                # give the exit status and stderr a moment to arrive so the error can say why
                self._chan.status_event.wait(1.0)
                raise self._lost("the agent channel closed")
            self._buf.feed(chunk)

    def close(self) -> None:
        self._chan.close()


class SshProcess:
    """A command running on its own exec channel: its output as it comes, then its exit status.

    Used from one thread at a time (the job thread that started it)."""

    def __init__(self, chan: paramiko.Channel, announce_pid: bool) -> None:
        self._chan = chan
        self._head: bytearray | None = bytearray() if announce_pid else None
        self.pid: int | None = None

    def read(self, timeout: float, limit: int = 1 << 20) -> tuple[bytes, bytes]:
        """Wait up to ``timeout`` for output; return what stdout and stderr have (either may be empty)."""
        chan = self._chan
        if not (chan.recv_ready() or chan.recv_stderr_ready() or chan.closed):
            select.select([chan], [], [], timeout)
        out, err = bytearray(), bytearray()
        try:
            while len(out) + len(err) < limit and (chan.recv_ready() or chan.recv_stderr_ready()):
                if chan.recv_ready():
                    out += chan.recv(65536)
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
        except (OSError, paramiko.SSHException) as exc:
            raise ConnectionLost(f"the command's channel broke: {exc}") from exc
        if self._head is not None and (out or self.finished):
            # the first line is the PID the shell printed before exec
            self._head += out
            out = bytearray()
            if b"\n" in self._head or self.finished:
                line, _, rest = bytes(self._head).partition(b"\n")
                self._head = None
                if line.strip().isdigit():
                    self.pid = int(line)
                    out = bytearray(rest)
                else:
                    out = bytearray(line + (b"\n" if rest else b"") + rest)
        return bytes(out), bytes(err)

    @property
    def finished(self) -> bool:
        """The command ended and all its output was read."""
        chan = self._chan
        if chan.recv_ready() or chan.recv_stderr_ready():
            return False
        return bool((chan.exit_status_ready() and chan.eof_received) or chan.closed or self.lost)

    @property
    def lost(self) -> bool:
        """The SSH connection went away before the command ended."""
        transport = self._chan.get_transport()
        return not self._chan.exit_status_ready() and (transport is None or not transport.is_active())

    @property
    def exit_status(self) -> int | None:
        """Its exit status once it ended (-1 when the node gave none, e.g. the connection broke)."""
        if self._chan.exit_status_ready():
            return self._chan.recv_exit_status()
        return -1 if self._chan.closed or self.lost else None

    def close(self) -> None:
        self._chan.close()
