"""The Collector menu and toolbar status against a real openmosixcollector: locally with a real agent
on loopback, and over real SSH inside a netns cluster node (root). Start, checkpoint, rotate, stop."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtGui import QAction

from omview.gui import errors
from omview.gui.connect import SshConnector, SshSettings, UnixConnector
from omview.gui.session import ClusterSession
from omview.gui.settings import GuiSettings
from omview.model import records
from omview.openmosixview.collector_control import (
    Action,
    CollectorConfig,
    CollectorSettingsDialog,
    CollectorState,
    CommandResult,
    load_config,
)
from omview.openmosixview.window import MainWindow
from tests.gui.real_agents import RealAgents


def kill_collector(pidfile: Path) -> None:
    """Stop a collector a test left running, by the PID in its PID file (never by name)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        if b"collector" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return  # the PID went to another program
        os.kill(pid, signal.SIGTERM)
    except (OSError, ProcessLookupError):
        return
    end = time.monotonic() + 10
    while time.monotonic() < end and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def open_history(path: str, timeout: float = 20.0) -> records.History:
    """Open a history; a backup is xz-compressed in the background right after -r, so retry then."""
    end = time.monotonic() + timeout
    while True:
        try:
            return records.History.open(path)
        except records.HistoryRotated:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def make_store(path: Path, **collector: str) -> QSettings:
    store = QSettings(str(path), QSettings.Format.IniFormat)
    for key, value in collector.items():
        store.setValue(f"collector/{key}", value)
    store.setValue("collector/refresh", 1.0)
    store.sync()
    return store


