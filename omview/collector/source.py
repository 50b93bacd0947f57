"""L3 collector: where samples come from (the node's agent, through omview.model.client).

``Source`` is the seam the daemon loop is written against: the real ``AgentSource`` talks to
an agent; tests and the benchmark drive the same loop with ``omview.collector.synthetic``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from omview.model.channel import PipeChannel, UnixChannel
from omview.model.client import AgentClient
from omview.model.cluster import NodeInfo, ProcessInfo
from omview.model.errors import AgentFault, OmviewError, TransportError
from omview.model.hosts import check_host

log = logging.getLogger(__name__)


class SourceUnavailable(OmviewError):
    """No data this tick (agent not running, connection lost); the collector retries next tick."""


class Source(Protocol):
    """What the collector samples every interval."""

    def nodes(self) -> list[NodeInfo]:
        """Every node of the cluster table, down ones included; raises SourceUnavailable."""

    def processes(self) -> list[ProcessInfo]:
        """The collector node's processes; raises SourceUnavailable."""

    def events(self) -> list[tuple[str, Any]]:
        """Events that arrived since the last call (node.up, node.down, migration.*)."""

    def close(self) -> None:
        """Release connections; the source may be used again (it reconnects)."""


def agent_connector(node: str | None) -> Callable[[], AgentClient]:
    """How to reach the agent: None = this node's socket, "/path" = that socket, else ``ssh HOST``.

    A host is reached with ``ssh -o BatchMode=yes -- HOST omview-agent bridge`` (key-based login
    needed, as for the GUI's SSH transport); a HOST that is no host name raises HostError, so it can
    never become an ssh option.
    """
    if node is None or node.startswith("/"):
        path = node

        def local() -> AgentClient:
            return AgentClient(UnixChannel(path), client_name="openmosixcollector")

        return local
    host = check_host(node)

    def remote() -> AgentClient:
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "--", host, "omview-agent", "bridge"]
        return AgentClient(PipeChannel(argv), client_name="openmosixcollector")

    return remote


class AgentSource:
    """Samples one agent over one connection; reconnects after a failure."""

    def __init__(self, connect: Callable[[], AgentClient], *, event_wait: float = 0.002) -> None:
        self._connect = connect
        self._client: AgentClient | None = None
        self._event_wait = event_wait

    def _ensure(self) -> AgentClient:
        if self._client is None:
            try:
                client = self._connect()
            except (OmviewError, OSError) as exc:
                raise SourceUnavailable(str(exc)) from exc
            try:
                client.call("events.subscribe")
            except AgentFault as exc:
                # an agent without events still gives the samples; migration events are then missing
                log.warning("the agent refused events.subscribe (%s); recording samples without events", exc)
            except (TransportError, TimeoutError) as exc:
                client.close()
                raise SourceUnavailable(f"agent connection failed: {exc}") from exc
            self._client = client
        return self._client

    def _call(self, fn: Callable[[AgentClient], Any]) -> Any:
        client = self._ensure()
        try:
            return fn(client)
        except (TransportError, TimeoutError, OSError) as exc:
            self.close()
            raise SourceUnavailable(f"lost the agent: {exc}") from exc
        except AgentFault as exc:
            raise SourceUnavailable(f"the agent refused: {exc}") from exc

    def nodes(self) -> list[NodeInfo]:
        result: list[NodeInfo] = self._call(lambda c: c.nodes())
        return result

    def processes(self) -> list[ProcessInfo]:
        result: list[ProcessInfo] = self._call(lambda c: c.processes())
        return result

    def events(self) -> list[tuple[str, Any]]:
        if self._client is None:
            return []
        out: list[tuple[str, Any]] = []
        try:
            while len(out) < 10000:
                out.append(self._client.next_event(self._event_wait))
        except TimeoutError:
            pass
        except (TransportError, OSError, ValueError) as exc:
            log.warning("lost the agent while reading events: %s", exc)
            self.close()
        return out

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
