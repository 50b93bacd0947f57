"""openmosixprocs: the process box's table model (model/view, no widget per row, no proxy model).

``ProcModel`` keeps one row per process (a mosrun job is one row: the agent folds it, see
docs/agent.md). It filters (``RowFilter``: user, command, "only migratable", "only migrated") and
sorts itself, in Python over plain lists: a QSortFilterProxyModel in between called back into Python
for every row on every update (rowCount, columnCount, filterAcceptsRow: ~15,000 calls for 5,000
rows). An update changes values in place (one dataChanged), removes ended rows, appends new ones and
re-orders with one layoutChanged only when the order changed. While ``held`` (a row hovered, selected
or dragged) only values change; rows come, go and re-sort when the hold ends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QMimeData,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
)
from PySide6.QtGui import QBrush, QColor, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import QStyledItemDelegate, QStyleOptionViewItem

from omview.gui.procdrag import MIME_TYPE, DraggedProcs, to_mime
from omview.model.cluster import ProcessInfo

#: (header, tooltip) of each column
COLUMNS: tuple[tuple[str, str], ...] = (
    ("pid", "Process ID on its home node (a mosrun job: its home PID)"),
    ("n#", "0 = runs on this node, otherwise the node it runs on"),
    ("stat", "State, as in /proc/PID/stat (R running, S sleeping, T stopped, Z zombie)"),
    ("cmdline", "Command line"),
    ("user", "Owner"),
    ("nice", "Nice value (-20 fast .. 19 slow)"),
    ("cpu%", "Percent of one CPU over the last second"),
    ("rss", "Resident memory"),
    ("nmigs", "Migrations so far"),
    ("home", "The process's home node"),
    ("cantmove", "Why the process cannot migrate (empty: it can)"),
)
PID, NODE, STAT, CMD, USER, NICE, CPU, RSS, NMIGS, HOME, CANTMOVE = range(len(COLUMNS))
_RIGHT = (PID, NODE, NICE, CPU, RSS, NMIGS, HOME)
#: the ProcessInfo field each column sorts by (n# and cmdline have their own keys)
_ATTRS = ("pid", "where", "state", "name", "user", "nice", "cpu", "rss", "nmigs", "home", "cantmove")
#: the raw value of a cell, for sorting
SORT_ROLE = Qt.ItemDataRole.UserRole
#: the row's ProcessInfo
PROC_ROLE = Qt.ItemDataRole.UserRole + 1
Index = QModelIndex | QPersistentModelIndex
_pid = attrgetter("pid")


def node_column(p: ProcessInfo, node_id: int) -> int:
    """openMosix n#: 0 when the process runs on this node, else the node it runs on."""
    return 0 if p.where in (0, node_id) else p.where


def migrated(p: ProcessInfo, node_id: int) -> bool:
    """Runs on another node than this one, or came here from another home node."""
    return node_column(p, node_id) != 0 or p.home not in (0, node_id)


def _dot(color: str, lock: bool = False) -> QIcon:
    """A 12 px icon drawn here (no image files to ship): a filled dot, or a small padlock."""
    pix = QPixmap(12, 12)
    pix.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pix)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QColor(color).darker(150))
    painter.setBrush(QColor(color))
    if lock:
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawArc(3, 1, 6, 7, 0, 180 * 16)
        painter.setBrush(QColor(color))
        painter.drawRect(2, 5, 8, 6)
    else:
        painter.drawEllipse(1, 1, 10, 10)
    painter.end()
    return QIcon(pix)


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def stale_text(p: ProcessInfo) -> str:
    """Why a row is dimmed: its program runs on another node whose reports are old or missing
    (ProcessInfo.stats_age); "" when its values are current."""
    if p.stats_age > 0:
        return (f"state, CPU and memory as node {p.where} reported them {p.stats_age:.0f} s ago: "
                f"node {p.where} has not reported since (down or slow)")  # fmt: skip
    if p.stats_age < 0:
        return f"node {p.where} has not reported this job's state, CPU and memory yet: not current"
    return ""


