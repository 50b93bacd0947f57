"""openmosixview window: the openMosix configuration dialog for one node or for all nodes.

The switches are preselected from each node's real state (flags.get, the fix for the original's
FAQ 12.8.5). Apply sends only what the admin changed (per node, only what differs there) and
shows each node's result in the dialog; nothing ever blocks the GUI thread. "start agent" and
"stop agent" (the original's openMosix start/stop) run ``omview-agent start|stop`` on the node
in its ACTION lane of omview.gui.links (``AgentControl``).
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial

from PySide6.QtCore import QObject, Qt, Signal, Slot
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

from omview.gui import errors
from omview.gui.connect import SshConnector
from omview.gui.links import Lane, LaneContext, Links, LinkState, LinkStatus, TaskDone, classify, deliverer
from omview.gui.node_exec import LocalRunner, RunningCommand
from omview.gui.session import ApplyReport, ClusterSession, FlagsReply
from omview.model.cluster import Flags
from omview.model.errors import OmviewError
from omview.transport.ssh import DEFAULT_AGENT_COMMAND

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Switch:
    """One check box: which flag it drives, and whether "checked" means the flag is off."""

    key: str
    label: str
    inverted: bool
    tip: str


SWITCH_BOXES = (
    Switch(
        "stay",
        "auto-migration",
        True,
        "Processes may migrate away from this node automatically (mosctl nostay)",
    ),
    Switch(
        "quiet",
        "talk to other nodes",
        True,
        "Exchange load information with the other nodes (mosctl noquiet)",
    ),
    Switch("lstay", "local processes stay", False, "Processes started here stay here (mosctl lstay)"),
    Switch("block", "block arriving guest processes", False, "Refuse processes migrating in (mosctl block)"),
)


# ---- starting and stopping a node's agent (omview-agent start|stop on the node) ---------------


class AgentAction(StrEnum):
    START = "start"
    STOP = "stop"


#: Seconds the GUI waits for the command: its own wait (start 30 s for the socket, stop 150 s for
#: the guests to leave, omview.agent.daemon) plus the login and Python start-up.
AGENT_TIMEOUTS = {AgentAction.START: 75.0, AgentAction.STOP: 190.0}
#: exit status of omview-agent start/stop when there was nothing to do (docs/agent.md)
EXIT_NOTHING_TO_DO = 3
#: link states in which the node's agent answers (or hangs): stop makes sense
AGENT_ANSWERS = (LinkStatus.UP, LinkStatus.AGENT_ERROR, LinkStatus.TIMEOUT)


@dataclass(frozen=True)
class AgentResult:
    """One ``omview-agent start|stop`` on a node (``final`` False: a progress line while it runs)."""

    action: AgentAction
    node: str
    where: str = ""
    argv: tuple[str, ...] = ()
    status: int | None = None  # None: it did not run (node unreachable) or is still running
    stdout: str = ""
    stderr: str = ""
    problem: str = ""  # why it did not run or finish
    elapsed: float = 0.0
    final: bool = True

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def agent_runs(self) -> bool | None:
        """What the node's agent does now, as far as this result tells."""
        if self.status in (0, EXIT_NOTHING_TO_DO):
            return self.action is AgentAction.START
        return None

    def line(self) -> str:
        """The line that says what happened (the command's last word on success, else its error)."""
        if self.problem:
            return self.problem
        streams = (self.stdout, self.stderr) if self.status in (0, None) else (self.stderr, self.stdout)
        for text in streams:
            lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("  |")]
            if lines:
                if self.status in (0, None):
                    return lines[-1].removeprefix("omview-agent: ")
                # a failed start quotes its log ("  | ..."): its last line is the reason
                quoted = [
                    ln[3:].strip() for ln in text.splitlines() if ln.startswith("  |") and ln[3:].strip()
                ]
                return lines[0].removeprefix("omview-agent: ") + (f" {quoted[-1]}" if quoted else "")
        return f"exit status {self.status}" if self.status is not None else "no output"

    def summary(self) -> str:
        if not self.final:
            return f"{self.action.value} agent: {self.line()}"
        if self.ok:
            return self.line()
        if self.status == EXIT_NOTHING_TO_DO:
            return f"nothing to do: {self.line()}"
        if self.status == 127:
            return (f"omview-agent is not installed on {self.node} or not on the login user's PATH "
                    "(Config > Connection settings > agent command)")  # fmt: skip
        how = f"exit {self.status}" if self.status is not None else "not run"
        return f"could not {self.action.value} the agent ({how}): {self.line()}"


