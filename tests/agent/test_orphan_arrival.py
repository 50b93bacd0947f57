"""An arrival whose source machine died before asking for the restore (tests/vm/test_vm_kill.py on
real VMs): the target aborts it once the source is back, or ORPHAN_AFTER seconds after it went down,
and never an arrival that is being restored; one whose source stays up only when it has sent nothing
for IDLE_AFTER seconds."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from omview.agent.jobs.table import JobStore
from omview.agent.migration import target
from omview.agent.migration.common import Env, remove_images
from omview.agent.migration.faults import FaultHooks
from omview.agent.migration.target import Incoming, TargetSide
from omview.model.cluster import NodeInfo


def side(tmp_path: Path) -> TargetSide:
    env = Env(
        state_dir=str(tmp_path), node_id=lambda: 2, nodes=dict, blocked=lambda: False,
        criu=lambda: "/usr/sbin/criu", publish=lambda topic, data: None,
        faults=FaultHooks(str(tmp_path), enabled=False),
    )  # fmt: skip
    return TargetSide(env, JobStore(str(tmp_path)), str(tmp_path))


def table(source_up: bool) -> dict[int, NodeInfo]:
    return {1: NodeInfo(1, "10.0.0.1", "up" if source_up else "down"), 2: NodeInfo(2, "10.0.0.2", "up")}


def mig(n: int) -> str:
    """A migration id from node 1 (ids start with the source's node) no other test or agent uses."""
    return f"1-2-{os.getpid()}-{n}"


def prepared(ts: TargetSide, mig_id: str) -> Incoming:
    ts.prepare({"id": mig_id, "job": "1-42", "bytes": 0, "method": "images"})
    inc = Incoming(ts.env.state_dir, mig_id)
    (Path(inc.images) / "pages-1.img").write_bytes(b"\0" * 4096)  # images may live in /dev/shm
    return inc


@pytest.fixture
def ts(tmp_path: Path) -> Iterator[TargetSide]:
    s = side(tmp_path)
    yield s
    if s.listener is not None:
        s.listener.close()
    for n in range(1, 6):
        remove_images(Incoming(str(tmp_path), mig(n)).images)


def test_an_arrival_whose_source_stays_up_is_kept(ts: TargetSide) -> None:
    inc = prepared(ts, mig(1))
    for _ in range(3):
        assert ts.abort_orphans(table(source_up=True)) == []
    assert not inc.marker("aborted")
    assert os.path.exists(os.path.join(inc.images, "pages-1.img"))


def test_an_arrival_is_aborted_when_its_source_comes_back(ts: TargetSide) -> None:
    """A rebooted source has no journal of the migration: nobody will ask for this restore."""
    inc = prepared(ts, mig(2))
    assert ts.abort_orphans(table(source_up=False)) == []  # down: maybe only cut off, wait
    assert not inc.marker("aborted")
    assert ts.abort_orphans(table(source_up=True)) == [mig(2)]
    assert inc.marker("aborted")
    assert not os.path.exists(os.path.join(inc.images, "pages-1.img"))
    assert ts.abort_orphans(table(source_up=True)) == []  # once


def test_an_arrival_is_aborted_when_its_source_stays_away(
    ts: TargetSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    inc = prepared(ts, mig(3))
    now = [1000.0]
    monkeypatch.setattr(target.time, "monotonic", lambda: now[0])
    assert ts.abort_orphans(table(source_up=False)) == []
    now[0] += target.ORPHAN_AFTER - 1
    assert ts.abort_orphans(table(source_up=False)) == []
    now[0] += 2
    assert ts.abort_orphans(table(source_up=False)) == [mig(3)]
    assert inc.marker("aborted")


def test_an_arrival_being_restored_or_committed_is_never_aborted(ts: TargetSide) -> None:
    restoring = prepared(ts, mig(4))
    committed = prepared(ts, mig(5))
    committed.mark("committed")
    ts._restoring.add(mig(4))  # the source's restore request arrived before it died
    ts.abort_orphans(table(source_up=False))
    assert ts.abort_orphans(table(source_up=True)) == []
    assert not restoring.marker("aborted") and not committed.marker("aborted")


def age(inc: Incoming, seconds: float) -> None:
    """Make every file of the arrival look last written SECONDS ago."""
    when = time.time() - seconds
    for where in (inc.dir, inc.images):
        for entry in os.scandir(where):
            os.utime(entry.path, (when, when))
        os.utime(where, (when, when))


def test_an_idle_arrival_whose_source_stays_up_is_aborted(
    ts: TargetSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source's SSH to us was cut for longer than its fence window: it resumed its own copy and
    could not tell us; gossip still says it is up. IDLE_AFTER seconds without a byte, we let go."""
    now = [1000.0]
    monkeypatch.setattr(target.time, "monotonic", lambda: now[0])
    inc = prepared(ts, mig(1))
    now[0] += target.IDLE_AFTER + 1
    age(inc, target.IDLE_AFTER - 30)
    assert ts.abort_orphans(table(source_up=True)) == []  # written to 270 s ago: not idle yet
    age(inc, target.IDLE_AFTER + 1)
    assert ts.abort_orphans(table(source_up=True)) == [mig(1)]
    assert inc.marker("aborted")
    assert not os.path.exists(os.path.join(inc.images, "pages-1.img"))


def test_a_slow_transfer_is_not_idle(ts: TargetSide, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long transfer keeps writing its images: however old the arrival, it stays."""
    now = [1000.0]
    monkeypatch.setattr(target.time, "monotonic", lambda: now[0])
    inc = prepared(ts, mig(2))
    now[0] += 10 * target.IDLE_AFTER
    age(inc, target.IDLE_AFTER + 1)
    (Path(inc.images) / "pages-2.img").write_bytes(b"\0" * 4096)  # a byte just came in
    assert ts.abort_orphans(table(source_up=True)) == []
    assert not inc.marker("aborted")
