"""openmosixprocs window: the guests window ("manage procs from remote") - the processes that migrated
to this node from other home nodes, with their home node's ID and address, the selected one's
stats (utime, cutime, nice, state, vsize, rss, threads) and buttons to send it home or to the best
node. It has a ProcModel of its own that keeps only guests, fed by the box's poll (no second poll of
procs.list).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QCloseEvent, QFontDatabase
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from omview.gui.links import Lane, TaskDone, deliverer
from omview.gui.procdrag import MigrationResult, migrate_task
from omview.gui.session import ClusterSession
from omview.model.cluster import ProcessInfo
from omview.procs.migrator import ProcStatus, status_task
from omview.procs.model import CMD, HOME, NICE, PROC_ROLE, RSS, STAT, ProcModel


def is_guest(p: ProcessInfo, node_id: int) -> bool:
    """Runs here, and its home is another node."""
    return p.home not in (0, node_id) and p.where in (0, node_id)


class GuestsWindow(QDialog):
    """The guests of the node at ``address`` (the box feeds ``model`` each time it polls)."""

    _sig_done = Signal(object)

    def __init__(self, session: ClusterSession, address: str, node_id: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.address = address
        self.model = ProcModel(node_id, self, keep=is_guest)
        model = self.model
        self.results: list[str] = []
        self.details: ProcStatus | None = None
        self._deliver = deliverer(self, "_sig_done")
        self._sig_done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        self.setWindowTitle(f"guests on node{model.node_id}")
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("processes that migrated here from their home node:"))
        self.view = QTableView(self)
        self.view.setModel(model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.verticalHeader().hide()
        for col in range(model.columnCount()):
            self.view.setColumnHidden(col, col not in (0, HOME, STAT, NICE, RSS, CMD))
        self.view.setColumnWidth(CMD, 260)
        for col in (STAT, NICE, HOME):
            self.view.setColumnWidth(col, 50)
        self.view.horizontalHeader().setStretchLastSection(True)
        self.view.selectionModel().selectionChanged.connect(lambda *_: self.refresh_details())
        layout.addWidget(self.view)
        self.home_label = QLabel("")
        layout.addWidget(self.home_label)
        self.details_pane = QPlainTextEdit(readOnly=True)
        self.details_pane.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.details_pane.setMaximumHeight(150)
        layout.addWidget(self.details_pane)
        buttons = QHBoxLayout()
        self.home_button = QPushButton("go home")
        self.home_button.clicked.connect(lambda: self.migrate("home"))
        self.best_button = QPushButton("go to the best node")
        self.best_button.clicked.connect(lambda: self.migrate("best"))
        buttons.addWidget(self.home_button)
        buttons.addWidget(self.best_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.outcome = QLabel("")
        self.outcome.setWordWrap(True)
        layout.addWidget(self.outcome)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.refresh_details)
        self._timer.start(1000)
        self.resize(720, 480)

    def guests(self) -> list[ProcessInfo]:
        return self.model.processes()

    def selected(self) -> ProcessInfo | None:
        rows = self.view.selectionModel().selectedRows()
        return self.model.data(self.model.index(rows[0].row(), 0), PROC_ROLE) if rows else None

    def select(self, pid: int) -> None:
        row = self.model.row_of(pid)
        if row >= 0:
            self.view.selectRow(row)

    @Slot()
    def refresh_details(self) -> None:
        p = self.selected()
        if p is None:
            self.home_label.setText("select a guest")
            return
        home = next((n for n in self.session.table if n.id == p.home), None)
        self.home_label.setText(f"home: node {p.home}" + (f" ({home.address})" if home else ""))
        self.session.links.poll(self.address, f"status {p.pid}", status_task(p.pid), self._deliver)

    def migrate(self, target: str) -> None:
        p = self.selected()
        if p is None:
            return
        self.outcome.setText(f"sending {p.pid} to {target}…")
        self.session.links.submit(self.address, Lane.ACTION, "migrate", migrate_task((p.pid,), target),
                                  self._deliver, urgent=True)  # fmt: skip

    @Slot(object)
    def _on_done(self, done: TaskDone) -> None:
        if done.kind.startswith("status "):
            if done.error is not None:
                self.details_pane.setPlainText(f"no status: {done.error.describe()}")
                return
            st: Any = done.value
            self.details = st
            f = dict(st.fields)
            t = dict(st.stat)
            self.details_pane.setPlainText(
                f"state   {f.get('State', '?')}\nutime   {t.get('utime', 0):.2f} s    cutime {t.get('cutime', 0):.2f} s\n"
                f"nice    {t.get('nice', '?')}\nvsize   {f.get('VmSize', '?')}\nrss     {f.get('VmRSS', '?')}\n"
                f"threads {f.get('Threads', '?')}"
            )
            return
        texts = ([f"{done.kind}: {done.error.describe()}"] if done.error is not None else
                 [r.text() for r in done.value if isinstance(r, MigrationResult)])  # fmt: skip
        self.results += texts
        self.outcome.setText("; ".join(texts))

    def closeEvent(self, event: QCloseEvent) -> None:
        self._timer.stop()
        super().closeEvent(event)
