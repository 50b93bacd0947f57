"""openmosixprocs window: the process box - one node's processes, sorted and filtered, polled once a
second through omview.gui.links (the node's POLL lane; results come back as a queued signal).

Rows hold still while the pointer is over the table, a row is selected or a row is dragged (the
model applies new and ended processes when the hold ends), so a row never jumps under the pointer.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QEvent, QModelIndex, QObject, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from omview.gui.links import TaskDone, deliverer
from omview.gui.proclist import ProcList, list_procs
from omview.gui.session import ClusterSession
from omview.model.cluster import NodeInfo, ProcessInfo
from omview.procs.guests import GuestsWindow
from omview.procs.migrator import Migrator
from omview.procs.model import CMD, COLUMNS, PID, PROC_ROLE, USER, ProcDelegate, ProcModel

log = logging.getLogger(__name__)


class ProcView(QTableView):
    """The table; tells the box when rows must hold still (hover, selection, drag)."""

    sig_hold = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._hovered = False
        self._dragging = False
        self.viewport().installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.viewport() and event.type() in (QEvent.Type.Enter, QEvent.Type.Leave):
            self._hovered = event.type() == QEvent.Type.Enter
            self.update_hold()
        return super().eventFilter(obj, event)

    def startDrag(self, actions: Qt.DropAction) -> None:
        self._dragging = True
        self.update_hold()
        try:
            super().startDrag(actions)
        finally:
            self._dragging = False
            self.update_hold()

    def update_hold(self) -> None:
        sel = self.selectionModel()
        self.sig_hold.emit(self._hovered or self._dragging or (sel is not None and sel.hasSelection()))


class ProcBox(QMainWindow):
    """The process box of one node (``node`` None: the entry node)."""

    _sig_done = Signal(object)  # TaskDone from the POLL lane, queued to the GUI thread

    def __init__(self, session: ClusterSession, node: int | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.node = node
        self.address: str | None = session.entry if node is None else None
        self.model = ProcModel(node or 0, self)
        self.model.address = self.address or ""
        self.updates = 0  # answers shown (tests wait on it)
        self.migrators: dict[int, Migrator] = {}
        self.guests: GuestsWindow | None = None
        self._deliver = deliverer(self, "_sig_done")
        self._sig_done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        session.sig_cluster_updated.connect(self._on_cluster)
        self._build()
        self._retitle()
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.refresh_now)
        self._timer.setInterval(int(max(0.2, session.poll_interval or 1.0) * 1000))

    def _build(self) -> None:
        central = QWidget(self)
        layout = QVBoxLayout(central)
        bar = QHBoxLayout()
        self.user_edit = QLineEdit(placeholderText="user")
        self.user_edit.setMaximumWidth(120)
        self.user_edit.textChanged.connect(lambda t: self.model.set_filter(user=t))
        self.command_edit = QLineEdit(placeholderText="command contains…")
        self.command_edit.textChanged.connect(lambda t: self.model.set_filter(command=t))
        self.migratable_box = QCheckBox("only migratable")
        self.migratable_box.toggled.connect(lambda on: self.model.set_filter(only_migratable=on))
        self.migrated_box = QCheckBox("only migrated")
        self.migrated_box.toggled.connect(lambda on: self.model.set_filter(only_migrated=on))
        self.helpers_box = QCheckBox("show helpers")
        self.helpers_box.setToolTip("Also the processes that run a mosrun job (unshare, jobinit, its program's own "
                                    "PID), under the job's row; they are never dragged themselves")  # fmt: skip
        self.helpers_box.toggled.connect(lambda _on: self.refresh_now())
        for w in (QLabel("filter:"), self.user_edit, self.command_edit, self.migratable_box, self.migrated_box,
                  self.helpers_box):  # fmt: skip
            bar.addWidget(w)
        bar.addStretch(1)
        self.guests_button = QPushButton("guests…")
        self.guests_button.setToolTip("Processes that migrated to this node from elsewhere (manage procs from remote)")
        self.guests_button.clicked.connect(self.open_guests)
        bar.addWidget(self.guests_button)
        layout.addLayout(bar)
        self.view = ProcView(central)
        self.view.setModel(self.model)
        self.view.setItemDelegate(ProcDelegate(self.model, self.view))
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(PID, Qt.SortOrder.AscendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setDragEnabled(True)
        self.view.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.view.setAlternatingRowColors(True)
        self.view.setWordWrap(False)
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(self.view.fontMetrics().height() + 6)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)  # cantmove: the reasons are long
        widths = {PID: 90, CMD: 340, USER: 80}
        for col in range(len(COLUMNS)):
            self.view.setColumnWidth(col, widths.get(col, 64))
        self.view.sig_hold.connect(self._on_hold)
        self.view.doubleClicked.connect(lambda index: self.open_migrator(self._proc_at(index)))
        self.view.selectionModel().selectionChanged.connect(lambda *_: self.view.update_hold())
        layout.addWidget(self.view)
        self.setCentralWidget(central)
        self.resize(1100, 520)

    # -- the migrator --
    def _proc_at(self, index: QModelIndex) -> ProcessInfo | None:
        return self.model.data(self.model.index(index.row(), 0), PROC_ROLE) if index.isValid() else None

    def open_migrator(self, proc: ProcessInfo | None) -> Migrator | None:
        """The migrator of ``proc`` (one per process; raised when already open)."""
        if proc is None or self.address is None:
            return None
        dlg = self.migrators.get(proc.pid)
        if dlg is None or not dlg.isVisible():
            dlg = Migrator(self.session, self.address, self.model.node_id, proc, self)
            dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            dlg.destroyed.connect(lambda *_a, pid=proc.pid: self.migrators.pop(pid, None))
            self.migrators[proc.pid] = dlg
        dlg.show()
        dlg.raise_()
        return dlg

    def open_guests(self) -> GuestsWindow | None:
        if self.address is None:
            return None
        if self.guests is None or not self.guests.isVisible():
            self.guests = GuestsWindow(self.session, self.address, self.model.node_id, self)
            self.guests.model.set_processes(self.model.all_processes())
        self.guests.show()
        self.guests.raise_()
        return self.guests

    # -- polling (GUI thread) --
    def start(self) -> None:
        self.session.start()
        self.refresh_now()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    @Slot()
    def refresh_now(self) -> None:
        if self.address is None:
            return
        self.session.links.poll(self.address, "procs", list_procs(self.helpers_box.isChecked()), self._deliver)

    @Slot(object)
    def _on_cluster(self, table: tuple[NodeInfo, ...]) -> None:
        if self.node is None:
            return
        node = next((n for n in table if n.id == self.node), None)
        if node is None:
            self.statusBar().showMessage(f"node {self.node} is not in the cluster table of {self.session.entry}")
            return
        if self.address != node.address:
            self.address = self.model.address = node.address
            self.refresh_now()

    @Slot(object)
    def _on_done(self, done: TaskDone) -> None:
        if done.error is not None:
            self.statusBar().showMessage(f"{done.address}: {done.error.describe()}")
            return
        result = done.value
        assert isinstance(result, ProcList)
        if self.model.node_id != result.node:
            self.model.node_id = result.node
            self.node = result.node
            self._retitle()
        self.model.set_processes(result.procs)
        if self.guests is not None:
            self.guests.model.set_processes(result.procs)
        self.updates += 1
        shown = self.model.rowCount()
        held = " (held while the pointer is over the table)" if self.model.held else ""
        self.statusBar().showMessage(f"{len(result.procs)} processes, {shown} shown{held}")

    @Slot(bool)
    def _on_hold(self, held: bool) -> None:
        self.model.set_held(held)  # no new, ended or re-sorted rows under the pointer

    def _retitle(self) -> None:
        self.setWindowTitle(f"procs on node{self.node}" if self.node is not None else "procs")

    def closeEvent(self, event: QCloseEvent) -> None:
        self.stop()
        super().closeEvent(event)
