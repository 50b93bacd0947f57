"""Test tooling: a local multi-node omview cluster built from network namespaces (root only).

See docs/cluster.md. The CLI is `omview-cluster`; tests, benchmarks and the demo use Cluster.
"""

from __future__ import annotations

from omview.testbed.api import DEFAULT_STATE_DIR, Cluster, ClusterError, Names, Node, leftovers, teardown

__all__ = ["DEFAULT_STATE_DIR", "Cluster", "ClusterError", "Names", "Node", "leftovers", "teardown"]
