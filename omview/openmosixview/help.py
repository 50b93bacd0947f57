"""openmosixview window: the Help menu - the shipped documentation in a help window, and the About box.

The documents are found by omview.gui.assets (a checkout's docs/, or PREFIX/share/doc/omview of an
installed package). The About box lists local versions at once and each node's agent and CRIU
versions from one ``node.info`` per node, asked in the node's ACTION lane (omview.gui.links).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import Qt, QTimer, QUrl, Signal, Slot, qVersion
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from omview import __version__
from omview.gui import assets
from omview.gui.links import Lane, LaneContext, Links, TaskDone, deliverer
from omview.model.cluster import NodeInfo

#: The README's title in the list; the other documents are titled by their first heading.
OVERVIEW = "Overview (README)"


def _title(path: Path) -> str:
    """A document's first heading ("# omview-agent — the node agent"), else its file name."""
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.startswith("# "):
                    return line[2:].strip().replace("`", "")
    except OSError:
        pass
    return path.name


def documents() -> list[tuple[str, Path]]:
    """(title, path) of every shipped document, the README first."""
    found = [(_title(p), p) for p in assets.docs()]
    readme = assets.doc("README.md")
    return ([(OVERVIEW, readme)] if readme is not None else []) + found


class HelpWindow(QDialog):
    """Help > Documentation: the list of documents and the chosen one rendered from Markdown.

    Links between the documents open here (QTextBrowser resolves them against the shown file);
    web links open in the default browser.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("openmosixview documentation")
        self.resize(1000, 700)
        self.list = QListWidget(self)
        self.browser = QTextBrowser(self)
        self.browser.setOpenExternalLinks(True)
        split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(self.list)
        split.addWidget(self.browser)
        split.setSizes([330, 670])
        layout = QVBoxLayout(self)
        layout.addWidget(split)
        self.docs = documents()
        for title, path in self.docs:
            item = QListWidgetItem(title, self.list)
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            item.setToolTip(str(path))
        self.list.currentItemChanged.connect(self._on_pick)
        self.browser.sourceChanged.connect(self._on_source)
        if self.docs:
            self.list.setCurrentRow(0)
        else:
            self.browser.setPlainText(
                "No documentation found. It is installed with omview (PREFIX/share/doc/omview) "
                "and is in the docs/ directory of a checkout."
            )

    def show_doc(self, name: str) -> bool:
        """Show the document with this file name ("cli.md"); False when it is not shipped."""
        for row, (_, path) in enumerate(self.docs):
            if path.name == name:
                self.list.setCurrentRow(row)
                return True
        return False

    @Slot(QListWidgetItem, QListWidgetItem)
    def _on_pick(self, item: QListWidgetItem | None, _old: QListWidgetItem | None) -> None:
        if item is not None:
            url = QUrl.fromLocalFile(str(item.data(Qt.ItemDataRole.UserRole)))
            self.browser.setSource(url, QTextDocument.ResourceType.MarkdownResource)

    @Slot(QUrl)
    def _on_source(self, url: QUrl) -> None:
        """A followed link changed the document: the list shows which one it is."""
        for row, (_, path) in enumerate(self.docs):
            if url.toLocalFile() == str(path) and self.list.currentRow() != row:
                self.list.blockSignals(True)
                self.list.setCurrentRow(row)
                self.list.blockSignals(False)


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def local_versions() -> list[tuple[str, str]]:
    """What runs here: omview, Python, Qt, PySide6, paramiko."""
    return [
        ("omview", __version__),
        ("Python", platform.python_version()),
        ("Qt", qVersion()),
        ("PySide6", pyside_version),
        ("paramiko", _dist_version("paramiko")),
    ]


@dataclass(frozen=True)
class NodeVersions:
    """What one node's agent said about itself (from the lane thread to the GUI thread)."""

    agent: str
    criu: str
    checked: bool  # False while the agent's own CRIU check still runs (just after its start)


