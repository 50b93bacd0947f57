"""L4 GUI layer: the node table of the main window (model, painting delegate, view).

One row per node: lamp with the node ID, node button (address), speed slider, speed LCD, load bar,
memory bar, available memory, CPU count and the GUI's connection state. Nothing is a widget per
row: ``NodeDelegate`` paints every cell and ``NodeTableView`` turns clicks and drags into signals,
so thousands of rows scroll smoothly, and updates touch only changed cells (dataChanged).

Percentages (documented in docs/gui.md):
  load %  = the node's CPU utilisation (``util``: % of its own CPU capacity in use, as the agent
            reports it); the raw openMosix load (100 = one reference CPU busy) is in the tooltip.
  mem %   = (total - available) / total.
  efficiency = 100 * mean(load %) / max(load %) over nodes that are up; 100 when fewer than two
            nodes are up or the busiest node is below 1 % (nothing to balance).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QRect,
    QRectF,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QFont, QMouseEvent, QPainter, QPalette, QRadialGradient
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHeaderView,
    QSlider,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionButton,
    QStyleOptionProgressBar,
    QStyleOptionSlider,
    QStyleOptionViewItem,
    QTableView,
    QWidget,
)

from omview.gui.session import LinkState, LinkStatus, SpeedReport
from omview.model.cluster import STD_SPEED, NodeInfo

COL_ID, COL_NODE, COL_SPEED, COL_LCD, COL_LOAD, COL_MEM, COL_AVAIL, COL_CPUS, COL_STATE = range(9)
HEADERS = ("ID", "node", "speed", "", "load", "memory used", "available", "CPUs", "state")
WIDTHS = (80, 128, 160, 84, 116, 116, 84, 48, 200)
ROW_HEIGHT = 30

#: Slider range; the reference CPU (STD_SPEED) sits at a quarter of it.
SPEED_MIN = 100
SPEED_MAX = 4 * STD_SPEED
SPEED_STEP = 100

NodeRole = Qt.ItemDataRole.UserRole + 1  # effective NodeInfo
LinkRole = Qt.ItemDataRole.UserRole + 2  # LinkState
ValueRole = Qt.ItemDataRole.UserRole + 3  # the number a cell paints (percent, speed, ...)
LampRole = Qt.ItemDataRole.UserRole + 4  # "up", "down" or "warn"

LAMP_COLOURS = {"up": QColor(40, 200, 60), "down": QColor(220, 40, 30), "warn": QColor(240, 170, 20)}


# ---- pure helpers (unit-tested, documented in docs/gui.md) ---------------------------------


def load_percent(info: NodeInfo) -> int:
    """The load bar's value: CPU utilisation of the node in % of its own capacity."""
    return max(0, min(100, int(info.util)))


def mem_percent(info: NodeInfo) -> int:
    """Memory in use, in % of the node's total memory."""
    if info.tmem <= 0:
        return 0
    return max(0, min(100, round(100 * (info.tmem - info.mem) / info.tmem)))


def efficiency(nodes: Iterable[NodeInfo]) -> int:
    """Load-balancing efficiency: 100 * mean/max of the load % of the nodes that are up."""
    loads = [load_percent(n) for n in nodes if n.up]
    if len(loads) < 2 or max(loads) < 1:
        return 100
    return round(100 * (sum(loads) / len(loads)) / max(loads))


@dataclass(frozen=True)
class ClusterTotals:
    """The header row of the main window."""

    nodes: int
    up: int
    efficiency: int
    load: int  # CPU-weighted mean load %, up nodes
    mem_used: int  # % of all memory of up nodes
    memory: int  # bytes, up nodes
    cpus: int  # up nodes


def totals(nodes: Sequence[NodeInfo]) -> ClusterTotals:
    up = [n for n in nodes if n.up]
    cpus = sum(max(1, n.cpus) for n in up)
    load = round(sum(load_percent(n) * max(1, n.cpus) for n in up) / cpus) if cpus else 0
    tmem = sum(n.tmem for n in up)
    used = round(100 * sum(n.tmem - n.mem for n in up) / tmem) if tmem else 0
    return ClusterTotals(len(nodes), len(up), efficiency(up), load, max(0, min(100, used)), tmem, cpus)


