"""L5 analyzer: the node list beside the plots - show/hide per node, search, all/none.

A QListView over a QStandardItemModel with a filter proxy, so 256 nodes (or thousands) cost one
widget, not one checkbox each. "All" and "None" act on the nodes the search shows.
"""

from __future__ import annotations

from PySide6.QtCore import QSortFilterProxyModel, Qt, Signal, Slot
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QHBoxLayout, QLineEdit, QListView, QVBoxLayout, QWidget

from omview.gui.actions import button

NODE_ROLE = Qt.ItemDataRole.UserRole + 1


class NodeList(QWidget):
    """Checkable node entries; ``sig_shown_changed`` after any change of the shown set."""

    sig_shown_changed = Signal()
    sig_find_out = Signal(int)  # node id, or -1 for the whole cluster

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = QStandardItemModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.search = QLineEdit(self, placeholderText="search nodes (ID, name, address)", clearButtonEnabled=True)
        self.search.textChanged.connect(self.proxy.setFilterFixedString)
        self.view = QListView(self)
        self.view.setModel(self.proxy)
        self.view.setUniformItemSizes(True)  # cheap layout however many nodes
        self.view.doubleClicked.connect(self._on_view_double_clicked)
        self.btn_all = button("All", self, clicked=lambda: self.set_all(True))
        self.btn_none = button("None", self, clicked=lambda: self.set_all(False))
        self.btn_find = button("Find out…", self, clicked=self._on_find_clicked)
        self.btn_find.setToolTip("Statistics of the selected node (double-click a node does the same)")
        self.btn_cluster = button("Find out: cluster…", self, clicked=lambda: self.sig_find_out.emit(-1))
        row = QHBoxLayout()
        row.addWidget(self.btn_all)
        row.addWidget(self.btn_none)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.search)
        lay.addWidget(self.view, 1)
        lay.addLayout(row)
        lay.addWidget(self.btn_find)
        lay.addWidget(self.btn_cluster)
        self.model.itemChanged.connect(self._on_model_item_changed)
        self._quiet = False

    def add_node(self, node_id: int, label: str) -> None:
        if self.item_for(node_id) is not None:
            return
        item = QStandardItem(label)
        item.setCheckable(True)
        item.setCheckState(Qt.CheckState.Checked)
        item.setEditable(False)
        item.setData(node_id, NODE_ROLE)
        self.model.appendRow(item)

    def clear(self) -> None:
        self.model.clear()

    def item_for(self, node_id: int) -> QStandardItem | None:
        for row in range(self.model.rowCount()):
            item = self.model.item(row)
            if item.data(NODE_ROLE) == node_id:
                return item
        return None

    def shown(self) -> set[int]:
        return {
            self.model.item(r).data(NODE_ROLE)
            for r in range(self.model.rowCount())
            if self.model.item(r).checkState() == Qt.CheckState.Checked
        }

    def set_all(self, on: bool) -> None:
        """Check or uncheck every node the search currently shows; one change signal."""
        state = Qt.CheckState.Checked if on else Qt.CheckState.Unchecked
        self._quiet = True
        try:
            for r in range(self.proxy.rowCount()):
                src = self.proxy.mapToSource(self.proxy.index(r, 0))
                self.model.itemFromIndex(src).setCheckState(state)
        finally:
            self._quiet = False
        self.sig_shown_changed.emit()

    def selected_node(self) -> int | None:
        idx = self.view.currentIndex()
        return idx.data(NODE_ROLE) if idx.isValid() else None

    @Slot(QStandardItem)
    def _on_model_item_changed(self, _item: QStandardItem) -> None:
        if not self._quiet:
            self.sig_shown_changed.emit()

    @Slot()
    def _on_find_clicked(self) -> None:
        nid = self.selected_node()
        if nid is not None:
            self.sig_find_out.emit(nid)

    @Slot()
    def _on_view_double_clicked(self) -> None:
        self._on_find_clicked()
