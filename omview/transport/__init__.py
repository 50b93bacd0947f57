"""L1 transport: byte channels to an agent (stdlib only here; paramiko lives in ssh.py).

A channel carries protocol lines both ways. ``local.UnixChannel`` reaches the agent on this
node; ``local.PipeChannel`` wraps a child process such as ``ssh node omview-agent bridge``;
``ssh.SshChannel`` (paramiko) is what the GUI uses.
"""

from __future__ import annotations

from typing import Protocol


class Channel(Protocol):
    """A bidirectional line channel to one agent."""

    def send(self, data: bytes) -> None:
        """Write bytes; raises ConnectionLost when the peer is gone."""

    def recv_line(self, timeout: float | None) -> bytes:
        """Next full line without its newline; raises TimeoutError or ConnectionLost."""

    def close(self) -> None:
        """Release the channel; safe to call twice."""
