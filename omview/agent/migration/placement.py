"""L2 agent: where a process runs fastest (expected_rate, best_node) and whether a node may receive
one (check_target) - used by the source side, the balancer and the job operations. The rates and
the memory rule are the balancer's (decide.py), so `migrate best`, expel and the balancer agree.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from omview.agent.migration import decide
from omview.agent.migration.common import MigrationError
from omview.model.cluster import NodeInfo
from omview.model.protocol import FaultCode


def as_node(info: NodeInfo) -> decide.Node:
    """A cluster-table row as the decision code sees it (runnable processes behind its load)."""
    return decide.Node(
        id=info.id, speed=max(1, info.speed), cpus=max(1, info.cpus),
        runnable=decide.Node.runnable_from_load(info.load, info.speed), free=info.mem, total=info.tmem,
        up=info.up, block=info.block, quiet=info.quiet,
    )  # fmt: skip


def expected_rate(node: NodeInfo, *, here: bool) -> float:
    """Speed one more CPU-bound process would get on NODE (documented in docs/migration.md).

    demand x = load * speed / (100 * STD_SPEED) runnable processes; a newcomer gets
    speed * min(1, cpus / (x + 1)). On the node it already runs on it is part of x already.
    """
    return decide.rate(as_node(node), extra=0.0 if here else 1.0)


def best_node(nodes: dict[int, NodeInfo], current: int, *, rss: int = 0,
              allowed: set[int] | None = None, margin: float = 1.0) -> int:  # fmt: skip
    """The node where a process now on CURRENT is expected to run fastest; CURRENT on ties.

    Candidates are up, not blocked, not quiet and have room for RSS bytes (decide.has_room: free
    memory minus RSS stays above the node's low mark). A different node must beat CURRENT by MARGIN.
    """
    here = nodes.get(current)
    others = [as_node(n) for nid, n in nodes.items() if nid != current and (allowed is None or nid in allowed)]
    got = decide.best_rate(others, rss)
    if got is None:
        return current
    mine = expected_rate(here, here=True) * margin if here is not None else -1.0
    return got[0].id if got[1] > mine + 1e-9 else current


def tree_rss(pids: Iterable[int]) -> int:
    """Resident bytes of the processes among PIDS (thread IDs in it are skipped: they share the memory)."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in set(pids):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
                tgid = next((int(line.split()[1]) for line in fh if line.startswith("Tgid:")), 0)
            if tgid != pid:
                continue
            with open(f"/proc/{pid}/statm", encoding="ascii") as fh:
                total += int(fh.read().split()[1]) * page
    return total


def check_target(nodes: dict[int, NodeInfo], target: int) -> NodeInfo:
    """The target's row, if it is a known node that is up and accepts arrivals; else MigrationError."""
    info = nodes.get(target)
    if info is None:
        known = ", ".join(str(n) for n in sorted(nodes)) or "none"
        raise MigrationError(FaultCode.NO_SUCH_NODE, f"no node {target} in this cluster (known: {known})")
    if not info.up:
        raise MigrationError(FaultCode.NODE_DOWN, f"node {target} is down")
    if info.block:
        raise MigrationError(FaultCode.BLOCKED, f"node {target} blocks arriving processes")
    return info