def human_bytes(n: int) -> str:
    """1536 MiB -> '1.5 GiB' (binary units, like free -h)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit in ("B", "KiB") or value >= 100 else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


# ---- the model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRow:
    """What the table knows about one node."""

    gossip: NodeInfo  # the entry node's view (cluster.nodes)
    direct: NodeInfo | None = None  # the node's own node.info, when it answered
    link: LinkState = LinkState(LinkStatus.UNKNOWN)
    pending_speed: int | None = None  # slider position while a speed change is under way
    readback_speed: int | None = None  # last speed read back after setting it

    @property
    def info(self) -> NodeInfo:
        info = self.direct if self.direct is not None and self.link.status is LinkStatus.UP else self.gossip
        if self.readback_speed is not None and self.direct is None:
            info = replace(info, speed=self.readback_speed)
        return info

    @property
    def lamp(self) -> str:
        if not self.gossip.up or self.link.status in (
            LinkStatus.UNREACHABLE,
            LinkStatus.NO_AGENT,
            LinkStatus.TIMEOUT,
        ):
            return "down"
        if self.link.status.failed:
            return "warn"  # the node is up but we cannot administer it (keys, auth, agent error)
        return "up"

    def state_text(self) -> str:
        if self.link.status.failed:
            text = self.link.status.value
            if self.link.fingerprint:
                text += f" ({self.link.fingerprint})"
            if self.link.retry_in:
                text += f", retry in {self.link.retry_in:.0f} s"
            return text
        if not self.gossip.up:
            return "down"
        if self.pending_speed is not None:
            return "setting speed…"
        return self.link.status.value if self.link.status is not LinkStatus.UP else "up"


class NodeTableModel(QAbstractTableModel):
    """Rows of nodes, sorted by node ID; updates emit dataChanged for changed cells only."""

    sig_speed_requested = Signal(str, int)
    """(address, speed): the user set a node's speed in the table."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[NodeRow] = []
        self._by_address: dict[str, int] = {}

    # -- Qt interface --

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[section]
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        f = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == COL_SPEED:
            f |= Qt.ItemFlag.ItemIsEditable
        return f

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        row = self._rows[index.row()]
        col = index.column()
        info = row.info
        if role == NodeRole:
            return info
        if role == LinkRole:
            return row.link
        if role == LampRole:
            return row.lamp
        if role == ValueRole or role == Qt.ItemDataRole.EditRole:
            return self._value(row, col)
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(row, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row, col)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            if col in (COL_AVAIL, COL_CPUS, COL_LCD):
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            return int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_STATE:
            if row.link.status.failed or not row.gossip.up:
                return QBrush(QColor(190, 30, 20) if row.lamp == "down" else QColor(170, 100, 0))
        return None

    def setData(self, index: QModelIndex | QPersistentModelIndex, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if not index.isValid() or index.column() != COL_SPEED or role != Qt.ItemDataRole.EditRole:
            return False
        speed = max(SPEED_MIN, min(SPEED_MAX, int(value)))
        row = self._rows[index.row()]
        if speed == row.info.speed and row.pending_speed is None:
            return False
        self._replace(index.row(), replace(row, pending_speed=speed))
        self.sig_speed_requested.emit(row.gossip.address, speed)
        return True

    # -- cell contents --

    @staticmethod
    def _value(row: NodeRow, col: int) -> Any:
        info = row.info
        if col == COL_ID:
            return info.id
        if col == COL_SPEED:
            return row.pending_speed if row.pending_speed is not None else info.speed
        if col == COL_LCD:
            return info.speed
        if col == COL_LOAD:
            return load_percent(info)
        if col == COL_MEM:
            return mem_percent(info)
        if col == COL_AVAIL:
            return info.mem
        if col == COL_CPUS:
            return info.cpus
        return None

    def _text(self, row: NodeRow, col: int) -> str:
        info = row.info
        if col == COL_NODE:
            return info.address
        if col == COL_STATE:
            return row.state_text()
        if col in (COL_LOAD, COL_MEM):
            return f"{self._value(row, col)}%"
        if col == COL_AVAIL:
            return human_bytes(info.mem)
        value = self._value(row, col)
        return "" if value is None else str(value)

    @staticmethod
    def _tooltip(row: NodeRow, col: int) -> str:
        info = row.info
        if col == COL_ID:
            return f"node {info.id} is {'up' if info.up else 'down'}" + (
                f" ({info.hostname})" if info.hostname else ""
            )
        if col == COL_NODE:
            return f"configure {info.address}"
        if col in (COL_SPEED, COL_LCD):
            return f"openMosix speed {info.speed} (reference CPU = {STD_SPEED}); drag to change"
        if col == COL_LOAD:
            return f"load {info.load} (100 = one reference CPU busy), CPU use {load_percent(info)}%"
        if col in (COL_MEM, COL_AVAIL):
            return (
                f"{human_bytes(info.mem)} available of {human_bytes(info.tmem)}; "
                f"{human_bytes(info.rmem)} free as Linux counts it"
            )
        if col == COL_STATE:
            text = row.link.describe()
            if row.link.advice:
                text += "\n\n" + row.link.advice.replace("ADDRESS", info.address)
            return text
        return ""

    # -- updates from the session (GUI thread) --

    def rows(self) -> list[NodeRow]:
        return list(self._rows)

    def row_of(self, address: str) -> int | None:
        return self._by_address.get(address)

    def node_at(self, row: int) -> NodeRow:
        return self._rows[row]

    def set_table(self, nodes: Sequence[NodeInfo]) -> None:
        """Take the entry node's cluster table: rows appear, disappear or change in place."""
        wanted = {n.address: n for n in nodes}
        for r in range(len(self._rows) - 1, -1, -1):
            if self._rows[r].gossip.address not in wanted:
                self.beginRemoveRows(QModelIndex(), r, r)
                del self._rows[r]
                self.endRemoveRows()
        self._reindex()
        for info in sorted(nodes, key=lambda n: (n.id, n.address)):
            r = self._by_address.get(info.address)
            if r is None:
                pos = 0
                while pos < len(self._rows) and (self._rows[pos].gossip.id, self._rows[pos].gossip.address) < (
                    info.id,
                    info.address,
                ):
                    pos += 1
                self.beginInsertRows(QModelIndex(), pos, pos)
                self._rows.insert(pos, NodeRow(info))
                self.endInsertRows()
                self._reindex()
            elif self._rows[r].gossip != info:
                self._replace(r, replace(self._rows[r], gossip=info))

    def update_direct(self, address: str, info: NodeInfo) -> None:
        r = self._by_address.get(address)
        if r is not None and self._rows[r].direct != info:
            row = self._rows[r]
            readback = None if info.speed == row.readback_speed else row.readback_speed
            self._replace(r, replace(row, direct=info, readback_speed=readback))

    def update_link(self, address: str, link: LinkState) -> None:
        r = self._by_address.get(address)
        if r is not None and self._rows[r].link != link:
            self._replace(r, replace(self._rows[r], link=link))

    def set_pending_speed(self, row: int, speed: int | None) -> None:
        if 0 <= row < len(self._rows):
            self._replace(row, replace(self._rows[row], pending_speed=speed))

    def apply_speed_report(self, report: SpeedReport) -> None:
        r = self._by_address.get(report.address)
        if r is None:
            return
        row = replace(self._rows[r], pending_speed=None)
        if report.speed is not None:
            row = replace(row, readback_speed=report.speed)
            if row.direct is not None:
                row = replace(row, direct=replace(row.direct, speed=report.speed))
        self._replace(r, row)

    def _reindex(self) -> None:
        self._by_address = {row.gossip.address: i for i, row in enumerate(self._rows)}

    def _replace(self, r: int, new: NodeRow) -> None:
        """Swap a row and announce only the columns whose contents changed."""
        old = self._rows[r]
        if old == new:
            return
        self._rows[r] = new
        changed = [
            c
            for c in range(len(HEADERS))
            if self._value(old, c) != self._value(new, c)
            or self._text(old, c) != self._text(new, c)
            or (c == COL_ID and old.lamp != new.lamp)
            or (c == COL_STATE and old.link != new.link)
        ]
        if changed:
            self.dataChanged.emit(self.index(r, min(changed)), self.index(r, max(changed)))


# ---- painting ---------------------------------------------------------------------------------

_SEGMENTS = {
    "0": "abcdef", "1": "bc", "2": "abged", "3": "abgcd", "4": "fgbc", "5": "afgcd",
    "6": "afgedc", "7": "abc", "8": "abcdefg", "9": "abcdfg", "-": "g", " ": "",
}  # fmt: skip


def paint_lcd(painter: QPainter, rect: QRect, text: str, digits: int = 5) -> None:
    """A seven-segment display like the original's QLCDNumber, painted (no widget per row)."""
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(18, 30, 18))
    painter.drawRoundedRect(QRectF(rect), 3, 3)
    text = text[-digits:].rjust(digits)
    inner = QRectF(rect).adjusted(5, 5, -5, -5)
    cell = inner.width() / digits
    w, h = cell * 0.72, inner.height()
    t = max(1.6, w * 0.16)
    on, off = QColor(110, 255, 90), QColor(38, 62, 36)
    for i, ch in enumerate(text):
        x, y = inner.left() + i * cell + (cell - w) / 2, inner.top()
        half = h / 2
        segs = {
            "a": QRectF(x + t, y, w - 2 * t, t),
            "b": QRectF(x + w - t, y + t * 0.8, t, half - t * 1.1),
            "c": QRectF(x + w - t, y + half + t * 0.3, t, half - t * 1.1),
            "d": QRectF(x + t, y + h - t, w - 2 * t, t),
            "e": QRectF(x, y + half + t * 0.3, t, half - t * 1.1),
            "f": QRectF(x, y + t * 0.8, t, half - t * 1.1),
            "g": QRectF(x + t, y + half - t / 2, w - 2 * t, t),
        }
        lit = _SEGMENTS.get(ch, "")
        for name, r in segs.items():
            painter.setBrush(on if name in lit else off)
            painter.drawRect(r)
    painter.restore()


