"""The collector loop and writer on real files, driven by a synthetic cluster and a fake clock."""

from __future__ import annotations

import logging
import os
import subprocess
from typing import Any

import pytest

from omview.collector.daemon import Collector
from omview.collector.synthetic import SyntheticSource
from omview.collector.writer import CollectorError, HistoryBusy, HistoryWriter, compress_history
from omview.model import records
from omview.model.cluster import NodeInfo, ProcessInfo
from tests.collector.conftest import FakeClock, run_ticks


class Recording:
    """Wraps the synthetic source and remembers what the collector was given, with the time."""

    def __init__(self, inner: SyntheticSource, clock: FakeClock) -> None:
        self.inner = inner
        self.clock = clock
        self.seen: list[tuple[float, list[NodeInfo]]] = []
        self.procs: list[tuple[float, list[ProcessInfo]]] = []

    def nodes(self) -> list[NodeInfo]:
        out = self.inner.nodes()
        self.seen.append((self.clock.time(), out))
        return out

    def processes(self) -> list[ProcessInfo]:
        out = self.inner.processes()
        self.procs.append((self.clock.time(), out))
        return out

    def events(self) -> list[tuple[str, Any]]:
        return self.inner.events()

    def close(self) -> None:
        self.inner.close()


def expected_series(rec: Recording) -> dict[int, list[tuple[float, tuple[int, ...]]]]:
    out: dict[int, list[tuple[float, tuple[int, ...]]]] = {}
    for t, nodes in rec.seen:
        for n in nodes:
            v = records.node_values(n)
            out.setdefault(n.id, []).append(
                (round(t, 3), (v[0], v[1] << 10, v[2] << 10, v[3], v[4] << 10, *v[5:]))
            )
    return out


def actual_series(h: records.History) -> dict[int, list[tuple[float, tuple[int, ...]]]]:
    out = {}
    for nid in h.node_ids():
        s = h.series(nid)
        out[nid] = [
            (
                round(s.times[i], 3),
                (s.load[i], s.mem[i], s.rmem[i], s.util[i], s.tmem[i], s.speed[i], s.cpus[i], s.status[i]),
            )
            for i in range(len(s))
        ]
    return out


