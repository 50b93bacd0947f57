"""openmosixview window: openMosixview's "advanced execution" dialog (HOWTO 12.4.3-12.4.6).

Program chooser and arguments line, the nine run modes, the host chooser (a dial over the known
node IDs, sparse ones too, with an LCD of the chosen ID) and the parallel chooser (first/last
node, inverse order). "execute" hands a ``RunRequest`` to the ``JobControl``, which starts the
jobs through mosrun on the chosen home node; the dialog stays open for the next one.
"""

from __future__ import annotations

import bisect
import shlex
from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDial,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLCDNumber,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from omview.model.cluster import MAX_NODE_ID, NodeInfo
from omview.openmosixview.jobs import HOST_MODES, JobControl, Mode, RunRequest, parallel_nodes


class NodeDial(QWidget):
    """The host chooser: a dial whose positions are the known node IDs, and an LCD with the ID."""

    sig_node_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._ids: list[int] = []
        self.dial = QDial(self)
        self.dial.setObjectName("host-dial")
        self.dial.setNotchesVisible(True)
        self.dial.setWrapping(False)
        self.dial.setMinimumSize(96, 96)
        self.lcd = QLCDNumber(len(str(MAX_NODE_ID)), self)
        self.lcd.setObjectName("host-lcd")
        self.lcd.setSegmentStyle(QLCDNumber.SegmentStyle.Flat)
        self.lcd.setMinimumSize(110, 44)
        caption = QLabel("RUN JOB ON\ncluster-node", self)
        caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
        right = QVBoxLayout()
        right.addWidget(caption)
        right.addWidget(self.lcd)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.dial)
        layout.addLayout(right)
        self.dial.valueChanged.connect(self._on_dial)
        self.set_node_ids([])

    def node_ids(self) -> list[int]:
        return list(self._ids)

    def set_node_ids(self, ids: Sequence[int]) -> None:
        """Offer these nodes (kept sorted); the chosen node stays chosen while it is known."""
        old = self.node()
        self._ids = sorted(set(ids))
        self.dial.blockSignals(True)
        self.dial.setRange(0, max(0, len(self._ids) - 1))
        self.dial.setPageStep(1)
        self.dial.setEnabled(bool(self._ids) and self.isEnabled())
        if old in self._ids:
            self.dial.setValue(self._ids.index(old))
        else:
            self.dial.setValue(0)
        self.dial.blockSignals(False)
        self._show()

    def node(self) -> int | None:
        """The chosen node ID (None while no node is known)."""
        if not self._ids:
            return None
        return self._ids[min(max(self.dial.value(), 0), len(self._ids) - 1)]

    def set_node(self, node_id: int) -> None:
        if node_id not in self._ids:
            raise ValueError(f"node {node_id} is not known (known: {', '.join(map(str, self._ids)) or 'none'})")
        self.dial.setValue(self._ids.index(node_id))

    @Slot(int)
    def _on_dial(self, _value: int) -> None:
        self._show()
        node = self.node()
        if node is not None:
            self.sig_node_changed.emit(node)

    def _show(self) -> None:
        node = self.node()
        if node is None:
            self.lcd.display("-")
            self.dial.setToolTip("no node is known yet")
        else:
            self.lcd.display(node)
            self.dial.setToolTip(f"node {node} ({self.dial.value() + 1} of {len(self._ids)} known nodes)")


