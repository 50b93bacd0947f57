"""One SSH connection per node (root, netns cluster): whatever the window does at once - polling,
a node dialog applying switches, a job streaming its output, the Collector menu asking for the
collector's status - each node's sshd has exactly one session from the GUI, counted on the node."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from omview.gui import errors
from omview.gui.connect import SshConnector, SshSettings
from omview.gui.session import ClusterSession
from omview.gui.settings import GuiSettings
from omview.openmosixview.jobs import JobState, Mode, RunRequest
from omview.openmosixview.window import MainWindow

pytestmark = pytest.mark.cluster

PY = "/usr/bin/python3"


def ssh_sessions(netns: str) -> list[str]:
    """The established TCP connections to the node's sshd, as the node's kernel lists them."""
    out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-tnH", "state", "established", "( sport = :22 )"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return [line for line in out.splitlines() if line.strip()]


def test_each_node_has_one_ssh_connection_from_the_gui(qtbot: Any, make_cluster: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    shown: list[str] = []
    monkeypatch.setattr(errors, "show_info", lambda _p, _t, text, _d="": shown.append(text))
    cluster = make_cluster(3)
    entry, second = cluster.nodes[0].address, cluster.nodes[1].address
    connector = SshConnector(SshSettings(ssh_config=str(cluster.ssh_config_path), agent_command=cluster.agent_command))
    session = ClusterSession(connector, entry, poll_interval=0.5, call_timeout=5.0)
    w = MainWindow(session, GuiSettings(entry=entry), None)
    qtbot.addWidget(w)
    key = 0
    try:
        w.show()  # the Collector menu starts watching its node (the entry node)
        session.start()
        qtbot.waitUntil(lambda: w.model.rowCount() == 3 and all(r.direct for r in w.model.rows()), timeout=30000)
        # a job streams its output from the entry node (mosrun's channel on the entry's connection)
        (key,) = w.jobs.start(RunRequest(entry, Mode.NOMIG, (PY, "-u", "-c",
                              "import time\nfor i in range(600): print('tick', i, flush=True); time.sleep(0.1)")))  # fmt: skip
        qtbot.waitUntil(lambda: w.jobs.model.record(key).output_size > 30, timeout=30000)  # type: ignore[union-attr]
        # the Collector menu asks for the status on the entry node
        with qtbot.waitSignal(w.collector.sig_result, timeout=30000) as status:
            w.collector.show_status()
        assert "over SSH" in status.args[0].where and shown, status.args[0]
        # a node dialog applies a switch on the second node
        dlg = w.open_node_dialog(second)
        qtbot.waitUntil(dlg.apply_button.isEnabled, timeout=20000)
        dlg.boxes["block"].setChecked(not dlg.boxes["block"].isChecked())
        with qtbot.waitSignal(session.sig_flags_applied, timeout=20000) as applied:
            dlg.apply_button.click()
        assert applied.args[1].ok, applied.args[1].summary()
        rec = w.jobs.model.record(key)
        assert rec is not None and rec.state is JobState.RUNNING
        # all of that at once, and still one connection per node
        counts = {n.address: ssh_sessions(n.netns) for n in cluster.nodes}
        assert {a: len(c) for a, c in counts.items()} == {n.address: 1 for n in cluster.nodes}, counts
        dlg.close()
    finally:
        if key:
            w.jobs.stop(key)
        w.jobs.shutdown(timeout=10.0)
        w.collector.shutdown()
        session.stop()
    # and closing the links closes the connections (sshd notices within moments)
    qtbot.waitUntil(lambda: all(not ssh_sessions(n.netns) for n in cluster.nodes), timeout=10000)