def _ask_versions(ctx: LaneContext) -> NodeVersions:
    """One node.info on the node's ACTION lane (no Qt here)."""
    info: dict[str, Any] = ctx.client().call("node.info")
    criu = info.get("criu") or {}
    if not criu.get("checked"):
        criu_text = "being checked…"
    elif criu.get("ok"):
        criu_text = str(criu.get("version") or "installed (version unknown)")
    else:
        criu_text = f"not usable: {criu.get('detail') or 'not checked yet'}"
    return NodeVersions(str(info.get("version") or "?"), criu_text, bool(criu.get("checked")))


class AboutDialog(QDialog):
    """Help > About: local versions, and every node's agent and CRIU version as they answer."""

    _sig_done = Signal(object)  # TaskDone from a lane thread, queued to the GUI thread
    #: an agent checks CRIU once, in the background, after it starts: ask again this often, this long
    RECHECK_MS, RECHECKS = 1000, 30
    COLUMNS = ("Node", "Address", "Agent (omview)", "CRIU")

    def __init__(self, links: Links, nodes: tuple[NodeInfo, ...], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About openmosixview")
        self.resize(640, 420)
        layout = QVBoxLayout(self)
        head = QHBoxLayout()
        logo = QLabel(self)
        icon = parent.windowIcon() if parent is not None else None
        if icon is not None and not icon.isNull():
            logo.setPixmap(icon.pixmap(64, 64))
        head.addWidget(logo)
        self.versions = local_versions()
        text = "<b>openmosixview</b> (omview) - watch and steer a process-migration cluster over SSH.<br><br>"
        text += "<br>".join(f"{name}: {version}" for name, version in self.versions)
        self.label = QLabel(text, self)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        head.addWidget(self.label, 1)
        layout.addLayout(head)
        self.table = QTableWidget(len(nodes), len(self.COLUMNS), self)
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        layout.addWidget(QLabel("The cluster's nodes:", self))
        layout.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self._links = links
        self._nodes = nodes
        self._rows: dict[int, int] = {}  # ticket -> row
        self._tries: dict[int, int] = {}  # row -> requests made
        self._deliver = deliverer(self, "_sig_done")
        self._sig_done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        for row, node in enumerate(nodes):
            for col, value in enumerate((str(node.id), node.address, node.version or "?", "asking…")):
                self.table.setItem(row, col, QTableWidgetItem(value))
            if node.up:
                self._ask(row)
            else:
                self._cell(row, 3).setText("node down")
        self.table.resizeColumnsToContents()

    def _ask(self, row: int) -> None:
        self._tries[row] = self._tries.get(row, 0) + 1
        ticket = self._links.submit(self._nodes[row].address, Lane.ACTION, "about", _ask_versions, self._deliver)
        self._rows[ticket] = row

    def pending(self) -> int:
        """How many nodes have not answered yet."""
        return len(self._rows)

    def _cell(self, row: int, col: int) -> QTableWidgetItem:
        item = self.table.item(row, col)
        assert item is not None  # every cell is filled in __init__
        return item

    def node_row(self, row: int) -> tuple[str, ...]:
        return tuple(self._cell(row, col).text() for col in range(len(self.COLUMNS)))

    @Slot(object)
    def _on_done(self, done: TaskDone) -> None:
        row = self._rows.pop(done.ticket, None)
        if row is None:
            return
        value = done.value
        if isinstance(value, NodeVersions):
            self._cell(row, 2).setText(value.agent)
            self._cell(row, 3).setText(value.criu)
            if not value.checked and self._tries[row] < self.RECHECKS:
                self._rows[-1 - row] = row  # still pending until the agent's check is done
                QTimer.singleShot(self.RECHECK_MS, self, lambda r=row: self._again(r))
        else:
            why = done.error.describe() if done.error is not None else "no answer"
            self._cell(row, 3).setText(f"unknown: {why}")
        self.table.resizeColumnsToContents()


    def _again(self, row: int) -> None:
        self._rows.pop(-1 - row, None)
        self._ask(row)


def open_about(links: Links, nodes: tuple[NodeInfo, ...], parent: QWidget | None) -> AboutDialog:
    """Show the About box (modeless, deleted when closed)."""
    dlg = AboutDialog(links, nodes, parent)
    dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dlg.show()
    return dlg
