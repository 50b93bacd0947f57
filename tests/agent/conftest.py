"""Fixtures for agent tests: real agent processes, always stopped by PID in teardown."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.agents import Cluster, make_base


@pytest.fixture
def cluster_factory() -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(size: int = 3, **overrides: Any) -> Cluster:
        c = Cluster(make_base(), size, **overrides)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
        shutil.rmtree(c.base, ignore_errors=True)


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[Cluster]:
    """A 3-node cluster shared by read-mostly tests of one module."""
    c = Cluster(make_base(), 3)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(c.base, ignore_errors=True)
