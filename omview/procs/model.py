"""openmosixprocs: the process box's table model and its sort/filter proxy (model/view, no widget per row).

``ProcModel`` keeps one row per process (a mosrun job is one row: the agent folds it, see
docs/agent.md): values change in place (one dataChanged per poll), ended processes are removed and
new ones appended, then the rows are sorted again by the column the user chose (in one Python
sort). While ``held`` (a row hovered, selected or dragged) only values change; rows come, go and
re-sort when the hold ends. ``ProcFilter`` filters by user, command, "only migratable" and "only
migrated".
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QMimeData,
    QModelIndex,
    QPersistentModelIndex,
    QRegularExpression,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap

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
#: the ProcessInfo field each column sorts by (n# and cmdline have their own keys)
_ATTRS = ("pid", "where", "state", "name", "user", "nice", "cpu", "rss", "nmigs", "home", "cantmove")
#: the raw value of a cell, for sorting
SORT_ROLE = Qt.ItemDataRole.UserRole
#: the row's ProcessInfo
PROC_ROLE = Qt.ItemDataRole.UserRole + 1
Index = QModelIndex | QPersistentModelIndex


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


class ProcModel(QAbstractTableModel):
    """The processes of one node; rows keep their place across updates."""

    def __init__(self, node_id: int = 0, parent: Any = None) -> None:
        super().__init__(parent)
        self.node_id = node_id
        self.address = ""  # how the box reaches the node (a drag carries it)
        self._rows: list[ProcessInfo] = []
        self._where: dict[int, int] = {}  # pid -> row
        self._held = False
        self._pending: list[ProcessInfo] | None = None
        self._sort: tuple[int, Qt.SortOrder] | None = None
        self._icons: dict[str, QIcon] = {}

    # -- updates (GUI thread) --
    def set_processes(self, procs: Sequence[ProcessInfo]) -> None:
        """The node's processes now: values in place, ended ones removed, new ones appended
        (the last two wait while the model is held)."""
        fresh = {p.pid: p for p in procs}
        if self._rows:
            changed = False
            for i, old in enumerate(self._rows):
                new = fresh.get(old.pid)
                if new is not None and new != old:
                    self._rows[i] = new
                    changed = True
            if changed:
                self.dataChanged.emit(self.index(0, 0), self.index(len(self._rows) - 1, len(COLUMNS) - 1))
        if self._held:
            self._pending = list(procs)
            return
        self._pending = None
        gone = [i for i, p in enumerate(self._rows) if p.pid not in fresh]
        # remove from the bottom up, in contiguous blocks (one signal per block)
        while gone:
            last = gone.pop()
            first = last
            while gone and gone[-1] == first - 1:
                first = gone.pop()
            self.beginRemoveRows(QModelIndex(), first, last)
            del self._rows[first : last + 1]
            self.endRemoveRows()
        known = {p.pid for p in self._rows}
        new_rows = [p for p in procs if p.pid not in known]
        if new_rows:
            self.beginInsertRows(QModelIndex(), len(self._rows), len(self._rows) + len(new_rows) - 1)
            self._rows.extend(new_rows)
            self.endInsertRows()
        self._where = {p.pid: i for i, p in enumerate(self._rows)}
        self._resort()

    # -- sorting: here, in one Python sort, not in the proxy (whose lessThan would call data() twice
    # per comparison: 130,000 calls into Python for 5,000 rows)
    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self._sort = (column, order)
        self._resort()

    def _resort(self) -> None:
        if self._sort is None or self._held:
            return
        col, order = self._sort
        node = self.node_id
        key: Any = {PID: lambda p: (p.helper_of or p.pid, p.helper_of != 0, p.pid),  # helpers under their job
                    NODE: lambda p: (node_column(p, node), p.pid), CMD: lambda p: " ".join(p.cmdline) or p.name}.get(
            col, attrgetter(_ATTRS[col]) if 0 <= col < len(_ATTRS) else attrgetter("pid"))  # fmt: skip
        rows = sorted(self._rows, key=key, reverse=order == Qt.SortOrder.DescendingOrder)
        if all(a is b for a, b in zip(rows, self._rows, strict=True)):
            return
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        pids = [self._rows[i.row()].pid if i.row() < len(self._rows) else -1 for i in old]
        self._rows = rows
        self._where = {p.pid: i for i, p in enumerate(rows)}
        self.changePersistentIndexList(old, [self.index(self._where.get(pid, -1), i.column()) if pid in self._where
                                             else QModelIndex() for pid, i in zip(pids, old, strict=True)])  # fmt: skip
        self.layoutChanged.emit()

    def set_held(self, held: bool) -> None:
        """Hold rows in place (hover, selection, drag); the hold's end applies what waited."""
        if held == self._held:
            return
        self._held = held
        if not held and self._pending is not None:
            self.set_processes(self._pending)
        elif not held:
            self._resort()

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
            if p.cantmove or p.lock:
                return self._icon("lock")
            if migrated(p, self.node_id):
                return self._icon("migrated")
            return None
        if role == Qt.ItemDataRole.ToolTipRole:
            if p.helper_of:
                return f"runs the mosrun job of row {p.helper_of} (its plumbing: not moved by itself)"
            if p.cantmove:
                return f"cannot migrate: {p.cantmove}"
            if p.lock:
                return "locked to its node (migrate --lock off to free it)"
            if migrated(p, self.node_id):
                return f"migrated: home node {p.home}, runs on node {p.where}"
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (PID, NODE, NICE, CPU, RSS, NMIGS, HOME):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

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


class ProcFilter(QSortFilterProxyModel):
    """Show only rows that match the user, the command and the two switches (sorting: ProcModel)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        # values change every second: re-filtering all rows each time costs a Python call per row, so
        # the box re-filters itself after an update only while a filter is on (refilter())
        self.setDynamicSortFilter(False)
        self.user = ""
        self.command = QRegularExpression()
        self.only_migratable = False
        self.only_migrated = False
        self._active = False

    def set_filter(self, *, user: str | None = None, command: str | None = None,
                   only_migratable: bool | None = None, only_migrated: bool | None = None) -> None:  # fmt: skip
        self.beginFilterChange()
        if user is not None:
            self.user = user.strip()
        if command is not None:
            self.command = QRegularExpression(
                QRegularExpression.escape(command.strip()), QRegularExpression.PatternOption.CaseInsensitiveOption
            )
        if only_migratable is not None:
            self.only_migratable = only_migratable
        if only_migrated is not None:
            self.only_migrated = only_migrated
        self._active = bool(self.user or self.command.pattern() or self.only_migratable or self.only_migrated)
        self.endFilterChange()

    @property
    def active(self) -> bool:
        return self._active

    def refilter(self) -> None:
        """After an update: rows whose values changed may pass or fail the filter now."""
        if self.active:
            self.invalidateRowsFilter()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """The view's header asks: the source model sorts (rows keep the source's order here)."""
        model = self.sourceModel()
        if isinstance(model, ProcModel):
            model.sort(column, order)

    def filterAcceptsRow(self, source_row: int, source_parent: Index) -> bool:
        if not self._active:
            return True  # a re-sort of the source re-filters every row: keep that call trivial
        model = self.sourceModel()
        assert isinstance(model, ProcModel)
        p = model.data(model.index(source_row, 0, source_parent), PROC_ROLE)
        if p is None:
            return False
        if self.user and p.user != self.user:
            return False
        if self.command.pattern() and not self.command.match(" ".join(p.cmdline) or p.name).hasMatch():
            return False
        if self.only_migratable and (p.cantmove or p.lock):
            return False
        return not (self.only_migrated and not migrated(p, model.node_id))