def test_reader_round_trips_what_the_writer_wrote(make_collector, clock, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = SyntheticSource(12, seed=4, churn=40, fresh=0.8)
    rec = Recording(src, clock)
    col = make_collector(source=rec, interval=0.5)

    def churn(i: int) -> None:
        if i == 50:
            src.absent.add(5)  # node 5 leaves the table ...
        if i == 90:
            src.absent.discard(5)  # ... and comes back

    run_ticks(col, clock, 400, churn)
    col.checkpoint("job 1 started")
    col.close()
    h = records.History.open(str(tmp_path / "log" / "cluster"))
    assert h.problems == []
    assert actual_series(h) == expected_series(rec)
    assert len(h.series(5)) == len(h.series(4)) - 40
    assert [c.label for c in h.checkpoints] == ["job 1 started"]
    names = {e.name for e in h.events}
    assert {"node.down", "node.up", "node.gone"} <= names
    assert len(h.sessions) == 1 and h.interval == 0.5
    assert h.nodes[3].hostname == "node003"
    # the history browser's view: the process list at any recorded moment
    ph = h.processes()
    for t, procs in rec.procs[::37]:
        want = [records.proc_from_row(records.proc_row(p)) for p in sorted(procs, key=lambda p: p.pid)]
        got = ph.at(t)
        assert [(p.pid, p.state, p.cpu, p.where, p.cmdline) for p in got] == [
            (p.pid, p.state, p.cpu, p.where, p.cmdline) for p in want
        ]


def test_rotation_every_12_hours_on_a_fake_clock(make_collector, clock, tmp_path) -> None:  # type: ignore[no-untyped-def]
    done: list[str] = []
    col = make_collector(4, interval=60.0, compress=done.append)
    start = clock.time()
    run_ticks(col, clock, 12 * 60 - 2)
    assert col.rotations == []
    run_ticks(col, clock, 10)
    assert len(col.rotations) == 1 and done == col.rotations
    backup = col.rotations[0]
    assert (
        os.path.basename(backup) == "log-" + records.backup_dir_name("x", start + 12 * 3600).split("-", 1)[1]
    )
    assert records.list_histories(str(tmp_path / "log")) == [backup, str(tmp_path / "log")]
    old = records.History.open(backup)
    assert 715 <= len(old.ticks) <= 722
    new = records.History.open(str(tmp_path / "log"))
    assert new.history_id != old.history_id
    assert new.ticks[0] == 0 and new.times[0] > old.times[-1]
    # compressing the backup changes the bytes, never what readers see
    before = actual_series(old)
    procs_before = [p.pid for p in old.processes().at(old.end)]
    compress_history(backup)
    assert all(n.endswith(".xz") for n in os.listdir(backup))
    again = records.History.open(backup)
    assert actual_series(again) == before and again.problems == []
    assert [p.pid for p in again.processes().at(again.end)] == procs_before


def test_a_continued_history_rotates_12_hours_after_it_was_created(make_collector, clock, tmp_path) -> None:  # type: ignore[no-untyped-def]
    col = make_collector(3, interval=60.0)
    run_ticks(col, clock, 6 * 60)
    col.close()
    clock.advance(3600)  # the collector was down for an hour
    col2 = make_collector(3, interval=60.0)
    run_ticks(col2, clock, 4 * 60 + 50)
    assert col2.rotations == []
    run_ticks(col2, clock, 20)
    assert len(col2.rotations) == 1
    h = records.History.open(col2.rotations[0])
    assert len(h.sessions) == 2 and h.problems == []


def test_restart_continues_the_history(make_collector, clock, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = SyntheticSource(5, seed=2, churn=0)
    rec = Recording(src, clock)
    col = make_collector(source=rec)
    run_ticks(col, clock, 30)
    col.close()
    clock.advance(100)
    col2 = make_collector(source=rec)
    assert col2.writer.tick == col.ticks == 30
    run_ticks(col2, clock, 30)
    col2.close()
    h = records.History.open(str(tmp_path / "log"))
    assert list(h.ticks) == list(range(60))
    assert actual_series(h) == expected_series(rec)
    assert len(h.sessions) == 2 and h.problems == []


def test_torn_tails_are_cut_off_on_restart(make_collector, clock, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    col = make_collector(3)
    run_ticks(col, clock, 20)
    col.close()
    log_dir = tmp_path / "log"
    with open(log_dir / "node2", "ab") as f:
        f.write(b"\x0f\x81")  # the start of a sample record, as a crash would leave it
    with open(log_dir / "cluster", "ab") as f:
        f.write(records.tick_frame(20, clock.time())[:-2])
    # a reader of the crashed files sees the complete records and nothing else
    h = records.History.open(str(log_dir))
    assert len(h.ticks) == 20 and len(h.series(2)) == 20 and h.problems == []
    caplog.set_level(logging.INFO)
    col2 = make_collector(3)
    assert sum("cut off" in r.getMessage() for r in caplog.records) == 2
    run_ticks(col2, clock, 5)
    col2.close()
    h = records.History.open(str(log_dir))
    assert len(h.series(2)) == len(h.ticks) == 25 and h.problems == []


def test_a_history_of_another_format_version_is_moved_aside(make_collector, clock, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    future = bytearray(records.encode_header("cluster", "feed", clock.time() - 50, 1.0))
    future[8] = 2  # written by a newer omview
    (log_dir / "cluster").write_bytes(bytes(future) + b"newer records")
    caplog.set_level(logging.INFO)
    col = make_collector(2)
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "format version 2" in msg and "moved it to" in msg
    backups = records.list_histories(str(log_dir))[:-1]
    assert len(backups) == 1
    assert (open(os.path.join(backups[0], "cluster"), "rb").read()) == bytes(future) + b"newer records"
    run_ticks(col, clock, 3)
    assert len(records.History.open(str(log_dir)).ticks) == 3


def test_one_writer_per_directory(make_collector, tmp_path) -> None:  # type: ignore[no-untyped-def]
    make_collector(2)
    other = HistoryWriter(str(tmp_path / "log"), interval=1.0)
    with pytest.raises(HistoryBusy, match="another collector"):
        other.open(0.0)


def test_clock_jumps_are_recorded_and_readable(make_collector, clock, tmp_path) -> None:  # type: ignore[no-untyped-def]
    col = make_collector(3)
    run_ticks(col, clock, 10)
    clock.jump(-3600)
    run_ticks(col, clock, 10)
    clock.jump(+7200)
    run_ticks(col, clock, 10)
    col.close()
    h = records.History.open(str(tmp_path / "log"))
    assert [round(j.jump) for j in h.clock_jumps] == [-3600, 7200]
    assert list(h.ticks) == sorted(h.ticks) and len(h.ticks) == 30
    s = h.series(1)
    assert len(s) == 30 and min(s.times) < s.times[0]  # stamps follow the clock, ticks stay ordered


def test_agent_outage_leaves_a_gap_and_a_message(make_collector, clock, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    src = SyntheticSource(3, seed=1, churn=0)
    col = make_collector(source=src)
    caplog.set_level(logging.INFO)
    run_ticks(col, clock, 5)
    src.unavailable = True
    run_ticks(col, clock, 8)
    src.unavailable = False
    run_ticks(col, clock, 5)
    col.close()
    warnings = [r for r in caplog.records if "cannot read the cluster table" in r.getMessage()]
    assert len(warnings) == 1  # said once, not every second
    h = records.History.open(str(tmp_path / "log"))
    assert len(h.gaps) == 1 and "synthetic agent switched off" in h.gaps[0].reason
    assert 7 <= h.gaps[0].end - h.gaps[0].start <= 9
    assert len(h.ticks) == 10


def test_checkpoints_from_signal_flag_and_control(make_collector, clock, tmp_path) -> None:  # type: ignore[no-untyped-def]
    col = make_collector(2)
    run_ticks(col, clock, 3)
    col.flags.checkpoint = True  # what SIGUSR1 does
    run_ticks(col, clock, 2)
    assert "written" in col.control("checkpoint", "render #2")
    with pytest.raises(CollectorError, match="printable"):
        col.control("checkpoint", "two\nlines")
    with pytest.raises(CollectorError, match="unknown request"):
        col.control("explode", "")
    col.close()
    h = records.History.open(str(tmp_path / "log"))
    assert [c.label for c in h.checkpoints] == ["", "render #2"]
    assert h.checkpoints[0].time < h.checkpoints[1].time


def test_unusable_log_directories_get_clear_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "afile").write_text("x")
    w = HistoryWriter(str(tmp_path / "afile" / "log"), interval=1.0)
    with pytest.raises(CollectorError, match="cannot create the log directory .*--logdir"):
        w.open(0.0)


@pytest.fixture
def tmpfs(tmp_path):  # type: ignore[no-untyped-def]
    """A tiny tmpfs of our own (root only; CI runs as root)."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root to mount a tmpfs (CI runs as root)")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "omview-h4-test", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_read_only_log_directory(tmpfs) -> None:  # type: ignore[no-untyped-def]
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    w = HistoryWriter(str(tmpfs / "log"), interval=1.0)
    with pytest.raises(CollectorError, match="cannot create the log directory"):
        w.open(0.0)


def test_disk_full_drops_samples_but_never_corrupts(tmpfs, clock, caplog) -> None:  # type: ignore[no-untyped-def]
    src = SyntheticSource(20, seed=9, churn=0, fresh=1.0, busy=1.0)
    writer = HistoryWriter(str(tmpfs / "log"), interval=1.0)
    col = Collector(src, writer, interval=1.0, clock=clock)
    col.start()
    filler = tmpfs / "filler"
    free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
    filler.write_bytes(b"\0" * (free - 24 * 1024))
    caplog.set_level(logging.INFO)
    try:
        run_ticks(col, clock, 400)
        errors = [
            r for r in caplog.records if r.levelno == logging.ERROR and "disk is full" in r.getMessage()
        ]
        assert len(errors) == 1
        h = records.History.open(str(tmpfs / "log"))
        assert h.problems == []
        full_ticks = len(h.ticks)
        assert 0 < full_ticks < 400
        for nid in h.node_ids():
            assert len(h.series(nid)) <= full_ticks
        filler.unlink()
        run_ticks(col, clock, 5)
        assert any("writing the history again" in r.getMessage() for r in caplog.records)
    finally:
        col.close()
    h = records.History.open(str(tmpfs / "log"))
    assert h.problems == [] and len(h.ticks) > full_ticks
    assert any("write failed" in g.reason for g in h.gaps)
    assert all(len(h.series(n)) > 0 for n in h.node_ids())


def test_live_reader_follows_the_writer(make_collector, clock, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = SyntheticSource(3, seed=8, churn=0)
    src.absent.add(3)
    col = make_collector(source=src)
    run_ticks(col, clock, 10)
    live = records.History.open(str(tmp_path / "log"))
    assert len(live.series(1)) == 10 and len(live.series(3)) == 0
    assert len(live.processes()) >= 1
    src.absent.discard(3)  # node 3 joins while the reader watches
    run_ticks(col, clock, 7)
    col.checkpoint("mid")
    assert live.refresh() is True
    assert len(live.ticks) == 17 and len(live.series(1)) == 17 and len(live.series(3)) == 7
    assert [c.label for c in live.checkpoints] == ["mid"]
    assert live.processes().ticks[-1] <= 16
    assert live.refresh() is False
    col.rotate()
    with pytest.raises(records.HistoryRotated):
        live.refresh()
