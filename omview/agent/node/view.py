"""L2 agent: NodeView, this node's live state as the balancer and the job operations read it.

core.Agent is one (it owns the state and changes it on the loop); the rooms below it read through
this protocol instead of holding the whole agent, so they never import core.
"""

from __future__ import annotations

from typing import Protocol

from omview.agent.node.sampler import Sample
from omview.model.cluster import Flags, NodeInfo


class NodeView(Protocol):
    """Read-only and always current: every attribute is read afresh at each use."""

    @property
    def node_id(self) -> int:
        """This node's ID (a map change may change it)."""
        ...

    @property
    def flags(self) -> Flags:
        """The admin switches (block, stay, quiet, lstay, decay) in force."""
        ...

    @property
    def sample(self) -> Sample | None:
        """The last measurement (None before the first)."""
        ...

    @property
    def nodes_snapshot(self) -> dict[int, NodeInfo]:
        """The cluster table of the last tick, self included; no round trip to the loop."""
        ...

    def fresh_nodes(self) -> dict[int, NodeInfo]:
        """The cluster table right now, from any thread."""
        ...