class NodeIdSpinBox(QSpinBox):
    """A spin box that steps through the known node IDs only (sparse IDs such as 25611 too)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._ids: list[int] = []
        self.set_node_ids([])

    def set_node_ids(self, ids: Sequence[int], value: int | None = None) -> None:
        self._ids = sorted(set(ids))
        keep = self.value() if value is None else value
        self.setRange(self._ids[0] if self._ids else 0, self._ids[-1] if self._ids else 0)
        self.setValue(self.snap(keep))

    def snap(self, value: int) -> int:
        """The known ID nearest to ``value`` (the higher one on a tie)."""
        if not self._ids:
            return 0
        i = bisect.bisect_left(self._ids, value)
        if i == 0:
            return self._ids[0]
        if i == len(self._ids):
            return self._ids[-1]
        lo, hi = self._ids[i - 1], self._ids[i]
        return lo if value - lo < hi - value else hi

    def stepBy(self, steps: int) -> None:  # noqa: N802 (Qt override)
        if not self._ids:
            return
        i = self._ids.index(self.snap(self.value()))
        self.setValue(self._ids[min(max(i + steps, 0), len(self._ids) - 1)])

    def validate(self, text: str, pos: int) -> tuple[QValidator.State, str, int]:
        state, text, pos = super().validate(text, pos)
        if state == QValidator.State.Acceptable and self._ids:
            try:
                if int(text) not in self._ids:
                    state = QValidator.State.Intermediate  # typed on; fixup snaps it to a known ID
            except ValueError:
                state = QValidator.State.Intermediate
        return state, text, pos

    def fixup(self, text: str) -> str:
        try:
            return str(self.snap(int(text)))
        except ValueError:
            return str(self.value())


class RunDialog(QDialog):
    """openMosixview Advanced Execution."""

    MODES = (Mode.NOMIG, Mode.RUNHOME, Mode.RUNON, Mode.CPUJOB, Mode.IOJOB, Mode.NODECAY, Mode.SLOWDECAY,
             Mode.FASTDECAY, Mode.PARALLEL)  # fmt: skip
    TIPS = {
        Mode.NOMIG: "start a local job which won't migrate (mosrun --nomig)",
        Mode.RUNHOME: "start a local job, locked to its home node (mosrun -h)",
        Mode.RUNON: "start a job on the node of the host-chooser and keep it there (mosrun --runon NODE)",
        Mode.CPUJOB: "start a computation-intensive job on the node of the host-chooser (mosrun NODE --cpujob)",
        Mode.IOJOB: "start an I/O-intensive job on the node of the host-chooser (mosrun NODE --iojob)",
        Mode.NODECAY: "start a job with no decay on the node of the host-chooser (mosrun NODE --nodecay)",
        Mode.SLOWDECAY: "start a job with slow decay on the node of the host-chooser (mosrun NODE --slowdecay)",
        Mode.FASTDECAY: "start a job with fast decay on the node of the host-chooser (mosrun NODE --fastdecay)",
        Mode.PARALLEL: "start the job once on every node the parallel host-chooser selects (mosrun NODE)",
    }

    sig_started = Signal(object)
    """list[int]: the keys of the jobs "execute" started."""

    def __init__(self, control: JobControl, nodes: Sequence[NodeInfo], entry: str,
                 parent: QWidget | None = None) -> None:  # fmt: skip
        super().__init__(parent)
        self.control = control
        self.entry = entry
        self.setWindowTitle("openMosixview – Advanced Execution")
        title = QLabel("<b>openMosixview Advanced Execution</b>", self)

        self.program = QLineEdit(self)
        self.program.setObjectName("program")
        self.program.setPlaceholderText("program to run, e.g. /usr/bin/mybigjob (a path on the home node)")
        self.btn_browse = QPushButton(self.style().standardIcon(QStyle.StandardPixmap.SP_DialogOpenButton),
                                      "run-prog", self)  # fmt: skip
        self.btn_browse.setToolTip("Choose the program with a file dialog (the file must exist on the home node too)")
        self.arguments = QLineEdit(self)
        self.arguments.setObjectName("arguments")
        self.arguments.setPlaceholderText("(you can now specify additional command-line arguments)")
        self.arguments.setToolTip("Split like a shell would split words ('quotes' and \"quotes\" keep spaces), "
                                  "but no shell ever runs it: no $variables, globs or pipes")  # fmt: skip
        self.home = QComboBox(self)
        self.home.setObjectName("home-node")
        self.home.setToolTip("mosrun runs here as the job's deputy: the job's home node (its job id is HOME:PID)")

        self.mode_group = QButtonGroup(self)
        self.mode_buttons: dict[Mode, QRadioButton] = {}
        modes = QGroupBox("how to start", self)
        modes_layout = QVBoxLayout(modes)
        for i, mode in enumerate(self.MODES):
            b = QRadioButton(mode.value, modes)
            b.setToolTip(self.TIPS[mode])
            self.mode_group.addButton(b, i)
            self.mode_buttons[mode] = b
            modes_layout.addWidget(b)
        self.mode_buttons[Mode.NOMIG].setChecked(True)

        self.host_box = QGroupBox("host-chooser", self)
        self.chooser = NodeDial(self.host_box)
        QVBoxLayout(self.host_box).addWidget(self.chooser)

        self.parallel_box = QGroupBox("parallel host-chooser", self)
        self.first = NodeIdSpinBox(self.parallel_box)
        self.first.setObjectName("parallel-first")
        self.last = NodeIdSpinBox(self.parallel_box)
        self.last.setObjectName("parallel-last")
        self.inverse = QCheckBox("inverse", self.parallel_box)
        self.inverse.setToolTip("start the jobs from the last node down to the first")
        self.parallel_label = QLabel(self.parallel_box)
        self.parallel_label.setWordWrap(True)
        pgrid = QGridLayout(self.parallel_box)
        pgrid.addWidget(QLabel("first node", self.parallel_box), 0, 0)
        pgrid.addWidget(self.first, 0, 1)
        pgrid.addWidget(QLabel("last node", self.parallel_box), 0, 2)
        pgrid.addWidget(self.last, 0, 3)
        pgrid.addWidget(self.inverse, 0, 4)
        pgrid.addWidget(self.parallel_label, 1, 0, 1, 5)

        self.problem = QLabel(self)
        self.problem.setObjectName("problem")
        self.problem.setStyleSheet("color: #b41e14;")
        self.problem.setWordWrap(True)
        self.btn_execute = QPushButton("execute", self)
        self.btn_execute.setDefault(True)
        self.btn_close = QPushButton("close", self)

        top = QHBoxLayout()
        top.addWidget(self.program, 1)
        top.addWidget(self.btn_browse)
        form = QFormLayout()
        form.addRow("home node:", self.home)
        right = QVBoxLayout()
        right.addWidget(self.host_box)
        right.addWidget(self.parallel_box)
        right.addStretch(1)
        middle = QHBoxLayout()
        middle.addWidget(modes)
        middle.addLayout(right, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.problem, 1)
        buttons.addWidget(self.btn_execute)
        buttons.addWidget(self.btn_close)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addLayout(top)
        layout.addWidget(self.arguments)
        layout.addLayout(form)
        layout.addLayout(middle)
        layout.addLayout(buttons)

        self.btn_browse.clicked.connect(self._on_browse)
        self.btn_execute.clicked.connect(self.execute)
        self.btn_close.clicked.connect(self.close)
        self.mode_group.idToggled.connect(self._update_enabled)
        for sig in (self.first.valueChanged, self.last.valueChanged, self.inverse.toggled):
            sig.connect(self._update_parallel_label)
        self._ids: list[int] = []
        self.set_nodes(nodes)
        self._update_enabled()

    # -- nodes --

    def set_nodes(self, nodes: Sequence[NodeInfo]) -> None:
        """The cluster's nodes changed: offer their IDs and addresses (a choice made stays)."""
        ids = [n.id for n in nodes]
        self.chooser.set_node_ids(ids)
        first, last = self.first.value(), self.last.value()
        had = bool(self._ids)
        self._ids = sorted(set(ids))
        # the first table selects all nodes; later tables keep the admin's range
        self.first.set_node_ids(self._ids, first if had else (self._ids[0] if self._ids else 0))
        self.last.set_node_ids(self._ids, last if had else (self._ids[-1] if self._ids else 0))
        current = self.home.currentData() or self.entry
        self.home.blockSignals(True)
        self.home.clear()
        addresses = [n.address for n in sorted(nodes, key=lambda n: n.id)]
        if self.entry not in addresses:
            addresses.insert(0, self.entry)
        for address in addresses:
            info = next((n for n in nodes if n.address == address), None)
            label = f"node {info.id}: {address}" if info else address
            if address == self.entry:
                label += " (entry node)"
            self.home.addItem(label, address)
        self.home.setCurrentIndex(max(0, self.home.findData(current)))
        self.home.blockSignals(False)
        self._update_parallel_label()
        self._update_enabled()

    # -- the request --

    def mode(self) -> Mode:
        return self.MODES[max(0, self.mode_group.checkedId())]

    def set_mode(self, mode: Mode) -> None:
        self.mode_buttons[mode].setChecked(True)

    def set_home(self, address: str) -> None:
        i = self.home.findData(address)
        if i < 0:
            raise ValueError(f"{address} is not a known node")
        self.home.setCurrentIndex(i)

    def selected_parallel_nodes(self) -> list[int]:
        return parallel_nodes(self._ids, self.first.value(), self.last.value(), self.inverse.isChecked())

    def request(self) -> RunRequest:
        """The request the dialog describes; ValueError says what is missing or wrong."""
        program = self.program.text().strip()
        if not program:
            raise ValueError("choose a program to run first (the run-prog button, or type its path)")
        try:
            args = shlex.split(self.arguments.text())
        except ValueError as exc:
            raise ValueError(f"the arguments line cannot be split into words: {exc} - close the quote") from None
        mode = self.mode()
        home = str(self.home.currentData() or self.entry)
        if mode is Mode.PARALLEL:
            nodes = self.selected_parallel_nodes()
            if not nodes:
                raise ValueError("the parallel host-chooser selects no known node")
            return RunRequest(home, mode, (program, *args), nodes=tuple(nodes))
        if mode in HOST_MODES:
            node = self.chooser.node()
            if node is None:
                raise ValueError("no node is known yet to run the job on; wait for the cluster table")
            return RunRequest(home, mode, (program, *args), node=node)
        return RunRequest(home, mode, (program, *args))

    @Slot()
    def execute(self) -> list[int]:
        """Start the job(s); problems are shown in the dialog, the dialog stays open."""
        try:
            request = self.request()
            keys = self.control.start(request)
        except ValueError as exc:
            self.problem.setText(str(exc))
            return []
        self.problem.setText("")
        self.sig_started.emit(keys)
        return keys

    # -- widgets --

    @staticmethod
    def choose_file(parent: QWidget | None, start: str) -> str:
        """The program chooser (tests replace it): a path, or "" when cancelled."""
        path, _ = QFileDialog.getOpenFileName(parent, "run-prog: choose the program", start)
        return path

    @Slot()
    def _on_browse(self) -> None:
        path = type(self).choose_file(self, self.program.text().strip() or "/usr/bin")
        if path:
            self.program.setText(path)

    @Slot()
    def _update_enabled(self) -> None:
        mode = self.mode()
        self.host_box.setEnabled(mode in HOST_MODES)
        self.chooser.dial.setEnabled(mode in HOST_MODES and bool(self.chooser.node_ids()))
        self.parallel_box.setEnabled(mode is Mode.PARALLEL)

    @Slot()
    def _update_parallel_label(self) -> None:
        nodes = self.selected_parallel_nodes()
        text = ", ".join(map(str, nodes[:12])) + (f" … ({len(nodes)} nodes)" if len(nodes) > 12 else "")
        self.parallel_label.setText(f"runs on: {text}" if nodes else "runs on: no node")
