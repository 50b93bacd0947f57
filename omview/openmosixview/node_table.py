"""openmosixview window: the node table of the main window (model, painting delegate, view).

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

import bisect
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Generic, TypeVar

from PySide6.QtCore import (
    QAbstractTableModel,
    QEvent,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QRect,
    QRectF,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import (
    QBrush,
    QColor,
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QFont,
    QMouseEvent,
    QPainter,
    QPalette,
    QPixmap,
    QRadialGradient,
)
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

from omview.gui.links import LinkState, LinkStatus
from omview.gui.procdrag import from_mime
from omview.gui.session import SpeedReport
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

#: roles the model never answers: refused before any work, since every painted cell asks for them
_UNANSWERED = frozenset(
    int(r)
    for r in (
        Qt.ItemDataRole.DecorationRole,
        Qt.ItemDataRole.FontRole,
        Qt.ItemDataRole.BackgroundRole,
        Qt.ItemDataRole.CheckStateRole,
        Qt.ItemDataRole.SizeHintRole,
        Qt.ItemDataRole.StatusTipRole,
        Qt.ItemDataRole.WhatsThisRole,
        Qt.ItemDataRole.AccessibleDescriptionRole,
    )
)
_DISPLAY = int(Qt.ItemDataRole.DisplayRole)
_EDIT = int(Qt.ItemDataRole.EditRole)
_TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)
_ALIGNMENT = int(Qt.ItemDataRole.TextAlignmentRole)
_FOREGROUND = int(Qt.ItemDataRole.ForegroundRole)
_ALIGN_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
_ALIGN_LEFT = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)

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


T = TypeVar("T")


class _once(Generic[T]):  # noqa: N801 (used like a decorator)
    """A computed attribute stored on first use; like functools.cached_property, but without the
    per-access lock of Python 3.11 (rows are immutable and only used in the GUI thread)."""

    def __init__(self, fn: Callable[[Any], T]) -> None:
        self._fn = fn
        self._name = fn.__name__

    def __set_name__(self, _owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: Any, _owner: type | None = None) -> Any:
        if obj is None:
            return self
        # a non-data descriptor: once stored in the instance dict, it is no longer consulted
        value: T = self._fn(obj)
        obj.__dict__[self._name] = value
        return value


@dataclass(frozen=True)
class NodeRow:
    """What the table knows about one node."""

    gossip: NodeInfo  # the entry node's view (cluster.nodes)
    direct: NodeInfo | None = None  # the node's own node.info, when it answered
    link: LinkState = LinkState(LinkStatus.UNKNOWN)
    pending_speed: int | None = None  # slider position while a speed change is under way
    readback_speed: int | None = None  # last speed read back after setting it

    # cached: a row is immutable, and the delegate asks for these once per painted cell
    @_once
    def info(self) -> NodeInfo:
        info = self.direct if self.direct is not None and self.link.status is LinkStatus.UP else self.gossip
        if self.readback_speed is not None and self.direct is None:
            info = replace(info, speed=self.readback_speed)
        return info

    @_once
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

    @_once
    def cells(self) -> tuple[Any, ...]:
        """Per column, everything the cell shows (its value, and text derived from it); equal
        entries paint the same, so comparing two rows' cells finds the columns to repaint."""
        info = self.info
        return (
            (info.id, self.lamp),
            info.address,
            self.pending_speed if self.pending_speed is not None else info.speed,
            info.speed,
            load_percent(info),
            mem_percent(info),
            info.mem,
            info.cpus,
            (self.state_text(), self.link),
        )

    def with_gossip(self, gossip: NodeInfo) -> NodeRow:
        """``replace(self, gossip=gossip)`` for the once-a-second path over every row (faster)."""
        return NodeRow(gossip, *[getattr(self, name) for name in _ROW_FIELDS[1:]])


_ROW_FIELDS = tuple(f.name for f in fields(NodeRow))
assert _ROW_FIELDS[0] == "gossip"