def bar_colour(percent: int) -> QColor:
    """Green when idle, amber when busy, red when saturated."""
    if percent >= 90:
        return QColor(210, 60, 40)
    if percent >= 70:
        return QColor(230, 160, 30)
    return QColor(60, 160, 70)


def paint_bar(painter: QPainter, rect: QRect, percent: int, widget: QWidget | None, colour: QColor | None = None) -> None:
    opt = QStyleOptionProgressBar()
    opt.rect = rect
    opt.minimum, opt.maximum, opt.progress = 0, 100, max(0, min(100, percent))
    opt.text = f"{opt.progress}%"
    opt.textVisible = True
    opt.textAlignment = Qt.AlignmentFlag.AlignCenter
    opt.state = QStyle.StateFlag.State_Enabled | QStyle.StateFlag.State_Horizontal
    opt.palette = widget.palette() if widget is not None else QApplication.palette()
    opt.palette.setColor(QPalette.ColorRole.Highlight, colour or bar_colour(percent))
    style = widget.style() if widget is not None else QApplication.style()
    style.drawControl(QStyle.ControlElement.CE_ProgressBar, opt, painter, widget)


def slider_option(rect: QRect, value: int, widget: QWidget | None) -> QStyleOptionSlider:
    opt = QStyleOptionSlider()
    opt.rect = rect
    opt.orientation = Qt.Orientation.Horizontal
    opt.minimum, opt.maximum = SPEED_MIN, SPEED_MAX
    opt.sliderPosition = opt.sliderValue = max(SPEED_MIN, min(SPEED_MAX, value))
    opt.singleStep, opt.pageStep = SPEED_STEP, 10 * SPEED_STEP
    opt.tickPosition = QSlider.TickPosition.NoTicks
    opt.subControls = QStyle.SubControl.SC_SliderGroove | QStyle.SubControl.SC_SliderHandle
    opt.state = QStyle.StateFlag.State_Enabled | QStyle.StateFlag.State_Horizontal
    if widget is not None:
        opt.palette = widget.palette()
    return opt