@dataclass(frozen=True)
class RowFilter:
    """Which processes the box shows: all fields empty/off = every one."""

    user: str = ""
    command: str = ""  # a case-insensitive substring of the command line (or the name)
    only_migratable: bool = False
    only_migrated: bool = False

    @property
    def active(self) -> bool:
        return bool(self.user or self.command or self.only_migratable or self.only_migrated)

    def accepts(self, p: ProcessInfo, node_id: int) -> bool:
        if self.user and p.user != self.user:
            return False
        if self.command and self.command.casefold() not in (" ".join(p.cmdline) or p.name).casefold():
            return False
        if self.only_migratable and (p.cantmove or p.lock):
            return False
        return not (self.only_migrated and not migrated(p, node_id))


def sort_key(col: int, node_id: int) -> Callable[[ProcessInfo], Any]:
    """The key of column COL: its raw value (helpers sort under their job by pid)."""
    if col == PID:
        return lambda p: (p.helper_of or p.pid, p.helper_of != 0, p.pid)
    if col == NODE:
        return lambda p: (node_column(p, node_id), p.pid)
    if col == CMD:
        return lambda p: " ".join(p.cmdline) or p.name
    return attrgetter(_ATTRS[col]) if 0 <= col < len(_ATTRS) else attrgetter("pid")


