"""L4 GUI layer: one node's process list as a POLL-lane task (``procs.list`` through the node's links),
shared by the process box and the migration monitor; the answer crosses threads as a frozen ProcList.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omview.gui.links import LaneContext
from omview.model.cluster import ProcessInfo


@dataclass(frozen=True)
class ProcList:
    """One procs.list answer: the node that gave it and its processes."""

    node: int
    procs: tuple[ProcessInfo, ...]


def list_procs(helpers: bool = False) -> Callable[[LaneContext], ProcList]:
    """A POLL-lane task: the node's processes (a mosrun job is one row unless ``helpers``)."""

    def run(ctx: LaneContext) -> ProcList:
        client = ctx.client()
        return ProcList(client.node_id, tuple(client.processes(helpers=helpers)))

    return run
