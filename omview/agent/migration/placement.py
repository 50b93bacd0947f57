"""L2 agent: where a process runs fastest (expected_rate, best_node) and whether a node may receive
one (check_target) - used by the source side, the balancer and the job operations.
"""

from __future__ import annotations

from omview.agent.migration.common import MigrationError
from omview.model.cluster import STD_SPEED, NodeInfo
from omview.model.protocol import FaultCode


def expected_rate(node: NodeInfo, *, here: bool) -> float:
    """Speed one more CPU-bound process would get on NODE (documented in docs/migration.md).

    demand x = load * speed / (100 * STD_SPEED) runnable processes; a newcomer gets
    speed * min(1, cpus / (x + 1)). On the node it already runs on it is part of x already.
    """
    speed = max(1, node.speed)
    x = max(0.0, node.load * speed / (100.0 * STD_SPEED))
    share = node.cpus / x if here else node.cpus / (x + 1.0)
    return speed * min(1.0, share) if share > 0 else float(speed)


def best_node(nodes: dict[int, NodeInfo], current: int, *, rss: int = 0,
              allowed: set[int] | None = None, margin: float = 1.0) -> int:  # fmt: skip
    """The node where a process now on CURRENT is expected to run fastest; CURRENT on ties.

    Candidates are up, not blocked and have at least RSS bytes of free memory. A different node
    must beat CURRENT by MARGIN (the balancer uses 1.3, the MOSIX stab factor).
    """
    here = nodes.get(current)
    best, best_rate = current, (expected_rate(here, here=True) * margin if here else -1.0)
    for nid in sorted(nodes):
        n = nodes[nid]
        if nid == current or not n.up or n.block or (allowed is not None and nid not in allowed):
            continue
        if rss and n.mem and n.mem < rss:
            continue
        rate = expected_rate(n, here=False)
        if rate > best_rate + 1e-9:
            best, best_rate = nid, rate
    return best


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