def slider_value_at(rect: QRect, x: int, widget: QWidget | None) -> int:
    """The speed a click at ``x`` inside a slider cell means."""
    style = widget.style() if widget is not None else QApplication.style()
    opt = slider_option(rect, SPEED_MIN, widget)
    groove = style.subControlRect(QStyle.ComplexControl.CC_Slider, opt, QStyle.SubControl.SC_SliderGroove, widget)
    handle = style.subControlRect(QStyle.ComplexControl.CC_Slider, opt, QStyle.SubControl.SC_SliderHandle, widget)
    span = max(1, groove.width() - handle.width())
    pos = x - groove.left() - handle.width() // 2
    value = QStyle.sliderValueFromPosition(SPEED_MIN, SPEED_MAX, max(0, min(span, pos)), span)
    return int(round(value / SPEED_STEP) * SPEED_STEP) or SPEED_MIN


class NodeDelegate(QStyledItemDelegate):
    """Paints lamps, node buttons, sliders, LCDs and bars; a QSlider editor for keyboard editing."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.pressed: QPersistentModelIndex | None = None  # node button held down

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        return QSize(WIDTHS[index.column()], ROW_HEIGHT)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> None:
        col = index.column()
        widget = option.widget  # type: ignore[attr-defined]
        rect: QRect = option.rect  # type: ignore[attr-defined]
        if col in (COL_STATE, COL_AVAIL, COL_CPUS):
            super().paint(painter, option, index)
            return
        # selection background first, then our own drawing on top
        base = QStyleOptionViewItem(option)
        self.initStyleOption(base, index)
        base.text = ""
        style = widget.style() if widget is not None else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, base, painter, widget)
        cell = rect.adjusted(3, 3, -3, -3)
        if col == COL_ID:
            self._paint_lamp(painter, cell, str(index.data(ValueRole)), str(index.data(LampRole)), widget)
        elif col == COL_NODE:
            btn = QStyleOptionButton()
            btn.rect = rect.adjusted(2, 1, -2, -1)
            btn.text = str(index.data(Qt.ItemDataRole.DisplayRole))
            btn.state = QStyle.StateFlag.State_Enabled | QStyle.StateFlag.State_Raised
            if self.pressed is not None and self.pressed == QPersistentModelIndex(index):
                btn.state = QStyle.StateFlag.State_Enabled | QStyle.StateFlag.State_Sunken
            if widget is not None:
                btn.palette = widget.palette()
                btn.fontMetrics = widget.fontMetrics()
            style.drawControl(QStyle.ControlElement.CE_PushButton, btn, painter, widget)
        elif col == COL_SPEED:
            opt = slider_option(cell, int(index.data(ValueRole)), widget)
            style.drawComplexControl(QStyle.ComplexControl.CC_Slider, opt, painter, widget)
        elif col == COL_LCD:
            paint_lcd(painter, rect.adjusted(3, 3, -3, -3), str(index.data(ValueRole)))
        elif col == COL_LOAD:
            paint_bar(painter, cell, int(index.data(ValueRole)), widget)
        elif col == COL_MEM:
            paint_bar(painter, cell, int(index.data(ValueRole)), widget, QColor(60, 120, 200))

    @staticmethod
    def _paint_lamp(painter: QPainter, rect: QRect, node_id: str, lamp: str, widget: QWidget | None) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        d = min(rect.height(), 18)
        circle = QRectF(rect.left() + 2, rect.center().y() - d / 2 + 1, d, d)
        colour = LAMP_COLOURS.get(lamp, QColor(150, 150, 150))
        grad = QRadialGradient(circle.center().x() - d / 5, circle.center().y() - d / 5, d * 0.7)
        grad.setColorAt(0.0, colour.lighter(170))
        grad.setColorAt(1.0, colour.darker(130))
        painter.setPen(colour.darker(170))
        painter.setBrush(grad)
        painter.drawEllipse(circle)
        font = QFont(widget.font() if widget is not None else QApplication.font())
        font.setBold(True)
        painter.setFont(font)
        painter.setPen((widget.palette() if widget is not None else QApplication.palette()).color(QPalette.ColorRole.Text))
        text_rect = QRect(int(circle.right()) + 5, rect.top(), rect.right() - int(circle.right()) - 5, rect.height())
        painter.drawText(text_rect, int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft), node_id)
        painter.restore()

    # -- keyboard editing of the speed (F2 / Enter on the slider cell) --

    def createEditor(self, parent: QWidget, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QWidget:
        slider = QSlider(Qt.Orientation.Horizontal, parent)
        slider.setRange(SPEED_MIN, SPEED_MAX)
        slider.setSingleStep(SPEED_STEP)
        slider.setPageStep(10 * SPEED_STEP)
        slider.setAutoFillBackground(True)
        return slider

    def setEditorData(self, editor: QWidget, index: QModelIndex | QPersistentModelIndex) -> None:
        assert isinstance(editor, QSlider)
        editor.setValue(int(index.data(ValueRole)))

    def setModelData(self, editor: QWidget, model: Any, index: QModelIndex | QPersistentModelIndex) -> None:
        assert isinstance(editor, QSlider)
        model.setData(index, editor.value(), Qt.ItemDataRole.EditRole)


class NodeTableView(QTableView):
    """The node table: click a node button to configure it, drag a slider to set its speed."""

    sig_node_clicked = Signal(str)
    """address: the node's button was clicked (open its configuration dialog)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._delegate = NodeDelegate(self)
        self.setItemDelegate(self._delegate)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.EditKeyPressed)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setShowGrid(False)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        vh = self.verticalHeader()
        vh.setVisible(False)
        # fixed, uniform rows: the view never asks 1,000 rows for their size hints
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(ROW_HEIGHT)
        self._drag_row: int | None = None

    def setModel(self, model: Any) -> None:  # noqa: N802 (Qt override)
        super().setModel(model)
        hh = self.horizontalHeader()
        hh.setHighlightSections(False)
        for col, width in enumerate(WIDTHS):
            hh.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            self.setColumnWidth(col, width)
        hh.setStretchLastSection(True)

    def model(self) -> NodeTableModel:  # type: ignore[override]
        return super().model()  # type: ignore[return-value]

    def _slider_rect(self, index: QModelIndex) -> QRect:
        return self.visualRect(index).adjusted(3, 3, -3, -3)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        index = self.indexAt(event.position().toPoint())
        if event.button() == Qt.MouseButton.LeftButton and index.isValid():
            if index.column() == COL_SPEED:
                self.setCurrentIndex(index)
                self._drag_row = index.row()
                self._drag_to(index, event.position().toPoint())
                return
            if index.column() == COL_NODE:
                self.setCurrentIndex(index)
                self._delegate.pressed = QPersistentModelIndex(index)
                self.viewport().update(self.visualRect(index))
                return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._drag_row is not None:
            self._drag_to(self.model().index(self._drag_row, COL_SPEED), event.position().toPoint())
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._drag_row is not None:
            index = self.model().index(self._drag_row, COL_SPEED)
            self._drag_row = None
            value = slider_value_at(self._slider_rect(index), event.position().toPoint().x(), self)
            self.model().set_pending_speed(index.row(), None)
            self.model().setData(index, value, Qt.ItemDataRole.EditRole)
            return
        pressed = self._delegate.pressed
        if pressed is not None:
            self._delegate.pressed = None
            self.viewport().update(self.visualRect(QModelIndex(pressed)))
            if pressed.isValid() and self.indexAt(event.position().toPoint()) == QModelIndex(pressed):
                self.sig_node_clicked.emit(str(pressed.data(Qt.ItemDataRole.DisplayRole)))
            return
        super().mouseReleaseEvent(event)

    def _drag_to(self, index: QModelIndex, pos: QPoint) -> None:
        value = slider_value_at(self._slider_rect(index), pos.x(), self)
        self.model().set_pending_speed(index.row(), value)

    def click_node(self, row: int) -> None:
        """Keyboard/accessibility path to the node button (also used by tests)."""
        self.sig_node_clicked.emit(self.model().node_at(row).gossip.address)
