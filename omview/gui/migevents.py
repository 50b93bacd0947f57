"""L4 GUI layer: a running migration's events (docs/agent.md, "Migration events") from the node it
leaves, for any window that shows migrations (the process box's migrator; migmon may use it too).

``watch_migration`` is a STREAM-lane task of omview/gui/links.py built on the node's event stream
(omview/gui/events.py): it subscribes to the ``migration`` events, says ``subscribed`` (so the
caller can start the migration knowing no phase is missed), then hands each event of the watched
migration to ``deliver`` as a frozen ``MigrationEvent`` until that migration ends, ``stop`` is set or
``timeout`` passes; a broken stream is reported once as ``lost`` and ends the watch. ``describe`` words an event for a status line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from omview.gui.events import EventBatch, event_stream
from omview.gui.links import LaneContext

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
    """The STREAM-lane task: the events of the migration MATCH picks (by job or PID), to DELIVER; the
    node's event stream (omview/gui/events.py) filtered to that one migration, ended with it."""
    deadline = time.monotonic() + timeout
    mine: str | None = None  # the watched migration's id, once its first event came

    def on_batch(batch: EventBatch | None) -> bool:
        nonlocal mine
        if batch is None:  # asked between steps: go on until the deadline
            return time.monotonic() < deadline
        if batch.error is not None:  # no retry: the caller reports a lost watch and ends it
            stop.set()
            return deliver(MigrationEvent(LOST, MappingProxyType({"error": batch.error.describe()})))
        if batch.subscribed and not deliver(MigrationEvent(SUBSCRIBED)):
            return False
        for name, data in batch.events:
            if not isinstance(data, dict) or not (data.get("id") == mine or (mine is None and match(data))):
                continue
            mine = data.get("id")
            if not deliver(MigrationEvent(name, MappingProxyType(dict(data)))):
                return False  # the window is gone
            if name in ENDED:
                if name == "migration.failed" and data.get("result") == "fell back":
                    mine = None  # the image copy that follows is a migration of its own
                    continue
                stop.set()
                return True
        return True

    return event_stream(["migration"], on_batch, stop, urgent=True)
