"""L0 model: the one exception tree of omview (stdlib only).

    OmviewError                      base of everything omview raises on purpose
    ├── ConfigError                  a config or map file is wrong (names file, line, reason)
    ├── TransportError               the way to a node failed (socket, SSH)
    │   ├── HostKeyError             unknown or changed SSH host key (carries the fingerprint)
    │   ├── AuthenticationError      the node refused our credentials
    │   └── ConnectionLost           an open channel broke mid-request
    ├── AgentUnavailable             no agent answers on this node (not running, no socket)
    └── AgentFault                   the agent answered with a FaultCode (see protocol.FaultCode)

AgentFault carries the stable numeric code that crossed the wire, so callers branch on codes,
never on message text.
"""

from __future__ import annotations


class OmviewError(Exception):
    """Base class for every error omview raises deliberately."""


class ConfigError(OmviewError):
    """A configuration or map file is invalid; says where and why."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")
        self.reason = message


class TransportError(OmviewError):
    """The connection to a node could not be made or used."""


class HostKeyError(TransportError):
    """The node's SSH host key is unknown or differs from known_hosts."""

    def __init__(self, message: str, *, host: str, fingerprint: str, known: bool) -> None:
        super().__init__(message)
        self.host = host
        self.fingerprint = fingerprint
        #: True when known_hosts has a *different* key for the host (possible attack).
        self.known = known


class AuthenticationError(TransportError):
    """The node refused our key or agent identities."""


class ConnectionLost(TransportError):
    """A channel that was open broke before the reply arrived."""


class AgentUnavailable(OmviewError):
    """No omview agent answers (not running, socket missing, bridge failed)."""


class AgentFault(OmviewError):
    """The agent refused or failed a request; ``code`` is a protocol.FaultCode value."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:  # keeps the code visible in logs and CLI output
        from omview.model.protocol import fault_name

        return f"{self.message} [{fault_name(self.code)}]"
