"""'start agent' / 'stop agent' in the node configuration dialog (issue 4), for real.

On the netns cluster (root): the dialog runs ``omview-agent stop|start`` on node 2 over SSH, the
row turns red and green again, and the all-nodes dialog does it per node. Locally (no root): the
same buttons through the local runner against a loopback agent.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from PySide6.QtCore import Qt

from omview.agent import daemon
from omview.gui import errors
from omview.gui.connect import SshConnector, SshSettings
from omview.gui.links import LinkStatus
from omview.gui.session import ClusterSession
from omview.gui.settings import GuiSettings
from omview.openmosixview.node_dialog import AgentAction, AgentResult, NodeConfigDialog
from omview.openmosixview.window import MainWindow
from omview.testbed import teardown
from tests.support.agents import Cluster, make_base


def lamp(w: MainWindow, address: str) -> str | None:
    r = w.model.row_of(address)
    return None if r is None else w.model.rows()[r].lamp


def collect(dlg: NodeConfigDialog) -> list[AgentResult]:
    got: list[AgentResult] = []
    dlg.agents.sig_result.connect(lambda r: got.append(r) if r.final else None)
    return got


def in_netns_of(pid: int, holder: int) -> bool:
    return os.readlink(f"/proc/{pid}/ns/net") == os.readlink(f"/proc/{holder}/ns/net")


@pytest.mark.cluster
def test_stop_and_start_a_node_agent_from_its_dialog_over_ssh(
    qtbot: Any, make_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = make_cluster(2)
    entry, node2 = cluster.nodes[0].address, cluster.nodes[1].address
    first_agent = cluster.nodes[1].agent_pid
    connector = SshConnector(
        SshSettings(ssh_config=str(cluster.ssh_config_path), agent_command=cluster.agent_command)
    )
    session = ClusterSession(connector, entry, poll_interval=1.0, call_timeout=5.0, backoff=(0.5, 2.0))
    asked: list[str] = []
    monkeypatch.setattr(errors, "ask_yes_no", lambda _p, _t, text: asked.append(text) or True)
    started: list[int] = []
    try:
        w = MainWindow(session, GuiSettings(entry=entry), None)
        qtbot.addWidget(w)
        session.start()
        qtbot.waitUntil(
            lambda: w.model.rowCount() == 2 and lamp(w, entry) == lamp(w, node2) == "up", timeout=30000
        )

        # -- one node: stop, the row turns red; start, green again --
        dlg = w.open_node_dialog(node2)
        qtbot.waitUntil(lambda: dlg.stop_agent_button.isEnabled(), timeout=20000)
        assert not dlg.start_agent_button.isEnabled() and dlg.agent_label.text() == "agent: answering"
        results = collect(dlg)
        qtbot.mouseClick(dlg.stop_agent_button, Qt.MouseButton.LeftButton)
        assert asked and node2 in asked[0] and "entry node" not in asked[0]
        assert not dlg.stop_agent_button.isEnabled()  # busy
        qtbot.waitUntil(lambda: bool(results), timeout=60000)
        r = results[-1]
        assert r.action is AgentAction.STOP and r.ok, r
        assert f"omview-agent stopped (pid {first_agent})" in r.summary()
        assert "over SSH" in r.where and r.argv[-1] == "stop"
        assert "stopped (pid" in dlg._items[node2].text(1)
        assert "stopped (pid" in w.statusBar().currentMessage()
        assert not daemon.pid_alive(first_agent)  # the agent omview-cluster started, ended by its PID
        qtbot.waitUntil(lambda: lamp(w, node2) == "down", timeout=20000)
        qtbot.waitUntil(lambda: session.link(node2).status is LinkStatus.NO_AGENT, timeout=20000)
        assert dlg.start_agent_button.isEnabled() and not dlg.stop_agent_button.isEnabled()
        assert lamp(w, entry) == "up"

        qtbot.mouseClick(dlg.start_agent_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: len(results) == 2, timeout=90000)
        r = results[-1]
        assert r.action is AgentAction.START and r.ok, r
        assert "omview-agent started (pid" in r.summary()
        pid = int(r.summary().split("(pid ")[1].split(")")[0])
        started.append(pid)
        # a daemon inside node 2 (its netns, its mounts), not a child of the GUI or of sshd
        assert daemon.is_agent(pid) and in_netns_of(pid, cluster.nodes[1].holder_pid)
        assert os.getppid() != pid and os.readlink(f"/proc/{pid}/cwd") == "/"
        qtbot.waitUntil(
            lambda: lamp(w, node2) == "up" and session.link(node2).status is LinkStatus.UP, timeout=30000
        )
        qtbot.waitUntil(lambda: dlg.stop_agent_button.isEnabled(), timeout=10000)
        assert not dlg.start_agent_button.isEnabled()
        # the switches were read again from the new agent
        qtbot.waitUntil(
            lambda: dlg.apply_button.isEnabled() and "on:" in dlg._items[node2].text(1), timeout=20000
        )
        dlg.close()

        # -- all nodes: the same buttons, per node --
        alldlg = w.open_all_nodes_dialog()
        assert alldlg is not None
        qtbot.waitUntil(lambda: all(alldlg.agent_up[a] is True for a in (entry, node2)), timeout=20000)
        assert alldlg.stop_agent_button.isEnabled() and not alldlg.start_agent_button.isEnabled()
        results = collect(alldlg)
        alldlg.stop_agent_button.click()
        assert "2 nodes" in asked[-1] and "entry node" in asked[-1]
        qtbot.waitUntil(lambda: len(results) == 2, timeout=60000)
        assert {r.node for r in results} == {entry, node2} and all(r.ok for r in results), results
        for a in (entry, node2):
            assert "omview-agent stopped (pid" in alldlg._items[a].text(1)
        assert not daemon.pid_alive(pid)
        qtbot.waitUntil(lambda: lamp(w, node2) == "down" and lamp(w, entry) == "down", timeout=20000)
        assert alldlg.start_agent_button.isEnabled() and not alldlg.stop_agent_button.isEnabled()

        results.clear()
        alldlg.start_agent_button.click()
        qtbot.waitUntil(lambda: len(results) == 2, timeout=90000)
        assert all(r.ok for r in results), results
        for r in results:
            started.append(int(r.summary().split("(pid ")[1].split(")")[0]))
            assert "omview-agent started (pid" in alldlg._items[r.node].text(1)
        qtbot.waitUntil(lambda: lamp(w, entry) == lamp(w, node2) == "up", timeout=30000)
        alldlg.close()
    finally:
        session.stop()
    # the cluster's teardown must also end agents it did not start (they live in its namespaces)
    assert started and all(daemon.pid_alive(p) for p in started[1:])
    teardown(cluster.state_dir)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(daemon.pid_alive(p) for p in started):
        time.sleep(0.1)
    assert not any(daemon.pid_alive(p) for p in started), started


def test_stop_and_start_through_the_local_runner(qtbot: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local/socket connector: omview-agent runs here as a subprocess, told the GUI's socket."""
    from omview.gui.connect import UnixConnector

    base = make_base()
    agents = Cluster(base, 1)
    a = agents.agents[0]
    a.start()
    assert a.proc is not None
    first = a.proc.pid
    # the local runner's omview-agent reads the node's agent.toml from OMVIEW_CONFIG_DIR
    monkeypatch.setenv("OMVIEW_CONFIG_DIR", a.dir)
    monkeypatch.setenv("OMVIEW_STATE_DIR", a.state_dir)
    monkeypatch.setattr(errors, "ask_yes_no", lambda *_a: True)
    address = a.settings["address"]
    session = ClusterSession(UnixConnector({address: a.socket}, connect_timeout=2.0), address,
                             poll_interval=0, call_timeout=3.0, backoff=(0.2, 1.0))  # fmt: skip
    started: list[int] = []
    try:
        dlg = NodeConfigDialog(session, [address])
        qtbot.addWidget(dlg)
        qtbot.waitUntil(lambda: dlg.stop_agent_button.isEnabled(), timeout=15000)
        results = collect(dlg)
        dlg.stop_agent_button.click()
        qtbot.waitUntil(lambda: bool(results), timeout=60000)
        assert results[0].ok and f"stopped (pid {first})" in results[0].summary(), results[0]
        assert results[0].where == "this machine" and "--socket" in results[0].argv
        a.proc.wait(10)
        qtbot.waitUntil(lambda: dlg.start_agent_button.isEnabled(), timeout=15000)
        dlg.start_agent_button.click()
        qtbot.waitUntil(lambda: len(results) == 2, timeout=60000)
        assert results[1].ok, results[1]
        started.append(int(results[1].summary().split("(pid ")[1].split(")")[0]))
        qtbot.waitUntil(lambda: session.link(address).status is LinkStatus.UP, timeout=15000)
        assert daemon.read_pid(os.path.join(os.path.dirname(a.socket), "agent.pid")) == started[0]
        dlg.close()
    finally:
        session.stop()
        for pid in started:
            if daemon.pid_alive(pid) and daemon.is_agent(pid):
                os.kill(pid, 15)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(daemon.pid_alive(p) for p in started):
            time.sleep(0.1)
        agents.stop()
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    assert not any(daemon.pid_alive(p) for p in started)