class ProcModel(QAbstractTableModel):
    """The processes of one node; rows keep their place across updates. KEEP: a fixed condition on
    top of the filter (the guests window shows only guests)."""

    def __init__(self, node_id: int = 0, parent: Any = None,
                 keep: Callable[[ProcessInfo, int], bool] | None = None) -> None:  # fmt: skip
        super().__init__(parent)
        self.node_id = node_id
        self.address = ""  # how the box reaches the node (a drag carries it)
        self._all: list[ProcessInfo] = []  # the last answer, shown or not
        self._rows: list[ProcessInfo] = []  # shown, in display order
        self._where: dict[int, int] = {}  # pid -> row
        self._held = False
        self._waiting = False  # rows to add, remove or re-order when the hold ends
        self._sort: tuple[int, Qt.SortOrder] | None = None
        self._filter = RowFilter()
        self._keep = keep
        self._icons: dict[str, QIcon] = {}

    # -- updates (GUI thread) --
    def set_processes(self, procs: Sequence[ProcessInfo]) -> None:
        """The node's processes now: values in place, ended ones removed, new ones appended and the
        rows re-sorted (the last three wait while the model is held)."""
        self._all = list(procs)
        if self._held:
            if self._rows:
                fresh = {p.pid: p for p in self._all}
                self._rows = [fresh.get(p.pid, p) for p in self._rows]
                self._changed()
            self._waiting = True
            return
        # not held: _apply() puts the new values in place while it orders the rows (a separate pass
        # over 5,000 rows first was a third of the GUI thread's time per update)
        had = bool(self._rows)
        self._apply()
        if had:
            self._changed()

    def _changed(self) -> None:
        """Every row's values at once: the view repaints only what it shows."""
        if self._rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._rows) - 1, len(COLUMNS) - 1))

    def _target(self) -> list[ProcessInfo]:
        """The rows to show, in order: the last answer filtered and sorted."""
        node, flt, keep = self.node_id, self._filter, self._keep
        rows = self._all
        if flt.active:
            rows = [p for p in rows if flt.accepts(p, node)]
        if keep is not None:
            rows = [p for p in rows if keep(p, node)]
        if self._sort is not None:
            col, order = self._sort
            rows = sorted(rows, key=sort_key(col, node), reverse=order == Qt.SortOrder.DescendingOrder)
        else:  # unsorted: rows keep their place, new ones come last (stable sort)
            end, where = len(self._where), self._where
            rows = sorted(rows, key=lambda p: where.get(p.pid, end))
        return rows

    def _apply(self) -> None:
        """Show _target() with at most four signals, however scattered the changes: append what came
        (rowsInserted), re-order to the target with what went at the end (layoutChanged, only when the
        order differs), drop that tail (rowsRemoved). Row by row, 50 ended processes scattered over a
        table sorted by cpu% were 50 removals, each re-laid out by the view."""
        self._waiting = False
        target = self._target()
        have = self._where  # the pids of _rows
        # map(_pid, ...) and the set/dict/zip builders run in C: per row this is the update's cost
        new_rows = [p for p in target if p.pid not in have]
        if new_rows:
            self.beginInsertRows(QModelIndex(), len(self._rows), len(self._rows) + len(new_rows) - 1)
            self._rows.extend(new_rows)
            self.endInsertRows()
        want = set(map(_pid, target))
        gone = [p for p in self._rows if p.pid not in want] if len(want) < len(self._rows) else []
        order = target + gone if gone else target
        if list(map(_pid, self._rows)) != list(map(_pid, order)):
            self._relayout(order)
        else:
            self._rows = order
        if gone:
            self.beginRemoveRows(QModelIndex(), len(target), len(order) - 1)
            del self._rows[len(target) :]
            self.endRemoveRows()
        self._where = dict(zip(map(_pid, self._rows), range(len(self._rows)), strict=True))

    def _relayout(self, rows: list[ProcessInfo]) -> None:
        """The same rows in another order (the view's persistent indexes follow their process)."""
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()  # the view's few: current row, selection, hover
        pids = [self._rows[i.row()].pid if 0 <= i.row() < len(self._rows) else -1 for i in old]
        self._rows = rows
        where = {p.pid: i for i, p in enumerate(rows)}
        self.changePersistentIndexList(old, [self.index(where[pid], i.column()) if pid in where else QModelIndex()
                                             for pid, i in zip(pids, old, strict=True)])  # fmt: skip
        self.layoutChanged.emit()

    # -- sorting and filtering: here, in Python over a list, not in a proxy model
    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """The view's header asks (a click on it); waits for the hold's end like an update."""
        self._sort = (column, order)
        if self._held:
            self._waiting = True
        else:
            self._apply()

    def set_filter(self, *, user: str | None = None, command: str | None = None,
                   only_migratable: bool | None = None, only_migrated: bool | None = None) -> None:  # fmt: skip
        """Change the filter (what is None stays); applied at once, hold or not: the user asked."""
        f = self._filter
        self._filter = RowFilter(
            f.user if user is None else user.strip(), f.command if command is None else command.strip(),
            f.only_migratable if only_migratable is None else only_migratable,
            f.only_migrated if only_migrated is None else only_migrated,
        )
        if self._filter != f:
            self._apply()

    @property
    def row_filter(self) -> RowFilter:
        return self._filter

    def all_processes(self) -> list[ProcessInfo]:
        """The last answer, shown or filtered out."""
        return list(self._all)

    def set_held(self, held: bool) -> None:
        """Hold rows in place (hover, selection, drag); the hold's end applies what waited."""
        if held == self._held:
            return
        self._held = held
        if not held and self._waiting:
            self._apply()

    @property
    def held(self) -> bool:
        return self._held

    def processes(self) -> list[ProcessInfo]:
        return list(self._rows)

    def process(self, pid: int) -> ProcessInfo | None:
        i = self._where.get(pid)
        return self._rows[i] if i is not None and i < len(self._rows) else None

    def row_of(self, pid: int) -> int:
        return self._where.get(pid, -1)

    # -- QAbstractTableModel --
    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's own default
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][0]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section][1]
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        base = super().flags(index)
        if not index.isValid() or index.row() >= len(self._rows) or self._rows[index.row()].helper_of:
            return base  # a job's plumbing is shown, never dragged (its job's row is)
        return base | Qt.ItemFlag.ItemIsDragEnabled

    def mimeTypes(self) -> list[str]:
        return [MIME_TYPE]

    def mimeData(self, indexes: Sequence[QModelIndex]) -> QMimeData:
        pids = sorted({self._rows[i.row()].pid for i in indexes
                       if i.isValid() and i.row() < len(self._rows) and not self._rows[i.row()].helper_of})  # fmt: skip
        return to_mime(DraggedProcs(self.node_id, self.address, tuple(pids)))

    def supportedDragActions(self) -> Qt.DropAction:
        return Qt.DropAction.MoveAction

    def _icon(self, key: str) -> QIcon:
        icon = self._icons.get(key)
        if icon is None:
            icon = self._icons[key] = _dot("#2e9e3e") if key == "migrated" else _dot("#b8860b", lock=True)
        return icon

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        p = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(p, col)
        if role == SORT_ROLE:
            return self._raw(p, col)
        if role == PROC_ROLE:
            return p
        if role == Qt.ItemDataRole.DecorationRole and col == PID:
            return self.icon_of(p)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(p)
        if role == Qt.ItemDataRole.ForegroundRole and p.stats_age:
            return QBrush(QPalette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text))
        if role == Qt.ItemDataRole.TextAlignmentRole and col in _RIGHT:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _tooltip(self, p: ProcessInfo) -> str | None:
        if p.helper_of:
            return f"runs the mosrun job of row {p.helper_of} (its plumbing: not moved by itself)"
        lines = [stale_text(p)] if p.stats_age else []
        if p.cantmove:
            lines.append(f"cannot migrate: {p.cantmove}")
        elif p.lock:
            lines.append("locked to its node (migrate --lock off to free it)")
        elif migrated(p, self.node_id):
            lines.append(f"migrated: home node {p.home}, runs on node {p.where}")
        return "\n".join(lines) or None

    def icon_of(self, p: ProcessInfo) -> QIcon | None:
        """The pid column's icon: a padlock (cannot move), a green dot (migrated) or none."""
        if p.cantmove or p.lock:
            return self._icon("lock")
        if migrated(p, self.node_id):
            return self._icon("migrated")
        return None

    def row(self, row: int) -> ProcessInfo | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def text(self, p: ProcessInfo, col: int) -> str:
        return self._text(p, col)

    def _text(self, p: ProcessInfo, col: int) -> str:
        if col == CMD:
            text = " ".join(p.cmdline) if p.cmdline else f"[{p.name}]"
            return f"  \\_ {text}" if p.helper_of else text
        if col == CPU:
            return f"{p.cpu:.1f}"
        if col == RSS:
            return human_bytes(p.rss)
        return str(self._raw(p, col))

    def _raw(self, p: ProcessInfo, col: int) -> Any:
        return (p.pid, node_column(p, self.node_id), p.state, " ".join(p.cmdline) or p.name, p.user, p.nice,
                p.cpu, p.rss, p.nmigs, p.home, p.cantmove)[col]  # fmt: skip


