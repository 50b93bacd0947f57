"""The SSH path on the netns cluster (root): host keys refused and shown, then accepted; SSH rows."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from omview.gui import errors
from omview.gui.connect import SshConnector, SshSettings
from omview.gui.links import LinkStatus
from omview.gui.session import ClusterSession
from omview.gui.settings import GuiSettings
from omview.openmosixview.node_table import COL_LCD, COL_SPEED, COL_STATE, ValueRole
from omview.openmosixview.window import MainWindow

pytestmark = pytest.mark.cluster


def fingerprints(known_hosts: str) -> set[str]:
    out = subprocess.run(["ssh-keygen", "-lf", known_hosts], capture_output=True, text=True, check=True).stdout
    return {line.split()[1] for line in out.splitlines() if line.strip()}


def test_unknown_host_key_is_refused_shown_and_accepted_on_request(
    qtbot: Any, make_cluster: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = make_cluster(2)
    entry = cluster.nodes[0].address
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    connector = SshConnector(SshSettings(ssh_config=str(cluster.ssh_config_path), known_hosts=str(empty),
                                         agent_command=cluster.agent_command))  # fmt: skip
    session = ClusterSession(connector, entry, poll_interval=0, call_timeout=5.0, backoff=(0.5, 2.0))
    asked: list[tuple[str, str, str]] = []
    monkeypatch.setattr(errors, "ask_accept_host_key", lambda _p, a, t, f: asked.append((a, t, f)) or True)
    try:
        w = MainWindow(session, GuiSettings(entry=entry), None)
        qtbot.addWidget(w)
        with qtbot.waitSignal(session.sig_entry_failed, timeout=20000) as blk:
            session.refresh_now()
        link = blk.args[0]
        assert link.status is LinkStatus.HOST_KEY_UNKNOWN
        assert link.fingerprint in fingerprints(str(cluster.known_hosts_path))
        assert link.fingerprint in link.message and "accept it explicitly" in link.message
        assert empty.read_text() == ""  # never added silently
        assert "host key unknown" in w.header.entry_label.text()
        # the admin accepts explicitly: the key is written, and the node connects
        session.fetch_host_key(entry)
        qtbot.waitUntil(lambda: session.link(entry).status is LinkStatus.UP, timeout=20000)
        assert asked and asked[0][0] == entry and asked[0][2] == link.fingerprint
        assert entry in empty.read_text()
        session.refresh_now()
        qtbot.waitUntil(lambda: w.model.rowCount() == 2, timeout=20000)
        # the second node's key is still unknown: its own row says so, with the fingerprint
        other = cluster.nodes[1].address
        qtbot.waitUntil(lambda: session.link(other).status is LinkStatus.HOST_KEY_UNKNOWN, timeout=20000)
        r = w.model.row_of(other)
        assert r is not None
        state = w.model.data(w.model.index(r, COL_STATE))
        assert "host key unknown" in state and session.link(other).fingerprint in state
    finally:
        session.stop()


def test_speed_over_ssh_bridge(qtbot: Any, make_cluster: Any) -> None:
    cluster = make_cluster(2)
    entry = cluster.nodes[0].address
    connector = SshConnector(SshSettings(ssh_config=str(cluster.ssh_config_path), agent_command=cluster.agent_command))
    session = ClusterSession(connector, entry, poll_interval=0, call_timeout=5.0)
    try:
        w = MainWindow(session, GuiSettings(entry=entry), None)
        qtbot.addWidget(w)
        session.refresh_now()
        qtbot.waitUntil(lambda: w.model.rowCount() == 2 and all(r.direct for r in w.model.rows()), timeout=30000)
        target = cluster.nodes[1].address
        r = w.model.row_of(target)
        assert r is not None
        with qtbot.waitSignal(session.sig_speed_set, timeout=20000) as blk:
            w.model.setData(w.model.index(r, COL_SPEED), 5000)
        assert blk.args[1].error is None, blk.args[1].error
        assert w.model.data(w.model.index(r, COL_LCD), ValueRole) == 5000
    finally:
        session.stop()
