"""The Help menu against real agents: the shipped documentation in the help window, and the About
box with the versions here and every node's agent and CRIU (from a real node.info per node)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import PySide6
import pytest
from PySide6.QtCore import QSettings, QUrl, qVersion

from omview import __version__
from omview.gui import assets
from omview.gui.connect import UnixConnector
from omview.gui.session import ClusterSession
from omview.gui.settings import GuiSettings
from omview.model.channel import UnixChannel
from omview.model.client import AgentClient
from omview.openmosixview.help import OVERVIEW, AboutDialog
from omview.openmosixview.window import MainWindow
from tests.gui.real_agents import RealAgents

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def agents(short_tmp: str) -> Iterator[RealAgents]:
    agents = RealAgents(Path(short_tmp) / "agents", count=2)
    try:
        agents.start()
        yield agents
    finally:
        agents.stop()


@pytest.fixture
def window(qtbot: Any, agents: RealAgents, tmp_path: Path) -> Iterator[MainWindow]:
    entry = agents.addresses[0]
    sockets = {a: agents.socket_of(a) for a in agents.addresses}
    session = ClusterSession(UnixConnector(sockets), entry, poll_interval=0.5)
    store = QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)
    w = MainWindow(session, GuiSettings(entry=entry), store)
    qtbot.addWidget(w)
    w.show()
    session.start()
    try:
        yield w
    finally:
        w.close()
        session.stop()


def test_documentation_opens_in_the_help_window(qtbot: Any, window: MainWindow) -> None:
    assert window.act_help in window.menus["Help"].actions()
    window.act_help.trigger()
    help_window = window.help_window
    assert help_window is not None and help_window.isVisible()
    titles = [help_window.list.item(i).text() for i in range(help_window.list.count())]
    shipped = sorted(p.name for p in (REPO / "docs").glob("*.md"))
    assert [p.name for _, p in help_window.docs][1:] == shipped and titles[0] == OVERVIEW
    assert "omview-agent — the node agent" in titles
    # the README, rendered from Markdown (no '#' or '|' markup left)
    assert "omview" in help_window.browser.toPlainText() and "\n# " not in help_window.browser.toPlainText()
    assert help_window.show_doc("collector.md")
    text = help_window.browser.toPlainText()
    assert "openmosixcollector — the cluster's history" in text and "-s --json" in text
    assert not help_window.show_doc("no-such.md")
    # a link from one document to another opens it in the same window
    help_window.show_doc("cluster.md")
    help_window.browser.setSource(help_window.browser.source().resolved(QUrl("migration.md")))
    assert "Jobs and live migration" in help_window.browser.toPlainText()
    assert help_window.list.currentItem().text().startswith("Jobs and live migration")
    window.act_help.trigger()  # one help window, reused
    assert window.help_window is help_window
    if os.environ.get("OMVIEW_SCREENSHOTS"):
        help_window.grab().save(os.path.join(os.environ["OMVIEW_SCREENSHOTS"], "help.png"))


def test_about_box_shows_local_and_node_versions(qtbot: Any, window: MainWindow, agents: RealAgents) -> None:
    qtbot.waitUntil(lambda: len(window.session.table) == 2 and all(n.up for n in window.session.table),
                    timeout=30000)  # fmt: skip
    window.act_about.trigger()
    dialogs = window.findChildren(AboutDialog)
    assert len(dialogs) == 1
    about = dialogs[0]
    assert about.isVisible()
    label = about.label.text()
    for name, version in (("omview", __version__), ("Qt", qVersion()), ("PySide6", PySide6.__version__),
                          ("paramiko", paramiko.__version__)):  # fmt: skip
        assert f"{name}: {version}" in label
    qtbot.waitUntil(lambda: about.pending() == 0, timeout=30000)
    rows = sorted(about.node_row(r) for r in range(about.table.rowCount()))
    assert [r[1] for r in rows] == sorted(agents.addresses)
    for row in rows:
        assert row[2] == __version__
        criu = row[3]
        assert criu != "asking…" and not criu.startswith("unknown")
    # what each agent's node.info says about CRIU, asked directly
    for row in rows:
        with AgentClient(UnixChannel(agents.socket_of(row[1])), client_name="test") as c:
            criu = c.call("node.info")["criu"]
        assert row[3] == (criu["version"] if criu["ok"] else f"not usable: {criu['detail']}")
    if os.environ.get("OMVIEW_SCREENSHOTS"):
        about.grab().save(os.path.join(os.environ["OMVIEW_SCREENSHOTS"], "about.png"))
    about.close()


def test_docs_are_found_where_pip_installs_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    installed = tmp_path / "share" / "doc" / "omview"
    installed.mkdir(parents=True)
    (installed / "cli.md").write_text("# The classic command line\n")
    (installed / "README.md").write_text("# omview\n")
    monkeypatch.setattr(assets, "DOC_SEARCH", (tmp_path / "nowhere", installed))
    assert assets.docs() == [installed / "cli.md"]
    assert assets.doc("README.md") == installed / "README.md"
