"""The analyzer and history windows on a history recorded by the real collector daemon on the
namespace cluster, while a job migrates from node 1 to node 2 and back (root, CRIU)."""

from __future__ import annotations

import contextlib
import csv
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from omview.analyzer.data import HistoryData, find_out
from omview.analyzer.history_window import HistoryWindow
from omview.analyzer.window import AnalyzerWindow
from omview.model import records
from omview.testbed import Cluster
from tests.migration.helpers import COUNTER, PY, all_up, migrate, wait

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _collector(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return cluster.exec(1, [sys.executable, "-m", "omview.collector", *args], capture_output=True, text=True, timeout=60)


def _ticks(logdir: Path) -> int:
    with contextlib.suppress(OSError, records.HistoryFormatError):
        return len(records.History.open(str(logdir)).ticks)
    return 0


def test_windows_on_a_cluster_history_with_a_migration(
    qtbot: Any, make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = all_up(make_cluster(2))
    logdir = tmp_path / "history"
    opts = ["--logdir", str(logdir), "--interval", "0.3", "--pidfile", "/run/omview/collector.pid"]
    work = tmp_path / "job"
    work.mkdir()
    inner = f"exec {PY} {COUNTER} 400 0.1 >{work}/out 2>{work}/err"
    cmd = f"cd {work} && exec unshare --pid --fork setsid sh -c '{inner}' </dev/null >{work}/unshare.log 2>&1"
    user = cluster.popen(1, ["sh", "-c", cmd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert _collector(cluster, "-d", *opts).returncode == 0
        wait(lambda: _ticks(logdir) >= 5, 30, "five samples")

        def child() -> int:
            with contextlib.suppress(OSError, ValueError):
                kids = Path(f"/proc/{user.pid}/task/{user.pid}/children").read_text().split()
                if kids and (work / "out").stat().st_size > 0:
                    return int(kids[0])
            return 0

        pid = wait(child, 15, "the job to start")
        assert _collector(cluster, "-n", "job leaves", *opts).returncode == 0
        r = migrate(cluster, 1, pid, 2)
        assert r.returncode == 0, r.stderr
        n = _ticks(logdir)
        wait(lambda: _ticks(logdir) >= n + 10, 30, "samples while the job is away")
        r = migrate(cluster, 1, pid, "home")
        assert r.returncode == 0, r.stderr
        assert _collector(cluster, "-n", "job home", *opts).returncode == 0
        n = _ticks(logdir)
        wait(lambda: _ticks(logdir) >= n + 5, 30, "samples after the return")
        assert _collector(cluster, "-k", *opts).returncode == 0
    finally:
        _collector(cluster, "-k", *opts)
        user.kill()
        user.wait(10)

    h = records.History.open(str(logdir))
    assert [c.label for c in h.checkpoints] == ["job leaves", "job home"]
    away = [t for t in h.processes().times if any(p.pid == pid and p.where == 2 for p in h.processes().at(t))]
    assert away, "the process list should show the job on node 2 for a while"

    hist = HistoryWindow(str(logdir))
    qtbot.addWidget(hist)
    hist.set_time(away[len(away) // 2])
    row = next(i for i, p in enumerate(hist.model.procs) if p.pid == pid)
    assert hist.model.index(row, 1).data() == "2 (home 1)"
    hist.jump_checkpoint(1)  # to "job home": the job is back on node 1
    assert hist.slider_time() == pytest.approx(h.checkpoints[1].time, abs=0.3)
    row = next((i for i, p in enumerate(hist.model.procs) if p.pid == pid), None)
    assert row is None or hist.model.index(row, 1).data() == "1"

    win = AnalyzerWindow(str(logdir))
    qtbot.addWidget(win)
    assert win.wait_loaded(30)
    assert sorted(win.rows) == [1, 2]
    assert len(win.checkpoint_lines) == 4  # two checkpoints, in both overviews
    # find-out equals the CSV export of the same history
    out = subprocess.run([sys.executable, "-m", "omview.collector", "--export", "csv", "--history", str(logdir)],
                         check=True, capture_output=True, text=True, timeout=60)  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    res = find_out(HistoryData(str(logdir)))
    assert res["cluster"]["samples"] == len(rows)
    for b in res["nodes"]:
        loads = [int(r["load"]) for r in rows if int(r["node"]) == b["id"]]
        assert b["samples"] == len(loads) and b["load"]["max"] == max(loads) and b["load"]["min"] == min(loads)
        assert b["load"]["mean"] == pytest.approx(sum(loads) / len(loads))


def test_remote_collectors_history_is_fetched_over_ssh(
    qtbot: Any, make_cluster: Callable[..., Cluster], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector runs in node 1 and writes to the node's own /run (a tmpfs this host does not
    see at that path); the main window reaches node 1 over SSH, its Analyzer menu copies the
    history through the node link's connection into the local cache and starts the analyzer on
    the copy, which holds what the collector wrote."""
    from omview.gui import launch as launcher
    from omview.gui.connect import SshConnector, SshSettings
    from omview.gui.session import ClusterSession
    from omview.gui.settings import GuiSettings
    from omview.openmosixview.window import MainWindow
    from tests.gui.test_collector_menu import make_store

    cluster = all_up(make_cluster(2))
    entry, holder = cluster.nodes[0].address, cluster.nodes[0].holder_pid
    logdir = "/run/omview/history"  # inside node 1 only
    here = Path(f"/proc/{holder}/root{logdir}")  # the same directory, seen from this host
    opts = ["--logdir", logdir, "--interval", "0.3", "--pidfile", "/run/omview/collector.pid"]
    started: list[list[str]] = []
    monkeypatch.setattr(launcher.launch, "__defaults__", (lambda program, args: started.append([program, *args]) or True,))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    connector = SshConnector(SshSettings(ssh_config=str(cluster.ssh_config_path), agent_command=cluster.agent_command))
    session = ClusterSession(connector, entry, poll_interval=0, call_timeout=5.0)
    store = make_store(tmp_path / "gui.ini", logdir=logdir, pidfile="/run/omview/collector.pid")
    w = MainWindow(session, GuiSettings(entry=entry), store)
    qtbot.addWidget(w)
    try:
        assert _collector(cluster, "-d", *opts).returncode == 0
        wait(lambda: _ticks(here) >= 5, 30, "five samples")
        assert _collector(cluster, "-n", "remote mark", *opts).returncode == 0
        assert not Path(logdir, "cluster").exists()  # not this host's file: only SSH reaches it
        assert session.links.over_ssh(entry)
        w.tools["analyzer"].trigger()
        qtbot.waitUntil(lambda: bool(started), timeout=60000)
        copy = Path(started[-1][-1])
        assert copy.is_relative_to(tmp_path / "cache") and "files copied from" in w.statusBar().currentMessage()
        h = records.History.open(str(copy))
        assert h.node_ids() == [1, 2] and [c.label for c in h.checkpoints] == ["remote mark"]
        assert len(h.ticks) >= 5 and {p.name for p in copy.iterdir()} <= {"cluster", "procs", "node1", "node2"}
        first = len(h.ticks)
        # opened again later: the copy is refreshed in place and an open analyzer follows it
        win = AnalyzerWindow(str(copy))
        qtbot.addWidget(win)
        assert win.wait_loaded(30) and sorted(win.rows) == [1, 2]
        wait(lambda: _ticks(here) >= first + 5, 30, "more samples")
        w.tools["history"].trigger()
        qtbot.waitUntil(lambda: len(started) == 2, timeout=60000)
        assert Path(started[-1][-1]) == copy and len(records.History.open(str(copy)).ticks) >= first + 5
        win.refresh()  # the files were replaced: the window reopens the copy
        assert win.wait_loaded(30) and win.data is not None and len(win.data.clock.times) >= first + 5
    finally:
        _collector(cluster, "-k", *opts)
        w.close()
        session.stop()
