"""L5 analyzer: the find-out window - statistics of one node or of the whole cluster.

Laid out as the original's "Informations about node N" window: from/to (D.M.YYYY-HH.MM.SS),
Load and Memory min/max/mean, static data (CPUs, available memory, speed) and time above 75,
with a quit button. The numbers come from ``data.find_out``, the same code as ``--find-out``.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QDateTime, Slot
from PySide6.QtWidgets import (
    QDateTimeEdit,
    QDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from omview.analyzer.data import HistoryData, find_out
from omview.gui.actions import button

#: The original's timestamp format, e.g. 13.7.2002-19.16.42.
DATE_FORMAT = "d.M.yyyy-HH.mm.ss"
_MIB = 1 << 20


def _num(v: Any, scale: float = 1.0, unit: str = "") -> str:
    if v is None:
        return "-"
    if scale != 1.0:
        return f"{v / scale:,.0f} {unit}".strip()
    return f"{v:.1f}" if isinstance(v, float) else f"{v}"


class FindOutDialog(QDialog):
    """Statistics of ``node`` (None: the cluster) over [t_from, t_to], recomputed when they change."""

    def __init__(self, data: HistoryData, node: int | None, t_from: float, t_to: float,
                 parent: QWidget | None = None) -> None:  # fmt: skip
        super().__init__(parent)
        self.data = data
        self.node = node
        self.setWindowTitle("openmosixanalyzer")
        title = f"Informations about node {node}" if node is not None else "Informations about the whole cluster"
        self.title = QLabel(f"<b>{title}</b>", self)
        self.ed_from = self._edit(t_from)
        self.ed_to = self._edit(t_to)
        times = QHBoxLayout()
        times.addWidget(QLabel("from :", self))
        times.addWidget(self.ed_from)
        times.addWidget(QLabel("to :", self))
        times.addWidget(self.ed_to)
        self.values: dict[str, QLabel] = {}
        boxes = QHBoxLayout()
        for box_title, keys in (("Load", ("load.min", "load.max", "load.mean")),
                                ("Memory", ("mem.min", "mem.max", "mem.mean")),
                                ("static data", ("cpus", "tmem", "speed", "samples", "above_75_s"))):  # fmt: skip
            box = QGroupBox(box_title, self)
            form = QFormLayout(box)
            for key in keys:
                lab = QLabel("-", box)
                self.values[key] = lab
                form.addRow(_LABELS[key] + " :", lab)
            boxes.addWidget(box)
        quit_btn = button("quit", self, clicked=self.accept)
        bottom = QHBoxLayout()
        bottom.addStretch(1)
        bottom.addWidget(quit_btn)
        lay = QVBoxLayout(self)
        lay.addWidget(self.title)
        lay.addLayout(times)
        lay.addLayout(boxes)
        lay.addLayout(bottom)
        self.figures: dict[str, Any] = {}
        self.ed_from.dateTimeChanged.connect(self.recompute)
        self.ed_to.dateTimeChanged.connect(self.recompute)
        self.recompute()

    def _edit(self, t: float) -> QDateTimeEdit:
        ed = QDateTimeEdit(QDateTime.fromMSecsSinceEpoch(round(t * 1000)), self)
        ed.setDisplayFormat(DATE_FORMAT)
        ed.setCalendarPopup(True)
        return ed

    def range(self) -> tuple[float, float]:
        return self.ed_from.dateTime().toMSecsSinceEpoch() / 1000, self.ed_to.dateTime().toMSecsSinceEpoch() / 1000

    @Slot()
    def recompute(self) -> None:
        lo, hi = self.range()
        res = find_out(self.data, self.node, lo, hi)
        block = res["cluster"] if self.node is None else res["nodes"][0]
        self.figures = block
        for key, lab in self.values.items():
            if "." in key:
                part, stat = key.split(".")
                v = block[part][stat]
                lab.setText(_num(v, _MIB, "MB") if part == "mem" else _num(v))
            elif key == "tmem":
                lab.setText(_num(block[key], _MIB, "MB"))
            elif key == "above_75_s":
                lab.setText(f"{block[key]:.0f} s")
            else:
                lab.setText(_num(block[key]))


_LABELS = {
    "load.min": "min", "load.max": "max", "load.mean": "mean",
    "mem.min": "min", "mem.max": "max", "mem.mean": "mean",
    "cpus": "CPUs", "tmem": "Avail.mem", "speed": "Speed", "samples": "Samples", "above_75_s": "above 75",
}  # fmt: skip
