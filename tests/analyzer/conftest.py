"""Analyzer test fixtures: histories written by the collector's own loop and writer.

The collector is driven on a fake clock (tests/collector/conftest.py) and fed by the synthetic
cluster, so a history of a few thousand samples is written in well under a second.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports PySide6

from collections.abc import Callable
from pathlib import Path

import pytest

from omview.collector.daemon import Collector
from omview.collector.synthetic import SyntheticSource
from omview.collector.writer import HistoryWriter
from tests.collector.conftest import FakeClock, run_ticks

START = 1_780_000_000.0

HistoryFactory = Callable[..., Path]


def write_history(
    logdir: Path,
    *,
    nodes: int = 5,
    ticks: int = 240,
    checkpoints: tuple[tuple[int, str], ...] = ((60, "before"), (180, "after")),
    rotate: bool = False,
    seed: int = 11,
    start: float = START,
    each: Callable[[SyntheticSource, int], None] | None = None,
    clock_jump: tuple[int, float] | None = None,
) -> Path:
    """Write a history with the real collector; returns the live directory.

    ``checkpoints``: (attempt number, label) pairs written while recording; ``each(source,
    attempt)`` may change the synthetic cluster as it goes. With ``rotate`` the history is moved
    to a dated backup at the end (and compressed, as the daemon does).
    """
    clock = FakeClock(start)
    src = SyntheticSource(nodes, seed=seed, churn=0, busy=0.6)
    writer = HistoryWriter(str(logdir), interval=1.0)
    col = Collector(src, writer, interval=1.0, clock=clock)
    col.start()
    marks = dict(checkpoints)

    def step(attempt: int) -> None:
        if attempt in marks:
            col.checkpoint(marks[attempt])
        if each is not None:
            each(src, attempt)
        if clock_jump is not None and attempt == clock_jump[0]:
            clock.jump(clock_jump[1])  # the wall clock alone: the collector records a CLOCK record

    try:
        run_ticks(col, clock, ticks, step)
        if rotate:
            from omview.collector.writer import compress_history

            backup = col.writer.rotate(clock.time())
            compress_history(backup)
    finally:
        col.close()
    return logdir


@pytest.fixture
def make_history(tmp_path: Path) -> HistoryFactory:
    def make(name: str = "log", **kw: object) -> Path:
        return write_history(tmp_path / name, **kw)  # type: ignore[arg-type]

    return make
