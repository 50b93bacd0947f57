"""Shared pytest fixtures: local netns clusters (root only) and a check that none is left behind."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from omview.testbed import Cluster, leftovers, teardown

#: Every cluster state dir made in this session, so the final check knows which names are ours.
_STATE_DIRS: list[Path] = []


def require_root() -> None:
    """Fail (never skip) a cluster test that cannot run: CI runs as root, so this must be visible."""
    if os.geteuid() != 0:
        pytest.fail(
            "this test needs root (network namespaces, veth, bridge, sshd); run the suite as root, "
            "e.g. `sudo scripts/test.sh` - CI runs as root",
            pytrace=False,
        )


def _check_clean(state_dirs: list[Path]) -> list[str]:
    left: list[str] = []
    for st in state_dirs:
        left += leftovers(st)
    return left


ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def make_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    """make_cluster(nodes=3, **Cluster.up kwargs) -> Cluster; every cluster is torn down afterwards.

    Nodes run agents unless agent=False is passed (sshd-only nodes).
    """
    made: list[Path] = []

    def factory(nodes: int = 3, **kw: Any) -> Cluster:
        require_root()
        state = tmp_path_factory.mktemp("cluster")
        made.append(state)
        _STATE_DIRS.append(state)
        return Cluster.up(state, nodes, **kw)

    yield factory
    errors = []
    for state in made:
        try:
            teardown(state)
        except Exception as e:  # keep tearing down the others
            errors.append(f"{state}: {e}")
    left = _check_clean(made)
    assert not errors and not left, f"cluster teardown failed: {errors} left behind: {left}"


@pytest.fixture(scope="session")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A shared 3-node cluster with agents, for read-mostly tests; do not break it."""
    require_root()
    state = tmp_path_factory.mktemp("cluster3")
    _STATE_DIRS.append(state)
    try:
        cluster = Cluster.up(state, 3)
        yield cluster
    finally:
        teardown(state)


@pytest.fixture(scope="session", autouse=True)
def _no_cluster_left_behind() -> Iterator[None]:
    """After the whole session: no netns, veth or bridge of any cluster made here may remain."""
    yield
    left = _check_clean(_STATE_DIRS)
    if left:
        for st in _STATE_DIRS:
            teardown(st)
        pytest.fail(f"clusters left behind after the test session (now removed): {left}", pytrace=False)