def test_result_lines_say_what_happened() -> None:
    stop = AgentResult(AgentAction.STOP, "n2", status=0,
                       stdout="stopping omview-agent (pid 7, node 2)\nomview-agent stopped (pid 7) after 0.2 s\n")  # fmt: skip
    assert stop.summary() == "omview-agent stopped (pid 7) after 0.2 s" and stop.agent_runs is False
    failed = AgentResult(AgentAction.START, "n2", status=1, stderr=(
        "omview-agent: the agent exited while starting. Last lines of /var/lib/omview/agent.log:\n"
        "  | 2026 INFO calibrated\n  | 2026 ERROR /etc/omview/agent.toml: key 'port' = 0: must be between 1 and 65535\n"))  # fmt: skip
    text = failed.summary()
    assert text.startswith("could not start the agent (exit 1): the agent exited while starting")
    assert text.endswith("must be between 1 and 65535") and failed.agent_runs is None
    again = AgentResult(
        AgentAction.START, "n2", status=3, stderr="omview-agent: an agent already runs (pid 9)\n"
    )
    assert again.summary() == "nothing to do: an agent already runs (pid 9)" and again.agent_runs is True
    assert "not installed on n2" in AgentResult(AgentAction.STOP, "n2", status=127).summary()
    lost = AgentResult(AgentAction.STOP, "n2", problem="unreachable: connection refused")
    assert lost.summary() == "could not stop the agent (not run): unreachable: connection refused"
    progress = AgentResult(
        AgentAction.STOP, "n2", stdout="still stopping pid 7 (5 s)", final=False, status=None
    )
    assert progress.summary() == "stop agent: still stopping pid 7 (5 s)"
