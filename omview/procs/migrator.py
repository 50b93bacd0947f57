"""openmosixprocs window: the migrator - one process (double-click in the box): every node with its
load and speed (double-click or drop a process on one to migrate there), home, best, kill, SIGSTOP,
SIGCONT, a renice slider, and a status pane read from /proc on the node through the agent.

Everything it asks runs in the node's lanes of omview/gui/links.py (migrations in the ACTION lane, so
a long one never delays the status poll) and comes back as TaskDone through a queued signal. While a
migration of its process runs, the phase comes from the agent's migration events (omview/gui/migevents.py,
in the STREAM lane of the node it leaves); after it: frozen time, total time and bytes moved, or the error.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDragMoveEvent, QDropEvent, QFontDatabase
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from omview.gui.links import Lane, LaneContext, TaskDone, deliverer
from omview.gui.migevents import LOST, SUBSCRIBED, MigrationEvent, describe, watch_migration
from omview.gui.procdrag import DraggedProcs, MigrationResult, from_mime, migrate_task
from omview.gui.session import ClusterSession
from omview.model.cluster import NodeInfo, ProcessInfo


@dataclass(frozen=True)
class ProcStatus:
    """proc.status of one process: the node it runs on and its /proc/PID/status lines."""

    node: int
    pid: int
    fields: tuple[tuple[str, str], ...]
    stat: tuple[tuple[str, float], ...] = ()  # utime, stime, cutime, cstime (s), nice


def status_task(pid: int) -> Callable[[LaneContext], ProcStatus]:
    """A POLL-lane task: proc.status of PID (answered by the node it runs on)."""

    def run(ctx: LaneContext) -> ProcStatus:
        got = ctx.client().call("proc.status", pid=pid)
        return ProcStatus(int(got["node"]), int(got["pid"]), tuple(got["status"].items()),
                          tuple(got.get("stat", {}).items()))  # fmt: skip

    return run


def _call(op: str, **args: Any) -> Any:
    def run(ctx: LaneContext) -> dict[str, Any]:
        return dict(ctx.client(urgent=True).call(op, **args))

    return run


class NodeDropTable(QTableWidget):
    """The node list: double-click or drop processes (omview/gui/procdrag.py) on a node."""

    sig_dropped = Signal(int, object)  # node ID, DraggedProcs

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, 5, parent)
        self.setHorizontalHeaderLabels(["node", "address", "load", "speed", "state"])
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().hide()
        self.setAcceptDrops(True)
        self.viewport().setAcceptDrops(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DropOnly)

    def node_at_row(self, row: int) -> int | None:
        item = self.item(row, 0)
        return int(item.text()) if item is not None else None

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if from_mime(event.mimeData()) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        ok = from_mime(event.mimeData()) is not None and self.rowAt(event.position().toPoint().y()) >= 0
        if ok:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        drag = from_mime(event.mimeData())
        node = self.node_at_row(self.rowAt(event.position().toPoint().y()))
        if drag is None or node is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.sig_dropped.emit(node, drag)


class Migrator(QDialog):
    """The migrator of process ``proc`` of the node at ``address`` (node ID ``node``)."""

    _sig_done = Signal(object)
    _sig_event = Signal(object)  # MigrationEvent from the STREAM lane
    #: how long a migration waits for its events' subscription before it starts without
    SUBSCRIBE_WAIT_MS = 3000

    def __init__(self, session: ClusterSession, address: str, node: int, proc: ProcessInfo,
                 parent: QWidget | None = None) -> None:  # fmt: skip
        super().__init__(parent)
        self.session = session
        self.address = address
        self.node = node
        self.proc = proc
        self.results: list[str] = []  # every outcome shown (tests read it)
        self.status: ProcStatus | None = None
        self._deliver = deliverer(self, "_sig_done")
        self._sig_done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        self._deliver_event = deliverer(self, "_sig_event")
        self._sig_event.connect(self._on_event, Qt.ConnectionType.QueuedConnection)
        self.phases: list[str] = []  # every phase event shown (tests read it)
        self._watch: threading.Event | None = None  # set: the running migration's event stream ends
        self._waiting: tuple[str, tuple[int, ...], str] | None = None  # a migration waiting for its stream
        cmd = " ".join(proc.cmdline) or proc.name
        self.setWindowTitle(f"migrate {proc.pid} on node{node}")
        layout = QVBoxLayout(self)
        self.title = QLabel(f"<b>{proc.pid}</b> {cmd[:120]}  ({proc.user})")
        self.title.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.title)
        self.where = QLabel("running on node …")
        layout.addWidget(self.where)
        layout.addWidget(QLabel("double-click a node (or drop processes on it) to migrate there:"))
        self.nodes = NodeDropTable(self)
        self.nodes.cellDoubleClicked.connect(lambda row, _c: self._migrate_to_row(row))
        self.nodes.sig_dropped.connect(self._on_dropped)
        layout.addWidget(self.nodes)
        grid = QGridLayout()
        self.home_button = QPushButton("send home")
        self.home_button.clicked.connect(lambda: self.migrate("home"))
        self.best_button = QPushButton("send to the best node")
        self.best_button.clicked.connect(lambda: self.migrate("best"))
        self.kill_button = QPushButton("kill")
        self.kill_button.clicked.connect(lambda: self.send_signal(signal.SIGKILL))
        self.stop_button = QPushButton("SIGSTOP")
        self.stop_button.clicked.connect(lambda: self.send_signal(signal.SIGSTOP))
        self.cont_button = QPushButton("SIGCONT")
        self.cont_button.clicked.connect(lambda: self.send_signal(signal.SIGCONT))
        for i, b in enumerate((self.home_button, self.best_button, self.kill_button, self.stop_button,
                               self.cont_button)):  # fmt: skip
            grid.addWidget(b, 0, i)
        layout.addLayout(grid)
        nice = QHBoxLayout()
        nice.addWidget(QLabel("nice: -20 (fast)"))
        self.nice_slider = QSlider(Qt.Orientation.Horizontal)
        self.nice_slider.setRange(-20, 19)
        self.nice_slider.setValue(proc.nice)
        self.nice_slider.setTickInterval(5)
        self.nice_slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.nice_slider.sliderReleased.connect(lambda: self.renice(self.nice_slider.value()))
        nice.addWidget(self.nice_slider, 1)
        nice.addWidget(QLabel("19 (slow)"))
        self.nice_label = QLabel(str(proc.nice))
        nice.addWidget(self.nice_label)
        self.nice_slider.valueChanged.connect(lambda v: self.nice_label.setText(str(v)))
        layout.addLayout(nice)
        self.status_pane = QPlainTextEdit(readOnly=True)
        self.status_pane.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.status_pane.setMaximumHeight(230)
        layout.addWidget(self.status_pane)
        self.phase_label = QLabel("")
        layout.addWidget(self.phase_label)
        self.outcome = QLabel("")
        self.outcome.setWordWrap(True)
        layout.addWidget(self.outcome)
        session.sig_cluster_updated.connect(self._on_cluster)
        self._on_cluster(session.table)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.refresh_status)
        self._timer.start(1000)
        self.refresh_status()
        self.resize(640, 620)

    # -- requests (GUI thread) --
    def migrate(self, target: str, pids: tuple[int, ...] | None = None, address: str | None = None) -> None:
        pids = pids or (self.proc.pid,)
        self._show(f"migrating {' '.join(map(str, pids))} to {target if not target.isdigit() else 'node ' + target}…")
        if pids != (self.proc.pid,):
            self._submit(target, pids, address or self.address)
            return
        # its phases: listen on the node it leaves first, then start it (the first phase is not missed)
        self._end_watch()
        self._watch = threading.Event()
        self._waiting = (target, pids, address or self.address)
        self.phase_label.setText("migration: waiting for the agent's events…")
        self.session.links.stream(self._source_address(), f"migration events {self.proc.pid}",
                                  watch_migration(self._is_mine, self._deliver_event, self._watch))  # fmt: skip
        QTimer.singleShot(self.SUBSCRIBE_WAIT_MS, self._start_waiting)

    def _submit(self, target: str, pids: tuple[int, ...], address: str) -> None:
        self.session.links.submit(address, Lane.ACTION, "migrate", migrate_task(pids, target), self._deliver,
                                  urgent=True)  # fmt: skip

    def _start_waiting(self) -> None:
        if self._waiting is not None:
            target, pids, address = self._waiting
            self._waiting = None
            self._submit(target, pids, address)

    def _is_mine(self, data: Mapping[str, Any]) -> bool:
        """An event of this process's migration (lane thread: reads only immutable values)."""
        p = self.proc
        return data.get("job") == p.job if p.job else data.get("pid") == p.pid

    def _source_address(self) -> str:
        """Where the process runs now (its migration's events come from there)."""
        node = self.status.node if self.status is not None else (self.proc.where or self.node)
        return next((n.address for n in self.session.table if n.id == node), self.address)

    def _end_watch(self) -> None:
        if self._watch is not None:
            self._watch.set()
            self._watch = None

    def send_signal(self, sig: int) -> None:
        self.session.links.submit(self.address, Lane.POLL, f"signal {signal.Signals(sig).name}",
                                  _call("proc.signal", pid=self.proc.pid, signal=int(sig)), self._deliver,
                                  urgent=True)  # fmt: skip

    def renice(self, nice: int) -> None:
        self.session.links.submit(self.address, Lane.POLL, f"renice {nice}",
                                  _call("proc.renice", pid=self.proc.pid, nice=nice), self._deliver,
                                  urgent=True)  # fmt: skip

    @Slot()
    def refresh_status(self) -> None:
        self.session.links.poll(self.address, f"status {self.proc.pid}", status_task(self.proc.pid), self._deliver)

    def _migrate_to_row(self, row: int) -> None:
        node = self.nodes.node_at_row(row)
        if node is not None:
            self.migrate(str(node))

    @Slot(int, object)
    def _on_dropped(self, node: int, drag: DraggedProcs) -> None:
        self.migrate(str(node), drag.pids, drag.address or self.address)

    # -- answers (GUI thread) --
    @Slot(object)
    def _on_event(self, ev: MigrationEvent) -> None:
        if ev.name in (SUBSCRIBED, LOST):
            if ev.name == LOST:
                self.phase_label.setText(f"migration: no phases ({describe(ev)})")
            self._start_waiting()
            return
        self.phases.append(ev.phase)
        self.phase_label.setText(f"migration: {describe(ev)}")

    @Slot(object)
    def _on_cluster(self, table: tuple[NodeInfo, ...]) -> None:
        self.nodes.setRowCount(len(table))
        for r, n in enumerate(table):
            cells = (str(n.id), n.address, f"{n.load:.0f}", str(n.speed), n.status)
            for c, text in enumerate(cells):
                item = self.nodes.item(r, c)
                if item is None:
                    self.nodes.setItem(r, c, QTableWidgetItem(text))
                elif item.text() != text:
                    item.setText(text)

    @Slot(object)
    def _on_done(self, done: TaskDone) -> None:
        if done.kind.startswith("status "):
            if done.error is not None:
                self.status_pane.setPlainText(f"no status: {done.error.describe()}")
                return
            st = done.value
            assert isinstance(st, ProcStatus)
            self.status = st
            self.where.setText(f"running on node {st.node}" + (" (here)" if st.node == self.node else ""))
            self.status_pane.setPlainText("\n".join(f"{k + ':':<28}{v}" for k, v in st.fields))
            return
        if done.error is not None:
            self._show(f"{done.kind}: {done.error.describe()}")
        elif done.kind == "migrate":
            for res in done.value:
                assert isinstance(res, MigrationResult)
                self._show(res.text())
            # refused before it began: no event will end the stream; done: its last events may follow
            watch = self._watch
            if watch is not None:
                QTimer.singleShot(5000, watch.set)
        else:
            self._show(f"{done.kind}: done on node {done.value.get('node', '?')}")
        self.refresh_status()

    def _show(self, text: str) -> None:
        self.results.append(text)
        self.outcome.setText(text)

    def closeEvent(self, event: QCloseEvent) -> None:
        self._timer.stop()
        self._end_watch()
        super().closeEvent(event)