class NodeTableModel(QAbstractTableModel):
    """Rows of nodes, sorted by node ID; updates emit dataChanged for changed cells only (adjacent
    changed rows of one cluster table in one signal)."""

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
        if role in _UNANSWERED or not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        row = self._rows[index.row()]
        col = index.column()
        if role == ValueRole or role == _EDIT:
            return self._value(row, col)
        if role == _DISPLAY:
            return self._text(row, col)
        if role == LampRole:
            return row.lamp
        if role == NodeRole:
            return row.info
        if role == LinkRole:
            return row.link
        if role == _TOOLTIP:
            return self._tooltip(row, col)
        if role == _ALIGNMENT:
            return _ALIGN_RIGHT if col in (COL_AVAIL, COL_CPUS, COL_LCD) else _ALIGN_LEFT
        if role == _FOREGROUND and col == COL_STATE:
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
        """Take the entry node's cluster table: rows appear, disappear or change in place.

        Changed rows are announced together at the end, one dataChanged per run of adjacent
        changed rows: a 1,000-node table where every load moved costs a few signals, not 1,000.
        """
        wanted = {n.address: n for n in nodes}
        removed = False
        for r in range(len(self._rows) - 1, -1, -1):
            if self._rows[r].gossip.address not in wanted:
                self.beginRemoveRows(QModelIndex(), r, r)
                del self._rows[r]
                self.endRemoveRows()
                removed = True
        if removed:
            self._reindex()
        fresh: dict[str, NodeInfo] = {}
        spans: list[tuple[int, int, int]] = []
        for info in wanted.values():
            row = self._by_address.get(info.address)
            if row is None:
                fresh[info.address] = info
            elif self._rows[row].gossip != info:
                span = self._swap(row, self._rows[row].with_gossip(info))
                if span is not None:
                    spans.append((row, *span))
        self._announce(spans)
        if fresh:
            self._insert(fresh.values())

    def _insert(self, infos: Iterable[NodeInfo]) -> None:
        """Insert new rows in node-ID order; rows that land next to each other go in together."""
        order = [(row.gossip.id, row.gossip.address) for row in self._rows]
        groups: list[tuple[int, list[NodeInfo]]] = []
        for info in sorted(infos, key=lambda n: (n.id, n.address)):
            pos = bisect.bisect_left(order, (info.id, info.address))
            if groups and groups[-1][0] == pos:
                groups[-1][1].append(info)
            else:
                groups.append((pos, [info]))
        shift = 0
        for pos, group in groups:
            at = pos + shift
            self.beginInsertRows(QModelIndex(), at, at + len(group) - 1)
            self._rows[at:at] = [NodeRow(info) for info in group]
            self._reindex()
            self.endInsertRows()
            shift += len(group)

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

    def _swap(self, r: int, new: NodeRow) -> tuple[int, int] | None:
        """Swap a row; returns the first and last column whose contents changed (None: none did)."""
        old = self._rows[r]
        if old == new:
            return None
        self._rows[r] = new
        before, after = old.cells, new.cells
        changed = [c for c in range(len(HEADERS)) if before[c] != after[c]]
        return (changed[0], changed[-1]) if changed else None

    def _replace(self, r: int, new: NodeRow) -> None:
        """Swap a row and announce only the columns whose contents changed."""
        span = self._swap(r, new)
        if span is not None:
            self.dataChanged.emit(self.index(r, span[0]), self.index(r, span[1]))

    def _announce(self, spans: list[tuple[int, int, int]]) -> None:
        """One dataChanged per run of adjacent changed rows, over the columns changed in the run."""
        run: list[int] | None = None
        for r, first, last in sorted(spans):
            if run is not None and r == run[1] + 1:
                run[1], run[2], run[3] = r, min(run[2], first), max(run[3], last)
                continue
            if run is not None:
                self.dataChanged.emit(self.index(run[0], run[2]), self.index(run[1], run[3]))
            run = [r, r, first, last]
        if run is not None:
            self.dataChanged.emit(self.index(run[0], run[2]), self.index(run[1], run[3]))


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