_RIGHT_ALIGN = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
_LEFT_ALIGN = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter


class ProcDelegate(QStyledItemDelegate):
    """Paints a cell straight from its row's ProcessInfo: one call into Python per cell where the
    default delegate asks data() for eight roles (font, alignment, colours, check state, icon, text,
    background...): with 5,000 rows changing every second, painting was the GUI thread's biggest cost."""

    def __init__(self, model: ProcModel, parent: Any = None) -> None:
        super().__init__(parent)
        self.model = model

    def initStyleOption(self, option: QStyleOptionViewItem, index: Index) -> None:
        p = self.model.row(index.row())
        if p is None:
            return
        col = index.column()
        option.text = self.model.text(p, col)
        option.features |= QStyleOptionViewItem.ViewItemFeature.HasDisplay
        option.displayAlignment = _RIGHT_ALIGN if col in _RIGHT else _LEFT_ALIGN
        option.textElideMode = Qt.TextElideMode.ElideRight
        if p.stats_age:  # old numbers from a node that stopped reporting: dimmed, not shown as current
            dim = option.palette.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
            option.palette.setColor(QPalette.ColorRole.Text, dim)
            option.palette.setColor(QPalette.ColorRole.HighlightedText, dim.lighter(160))
        if col == PID:
            icon = self.model.icon_of(p)
            if icon is not None:
                option.icon = icon
                option.features |= QStyleOptionViewItem.ViewItemFeature.HasDecoration