def agent_argv(connector: object, runner: object, address: str, action: AgentAction) -> list[str]:
    """``omview-agent ACTION`` as the node runs it: the connection settings' agent command over
    SSH; locally the omview-agent next to this Python, told which socket the GUI means."""
    route = getattr(connector, "connector_for", None)
    target = route(address) if callable(route) else connector
    if isinstance(runner, LocalRunner):
        argv = [*runner.command(DEFAULT_AGENT_COMMAND), action.value]
        if runner.agent_socket:
            argv += ["--socket", runner.agent_socket]
        return argv
    command = target.settings.agent_command if isinstance(target, SshConnector) else DEFAULT_AGENT_COMMAND
    return [*shlex.split(command), action.value]


class AgentControl(QObject):
    """Runs ``omview-agent start|stop`` on nodes in their ACTION lanes, never in the GUI thread.

    Each action is a command on the node's one connection (an exec channel over SSH, a local
    subprocess otherwise); progress lines and the result come back to the GUI thread as
    ``sig_result``.
    """

    sig_result = Signal(object)
    """AgentResult: progress (final False) and the outcome of each action."""
    sig_busy = Signal(str, bool)
    """(address, busy): an action on the node started or ended."""
    sig_message = Signal(str)
    """A status-bar line for each outcome."""

    _sig_done = Signal(object)  # AgentResult (progress) or TaskDone from lane threads, queued to the GUI thread

    def __init__(self, links: Links, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.links = links
        self._busy: set[str] = set()
        self._sig_done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)

    def busy(self, address: str) -> bool:
        return address in self._busy

    def run(self, address: str, action: AgentAction) -> bool:
        """Start ACTION on ADDRESS; False when an action already runs there."""
        if address in self._busy:
            return False
        self._busy.add(address)
        deliver = deliverer(self, "_sig_done")
        self.sig_busy.emit(address, True)
        self.links.submit(address, Lane.ACTION, action.value, partial(self._work, address, action, deliver), deliver,
                          urgent=True)  # fmt: skip
        return True

    # -- lane thread --

    def _work(self, address: str, action: AgentAction, deliver: Callable[[AgentResult], bool],
              ctx: LaneContext) -> AgentResult:  # fmt: skip
        started = time.monotonic()
        result = AgentResult(action, address)
        try:
            runner = ctx.runner()
            argv = agent_argv(self.links.connector, runner, address, action)
            result = replace(result, where=runner.describe(), argv=tuple(argv))
            result = self._follow(runner.start(argv), result, deliver, started)
        except FileNotFoundError as exc:
            result = replace(result, status=127, problem=f"{exc.filename or 'omview-agent'} not found")
        except (OmviewError, TimeoutError, OSError, ValueError) as exc:
            result = replace(result, problem=classify(exc).describe())
        result = replace(result, elapsed=time.monotonic() - started, final=True)
        log.info("agent %s on %s: %s", action.value, address, result.summary())
        return result

    @staticmethod
    def _follow(proc: RunningCommand, result: AgentResult, deliver: Callable[[AgentResult], bool],
                started: float) -> AgentResult:  # fmt: skip
        """Read the command's output as it comes, handing each new stdout line on as progress."""
        out, err, pending = "", "", ""
        limit = AGENT_TIMEOUTS[result.action]
        try:
            while not proc.finished:
                if time.monotonic() - started > limit:
                    return replace(
                        result,
                        stdout=out,
                        stderr=err,
                        problem=f"no end within {limit:.0f} s (the command may still run on the node)",
                    )
                o, e = proc.read(0.5)
                text = o.decode(errors="replace")
                out += text
                err += e.decode(errors="replace")
                pending += text
                *lines, pending = pending.split("\n")
                for line in lines:
                    if line.strip():
                        deliver(replace(result, stdout=line, final=False))
            return replace(result, status=proc.exit_status, stdout=out, stderr=err)
        finally:
            proc.close()

    # -- GUI thread --

    @Slot(object)
    def _on_done(self, item: AgentResult | TaskDone) -> None:
        if isinstance(item, TaskDone):
            if isinstance(item.value, AgentResult):
                result = item.value
            else:  # the lane caught a bug in _work
                problem = item.error.describe() if item.error is not None else "internal error"
                result = AgentResult(AgentAction(item.kind), item.address, problem=problem, final=True)
        else:
            result = item
        if result.final:
            self._busy.discard(result.node)
            self.sig_message.emit(f"{result.node}: {result.summary()}")
        self.sig_result.emit(result)
        if result.final:
            self.sig_busy.emit(result.node, False)


