"""Shared helpers for the collector tests: a fake clock, a loop driver, the real CLI, a free port."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from omview.collector.daemon import Collector
from omview.collector.synthetic import SyntheticSource
from omview.collector.writer import HistoryWriter

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real ``openmosixcollector`` (as ``python -m omview.collector``) and capture its output."""
    return subprocess.run([sys.executable, "-m", "omview.collector", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env, check=False)  # fmt: skip


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
