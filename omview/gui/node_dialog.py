"""L4 GUI layer: the openMosix configuration dialog for one node or for all nodes.

The switches are preselected from each node's real state (flags.get, the fix for the original's
FAQ 12.8.5). Apply sends only what the admin changed (per node, only what differs there) and
shows each node's result in the dialog; nothing ever blocks the GUI thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from omview.gui.session import ApplyReport, ClusterSession, FlagsReply
from omview.model.cluster import Flags


@dataclass(frozen=True)
class Switch:
    """One check box: which flag it drives, and whether "checked" means the flag is off."""

    key: str
    label: str
    inverted: bool
    tip: str


SWITCH_BOXES = (
    Switch("stay", "auto-migration", True, "Processes may migrate away from this node automatically (mosctl nostay)"),
    Switch("quiet", "talk to other nodes", True, "Exchange load information with the other nodes (mosctl noquiet)"),
    Switch("lstay", "local processes stay", False, "Processes started here stay here (mosctl lstay)"),
    Switch("block", "block arriving guest processes", False, "Refuse processes migrating in (mosctl block)"),
)


class NodeConfigDialog(QDialog):
    """openMosix configuration of one node (or of every node with the "all nodes" button)."""

    def __init__(self, session: ClusterSession, addresses: Sequence[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.addresses = list(dict.fromkeys(addresses))
        self.all_nodes = len(self.addresses) != 1
        #: each node's flags as last read (None until read, or when reading failed)
        self.current: dict[str, Flags | None] = {a: None for a in self.addresses}
        self._waiting_read: set[str] = set(self.addresses)
        self._waiting_apply: set[str] = set()
        #: check state each box had when the node state arrived: "changed" means differs from this
        self._initial: dict[str, Qt.CheckState] = {}

        self.setWindowTitle("openmosixview - " + ("all nodes" if self.all_nodes else self.addresses[0]))
        layout = QVBoxLayout(self)
        title = QLabel("openMosix configuration")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        font.setBold(True)
        title.setFont(font)
        layout.addWidget(title)
        target = f"nodes : all {len(self.addresses)}" if self.all_nodes else f"node : {self.addresses[0]}"
        self.node_label = QLabel(target)
        self.node_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.node_label)

        switches = QGroupBox("switches")
        sl = QVBoxLayout(switches)
        self.boxes: dict[str, QCheckBox] = {}
        for sw in SWITCH_BOXES:
            box = QCheckBox(sw.label)
            box.setToolTip(sw.tip)
            box.setTristate(self.all_nodes)
            box.setEnabled(False)
            self.boxes[sw.key] = box
            sl.addWidget(box)
        layout.addWidget(switches)

        actions = QGroupBox("on apply, also")
        al = QVBoxLayout(actions)
        self.expel_box = QCheckBox("send away guest processes (expel)")
        self.expel_box.setToolTip("Send every process that migrated in back to its home node (mosctl expel)")
        self.bring_box = QCheckBox("bring migrated processes home (bring)")
        self.bring_box.setToolTip("Bring this node's processes that run elsewhere back home (mosctl bring)")
        al.addWidget(self.expel_box)
        al.addWidget(self.bring_box)
        layout.addWidget(actions)

        self.results = QTreeWidget()
        self.results.setColumnCount(2)
        self.results.setHeaderLabels(["node", "result"])
        self.results.setRootIsDecorated(False)
        self.results.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.results.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.results.header().setStretchLastSection(True)
        self._items: dict[str, QTreeWidgetItem] = {}
        for a in self.addresses:
            item = QTreeWidgetItem([a, "reading node state…"])
            self._items[a] = item
            self.results.addTopLevelItem(item)
        self.results.setMinimumHeight(min(220, 36 + 22 * len(self.addresses)))
        self.results.setMaximumHeight(36 + 22 * max(2, min(len(self.addresses), 12)))
        layout.addWidget(self.results)

        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        layout.addWidget(line)
        extra = QHBoxLayout()
        self.procbox_button = QPushButton("remote proc-box")
        self.procbox_button.setEnabled(False)
        self.procbox_button.setToolTip("The process box is a separate window that is not part of this build yet")
        extra.addWidget(self.procbox_button)
        extra.addStretch(1)
        layout.addLayout(extra)

        self.buttons = QDialogButtonBox()
        self.apply_button = self.buttons.addButton("apply", QDialogButtonBox.ButtonRole.ApplyRole)
        self.close_button = self.buttons.addButton("close", QDialogButtonBox.ButtonRole.RejectRole)
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self.apply)
        self.close_button.clicked.connect(self.reject)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(480)

        session.sig_flags_read.connect(self._on_session_flags_read)
        session.sig_flags_applied.connect(self._on_session_flags_applied)
        for a in self.addresses:
            session.request_flags(a)

    # -- reading the nodes' state --

    @Slot(str, object)
    def _on_session_flags_read(self, address: str, reply: FlagsReply) -> None:
        if address not in self._waiting_read:
            return
        self._waiting_read.discard(address)
        self.current[address] = reply.flags
        item = self._items[address]
        if reply.flags is None:
            err = reply.error.describe() if reply.error else "no answer"
            item.setText(1, f"cannot read state: {err}")
            item.setToolTip(1, err)
            item.setForeground(1, Qt.GlobalColor.darkRed)
        else:
            item.setText(1, self._describe(reply.flags))
        if not self._waiting_read:
            self._preselect()

    @staticmethod
    def _describe(flags: Flags) -> str:
        on = [sw.label for sw in SWITCH_BOXES if getattr(flags, sw.key) != sw.inverted]
        return ("on: " + ", ".join(on)) if on else "all switches off"

    def _preselect(self) -> None:
        known = [f for f in self.current.values() if f is not None]
        for sw in SWITCH_BOXES:
            box = self.boxes[sw.key]
            values = {getattr(f, sw.key) != sw.inverted for f in known}
            if len(values) == 1:
                state = Qt.CheckState.Checked if values.pop() else Qt.CheckState.Unchecked
            else:
                # nodes disagree (or none could be read): leave this switch alone unless touched
                box.setTristate(True)
                state = Qt.CheckState.PartiallyChecked
            box.setCheckState(state)
            box.setEnabled(True)
            self._initial[sw.key] = state
        self.apply_button.setEnabled(True)

    # -- applying --

    def chosen(self) -> dict[str, bool]:
        """Flag values for the switches the admin changed (flags.set names and senses)."""
        out: dict[str, bool] = {}
        for sw in SWITCH_BOXES:
            state = self.boxes[sw.key].checkState()
            if state == Qt.CheckState.PartiallyChecked or state == self._initial.get(sw.key):
                continue
            out[sw.key] = (state == Qt.CheckState.Checked) != sw.inverted
        return out

    def plan(self) -> dict[str, dict[str, bool]]:
        """Per node, the flag changes apply would send: only what differs on that node."""
        chosen = self.chosen()
        plan: dict[str, dict[str, bool]] = {}
        for a in self.addresses:
            flags = self.current.get(a)
            plan[a] = {k: v for k, v in chosen.items() if flags is None or getattr(flags, k) != v}
        return plan

    @Slot()
    def apply(self) -> None:
        expel, bring = self.expel_box.isChecked(), self.bring_box.isChecked()
        sent = 0
        for a, changes in self.plan().items():
            item = self._items[a]
            if not changes and not expel and not bring:
                item.setText(1, "nothing to change")
                continue
            self.session.apply_config(a, changes, expel=expel, bring=bring)
            self._waiting_apply.add(a)
            item.setText(1, "applying…")
            item.setForeground(1, self.palette().text())
            sent += 1
        self.apply_button.setEnabled(sent == 0)

    @Slot(str, object)
    def _on_session_flags_applied(self, address: str, report: ApplyReport) -> None:
        if address not in self._waiting_apply:
            return
        self._waiting_apply.discard(address)
        item = self._items[address]
        item.setText(1, report.summary())
        item.setForeground(1, self.palette().text() if report.ok else Qt.GlobalColor.darkRed)
        if report.flags is not None:
            self.current[address] = report.flags
        if not self._waiting_apply:
            self.expel_box.setChecked(False)
            self.bring_box.setChecked(False)
            self._preselect()

    def done(self, result: int) -> None:  # noqa: D401 (Qt override)
        # late replies must not reach a closed dialog
        for sig, slot in (
            (self.session.sig_flags_read, self._on_session_flags_read),
            (self.session.sig_flags_applied, self._on_session_flags_applied),
        ):
            try:
                sig.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        super().done(result)
