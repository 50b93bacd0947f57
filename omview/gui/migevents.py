"""L4 GUI layer: a running migration's events (docs/agent.md, "Migration events") from the node it
leaves, for any window that shows migrations (the process box's migrator; migmon may use it too).

``watch_migration`` is a STREAM-lane task of omview/gui/links.py: on a bridge channel of its own over
the node's one connection it subscribes to the ``migration`` events, says ``subscribed`` (so the
caller can start the migration knowing no phase is missed), then hands each event of the watched
migration to ``deliver`` as a frozen ``MigrationEvent`` until that migration ends, ``stop`` is set or
``timeout`` passes. ``describe`` words an event for a status line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from omview.gui.links import EXPECTED, LaneContext
from omview.model.client import AgentClient

#: what the stream itself says (not agent events): it listens now / it could not or no longer can
SUBSCRIBED = "subscribed"
LOST = "lost"
ENDED = ("migration.done", "migration.failed")


@dataclass(frozen=True)
class MigrationEvent:
    """One event: the agent's name and data (read-only), or SUBSCRIBED / LOST with {"error": ...}."""

    name: str
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def phase(self) -> str:
        """checking, dumping, copying, restoring, post-copy; started/done/failed for the others."""
        if self.name == "migration.phase":
            return str(self.data.get("phase", "?"))
        return self.name.rsplit(".", 1)[-1]


def describe(ev: MigrationEvent) -> str:
    """A status line: "copying 3.1 of 8.0 MB (0.9 s)", "dumping (0.2 s)", "done: frozen 120 ms, ..."."""
    d = ev.data
    took = f" ({float(d.get('elapsed_s', 0)):.1f} s)"
    if ev.name == "migration.phase":
        if d.get("phase") == "copying":
            return (f"copying {int(d.get('bytes', 0)) / 1e6:.1f} of {int(d.get('total_bytes', 0)) / 1e6:.1f} MB"
                    + took)  # fmt: skip
        return f"{d.get('phase', '?')}{took}"
    if ev.name == "migration.started":
        return f"started ({d.get('method', '?')}, to node {d.get('target', '?')})"
    if ev.name == "migration.done":
        return (f"done: frozen {1000 * float(d.get('frozen_s', 0)):.0f} ms, total "
                f"{1000 * float(d.get('total_s', 0)):.0f} ms, {int(d.get('bytes', 0)) / 1e6:.1f} MB moved")  # fmt: skip
    if ev.name == "migration.failed":
        return f"{d.get('result', 'failed')}: {d.get('error', '')}"
    return f"{ev.name}: {d.get('error', '')}" if ev.name == LOST else ev.name


def watch_migration(match: Callable[[Mapping[str, Any]], bool], deliver: Callable[[Any], bool],
                    stop: threading.Event, *, timeout: float = 600.0,
                    ) -> Callable[[LaneContext], Iterator[float | None]]:  # fmt: skip
    """The STREAM-lane task: the events of the migration MATCH picks (by job or PID), to DELIVER."""

    def run(ctx: LaneContext) -> Iterator[float | None]:
        client: AgentClient | None = None
        try:
            channel = ctx.node.connect(True, open_channel=True)
            assert channel is not None
            client = AgentClient(channel, client_name="openmosixprocs-events", timeout=ctx.node.call_timeout)
            client.call("events.subscribe", topics=["migration"])
        except EXPECTED as exc:
            deliver(MigrationEvent(LOST, MappingProxyType({"error": str(exc)})))
            if client is not None:
                client.close()
            return
        deliver(MigrationEvent(SUBSCRIBED))
        mine: str | None = None  # the watched migration's id, once its first event came
        deadline = time.monotonic() + timeout
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    name, data = client.next_event(0.02)  # short: the lane steps other streams too
                except TimeoutError:
                    yield 0.1
                    continue
                if not isinstance(data, dict) or not (data.get("id") == mine or (mine is None and match(data))):
                    yield None
                    continue
                mine = data.get("id")
                if not deliver(MigrationEvent(name, MappingProxyType(dict(data)))):
                    return  # the window is gone
                if name in ENDED:
                    if name == "migration.failed" and data.get("result") == "fell back":
                        mine = None  # the image copy that follows is a migration of its own
                        yield None
                        continue
                    return
                yield None
        except EXPECTED as exc:
            deliver(MigrationEvent(LOST, MappingProxyType({"error": str(exc)})))
        finally:
            client.close()

    return run
