"""openmosixhistory: the slider shows the snapshot nearest in time; migrated jobs; --at."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from PySide6.QtCore import Qt

from omview.analyzer.data import iso
from omview.analyzer.history_window import HistoryWindow
from omview.collector.synthetic import SyntheticSource
from omview.model import records
from tests.analyzer.conftest import START, HistoryFactory

MIGRATE_AT = 100  # the job leaves for node 3 at this attempt, comes home at BACK_AT
BACK_AT = 160


def _migrating_job(src: SyntheticSource, attempt: int) -> None:
    pid = min(src._procs)
    if attempt == MIGRATE_AT:
        src._procs[pid].update(where=3, nmigs=1)
    elif attempt == BACK_AT:
        src._procs[pid].update(where=1, nmigs=2)


def test_slider_shows_nearest_snapshot_and_migration(qtbot: Any, make_history: HistoryFactory) -> None:
    logdir = make_history(nodes=4, ticks=240, each=_migrating_job, checkpoints=((50, "a"), (200, "b")))
    h = records.History.open(str(logdir))
    win = HistoryWindow(str(logdir))
    qtbot.addWidget(win)
    assert win.slider.maximum() == round(h.end - h.start)
    job = min(p.pid for p in h.processes().at(h.start))
    for when in (h.start + 10.4, h.start + 130.6, h.start + 200):
        win.set_time(when)
        nearest = min(h.times, key=lambda t: abs(t - win.slider_time()))
        assert win.shown_time == nearest
        want = h.processes().at(nearest)
        assert [p.pid for p in win.model.procs] == [p.pid for p in want]
    # during the migration the job is shown where it ran at that moment, in bold with its home
    win.set_time(h.start + 130)
    row = next(i for i, p in enumerate(win.model.procs) if p.pid == job)
    cell = win.model.index(row, 1)
    assert cell.data() == "3 (home 1)" and cell.data(Qt.ItemDataRole.FontRole).bold()
    win.set_time(h.start + 20)
    row = next(i for i, p in enumerate(win.model.procs) if p.pid == job)
    assert win.model.index(row, 1).data() == "1"


def test_checkpoints_filter_and_start(qtbot: Any, make_history: HistoryFactory) -> None:
    logdir = make_history(nodes=2, ticks=240, checkpoints=((50, "a"), (200, "b")))
    h = records.History.open(str(logdir))
    cps = [c.time for c in h.checkpoints]
    win = HistoryWindow(str(logdir))
    qtbot.addWidget(win)
    assert "start:" in win.lbl_start.text()
    win.set_time(h.start)
    win.jump_checkpoint(1)
    assert win.slider_time() == cps[0]
    win.jump_checkpoint(1)
    assert win.slider_time() == cps[1]
    win.jump_checkpoint(-1)
    assert win.slider_time() == cps[0]
    total = win.proxy.rowCount()
    win.filter.setText("x-pvmpov")
    assert 0 < win.proxy.rowCount() < total
    win.filter.setText("alice")  # the user
    assert win.proxy.rowCount() == total
    assert str(logdir / "procs") in win.lbl_source.text()


def test_at_json_command(make_history: HistoryFactory) -> None:
    logdir = make_history(nodes=3, ticks=200, each=_migrating_job)
    out = subprocess.run(
        [sys.executable, "-m", "omview.analyzer.history", str(logdir), "--at", str(START + 130.3), "--json"],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    res = json.loads(out.stdout)
    assert res["at"] == iso(START + 130.3) and res["sample"] == iso(START + 130)
    h = records.History.open(str(logdir))
    want = h.processes().at(START + 130)
    assert [p["pid"] for p in res["processes"]] == [p.pid for p in want]
    moved = [p for p in res["processes"] if p["node"] != p["home"]]
    assert len(moved) == 1 and moved[0]["node"] == 3 and moved[0]["nmigs"] == 1
    assert set(res["processes"][0]) == {"pid", "node", "home", "stat", "user", "cpu", "rss", "cmdline", "nmigs"}
