"""L0 model: the protocol client, a typed blocking API over one agent channel (stdlib only).

``AgentClient`` does the hello handshake, numbers requests, matches replies by id, turns
``error`` replies into AgentFault and queues events that arrive between replies. One thread
uses a client at a time (the GUI gives each node its own worker thread).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import deque
from typing import Any

from omview import __version__
from omview.model import protocol
from omview.model.channel import Channel, UnixChannel
from omview.model.cluster import Flags, NodeInfo, ProcessInfo, procs_from_table
from omview.model.errors import AgentFault, ConnectionLost, OmviewError

DEFAULT_TIMEOUT = 10.0


class AgentClient:
    """Speaks the agent protocol over a Channel."""

    def __init__(self, channel: Channel, *, client_name: str = "omview", timeout: float = DEFAULT_TIMEOUT) -> None:
        self.channel = channel
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._events: deque[tuple[str, Any]] = deque(maxlen=10000)
        self._lock = threading.Lock()
        try:
            self.hello: dict[str, Any] = self.call(
                "hello", protocol=protocol.PROTOCOL_VERSION, client=f"{client_name} {__version__}"
            )
        except BaseException:
            channel.close()
            raise
        # procs.list in its compact form where the agent says it has it (an older agent: rows as dicts)
        self._tables = protocol.FEATURE_PROCS_TABLE in self.hello.get("features", ())

    @classmethod
    def local(cls, path: str | None = None, *, client_name: str = "omview", timeout: float = DEFAULT_TIMEOUT) -> AgentClient:
        """Connect to the agent on this node through its Unix socket."""
        return cls(UnixChannel(path), client_name=client_name, timeout=timeout)

    @property
    def node_id(self) -> int:
        return int(self.hello["node"])

    def call(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        """Send one request and return its result; raises AgentFault or TransportError."""
        with self._lock:
            req_id = next(self._ids)
            try:
                self.channel.send(protocol.request(req_id, op, args))
            except ConnectionLost:
                # the agent may have refused the connection (BUSY) and closed it before we sent: its
                # reason is still waiting to be read, and says more than "broken pipe"
                refusal = self._refusal()
                if refusal is not None:
                    raise refusal from None
                raise
            wait = self.timeout if timeout is None else timeout
            while True:
                line = self.channel.recv_line(wait)
                try:
                    msg = protocol.parse_reply(line)
                except (ValueError, json.JSONDecodeError) as exc:
                    raise ConnectionLost(f"garbage from the agent: {line[:120]!r}") from exc
                if "event" in msg:
                    self._events.append((str(msg["event"]), msg.get("data")))
                    continue
                if msg.get("id") is None and "error" in msg:
                    raise _fault(msg)  # about the whole connection (BUSY, TIMEOUT): it ends here
                if msg.get("id") != req_id:
                    # a reply to a request whose caller timed out earlier; drop it
                    continue
                if "error" in msg:
                    raise _fault(msg)
                return msg.get("result")

    def _refusal(self) -> AgentFault | None:
        """The fault line a closing agent left for us, if any (read briefly, never raises)."""
        try:
            msg = protocol.parse_reply(self.channel.recv_line(1.0))
        except (OmviewError, TimeoutError, OSError, ValueError):
            return None
        return _fault(msg) if "error" in msg else None

    def next_event(self, timeout: float | None) -> tuple[str, Any]:
        """The next event after events.subscribe; raises TimeoutError when none arrives."""
        with self._lock:
            if self._events:
                return self._events.popleft()
            while True:
                line = self.channel.recv_line(timeout)
                msg = protocol.parse_reply(line)
                if "event" in msg:
                    return str(msg["event"]), msg.get("data")

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Typed helpers for the common operations -----------------------------------------

    def node_info(self) -> NodeInfo:
        return NodeInfo.from_dict(self.call("node.info"))

    def nodes(self) -> list[NodeInfo]:
        return [NodeInfo.from_dict(d) for d in self.call("cluster.nodes")]

    def flags(self) -> Flags:
        return Flags.from_dict(self.call("flags.get"))

    def set_flags(self, **changes: Any) -> Flags:
        return Flags.from_dict(self.call("flags.set", **changes))

    def processes(self, pid: int | None = None, *, helpers: bool = False) -> list[ProcessInfo]:
        """This node's processes, a mosrun job as one row (its plumbing too with ``helpers``)."""
        args: dict[str, Any] = {} if pid is None else {"pid": pid}
        if helpers:
            args["helpers"] = True
        if self._tables:
            return procs_from_table(self.call("procs.list", table=True, **args))
        return [ProcessInfo.from_dict(d) for d in self.call("procs.list", **args)]


def _fault(msg: dict[str, Any]) -> AgentFault:
    err = msg["error"] if isinstance(msg.get("error"), dict) else {}
    return AgentFault(int(err.get("code", protocol.FaultCode.INTERNAL)), str(err.get("message", "")))


__all__ = ["AgentClient", "OmviewError"]
