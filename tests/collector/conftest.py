"""Shared helpers for the collector tests: a fake clock and a loop driver."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from omview.collector.daemon import Collector
from omview.collector.synthetic import SyntheticSource
from omview.collector.writer import HistoryWriter


class FakeClock:
    """Monotonic and wall time that only move when told; ``jump`` moves wall time alone."""

    def __init__(self, wall: float = 1_700_000_000.0) -> None:
        self.mono = 5000.0
        self.wall = wall

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    def jump(self, seconds: float) -> None:
        self.wall += seconds


def run_ticks(
    col: Collector, clock: FakeClock, ticks: int, each: Callable[[int], None] | None = None
) -> None:
    """Drive the real loop on the fake clock until ``ticks`` more samples were attempted."""
    col.flags.stop = False
    start = col.ticks
    attempts = 0

    def wait(seconds: float) -> None:
        nonlocal attempts
        clock.advance(seconds)
        attempts += 1
        if each is not None:
            each(attempts)
        if attempts >= ticks:
            col.flags.stop = True

    col.run(wait)
    assert col.ticks - start <= ticks + 1


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_collector(tmp_path, clock):  # type: ignore[no-untyped-def]
    made: list[Collector] = []

    def make(nodes: int = 6, *, logdir: str | None = None, interval: float = 1.0, **kw) -> Collector:  # type: ignore[no-untyped-def]
        src = kw.pop("source", None) or SyntheticSource(nodes, seed=11, churn=0)
        writer = HistoryWriter(logdir or str(tmp_path / "log"), interval=interval)
        col = Collector(src, writer, interval=interval, clock=clock, **kw)
        col.start()
        made.append(col)
        return col

    yield make
    for col in made:
        col.close()
