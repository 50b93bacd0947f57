"""openmosixview window: the main window's first line (all-nodes button and cluster totals)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QProgressBar, QPushButton, QWidget

from omview.openmosixview.node_table import ClusterTotals, bar_colour, human_bytes


class ClusterHeader(QFrame):
    """"cluster nodes | load-balancing efficiency | overall load | overall used mem | all memory | all cpu"."""

    sig_all_nodes_requested = Signal()
    """The "all nodes" configuration button was clicked."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        grid = QGridLayout(self)
        grid.setContentsMargins(8, 6, 8, 6)
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(2)
        titles = ("cluster nodes", "load-balancing efficiency", "overall load", "overall used mem", "all memory", "all cpu")
        for col, title in enumerate(titles):
            label = QLabel(title)
            label.setStyleSheet("color: palette(mid); font-size: 9pt;")
            grid.addWidget(label, 0, col)
        self.all_nodes_button = QPushButton("all nodes")
        self.all_nodes_button.setToolTip("Configure every node of the cluster at once")
        self.all_nodes_button.clicked.connect(self.sig_all_nodes_requested)
        self.efficiency_bar = self._bar("How evenly the load is spread: 100% = every node equally loaded "
                                        "(mean / max of the nodes' CPU use)")
        self.load_bar = self._bar("CPU use of all up nodes, weighted by CPU count")
        self.mem_bar = self._bar("Memory in use on all up nodes")
        self.memory_label = self._value_label("Total memory of the up nodes")
        self.cpus_label = self._value_label("CPUs of the up nodes")
        for col, w in enumerate(
            (self.all_nodes_button, self.efficiency_bar, self.load_bar, self.mem_bar, self.memory_label, self.cpus_label)
        ):
            grid.addWidget(w, 1, col)
        grid.setColumnStretch(1, 3)
        grid.setColumnStretch(2, 2)
        grid.setColumnStretch(3, 2)
        grid.setColumnStretch(4, 1)
        grid.setColumnStretch(5, 1)
        self.entry_label = QLabel()
        self.entry_label.setTextFormat(Qt.TextFormat.PlainText)
        self.entry_label.setStyleSheet("color: palette(mid); font-size: 9pt;")
        grid.addWidget(self.entry_label, 2, 0, 1, len(titles))
        self.set_totals(ClusterTotals(0, 0, 100, 0, 0, 0, 0))

    @staticmethod
    def _bar(tip: str) -> QProgressBar:
        bar = QProgressBar()
        bar.setRange(0, 100)
        bar.setFormat("%p%")
        bar.setToolTip(tip)
        bar.setMinimumWidth(110)
        return bar

    @staticmethod
    def _value_label(tip: str) -> QLabel:
        label = QLabel()
        label.setFrameShape(QFrame.Shape.Panel)
        label.setFrameShadow(QFrame.Shadow.Sunken)
        label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        label.setMinimumWidth(80)
        label.setToolTip(tip)
        return label

    def set_totals(self, t: ClusterTotals) -> None:
        self.efficiency_bar.setValue(t.efficiency)
        self._colour(self.efficiency_bar, 100 - t.efficiency)
        self.load_bar.setValue(t.load)
        self._colour(self.load_bar, t.load)
        self.mem_bar.setValue(t.mem_used)
        self.memory_label.setText(human_bytes(t.memory))
        self.cpus_label.setText(str(t.cpus))

    @staticmethod
    def _colour(bar: QProgressBar, badness: int) -> None:
        pal = bar.palette()
        pal.setColor(QPalette.ColorRole.Highlight, bar_colour(badness))
        bar.setPalette(pal)

    def set_entry_text(self, text: str) -> None:
        self.entry_label.setText(text)