def paint_button(painter: QPainter, rect: QRect, text: str, sunken: bool, widget: QWidget | None) -> None:
    """The node button of a row (raised, or sunken while held down)."""
    btn = QStyleOptionButton()
    btn.rect = rect
    btn.text = text
    btn.state = QStyle.StateFlag.State_Enabled | (QStyle.StateFlag.State_Sunken if sunken else QStyle.StateFlag.State_Raised)
    if widget is not None:
        btn.palette = widget.palette()
        btn.fontMetrics = widget.fontMetrics()
    style = widget.style() if widget is not None else QApplication.style()
    style.drawControl(QStyle.ControlElement.CE_PushButton, btn, painter, widget)


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


class CellCache:
    """Painted cells by what they show, so repainting an unchanged cell is one drawPixmap.

    The table repaints every visible cell once a second on a busy cluster, and styled sliders,
    bars, buttons, lamps and LCDs cost far more than a blit. Keys name everything a cell's
    picture depends on; the view clears the cache when its palette, font or style changes.
    Pictures are opaque, painted on the cell's background. The least recently used ones are
    dropped beyond ``budget`` bytes (a 1080-pixel-high screenful takes about 3 MiB).
    """

    def __init__(self, budget: int = 24 << 20) -> None:
        self.budget = budget
        self.used = 0  # bytes
        self._items: OrderedDict[tuple[Any, ...], QPixmap] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self.used = 0

    def draw(
        self,
        painter: QPainter,
        rect: QRect,
        key: tuple[Any, ...],
        render: Callable[[QPainter, QRect], None],
        background: QColor,
    ) -> None:
        """Draw the picture for ``key`` on ``background`` at ``rect``; ``render(p, local_rect)``
        paints it when it is not cached yet."""
        dpr = painter.device().devicePixelRatioF()
        full = (*key, background.rgba(), rect.width(), rect.height(), dpr)
        pixmap = self._items.get(full)
        if pixmap is None:
            pixmap = QPixmap(max(1, math.ceil(rect.width() * dpr)), max(1, math.ceil(rect.height() * dpr)))
            pixmap.setDevicePixelRatio(dpr)
            pixmap.fill(background)
            p = QPainter(pixmap)
            try:
                render(p, QRect(0, 0, rect.width(), rect.height()))
            finally:
                p.end()
            self._items[full] = pixmap
            self.used += pixmap.width() * pixmap.height() * 4
            while self.used > self.budget and len(self._items) > 1:
                _key, old = self._items.popitem(last=False)
                self.used -= old.width() * old.height() * 4
        else:
            self._items.move_to_end(full)
        painter.drawPixmap(rect.topLeft(), pixmap)


_SELECTED_OR_FOCUSED = QStyle.StateFlag.State_Selected | QStyle.StateFlag.State_HasFocus
_MEM_COLOUR = QColor(60, 120, 200)


