"""omview.gui.links, the one way off the GUI thread: lanes, skipping, results, shutdown.

Against a real agent on loopback (its Unix socket, so commands run as local subprocesses)."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QObject, QThread, Signal

from omview.gui.connect import UnixConnector
from omview.gui.links import Lane, LaneContext, Links, LinkStatus, TaskDone, deliverer
from omview.model.channel import Channel
from omview.model.cluster import NodeInfo
from tests.gui.real_agents import RealAgents


@pytest.fixture(scope="module")
def agent() -> Iterator[RealAgents]:
    d = Path(tempfile.mkdtemp(prefix="omvlk-", dir="/tmp"))
    real = RealAgents(d, 1)
    try:
        yield real.start()
    finally:
        real.stop()
        shutil.rmtree(d, ignore_errors=True)


class Sink(QObject):
    """Where lane threads deliver: a queued signal into the GUI thread, as the controls do."""

    got = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[TaskDone, bool]] = []  # (result, arrived in the GUI thread)
        self.got.connect(lambda item: self.items.append((item, QThread.currentThread() is self.thread())))

    def of(self, kind: str) -> list[TaskDone]:
        return [d for d, _ in self.items if d.kind == kind]


def info(ctx: LaneContext) -> NodeInfo:
    return ctx.client().node_info()


def test_a_long_action_never_delays_the_nodes_poll(qtbot: Any, agent: RealAgents) -> None:
    node = agent.addresses[0]
    links = Links(UnixConnector({node: agent.socket_of(node)}), call_timeout=5.0)
    sink = Sink()
    deliver = deliverer(sink, "got")
    try:
        # a 3 s command on the node (a real subprocess, as a collector command or an agent start)
        started = time.monotonic()
        links.submit(node, Lane.ACTION, "slow", lambda ctx: ctx.runner().run(["sleep", "3"], 10.0), deliver,
                     urgent=True)  # fmt: skip
        for tick in range(1, 4):  # three poll ticks while it runs, each answered at once
            links.poll(node, "info", info, deliver)
            qtbot.waitUntil(lambda n=tick: len(sink.of("info")) == n, timeout=2000)
        assert time.monotonic() - started < 2.5 and not sink.of("slow")
        polls = sink.of("info")
        assert all(d.error is None and isinstance(d.value, NodeInfo) and d.elapsed < 1.0 for d in polls), polls
        qtbot.waitUntil(lambda: bool(sink.of("slow")), timeout=10000)
        (slow,) = sink.of("slow")
        assert slow.error is None and slow.value[0] == 0 and slow.elapsed >= 3.0
        assert all(in_gui for _, in_gui in sink.items)  # delivered into the GUI thread
        assert links.link(node).status is LinkStatus.UP
    finally:
        assert links.stop(5.0)


def test_results_are_frozen_dataclasses() -> None:
    done = TaskDone("10.0.0.1", "info", 1)
    assert dataclasses.is_dataclass(done)
    with pytest.raises(dataclasses.FrozenInstanceError):
        done.kind = "other"  # type: ignore[misc]


def test_a_poll_is_skipped_while_the_previous_one_runs(qtbot: Any, agent: RealAgents) -> None:
    node = agent.addresses[0]
    links = Links(UnixConnector({node: agent.socket_of(node)}))
    results: list[TaskDone] = []
    release = threading.Event()

    def slow_info(ctx: LaneContext) -> NodeInfo:
        release.wait(10.0)
        return info(ctx)

    try:
        assert links.poll(node, "info", slow_info, results.append) is not None
        assert links.busy(node, "info")
        assert links.poll(node, "info", slow_info, results.append) is None  # skipped, not queued
        assert links.poll(node, "info", slow_info, results.append) is None
        assert links.skipped[(node, "info")] == 2
        assert links.poll(node, "other", info, results.append) is not None  # another kind is not held up
        release.set()
        qtbot.waitUntil(lambda: len(results) == 2 and not links.busy(node, "info"), timeout=5000)
        assert links.poll(node, "info", info, results.append) is not None  # free again
        qtbot.waitUntil(lambda: len(results) == 3, timeout=5000)
        assert [r.error for r in results] == [None, None, None]
    finally:
        release.set()
        links.stop(5.0)


class CountingConnector:
    """Channels to the agent's socket, remembering each one, to see that stop() closes them."""

    def __init__(self, inner: UnixConnector) -> None:
        self.inner = inner
        self.opened: list[Channel] = []
        self.closed: list[Channel] = []

    def open(self, address: str) -> Channel:
        channel = self.inner.open(address)
        close = channel.close

        def closing() -> None:
            self.closed.append(channel)
            close()

        channel.close = closing  # type: ignore[method-assign]
        self.opened.append(channel)
        return channel

    def describe(self, address: str) -> str:
        return self.inner.describe(address)


def test_stop_joins_every_lane_and_closes_every_channel(qtbot: Any, agent: RealAgents) -> None:
    node = agent.addresses[0]
    connector = CountingConnector(UnixConnector({node: agent.socket_of(node)}))
    links = Links(connector)
    results: list[TaskDone] = []

    def stream(ctx: LaneContext) -> Iterator[float | None]:
        ctx.client().node_info()
        while True:  # a job that never ends by itself
            yield 0.05

    links.poll(node, "info", info, results.append)
    links.submit(node, Lane.ACTION, "info", info, results.append)
    links.stream(node, "job", stream)
    qtbot.waitUntil(lambda: len(results) == 2 and len(connector.opened) == 3, timeout=5000)
    assert sorted(links.threads()) == sorted(f"omview-{lane}-{node}" for lane in ("poll", "action", "stream"))
    assert links.stop(5.0)
    assert links.threads() == [] and not [t for t in threading.enumerate() if t.name.endswith(f"-{node}")]
    assert len(connector.closed) == len(connector.opened) == 3
    # nothing runs after stop
    links.poll(node, "info", info, results.append)
    assert links.threads() == [] and len(results) == 2