class Ticker:
    """A 20 ms QTimer in the GUI thread: gaps between its ticks show whether the window froze."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.timer = QTimer()
        self.timer.timeout.connect(lambda: self.times.append(time.monotonic()))
        self.timer.start(20)

    def max_gap(self, since: float) -> float:
        ts = [t for t in self.times if t >= since]
        return max((b - a for a, b in zip(ts, ts[1:], strict=False)), default=0.0)


@pytest.fixture
def shown_errors(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(errors, "show_error", lambda _p, title, text, details="": shown.append((title, text)))
    monkeypatch.setattr(errors, "show_info", lambda _p, title, text, details="": shown.append((title, text)))
    return shown


def run(qtbot: Any, w: MainWindow, act: QAction, action: Action, timeout: int = 60000) -> CommandResult:
    """Trigger a menu action and wait for the collector command it runs to finish."""
    assert act.isEnabled(), f"{act.text()} is disabled"
    with qtbot.waitSignal(w.collector.sig_result, timeout=timeout,
                          check_params_cb=lambda r: r.action is action) as blk:  # fmt: skip
        act.trigger()
    result: CommandResult = blk.args[0]
    return result


def wait_state(qtbot: Any, w: MainWindow, state: CollectorState, timeout: int = 30000) -> None:
    qtbot.waitUntil(lambda: w.collector.status.state is state, timeout=timeout)


def full_cycle(qtbot: Any, w: MainWindow, logdir: Path, shown: list[tuple[str, str]],
               monkeypatch: pytest.MonkeyPatch, cluster_nodes: int) -> None:  # fmt: skip
    """Start -> running -> checkpoint "x" -> rotate -> stop, through the menu actions."""
    node = w.collector.node
    wait_state(qtbot, w, CollectorState.NOT_RUNNING)
    assert w.collector_status.text().strip() == f"openMosixcollector on {node}: not running"
    assert w.act_collector_start.isEnabled() and not w.act_collector_stop.isEnabled()

    ticker = Ticker()
    t0 = time.monotonic()
    r = run(qtbot, w, w.act_collector_start, Action.START)
    assert r.ok, (r.stdout, r.stderr, r.problem)
    assert r.argv[1:3] == ("-d", "--logdir")
    assert "openmosixcollector started (pid" in w.statusBar().currentMessage()
    # the window kept running its own timer while -d ran in the worker
    assert ticker.max_gap(t0) < 0.5, ticker.max_gap(t0)
    ticker.timer.stop()
    qtbot.waitUntil(lambda: w.collector.status.state is CollectorState.RUNNING
                    and w.collector.status.nodes == cluster_nodes and (w.collector.status.ticks or 0) > 1,
                    timeout=30000)  # fmt: skip
    st = w.collector.status
    assert w.collector_status.text().strip() == (
        f"openMosixcollector on {node}: running (pid {st.pid}, {cluster_nodes} nodes, {st.ticks} ticks)"
    )
    assert st.logdir == str(logdir)
    assert not w.act_collector_start.isEnabled() and w.act_collector_stop.isEnabled()

    monkeypatch.setattr(errors, "ask_text", lambda *_a, **_k: "x")
    r = run(qtbot, w, w.act_collector_checkpoint, Action.CHECKPOINT)
    assert r.ok and "checkpoint 'x' written" in r.first_line(), r
    assert [c.label for c in records.History.open(str(logdir)).checkpoints] == ["x"]

    r = run(qtbot, w, w.act_collector_rotate, Action.ROTATE)
    assert r.ok and "history saved to" in r.first_line(), r
    backups = [h for h in records.list_histories(str(logdir)) if h != str(logdir)]
    assert len(backups) == 1 and Path(backups[0]).is_dir()
    assert backups[0] in r.stdout
    assert [c.label for c in open_history(backups[0]).checkpoints] == ["x"]

    r = run(qtbot, w, w.act_collector_stop, Action.STOP)
    assert r.ok and f"stopped (pid {st.pid})" in r.first_line(), r
    wait_state(qtbot, w, CollectorState.NOT_RUNNING)
    assert not Path(f"/proc/{st.pid}").exists() or b"collector" not in Path(f"/proc/{st.pid}/cmdline").read_bytes()
    assert w.act_collector_start.isEnabled() and not w.act_collector_stop.isEnabled()
    assert shown == [], shown


@pytest.fixture
def agent(short_tmp: str) -> Iterator[RealAgents]:
    agents = RealAgents(Path(short_tmp) / "agents", count=1)
    try:
        agents.start()
        yield agents
    finally:
        agents.stop()


def local_window(qtbot: Any, agent: RealAgents, store: QSettings) -> tuple[MainWindow, ClusterSession]:
    entry = agent.addresses[0]
    session = ClusterSession(UnixConnector({entry: agent.socket_of(entry)}), entry, poll_interval=0)
    w = MainWindow(session, GuiSettings(entry=entry), store)
    qtbot.addWidget(w)
    w.show()
    return w, session


def test_collector_menu_drives_a_real_local_collector(
    qtbot: Any, agent: RealAgents, short_tmp: str, tmp_path: Path,
    shown_errors: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    logdir = tmp_path / "history"
    pidfile = Path(short_tmp) / "c.pid"
    store = make_store(tmp_path / "gui.ini", logdir=str(logdir), pidfile=str(pidfile))
    w, session = local_window(qtbot, agent, store)
    try:
        assert w.collector.node == agent.addresses[0]  # the entry node by default
        full_cycle(qtbot, w, logdir, shown_errors, monkeypatch, cluster_nodes=1)
        # the collector sampled the agent the GUI reaches: its socket was passed as --node
        old = open_history([h for h in records.list_histories(str(logdir)) if h != str(logdir)][0])
        assert old.node_ids() == [1] and old.nodes[1].address == agent.addresses[0]
    finally:
        w.close()
        session.stop()
        kill_collector(pidfile)


def test_failures_say_what_to_do(
    qtbot: Any, agent: RealAgents, short_tmp: str, tmp_path: Path,
    shown_errors: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    logdir = tmp_path / "history"
    pidfile = Path(short_tmp) / "c.pid"
    store = make_store(tmp_path / "gui.ini", logdir=str(logdir), pidfile=str(pidfile))
    w, session = local_window(qtbot, agent, store)
    try:
        wait_state(qtbot, w, CollectorState.NOT_RUNNING)
        r = run(qtbot, w, w.act_collector_start, Action.START)
        assert r.ok, r
        wait_state(qtbot, w, CollectorState.RUNNING)
        # a second start (the menu item is disabled now; the control still refuses it cleanly)
        with qtbot.waitSignal(w.collector.sig_result, timeout=60000) as blk:
            w.collector.start()
        r = blk.args[0]
        assert r.status == 1 and "already running" in r.first_line()
        assert "collector start on" in w.statusBar().currentMessage() and "failed (exit 1)" in w.statusBar().currentMessage()
        title, text = shown_errors.pop()
        assert title == "Collector" and "already running" in text and "stop it with -k first" in text
        assert "What to do:" in text and f"{logdir}/collector.log" in text
        # a bad label never reaches the collector
        monkeypatch.setattr(errors, "ask_text", lambda *_a, **_k: "two\nlines")
        w.act_collector_checkpoint.trigger()
        assert shown_errors.pop()[1].startswith("Cannot use this checkpoint label: the label must be one line")
        # a label that looks like an option is still a label
        with qtbot.waitSignal(w.collector.sig_result, timeout=30000) as blk:
            w.collector.checkpoint("-v")
        assert blk.args[0].ok, blk.args[0]
        assert [c.label for c in records.History.open(str(logdir)).checkpoints] == ["-v"]
        # the status item reports the state in a box
        r = run(qtbot, w, w.act_collector_status, Action.STATUS)
        assert shown_errors.pop()[1].startswith(f"openmosixcollector on {w.collector.node}: running (pid")
        # read from the collector's JSON (docs/collector.md), not from its human text
        assert r.argv[1:3] == ("-s", "--json") and json.loads(r.stdout)["running"] is True
        assert r.first_line().startswith("running (pid") and "collector status on" in w.statusBar().currentMessage()
        r = run(qtbot, w, w.act_collector_stop, Action.STOP)
        assert r.ok
        # a node this GUI cannot reach: unreachable, and Start/Stop are off
        w.set_collector_node("127.0.0.9")
        assert store.value("collector/node") == "127.0.0.9"
        wait_state(qtbot, w, CollectorState.UNREACHABLE)
        assert w.collector_status.text().strip() == "openMosixcollector on 127.0.0.9: unreachable"
        assert not w.act_collector_start.isEnabled() and not w.act_collector_stop.isEnabled()
        assert "127.0.0.9" in w.collector_status.toolTip()
        w.set_collector_node("")
        wait_state(qtbot, w, CollectorState.NOT_RUNNING)
        assert w.collector.node == agent.addresses[0]
        # a slow command (1.5 s) runs in the worker: the GUI thread's 20 ms timer keeps ticking
        w.collector.set_config(replace(w.collector.config, command="sh -c 'sleep 1.5; exit 3'"))
        ticker = Ticker()
        t0 = time.monotonic()
        with qtbot.waitSignal(w.collector.sig_result, timeout=10000) as blk:
            w.collector.stop()
            assert w.collector.busy and not w.act_collector_start.isEnabled()
        took = time.monotonic() - t0
        ticker.timer.stop()
        assert blk.args[0].status == 3 and took >= 1.5
        assert ticker.max_gap(t0) < 0.3 and len([t for t in ticker.times if t >= t0]) > 30, ticker.max_gap(t0)
        assert "exit status 3" in shown_errors.pop()[1]
    finally:
        w.close()
        session.stop()
        kill_collector(pidfile)


@pytest.mark.cluster
def test_collector_menu_over_ssh_in_a_cluster_node(
    qtbot: Any, make_cluster: Callable[..., Any], tmp_path: Path,
    shown_errors: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cluster = make_cluster(2)
    entry = cluster.nodes[0].address
    holder = cluster.nodes[0].holder_pid
    logdir = tmp_path / "history"
    # /run inside the node is its own tmpfs: the PID file is the node's, seen from here through the holder
    pidfile_in_node = "/run/omview/collector.pid"
    pidfile_here = Path(f"/proc/{holder}/root{pidfile_in_node}")
    connector = SshConnector(SshSettings(ssh_config=str(cluster.ssh_config_path), agent_command=cluster.agent_command))
    session = ClusterSession(connector, entry, poll_interval=0, call_timeout=5.0)
    store = make_store(tmp_path / "gui.ini", logdir=str(logdir), pidfile=pidfile_in_node)
    w = MainWindow(session, GuiSettings(entry=entry), store)
    qtbot.addWidget(w)
    w.show()
    try:
        full_cycle_over_ssh(qtbot, w, logdir, shown_errors, monkeypatch, pidfile_here, holder)
    finally:
        w.close()
        session.stop()
        kill_collector(pidfile_here)


def full_cycle_over_ssh(qtbot: Any, w: MainWindow, logdir: Path, shown: list[tuple[str, str]],
                        monkeypatch: pytest.MonkeyPatch, pidfile_here: Path, holder: int) -> None:  # fmt: skip
    seen: list[CommandResult] = []
    w.collector.sig_result.connect(seen.append)
    running_in_node: list[bool] = []

    def check_namespace(_status: object) -> None:
        st = w.collector.status
        if st.state is CollectorState.RUNNING and st.pid and not running_in_node:
            # the daemon runs inside the node (its network namespace), not on this host
            running_in_node.append(os.readlink(f"/proc/{st.pid}/ns/net") == os.readlink(f"/proc/{holder}/ns/net"))
            assert pidfile_here.read_text().strip() == str(st.pid)

    w.collector.sig_status.connect(check_namespace)
    full_cycle(qtbot, w, logdir, shown, monkeypatch, cluster_nodes=2)
    assert running_in_node == [True]
    assert seen and all("over SSH" in r.where for r in seen)


def test_settings_dialog_and_persistence(qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector's node and files are QSettings keys; empty means the collector's defaults."""
    store = QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)
    config = load_config(store)
    assert config == CollectorConfig() and config.options() == []  # defaults: no --logdir/--pidfile
    dlg = CollectorSettingsDialog(config, "10.0.0.1", ["10.0.0.1", "10.0.0.2"])
    qtbot.addWidget(dlg)
    assert dlg.config() == config  # "the entry node" stays ""
    dlg.node.setCurrentIndex(dlg.node.findData("10.0.0.2"))
    dlg.pidfile.setText("/run/omview/collector.pid")
    assert dlg.config().node == "10.0.0.2" and dlg.config().logdir == ""
    dlg.node.setEditText("node7")
    chosen = dlg.config()
    assert chosen.node == "node7" and chosen.options() == ["--pidfile", "/run/omview/collector.pid"]

    session = ClusterSession(UnixConnector({}), "10.0.0.1", poll_interval=0)
    w = MainWindow(session, GuiSettings(entry="10.0.0.1"), store)
    qtbot.addWidget(w)
    try:
        assert w.collector.node == "10.0.0.1"
        monkeypatch.setattr(CollectorSettingsDialog, "ask", classmethod(lambda *_a: chosen))
        w.act_collector_settings.trigger()
        assert w.collector.config == chosen and w.collector.node == "node7"
        assert load_config(QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)) == chosen
        assert w.collector_status.text().strip() == "openMosixcollector on node7: not checked yet"
    finally:
        w.close()
        session.stop()