class NodeDelegate(QStyledItemDelegate):
    """Paints lamps, node buttons, sliders, LCDs and bars; a QSlider editor for keyboard editing."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.pressed: QPersistentModelIndex | None = None  # node button held down
        self.cache = CellCache()

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        return QSize(WIDTHS[index.column()], ROW_HEIGHT)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> None:
        col = index.column()
        widget = option.widget
        rect: QRect = option.rect
        if col in (COL_STATE, COL_AVAIL, COL_CPUS):
            super().paint(painter, option, index)
            return
        style = widget.style() if widget is not None else QApplication.style()
        render: Callable[[QPainter, QRect], None]
        if col == COL_ID:
            node_id, lamp = str(index.data(ValueRole)), str(index.data(LampRole))
            key: tuple[Any, ...] = (node_id, lamp)
            render = lambda p, r: self._paint_lamp(p, r.adjusted(3, 3, -3, -3), node_id, lamp, widget)  # noqa: E731
        elif col == COL_NODE:
            text = str(index.data(Qt.ItemDataRole.DisplayRole))
            sunken = self.pressed is not None and self.pressed == QPersistentModelIndex(index)
            key = (text, sunken)
            render = lambda p, r: paint_button(p, r.adjusted(2, 1, -2, -1), text, sunken, widget)  # noqa: E731
        elif col == COL_SPEED:
            speed = int(index.data(ValueRole))
            key = (speed,)
            render = lambda p, r: style.drawComplexControl(  # noqa: E731
                QStyle.ComplexControl.CC_Slider, slider_option(r.adjusted(3, 3, -3, -3), speed, widget), p, widget
            )
        elif col == COL_LCD:
            text = str(index.data(ValueRole))
            key = (text,)
            render = lambda p, r: paint_lcd(p, r.adjusted(3, 3, -3, -3), text)  # noqa: E731
        else:
            percent = int(index.data(ValueRole))
            colour = _MEM_COLOUR if col == COL_MEM else None
            key = (percent,)
            render = lambda p, r: paint_bar(p, r.adjusted(3, 3, -3, -3), percent, widget, colour)  # noqa: E731
        state = option.state
        if state & _SELECTED_OR_FOCUSED:
            # the selected row and the current cell are drawn directly: selection background and
            # focus frame first, then our own drawing on top
            base = QStyleOptionViewItem(option)
            self.initStyleOption(base, index)
            base.text = ""
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, base, painter, widget)
            painter.save()
            painter.translate(rect.topLeft())
            render(painter, QRect(0, 0, rect.width(), rect.height()))
            painter.restore()
            return
        # any other cell is a cached picture on the row's own background (base or alternate base,
        # as the view paints it): text antialiased onto the real background looks the same as
        # when painted directly, which it would not on a transparent picture
        palette: QPalette = option.palette
        group = QPalette.ColorGroup.Active if state & QStyle.StateFlag.State_Active else QPalette.ColorGroup.Inactive
        if widget is not None and not widget.isEnabled():
            group = QPalette.ColorGroup.Disabled
        alternate = option.features & QStyleOptionViewItem.ViewItemFeature.Alternate
        background = palette.color(group, QPalette.ColorRole.AlternateBase if alternate else QPalette.ColorRole.Base)
        self.cache.draw(painter, rect, (col, group, *key), render, background)

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
    sig_procs_dropped = Signal(int, object)
    """row, DraggedProcs: processes from a process box were dropped on a node row (migrate them)."""

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
        self.setAcceptDrops(True)
        self.viewport().setAcceptDrops(True)

    # processes dragged from a process box (omview/gui/procdrag.py) migrate to the row they land on
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt override)
        if from_mime(event.mimeData()) is not None:
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802 (Qt override)
        if from_mime(event.mimeData()) is not None and self.rowAt(event.position().toPoint().y()) >= 0:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt override)
        drag = from_mime(event.mimeData())
        row = self.rowAt(event.position().toPoint().y())
        if drag is None or row < 0:
            event.ignore()
            return
        event.acceptProposedAction()
        self.sig_procs_dropped.emit(row, drag)

    def setModel(self, model: Any) -> None:  # noqa: N802 (Qt override)
        super().setModel(model)
        hh = self.horizontalHeader()
        hh.setHighlightSections(False)
        for col, width in enumerate(WIDTHS):
            hh.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            self.setColumnWidth(col, width)
        hh.setStretchLastSection(True)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt override)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self._delegate.cache.clear()  # cached cell pictures were painted with the old look
        super().changeEvent(event)

    def model(self) -> NodeTableModel:
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
            # a persistent index follows row moves; turn it back into a plain one for the view
            index = self.model().index(pressed.row(), pressed.column(), pressed.parent())
            self.viewport().update(self.visualRect(index))
            if pressed.isValid() and self.indexAt(event.position().toPoint()) == index:
                self.sig_node_clicked.emit(str(pressed.data(Qt.ItemDataRole.DisplayRole)))
            return
        super().mouseReleaseEvent(event)

    def _drag_to(self, index: QModelIndex, pos: QPoint) -> None:
        value = slider_value_at(self._slider_rect(index), pos.x(), self)
        self.model().set_pending_speed(index.row(), value)

    def click_node(self, row: int) -> None:
        """Keyboard/accessibility path to the node button (also used by tests)."""
        self.sig_node_clicked.emit(self.model().node_at(row).gossip.address)
