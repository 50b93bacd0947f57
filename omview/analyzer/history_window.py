"""L5 openmosixhistory window: the collector node's process list at any moment of a history.

A time slider spans the history's window in steps of the sampling interval; the table shows the
process list at the sample nearest to the slider (pid, n#, stat, user, cpu, rss, cmdline). A job
that had migrated shows the node it ran on at that moment in n#, in bold, with its home node.
Previous/next checkpoint move the slider; a filter matches command or user. The history is read
on the GUI thread when opened (the process file is small: changes only, a full list every 300
samples; a list is rebuilt from the nearest full list when the slider moves).
"""

from __future__ import annotations

import sys
import time
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Slot,
)
from PySide6.QtGui import QFont, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QSlider,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from omview.analyzer.data import COLUMNS, format_rows, live_dir_of, processes_at
from omview.analyzer.histories_menu import fill_histories_menu
from omview.gui.actions import action, button
from omview.gui.assets import app_icon
from omview.gui.lifecycle import SignalQuitter, application
from omview.model import records
from omview.model.cluster import ProcessInfo

_Index = QModelIndex | QPersistentModelIndex
_NODE_COL = 1


def _local(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


class ProcessTableModel(QAbstractTableModel):
    """The process list of one moment; replaced whole when the slider moves."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.procs: list[ProcessInfo] = []
        self.cells: list[tuple[str, ...]] = []
        self._bold = QFont()
        self._bold.setBold(True)

    def set_processes(self, procs: list[ProcessInfo]) -> None:
        self.beginResetModel()
        self.procs = procs
        self.cells = format_rows(procs)
        self.endResetModel()

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802, B008 (Qt override)
        return 0 if parent.isValid() else len(self.cells)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802, B008 (Qt override)
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        p = self.procs[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self.cells[index.row()][index.column()]
        if role == Qt.ItemDataRole.UserRole:  # sort key: numbers as numbers
            return (p.pid, p.where, p.state, p.user, p.cpu, p.rss, self.cells[index.row()][6])[index.column()]
        migrated = p.where != p.home
        if role == Qt.ItemDataRole.FontRole and migrated and index.column() == _NODE_COL:
            return self._bold
        if role == Qt.ItemDataRole.ToolTipRole and migrated:
            return f"migrated {p.nmigs}×: running on node {p.where} at that moment, home node {p.home}"
        return None


class HistoryWindow(QMainWindow):
    """openMosixhistory: a time slider over the history and the process list at that moment."""

    def __init__(self, path: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("openMosixhistory")
        self.setWindowIcon(app_icon())
        self.logdir = live_dir_of(path or records.default_logdir())
        self.history: records.History | None = None
        self.shown_time: float | None = None
        self.lbl_start = QLabel(self)
        self.lbl_at = QLabel(self)
        self.lbl_source = QLabel(self)
        self.lbl_problems = QLabel(self)
        self.lbl_problems.setWordWrap(True)
        self.lbl_problems.setStyleSheet("color: #b00000")
        self.lbl_problems.hide()
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.valueChanged.connect(self._on_slider_value_changed)
        self.btn_prev = button("◀ checkpoint", self, clicked=lambda: self.jump_checkpoint(-1))
        self.btn_next = button("checkpoint ▶", self, clicked=lambda: self.jump_checkpoint(1))
        self.filter = QLineEdit(self, placeholderText="filter: command or user", clearButtonEnabled=True)
        self.model = ProcessTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.proxy.setFilterKeyColumn(-1)  # user and cmdline (and the rest) all match
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        self.table = QTableView(self)
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        top = QHBoxLayout()
        top.addWidget(self.lbl_start)
        top.addStretch(1)
        top.addWidget(self.lbl_at)
        slide = QHBoxLayout()
        slide.addWidget(self.btn_prev)
        slide.addWidget(self.slider, 1)
        slide.addWidget(self.btn_next)
        central = QWidget(self)
        lay = QVBoxLayout(central)
        lay.addLayout(top)
        lay.addWidget(self.lbl_problems)
        lay.addLayout(slide)
        lay.addWidget(self.filter)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.lbl_source)
        self.setCentralWidget(central)
        file = self.menuBar().addMenu("&File")
        file.addAction(action("&Open history…", self, shortcut=QKeySequence.StandardKey.Open,
                               triggered=self._on_open_triggered))  # fmt: skip
        self.menu_histories = QMenu("&Histories", self)
        self.menu_histories.setToolTipsVisible(True)
        self.menu_histories.aboutToShow.connect(
            lambda: fill_histories_menu(self.menu_histories, self.logdir, self.open_history))
        file.addMenu(self.menu_histories)
        file.addAction(action("&Quit", self, shortcut=QKeySequence.StandardKey.Quit, triggered=self.close))
        self.open_history(path or self.logdir)

    def open_history(self, path: str) -> None:
        self.history = None
        self.model.set_processes([])
        try:
            h = records.History.open(path)
            h.processes()
        except (records.HistoryFormatError, OSError) as exc:
            self.lbl_start.setText(f"<b>{path}</b>: cannot be shown")
            self._problems([str(exc)])
            self.slider.setEnabled(False)
            return
        self.history = h
        self._problems(h.problems)
        self.setWindowTitle(f"openMosixhistory - {h.directory}")
        self.lbl_start.setText(f"start: <b>{_local(h.start)}</b>")
        steps = max(0, round((h.end - h.start) / max(h.interval, 1e-3)))
        self.slider.setEnabled(steps > 0)
        self.slider.blockSignals(True)
        self.slider.setRange(0, steps)
        self.slider.setValue(steps)  # the latest moment first, as a live view would be
        self.slider.blockSignals(False)
        self.show_time(h.end)
        has_cp = bool(h.checkpoints)
        self.btn_prev.setEnabled(has_cp)
        self.btn_next.setEnabled(has_cp)
        path_procs = records.history_files(h.directory).get(records.PROCS_FILE, "no process file")
        self.lbl_source.setText(path_procs)

    def _problems(self, problems: list[str]) -> None:
        self.lbl_problems.setVisible(bool(problems))
        self.lbl_problems.setText("<br>".join(f"• {p}" for p in problems[:8]))

    def slider_time(self) -> float:
        assert self.history is not None
        return self.history.start + self.slider.value() * self.history.interval

    @Slot(int)
    def _on_slider_value_changed(self, _value: int) -> None:
        if self.history is not None:
            self.show_time(self.slider_time())

    def show_time(self, when: float) -> None:
        """Show the list at the sample nearest to ``when``."""
        assert self.history is not None
        t, procs = processes_at(self.history, when)
        self.shown_time = t
        self.model.set_processes(procs)
        self.lbl_at.setText(f"at <b>{_local(t)}</b> · {len(procs)} processes" if t is not None else "no samples")

    def set_time(self, when: float) -> None:
        """Move the slider to ``when`` (and so the list)."""
        assert self.history is not None
        self.slider.setValue(round((when - self.history.start) / max(self.history.interval, 1e-3)))

    def jump_checkpoint(self, direction: int) -> None:
        """Move to the previous (-1) or next (+1) checkpoint from the slider's time."""
        if self.history is None or not self.history.checkpoints:
            return
        times = sorted(c.time for c in self.history.checkpoints)
        now = self.slider_time()
        if direction < 0:
            i = bisect_left(times, now - 1e-6) - 1
            target = times[i] if i >= 0 else None
        else:
            i = bisect_right(times, now + 1e-6)
            target = times[i] if i < len(times) else None
        if target is not None:
            self.set_time(target)

    @Slot()
    def _on_open_triggered(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a collector history", self.logdir)
        if path:
            self.open_history(path)


def run_window(path: str | None, screenshot: str | None) -> int:
    """Start the Qt application with the history window (or only write a screenshot)."""
    app = application("openmosixhistory", offscreen=bool(screenshot))
    win = HistoryWindow(path)
    win.resize(900, 560)
    if screenshot:
        out = Path(screenshot)
        out.mkdir(parents=True, exist_ok=True)
        win.show()
        if win.history is not None and win.history.checkpoints:
            win.set_time(win.history.checkpoints[0].time)
        QApplication.processEvents()
        win.grab().save(str(out / "history.png"))
        sys.stdout.write(f"{out / 'history.png'}\n")
        return 0

    win.show()
    quitter = SignalQuitter(app)
    quitter.sig_quit.connect(win.close)
    try:
        return app.exec()
    finally:
        quitter.close()
