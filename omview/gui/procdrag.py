"""L4 GUI layer: a process dragged onto a node - the mime type the process box writes and every node
list (the migrator's, the main window's node table) reads, and the migration request a drop sends.

The drag carries where the process lives (node ID and the address the dragging window reaches it
at) and its PIDs, so a window that never listed processes can migrate it through its own links.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QMimeData

from omview.gui.links import LaneContext
from omview.model.errors import AgentFault

MIME_TYPE = "application/x-omview-processes"


@dataclass(frozen=True)
class DraggedProcs:
    """Processes of one node, dragged."""

    node: int
    address: str
    pids: tuple[int, ...]


def to_mime(drag: DraggedProcs) -> QMimeData:
    mime = QMimeData()
    mime.setData(MIME_TYPE, json.dumps({"node": drag.node, "address": drag.address, "pids": list(drag.pids)}).encode())
    mime.setText(" ".join(map(str, drag.pids)))  # a drop into a terminal or editor gives the PIDs
    return mime


def from_mime(mime: QMimeData) -> DraggedProcs | None:
    """The dragged processes, or None when the data is not ours (or not well formed)."""
    if not mime.hasFormat(MIME_TYPE):
        return None
    try:
        data = json.loads(bytes(mime.data(MIME_TYPE).data()).decode())
        return DraggedProcs(int(data["node"]), str(data["address"]), tuple(int(p) for p in data["pids"]))
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class MigrationResult:
    """One process's migration: the agent's record, or the error that stopped it."""

    pid: int
    target: str
    record: dict[str, Any] | None = None
    error: str = ""

    def text(self) -> str:
        if self.error:
            return f"process {self.pid} not migrated to {self.target}: {self.error}"
        r = self.record or {}
        return (f"process {self.pid} migrated to node {r.get('target', self.target)}: frozen "
                f"{1000 * float(r.get('frozen_s', 0)):.0f} ms, total {1000 * float(r.get('total_s', 0)):.0f} ms, "
                f"{int(r.get('bytes', 0)) / 1e6:.1f} MB moved")  # fmt: skip


def migrate_task(pids: Sequence[int], target: str) -> Callable[[LaneContext], tuple[MigrationResult, ...]]:
    """An ACTION-lane task: migrate each PID to TARGET (a node ID, "home" or "best"), one by one;
    a refusal of one (ended, locked, blocked target, permission) is its result, not an exception."""

    def run(ctx: LaneContext) -> tuple[MigrationResult, ...]:
        client = ctx.client(urgent=True)
        out = []
        for pid in pids:
            try:
                out.append(MigrationResult(pid, target, dict(client.call("proc.migrate", pid=pid, target=target,
                                                                         timeout=300))))  # fmt: skip
            except AgentFault as exc:
                out.append(MigrationResult(pid, target, error=str(exc)))
        return tuple(out)

    return run