class NodeConfigDialog(QDialog):
    """openMosix configuration of one node (or of every node with the "all nodes" button)."""

    def __init__(
        self,
        session: ClusterSession,
        addresses: Sequence[str],
        parent: QWidget | None = None,
        agents: AgentControl | None = None,
    ) -> None:
        super().__init__(parent)
        self.session = session
        #: runs omview-agent start/stop on the nodes (the main window shares one with the status bar)
        self.agents = agents if agents is not None else AgentControl(session.links, self)
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

        agent_box = QGroupBox("omview agent")
        agl = QHBoxLayout(agent_box)
        self.agent_label = QLabel()
        self.agent_label.setTextFormat(Qt.TextFormat.PlainText)
        self.agent_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.start_agent_button = QPushButton("start agent")
        self.start_agent_button.setToolTip(
            "Run 'omview-agent start' on the node (systemctl start omview-agent where systemd runs it)"
        )
        self.stop_agent_button = QPushButton("stop agent")
        self.stop_agent_button.setToolTip(
            "Run 'omview-agent stop' on the node; its guest processes are sent home first"
        )
        self.start_agent_button.clicked.connect(self.start_agent)
        self.stop_agent_button.clicked.connect(self.stop_agent)
        agl.addWidget(self.agent_label, 1)
        agl.addWidget(self.start_agent_button)
        agl.addWidget(self.stop_agent_button)
        layout.addWidget(agent_box)
        #: per node: does its agent answer? (None: not known yet); from the link state and from
        #: the results of start/stop, which tell even when nothing polls the node
        self.agent_up: dict[str, bool | None] = {a: self._from_link(session.link(a)) for a in self.addresses}
        #: the last start/stop outcome per node, kept in front of the node's state in the list
        self._agent_notes: dict[str, str] = {}

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
        self.procbox_button.setToolTip("Open this node's process box (openmosixprocs)")
        self.procbox_button.clicked.connect(self._open_procs)
        self._procs_opener: Callable[[], object] | None = None
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
        session.sig_link_changed.connect(self._on_session_link_changed)
        self.agents.sig_result.connect(self._on_agents_result)
        self.agents.sig_busy.connect(self._on_agents_busy)
        self._update_agent_buttons()
        for a in self.addresses:
            session.request_flags(a)

    def set_procs_opener(self, opener: Callable[[], object]) -> None:
        """How this node's process box is opened (the main window starts openmosixprocs)."""
        self._procs_opener = opener
        self.procbox_button.setEnabled(not self.all_nodes)

    @Slot()
    def _open_procs(self) -> None:
        if self._procs_opener is not None:
            self._procs_opener()

    # -- reading the nodes' state --

    @Slot(str, object)
    def _on_session_flags_read(self, address: str, reply: FlagsReply) -> None:
        if address not in self._waiting_read:
            return
        self._waiting_read.discard(address)
        self.current[address] = reply.flags
        item = self._items[address]
        note = self._agent_notes.get(address, "")
        note = f"{note} · " if note else ""
        if reply.flags is None:
            err = reply.error.describe() if reply.error else "no answer"
            item.setText(1, f"{note}cannot read state: {err}")
            item.setToolTip(1, err)
            item.setForeground(1, Qt.GlobalColor.darkRed)
        else:
            item.setText(1, note + self._describe(reply.flags))
            item.setForeground(1, self.palette().text())
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

    # -- the agent: start / stop --

    @staticmethod
    def _from_link(link: LinkState) -> bool | None:
        if link.status in AGENT_ANSWERS:
            return True
        if link.status is LinkStatus.NO_AGENT:
            return False
        return None  # not known (not connected yet, unreachable, no login)

    def start_targets(self) -> list[str]:
        """Nodes "start agent" acts on: those where no agent is known to answer, none busy."""
        return [a for a in self.addresses if self.agent_up[a] is not True and not self.agents.busy(a)]

    def stop_targets(self) -> list[str]:
        return [a for a in self.addresses if self.agent_up[a] is not False and not self.agents.busy(a)]

    def _update_agent_buttons(self) -> None:
        busy = [a for a in self.addresses if self.agents.busy(a)]
        up = sum(1 for a in self.addresses if self.agent_up[a] is True)
        down = sum(1 for a in self.addresses if self.agent_up[a] is False)
        if self.all_nodes:
            text = f"agents answering: {up} of {len(self.addresses)}"
            if down:
                text += f", {down} without agent"
        else:
            state = self.agent_up[self.addresses[0]]
            text = "agent: " + {True: "answering", False: "not running", None: "not known yet"}[state]
        if busy:
            text += f" ({len(busy)} busy)" if self.all_nodes else " (working…)"
        self.agent_label.setText(text)
        # strict for one node (start only without an agent, stop only with one); for all nodes,
        # each button acts on the nodes where it makes sense
        if self.all_nodes:
            self.start_agent_button.setEnabled(down > 0 and bool(self.start_targets()))
            self.stop_agent_button.setEnabled(up > 0 and bool(self.stop_targets()))
        else:
            a = self.addresses[0]
            self.start_agent_button.setEnabled(not busy and self.agent_up[a] is False)
            self.stop_agent_button.setEnabled(not busy and self.agent_up[a] is True)

    @Slot(str, object)
    def _on_session_link_changed(self, address: str, link: LinkState) -> None:
        if address not in self.agent_up:
            return
        known = self._from_link(link)
        if known is not None:
            self.agent_up[address] = known
        self._update_agent_buttons()

    @Slot()
    def start_agent(self) -> None:
        targets = [a for a in self.start_targets() if self.agent_up[a] is False or not self.all_nodes]
        self._note_skipped(targets)
        self._run_agents(targets, AgentAction.START)

    @Slot()
    def stop_agent(self) -> None:
        targets = [a for a in self.stop_targets() if self.agent_up[a] is True or not self.all_nodes]
        if not targets:
            return
        which = targets[0] if len(targets) == 1 else f"{len(targets)} nodes ({', '.join(targets)})"
        text = (f"Stop the omview agent on {which}?\n\nGuest processes are sent home first, which can "
                "take a while. Until the agent is started again the node cannot be watched or configured, "
                "and its own jobs cannot migrate.")  # fmt: skip
        if self.session.entry in targets:
            text += (f"\n\n{self.session.entry} is the entry node: the node table stays empty until its "
                     "agent runs again.")  # fmt: skip
        if not errors.ask_yes_no(self, "Stop agent", text):
            return
        self._note_skipped(targets)
        self._run_agents(targets, AgentAction.STOP)

    def _note_skipped(self, targets: list[str]) -> None:
        """Say in the list why a node of the all-nodes dialog was left out."""
        for a in self.addresses:
            if a in targets or self.agents.busy(a):
                continue
            known = self.agent_up[a]
            if known is None:
                why = f"left out: {self.session.link(a).describe()}"
            else:
                why = "left out: the agent answers" if known else "left out: no agent runs"
            self._set_agent_note(a, why, ok=True)

    def _run_agents(self, targets: list[str], action: AgentAction) -> None:
        for a in targets:
            if self.agents.run(a, action):
                self._set_agent_note(
                    a, f"{action.value} agent: running omview-agent {action.value}…", ok=True
                )
        self._update_agent_buttons()

    def _set_agent_note(self, address: str, text: str, *, ok: bool) -> None:
        self._agent_notes[address] = text
        item = self._items[address]
        item.setText(1, text)
        item.setToolTip(1, text)
        item.setForeground(1, self.palette().text() if ok else Qt.GlobalColor.darkRed)

    @Slot(object)
    def _on_agents_result(self, result: AgentResult) -> None:
        if result.node not in self._items:
            return
        summary = result.summary()
        self._set_agent_note(
            result.node, summary, ok=not result.final or result.status in (0, EXIT_NOTHING_TO_DO)
        )
        if not result.final:
            return
        details = "\n".join(x for x in (result.stdout.strip(), result.stderr.strip()) if x)
        self._items[result.node].setToolTip(
            1, f"{' '.join(result.argv)} on {result.where}\n{details}".strip()
        )
        if result.agent_runs is not None:
            self.agent_up[result.node] = result.agent_runs
        if result.agent_runs:
            # connect now (not after the poller's back-off) and read the switches it brought back
            self._waiting_read.add(result.node)
            self.session.request_flags(result.node)
        self.session.refresh_now()
        self._update_agent_buttons()

    @Slot(str, bool)
    def _on_agents_busy(self, address: str, _busy: bool) -> None:
        if address in self.agent_up:
            self._update_agent_buttons()

    def done(self, result: int) -> None:  # noqa: D401 (Qt override)
        # late replies must not reach a closed dialog
        for sig, slot in (
            (self.session.sig_flags_read, self._on_session_flags_read),
            (self.session.sig_flags_applied, self._on_session_flags_applied),
            (self.session.sig_link_changed, self._on_session_link_changed),
            (self.agents.sig_result, self._on_agents_result),
            (self.agents.sig_busy, self._on_agents_busy),
        ):
            try:
                sig.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        super().done(result)
