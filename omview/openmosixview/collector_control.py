"""openmosixview window: the Collector menu's engine: openmosixcollector -d/-k/-n/-r/-s --json on its node.

Commands run in the collector node's ACTION lane (omview.gui.links), never in the GUI thread and
never in the way of that node's polls. On a node reached over SSH each one is an exec channel on
the GUI's one SSH connection to the node. When the GUI reaches the node's agent through a local
Unix socket, they run here as a local subprocess. Results go back to the GUI thread as frozen
dataclasses on a queued signal.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from typing import Any

from PySide6.QtCore import QObject, QSettings, Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QWidget,
)

from omview.gui.links import Lane, LaneContext, Links, TaskDone, classify, deliverer
from omview.model.errors import OmviewError

log = logging.getLogger(__name__)

DEFAULT_COMMAND = "openmosixcollector"
DEFAULT_REFRESH = 5.0
#: The collector refuses longer labels (omview.collector.daemon.validate_label).
MAX_LABEL = 200


class Action(StrEnum):
    """What the Collector menu can ask of openmosixcollector."""

    START = "start"
    STOP = "stop"
    CHECKPOINT = "checkpoint"
    ROTATE = "rotate"
    STATUS = "status"


#: Seconds each action may take: -d waits for the daemon to start (up to 30 s), -k for it to
#: exit (20 s), -r for the files to be moved (the collector allows 120 s).
TIMEOUTS = {Action.START: 60.0, Action.STOP: 40.0, Action.CHECKPOINT: 30.0, Action.ROTATE: 150.0,
            Action.STATUS: 15.0}  # fmt: skip


#: The status is read from the collector's JSON (docs/collector.md), never from its human text.
STATUS_ARGS = ("-s", "--json")


# ---- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CollectorConfig:
    """Where the collector runs and which files it uses; "" means the default."""

    node: str = ""  # "" = the entry node
    command: str = DEFAULT_COMMAND  # how to run openmosixcollector on the node
    logdir: str = ""  # "" = the collector's default (/var/log/openmosixcollector)
    pidfile: str = ""  # "" = the collector's default (/run/openMosixcollector.pid)
    refresh: float = DEFAULT_REFRESH  # seconds between status checks

    def options(self) -> list[str]:
        """The file options every command gets, so -s/-k/-n/-r find the daemon -d started."""
        opts: list[str] = []
        if self.logdir:
            opts += ["--logdir", self.logdir]
        if self.pidfile:
            opts += ["--pidfile", self.pidfile]
        return opts


_KEYS = ("node", "command", "logdir", "pidfile", "refresh")


def load_config(store: QSettings | None) -> CollectorConfig:
    """The collector settings saved under ``collector/*`` (defaults for what is missing or bad)."""
    config = CollectorConfig()
    if store is None:
        return config
    values: dict[str, object] = {}
    for key in _KEYS:
        if store.contains(f"collector/{key}"):
            raw = store.value(f"collector/{key}")
            try:
                values[key] = float(raw) if key == "refresh" else str(raw or "").strip()
            except (TypeError, ValueError):
                log.warning("ignoring bad saved setting collector/%s in %s", key, store.fileName())
    if not values.get("command"):
        values.pop("command", None)
    refresh = values.get("refresh")
    if isinstance(refresh, float) and not 1.0 <= refresh <= 3600.0:
        values.pop("refresh")
    return replace(config, **values)  # type: ignore[arg-type]


def save_config(store: QSettings | None, config: CollectorConfig) -> None:
    if store is None:
        return
    for key in _KEYS:
        store.setValue(f"collector/{key}", getattr(config, key))
    store.sync()


def check_label(label: str) -> str | None:
    """Why ``label`` cannot be a checkpoint label, or None when it can."""
    if len(label) > MAX_LABEL:
        return f"the label is {len(label)} characters long; the collector takes at most {MAX_LABEL}"
    if not label.isprintable():
        return "the label must be one line of printable characters"
    return None


# ---- results (frozen, they cross from the lane thread to the GUI thread) ---------------------


@dataclass(frozen=True)
class CommandResult:
    """One openmosixcollector run: exit status and output, or why it could not be run at all."""

    action: Action
    node: str
    where: str  # how the node was reached ("root@10.77.0.11:22 over SSH", "this machine")
    argv: tuple[str, ...]
    status: int | None  # None: the command did not run (node unreachable, not installed)
    stdout: str = ""
    stderr: str = ""
    unreachable: bool = False
    problem: str = ""  # why it did not run
    advice: str = ""  # what to do about a failure
    elapsed: float = 0.0
    periodic: bool = False  # a toolbar status refresh, not an admin's action

    @property
    def ok(self) -> bool:
        return self.status == 0

    def first_line(self) -> str:
        """The line that says what happened: stdout's last word on success, else stderr's."""
        if self.problem:
            return self.problem
        shape = status_shape(self.stdout) if self.action is Action.STATUS else None
        if shape is not None:
            return describe_shape(shape)
        streams = (self.stdout, self.stderr) if self.ok else (self.stderr, self.stdout)
        for text in streams:
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if lines:
                # -d first prints the agent probe; the line that matters is the last one
                line = lines[-1] if self.ok and self.action is Action.START else lines[0]
                return line.removeprefix("openmosixcollector: ")
        return f"exit status {self.status}" if self.status is not None else "no output"

    def summary(self) -> str:
        """The status-bar line."""
        how = "done" if self.ok else f"failed (exit {self.status})" if self.status is not None else "failed"
        return f"collector {self.action.value} on {self.node}: {how}: {self.first_line()}"


class CollectorState(StrEnum):
    UNKNOWN = "not checked yet"
    RUNNING = "running"
    NOT_RUNNING = "not running"
    UNREACHABLE = "unreachable"
    ERROR = "status unknown"


@dataclass(frozen=True)
class CollectorStatus:
    """What ``openmosixcollector -s`` said about the collector on ``node``."""

    node: str
    state: CollectorState = CollectorState.UNKNOWN
    pid: int | None = None
    nodes: int | None = None
    ticks: int | None = None
    logdir: str = ""
    detail: str = ""  # the collector's line, or the failure
    advice: str = ""
    checked: float = 0.0  # wall time of the check

    def text(self) -> str:
        if self.state is CollectorState.RUNNING:
            return f"running (pid {self.pid}, {self.nodes} nodes, {self.ticks} ticks)"
        return self.state.value


def status_shape(stdout: str) -> dict[str, Any] | None:
    """The object ``openmosixcollector -s --json`` printed (docs/collector.md), or None."""
    try:
        shape = json.loads(stdout)
    except ValueError:
        return None
    return shape if isinstance(shape, dict) and isinstance(shape.get("running"), bool) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def describe_shape(shape: dict[str, Any]) -> str:
    """One line for the status bar and dialogs."""
    if shape["running"]:
        return f"running (pid {shape.get('pid')}, {shape.get('nodes')} nodes, {shape.get('ticks')} ticks)"
    return str(shape.get("reason") or "not running")


def parse_status(result: CommandResult) -> CollectorStatus:
    """Turn the result of ``-s --json`` into the toolbar's state (exit 0 running, 1 not running)."""
    now = time.time()
    base = CollectorStatus(result.node, detail=result.first_line(), advice=result.advice, checked=now)
    if result.unreachable:
        return replace(base, state=CollectorState.UNREACHABLE)
    shape = status_shape(result.stdout) if result.status in (0, 1) else None
    if shape is None:
        detail = f"unexpected answer: {result.first_line()}" if result.ok else result.first_line()
        return replace(base, state=CollectorState.ERROR, detail=detail)
    if shape["running"] and result.ok:
        return replace(base, state=CollectorState.RUNNING, pid=_int(shape.get("pid")), nodes=_int(shape.get("nodes")),
                       ticks=_int(shape.get("ticks")), logdir=str(shape.get("logdir") or ""))  # fmt: skip
    if not shape["running"] and result.status == 1:
        return replace(base, state=CollectorState.NOT_RUNNING, advice="")
    return replace(base, state=CollectorState.ERROR, detail=f"unexpected answer: {result.stdout.strip()}")


# ---- running commands on a node (lane thread; no Qt) -----------------------------------------

#: What to do about a failure, by kind.
_ADVICE_UNREACHABLE = ("Check that {node} is up and that you can log in to it (File > Test connection, "
                       "or the row's Test connection).")  # fmt: skip
_ADVICE_MISSING = ("openmosixcollector is not installed on {node}, or not on the login user's PATH there: "
                   "install omview on the node, or set the full path in Collector > Collector settings.")  # fmt: skip
_ADVICE_FAILED = ("The collector's message above says why. Its log is {logdir}/collector.log on {node}; "
                  "file locations are set in Collector > Collector settings.")  # fmt: skip


@dataclass(frozen=True)
class _Job:
    action: Action
    node: str
    args: tuple[str, ...]
    config: CollectorConfig
    periodic: bool = False  # a toolbar refresh, not an admin's action


def _run_command(job: _Job, ctx: LaneContext) -> CommandResult:
    """Run one collector command on its node (in the node's ACTION lane; no Qt)."""
    started = time.monotonic()
    node = job.node
    logdir = job.config.logdir or "/var/log/openmosixcollector"
    result = CommandResult(job.action, node, "", (), None, periodic=job.periodic)
    try:
        runner = ctx.runner()
        argv = (*runner.command(job.config.command), *job.args, *job.config.options(), *runner.node_args)
        result = replace(result, where=runner.describe(), argv=argv)
        status, out, err = runner.run(argv, TIMEOUTS[job.action], idempotent=job.action is Action.STATUS)
    except FileNotFoundError as exc:
        result = replace(result, problem=f"{exc.filename or job.config.command} not found",
                         advice=_ADVICE_MISSING.format(node=node))  # fmt: skip
    except subprocess.TimeoutExpired:
        result = replace(result, problem=f"no answer within {TIMEOUTS[job.action]:.0f} s",
                         advice=_ADVICE_FAILED.format(node=node, logdir=logdir))  # fmt: skip
    except (OmviewError, TimeoutError, OSError) as exc:
        link = classify(exc)
        result = replace(result, unreachable=True, problem=link.describe(),
                         advice=link.advice.replace("ADDRESS", node) or _ADVICE_UNREACHABLE.format(node=node))
    else:
        advice = ""
        if status == 127:
            advice = _ADVICE_MISSING.format(node=node)
        elif status != 0:
            advice = _ADVICE_FAILED.format(node=node, logdir=logdir)
        result = replace(result, status=status, stdout=out, stderr=err, advice=advice)
    result = replace(result, elapsed=time.monotonic() - started)
    log.debug("collector %s on %s: %s", job.action, node, result.summary())
    return result


# ---- the control (GUI thread) ----------------------------------------------------------------


class CollectorControl(QObject):
    """Start, stop, checkpoint, rotate and watch the collector on its node (default: the entry node).

    Actions and status checks go to the node's ACTION lane, one after the other; answers arrive as ``sig_result`` (every
    action, including "Show status"; not the periodic checks) and ``sig_status`` (after every
    status check of the current node).
    """

    sig_result = Signal(object)
    """CommandResult of an action (not of the periodic status checks)."""
    sig_status = Signal(object)
    """CollectorStatus after a status check of the current node."""
    sig_busy = Signal(bool)
    """True while a start/stop/checkpoint/rotate runs."""

    _sig_done = Signal(object)  # TaskDone from the lane thread, queued to the GUI thread

    def __init__(self, links: Links, entry: str, config: CollectorConfig | None = None,
                 parent: QObject | None = None) -> None:  # fmt: skip
        super().__init__(parent)
        self.entry = entry
        self.config = config or CollectorConfig()
        self.status = CollectorStatus(self.node)
        self.links = links
        self._deliver = deliverer(self, "_sig_done")
        self._jobs: dict[int, _Job] = {}
        self._actions_pending = 0
        self._checks_queued = 0
        self._stopped = False
        self._sig_done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.check_status)

    @property
    def node(self) -> str:
        """The node the collector runs on."""
        return self.config.node or self.entry

    @property
    def busy(self) -> bool:
        return self._actions_pending > 0

    def set_config(self, config: CollectorConfig) -> None:
        """Use another node, command or files from now on (the status is checked again at once)."""
        if config == self.config:
            return
        self.config = config
        if self._timer.isActive():
            self._timer.setInterval(int(config.refresh * 1000))
        self.status = CollectorStatus(self.node)
        self.sig_status.emit(self.status)
        if not self._stopped:
            self._queue_check()

    def start_monitoring(self) -> None:
        """Check the status now and then every ``config.refresh`` seconds."""
        if self._stopped:
            return
        self._timer.start(int(self.config.refresh * 1000))
        self.check_status()

    def stop_monitoring(self) -> None:
        self._timer.stop()

    def shutdown(self) -> None:
        """No more commands or checks (the node links end their lanes when the window closes)."""
        self._stopped = True
        self._timer.stop()

    # -- actions --

    def start(self) -> None:
        self._submit(Action.START, ("-d",))

    def stop(self) -> None:
        self._submit(Action.STOP, ("-k",))

    def checkpoint(self, label: str) -> None:
        problem = check_label(label)
        if problem:
            raise ValueError(problem)
        # a label starting with "-" would be read as an option after a separate -n
        self._submit(Action.CHECKPOINT, (f"--checkpoint={label}",) if label.startswith("-") else ("-n", label))

    def rotate(self) -> None:
        self._submit(Action.ROTATE, ("-r",))

    def show_status(self) -> None:
        """An explicit status request: its result is reported like an action's."""
        self._submit(Action.STATUS, STATUS_ARGS)

    @Slot()
    def check_status(self) -> None:
        """A periodic status check; skipped while the previous one still waits or runs."""
        if self._stopped or self._checks_queued:
            return
        self._queue_check()

    def _queue_check(self) -> None:
        self._checks_queued += 1
        self._put(_Job(Action.STATUS, self.node, STATUS_ARGS, self.config, periodic=True))

    def _submit(self, action: Action, args: tuple[str, ...]) -> None:
        if self._stopped:
            return
        if action is not Action.STATUS:
            self._actions_pending += 1
            if self._actions_pending == 1:
                self.sig_busy.emit(True)
        self._put(_Job(action, self.node, args, self.config))
        if action is not Action.STATUS:
            # the toolbar follows at once what the action did (the queue is serial)
            self._queue_check()

    def _put(self, job: _Job) -> None:
        ticket = self.links.submit(job.node, Lane.ACTION, "collector", partial(_run_command, job), self._deliver,
                                   urgent=True)  # fmt: skip
        self._jobs[ticket] = job

    @Slot(object)
    def _on_done(self, done: TaskDone) -> None:
        job = self._jobs.pop(done.ticket)
        result = done.value
        if not isinstance(result, CommandResult):  # the lane caught a bug in _run_command
            problem = done.error.describe() if done.error is not None else "internal error"
            result = CommandResult(job.action, job.node, "", (), None, problem=problem, periodic=job.periodic)
        if self._stopped:
            return
        if result.action is Action.STATUS:
            if result.periodic:
                self._checks_queued -= 1
            if result.node == self.node:
                self.status = parse_status(result)
                self.sig_status.emit(self.status)
            if not result.periodic:
                self.sig_result.emit(result)
            return
        self._actions_pending -= 1
        if self._actions_pending == 0:
            self.sig_busy.emit(False)
        self.sig_result.emit(result)


# ---- the settings dialog ---------------------------------------------------------------------


class CollectorSettingsDialog(QDialog):
    """Collector > Collector settings: node, command, log directory, PID file, refresh."""

    def __init__(self, config: CollectorConfig, entry: str, nodes: Sequence[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Collector settings")
        self._entry = entry
        form = QFormLayout(self)
        self.setMinimumWidth(520)
        self.node = QComboBox(self)
        self.node.setEditable(True)
        self.node.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.node.addItem(f"the entry node ({entry})", "")
        for address in nodes:
            self.node.addItem(address, address)
        if config.node:
            i = self.node.findData(config.node)
            if i < 0:
                self.node.addItem(config.node, config.node)
                i = self.node.count() - 1
            self.node.setCurrentIndex(i)
        self.command = QLineEdit(config.command, self)
        self.logdir = QLineEdit(config.logdir, self)
        self.logdir.setPlaceholderText("the collector's default: /var/log/openmosixcollector")
        self.pidfile = QLineEdit(config.pidfile, self)
        self.pidfile.setPlaceholderText("the collector's default: /run/openMosixcollector.pid")
        self.refresh = QDoubleSpinBox(self, minimum=1.0, maximum=3600.0, decimals=0, suffix=" s",
                                      value=config.refresh)  # fmt: skip
        form.addRow("Collector runs on:", self.node)
        form.addRow("Command on the node:", self.command)
        form.addRow("History directory (--logdir):", self.logdir)
        form.addRow("PID file (--pidfile):", self.pidfile)
        form.addRow("Check the status every:", self.refresh)
        note = QLabel("Empty fields use the collector's defaults. Stop the collector before you change "
                      "its node or files, or the old one keeps running unwatched.", self)  # fmt: skip
        note.setWordWrap(True)
        form.addRow(note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def config(self) -> CollectorConfig:
        text = self.node.currentText().strip()
        # a listed choice carries its address ("" = the entry node); anything else was typed in
        i = self.node.findText(text)
        node = str(self.node.itemData(i) or "") if i >= 0 else text
        return CollectorConfig(
            node=node,
            command=self.command.text().strip() or DEFAULT_COMMAND,
            logdir=self.logdir.text().strip(),
            pidfile=self.pidfile.text().strip(),
            refresh=float(self.refresh.value()),
        )

    @classmethod
    def ask(cls, parent: QWidget | None, config: CollectorConfig, entry: str,
            nodes: Sequence[str]) -> CollectorConfig | None:  # fmt: skip
        dlg = cls(config, entry, nodes, parent)
        return dlg.config() if dlg.exec() == QDialog.DialogCode.Accepted else None
