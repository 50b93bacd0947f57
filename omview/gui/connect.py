"""L4 GUI support (no Qt): connectors, the one seam between the GUI session and a node's agent.

A connector says how a node address is reached. ``SshConnector`` is what openmosixview uses
(omview.gui.links keeps one SSH connection per node from it and opens ``omview-agent bridge``
channels on it); ``UnixConnector`` reaches agents on their Unix sockets (tests, single host).
Connectors are called only from links.py's lane threads, never from the GUI thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from omview.model.channel import Channel, UnixChannel
from omview.model.errors import AgentUnavailable
from omview.transport.ssh import (
    DEFAULT_AGENT_COMMAND,
    SshChannel,
    SshConnection,
    SshTarget,
    accept_host_key,
    fetch_host_key,
)


class Connector(Protocol):
    """Opens a channel to the agent of one node."""

    def open(self, address: str) -> Channel:
        """Open a fresh channel; raises TransportError subclasses or AgentUnavailable."""

    def describe(self, address: str) -> str:
        """How ``address`` is reached, for messages ("root@10.77.0.12:22 over SSH")."""


@dataclass(frozen=True)
class HostKeyOffer:
    """A host key a node presented, shown to the admin before it may be accepted."""

    address: str
    key_type: str
    fingerprint: str
    #: the transport's key object, handed back unchanged to ``accept_host_key``
    key: object = field(compare=False, repr=False)


@runtime_checkable
class HostKeyConnector(Protocol):
    """A connector whose nodes authenticate with host keys (SSH)."""

    def fetch_host_key(self, address: str) -> HostKeyOffer:
        """Read the node's key without logging in."""

    def accept_host_key(self, offer: HostKeyOffer) -> None:
        """Add the key to known_hosts (only on an explicit admin decision)."""


class UnixConnector:
    """Agents on Unix sockets: ``sockets`` maps a node address to its socket path."""

    def __init__(self, sockets: Mapping[str, str] | Callable[[str], str], *, connect_timeout: float = 5.0) -> None:
        self._sockets = sockets
        self._connect_timeout = connect_timeout

    def _path(self, address: str) -> str:
        if callable(self._sockets):
            return self._sockets(address)
        try:
            return self._sockets[address]
        except KeyError:
            raise AgentUnavailable(
                f"no agent socket is configured for {address}; this connector only knows "
                f"{', '.join(sorted(self._sockets)) or 'no nodes'}"
            ) from None

    def socket_path(self, address: str) -> str:
        """The agent socket of ``address`` (raises AgentUnavailable when none is configured)."""
        return self._path(address)

    def open(self, address: str) -> Channel:
        return UnixChannel(self._path(address), connect_timeout=self._connect_timeout)

    def describe(self, address: str) -> str:
        try:
            return f"agent socket {self._path(address)}"
        except AgentUnavailable:
            return "no agent socket configured"


@dataclass(frozen=True)
class SshSettings:
    """How openmosixview logs in to nodes (command line, settings file, or the demo cluster)."""

    user: str | None = None  # None: the ssh config's User, else root
    identity_files: tuple[str, ...] = ()
    known_hosts: str | None = None  # None: the ssh config's UserKnownHostsFile, else ~/.ssh/known_hosts
    ssh_config: str | None = None  # None: ~/.ssh/config when it exists
    agent_command: str = DEFAULT_AGENT_COMMAND
    connect_timeout: float = 5.0
    allow_agent: bool = True  # ssh-agent identities


class _BridgeChannel:
    """An agent bridge channel that owns its SSH connection (closing one closes both)."""

    def __init__(self, connection: SshConnection, channel: SshChannel) -> None:
        self._connection = connection
        self._channel = channel

    def send(self, data: bytes) -> None:
        self._channel.send(data)

    def recv_line(self, timeout: float | None) -> bytes:
        return self._channel.recv_line(timeout)

    def close(self) -> None:
        try:
            self._channel.close()
        finally:
            self._connection.close()


class SshConnector:
    """One SSH connection and one long-lived ``omview-agent bridge`` channel per node."""

    def __init__(self, settings: SshSettings) -> None:
        self.settings = settings

    def target(self, address: str) -> SshTarget:
        """The login target for ``address``; ~/.ssh/config (or settings.ssh_config) is honoured,
        and explicit settings override it only where they were given."""
        s = self.settings
        overrides: dict[str, object] = {"agent_command": s.agent_command, "connect_timeout": s.connect_timeout}
        if s.known_hosts:
            overrides["known_hosts"] = os.path.expanduser(s.known_hosts)
        if s.identity_files:
            overrides["identity_files"] = s.identity_files
        if not s.allow_agent:
            overrides["allow_agent"] = False
        if s.user:
            overrides["user"] = s.user
        return SshTarget.from_ssh_config(address, s.ssh_config, **overrides)

    def connect(self, address: str) -> SshConnection:
        """Log in to ``address`` (host key checked against known_hosts)."""
        return SshConnection(self.target(address))

    def open(self, address: str) -> Channel:
        """A bridge channel with its own connection (for tools; the GUI's links share one)."""
        connection = self.connect(address)
        try:
            channel = connection.open_bridge()
        except BaseException:
            connection.close()
            raise
        return _BridgeChannel(connection, channel)

    def describe(self, address: str) -> str:
        t = self.target(address)
        return f"{t.user}@{t.address}:{t.port} over SSH (known_hosts {t.known_hosts})"

    def fetch_host_key(self, address: str) -> HostKeyOffer:
        key = fetch_host_key(self.target(address))
        return HostKeyOffer(address, key.get_name(), key.fingerprint, key)

    def accept_host_key(self, offer: HostKeyOffer) -> None:
        accept_host_key(self.target(offer.address), offer.key)  # type: ignore[arg-type]
