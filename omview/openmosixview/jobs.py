"""openmosixview window: jobs started from advanced execution - mosrun on the home node, streamed in that
node's STREAM lane (omview.gui.links), the jobs model and the jobs view with each job's output.

Each job is ``mosrun [OPTIONS] -- PROGRAM ARGS...`` run on the home node the admin picked (over
SSH: an exec channel on the GUI's SSH connection to that node; with a local agent socket: a local
subprocess). That mosrun process is the job's deputy: its PID is the job's home PID (job id
HOME:PID), its stdout and stderr are the job's, its exit status is the job's. A job's stream reads
them (the home node's jobs take turns in one lane thread) and asks the home agent (``job.status``) where the job runs; results reach the GUI thread as
frozen ``JobUpdate`` values on a queued signal. The GUI thread never waits for a node.
"""

from __future__ import annotations

import codecs
import logging
import shlex
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import partial
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    Signal,
    Slot,
)
from PySide6.QtGui import QBrush, QColor, QFontDatabase, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from omview.gui.links import LaneContext, Links, classify, deliverer
from omview.model.errors import AgentFault, OmviewError
from omview.model.protocol import FaultCode

log = logging.getLogger(__name__)

DEFAULT_MOSRUN = "mosrun"
#: seconds a job's stream waits for output in one step (its node's other jobs wait that long)
STEP = 0.05
#: seconds between ``job.status`` questions while a job runs (where it runs now)
STATUS_EVERY = 1.0
#: output kept per job in the GUI (older output is dropped, the job's files keep all of it)
MAX_OUTPUT = 2 * 1024 * 1024


class Mode(StrEnum):
    """The nine run modes of openMosixview's advanced execution (HOWTO table 12-1)."""

    NOMIG = "no migration"
    RUNHOME = "run home"
    RUNON = "run on"
    CPUJOB = "cpu job"
    IOJOB = "io job"
    NODECAY = "no decay"
    SLOWDECAY = "slow decay"
    FASTDECAY = "fast decay"
    PARALLEL = "parallel"


#: modes that start the job on the node of the host chooser (the dial)
HOST_MODES = frozenset({Mode.RUNON, Mode.CPUJOB, Mode.IOJOB, Mode.NODECAY, Mode.SLOWDECAY, Mode.FASTDECAY})
_HINT = {Mode.CPUJOB: "--cpujob", Mode.IOJOB: "--iojob", Mode.NODECAY: "--nodecay", Mode.SLOWDECAY: "--slowdecay",
         Mode.FASTDECAY: "--fastdecay"}  # fmt: skip


def mosrun_options(mode: Mode, node: int | None) -> list[str]:
    """mosrun's options for a run mode (``node`` is the host chooser's node for HOST_MODES and
    the one node of a parallel job)."""
    if mode is Mode.NOMIG:
        return ["--nomig"]
    if mode is Mode.RUNHOME:
        return ["-h"]
    if node is None:
        raise ValueError(f"the run mode {mode.value!r} needs a node")
    if mode is Mode.RUNON:
        return ["--runon", str(node)]
    if mode is Mode.PARALLEL:
        return [str(node)]
    return [str(node), _HINT[mode]]


def parallel_nodes(ids: Iterable[int], first: int, last: int, inverse: bool) -> list[int]:
    """The known node IDs from ``first`` to ``last`` (inclusive, either order), in ascending order,
    or descending with ``inverse``. Sparse IDs count as they are: 1..25611 of [1, 7, 25611] is all three."""
    lo, hi = sorted((first, last))
    chosen = sorted(i for i in set(ids) if lo <= i <= hi)
    return chosen[::-1] if inverse else chosen


@dataclass(frozen=True)
class RunRequest:
    """What the advanced-execution dialog asks for."""

    home: str  # address of the home node (where mosrun, the deputy, runs)
    mode: Mode
    argv: tuple[str, ...]  # the program and its arguments, never parsed by a shell
    node: int | None = None  # the host chooser's node (HOST_MODES)
    nodes: tuple[int, ...] = ()  # the parallel chooser's nodes (PARALLEL), in start order

    def targets(self) -> list[int | None]:
        """One entry per job: the node it is started on (None: its home node)."""
        if self.mode is Mode.PARALLEL:
            if not self.nodes:
                raise ValueError("the parallel chooser selects no node")
            return list(self.nodes)
        if self.mode in HOST_MODES:
            if self.node is None:
                raise ValueError(f"{self.mode.value} needs a node from the host chooser")
            return [self.node]
        return [None]


class JobState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"
    FAILED = "not started"
    LOST = "connection lost"


ENDED = frozenset({JobState.EXITED, JobState.FAILED, JobState.LOST})


@dataclass(frozen=True)
class JobSpec:
    """One job to start: ``mosrun OPTIONS -- ARGV`` on ``home``."""

    key: int  # this window's number for it
    home: str
    mode: Mode
    target: int | None  # the node it is asked to start on (None: home)
    argv: tuple[str, ...]

    def mosrun_args(self) -> list[str]:
        return [*mosrun_options(self.mode, self.target), "--", *self.argv]


@dataclass(frozen=True)
class JobUpdate:
    """What a job's stream learned; None fields are unchanged."""

    key: int
    home_id: int | None = None
    pid: int | None = None
    where: int | None = None
    state: JobState | None = None
    status: str | None = None  # "exit 3" / "signal 15"
    exit_code: int | None = None
    out: str = ""
    err: str = ""
    message: str = ""


@dataclass
class JobRecord:
    """A job as the jobs view shows it (GUI thread only)."""

    spec: JobSpec
    started: float
    home_id: int | None = None
    pid: int | None = None
    where: int | None = None
    state: JobState = JobState.STARTING
    status: str | None = None
    exit_code: int | None = None
    message: str = ""
    output: list[tuple[str, str]] = field(default_factory=list)  # (stream, text) in arrival order
    output_size: int = 0
    output_dropped: int = 0

    @property
    def job_id(self) -> str:
        return f"{self.home_id}:{self.pid}" if self.home_id is not None and self.pid else ""

    @property
    def running(self) -> bool:
        return self.state not in ENDED

    def add_output(self, stream: str, text: str) -> None:
        if self.output and self.output[-1][0] == stream:
            self.output[-1] = (stream, self.output[-1][1] + text)
        else:
            self.output.append((stream, text))
        self.output_size += len(text)
        while self.output_size > MAX_OUTPUT and len(self.output) > 1:
            _, old = self.output.pop(0)
            self.output_size -= len(old)
            self.output_dropped += len(old)

    def exit_text(self) -> str:
        if self.status and self.status.startswith("signal"):
            return f"{self.status} ({self.exit_code})"
        if self.exit_code is not None:
            return str(self.exit_code)
        return ""


# ---- a job's stream (lane thread; no Qt besides the deliver callback) -------------------------


def _status(ctx: LaneContext, job_id: str) -> dict[str, Any] | None:
    """The home agent's record of the job; None when it has none (not started)."""
    try:
        return dict(ctx.client().call("job.status", job=job_id))
    except AgentFault as exc:
        if exc.code == FaultCode.NO_SUCH_PROCESS:
            return None
        raise
    except (OmviewError, TimeoutError, OSError):
        ctx.drop_client()  # the next question reconnects
        raise


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def run_job(spec: JobSpec, mosrun: str, stop: threading.Event, deliver: Callable[[JobUpdate | None], bool],
            ctx: LaneContext) -> Iterator[float | None]:  # fmt: skip
    """The life of one job, stepped by its home node's STREAM lane: start mosrun, relay its
    output, report its end. It yields before each short read, so the lane's other jobs go on."""
    key = spec.key
    try:
        home_id = ctx.client(urgent=True).node_id
    except (OmviewError, TimeoutError, OSError) as exc:
        deliver(JobUpdate(key, state=JobState.FAILED, message=f"cannot reach the agent on {spec.home}: "
                          f"{classify(exc).describe()}"))  # fmt: skip
        return
    try:
        runner = ctx.runner()
        argv = [*runner.command(mosrun), *spec.mosrun_args()]
        proc = runner.start(argv)
    except FileNotFoundError as exc:
        deliver(JobUpdate(key, home_id, state=JobState.FAILED,
                          message=f"{exc.filename or mosrun} not found on {spec.home}: install omview there"))  # fmt: skip
        return
    except (OmviewError, TimeoutError, OSError) as exc:
        deliver(JobUpdate(key, home_id, state=JobState.FAILED,
                          message=f"cannot start mosrun on {spec.home}: {classify(exc).describe()}"))  # fmt: skip
        return
    decoders = {s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in ("out", "err")}
    err_tail = ""
    job_id = ""
    signalled = False
    listed = False  # the home agent has a record of the job
    stop_at = 0.0  # when the stop was asked for
    next_status = 0.0
    where: int | None = None
    try:
        while True:
            yield None
            out, err = proc.read(STEP)
            upd = JobUpdate(key)
            if not job_id and proc.pid:
                job_id = f"{home_id}:{proc.pid}"
                upd = replace(upd, home_id=home_id, pid=proc.pid, state=JobState.RUNNING)
            if out or err:
                upd = replace(upd, out=decoders["out"].decode(out), err=decoders["err"].decode(err))
                err_tail = (err_tail + upd.err)[-4000:]
            if not deliver(None):
                stop.set()  # the window is gone without shutting down: end the job like a lost terminal
            if stop.is_set() and not stop_at:
                stop_at = time.monotonic()
            # a deputy forwards a signal only once its job runs: a SIGTERM sent while mosrun still
            # starts the job can be lost, so wait (a few seconds at most) until the home agent lists it
            ready = listed or (stop_at and time.monotonic() - stop_at > 3.0)
            if stop_at and ready and not signalled and proc.pid and not proc.finished:
                signalled = True
                try:
                    runner.signal(proc.pid, signal.SIGTERM)  # the deputy passes it on to the job
                    upd = replace(upd, state=JobState.STOPPING, message="sent SIGTERM")
                except (OmviewError, OSError) as exc:
                    upd = replace(upd, message=f"could not stop it: {exc}")
            if proc.finished:
                upd = replace(upd, out=upd.out + decoders["out"].decode(b"", final=True),
                              err=upd.err + decoders["err"].decode(b"", final=True))  # fmt: skip
                deliver(upd)
                break
            if job_id and time.monotonic() >= next_status:
                next_status = time.monotonic() + (STATUS_EVERY if listed else 0.2)
                try:
                    rec = _status(ctx, job_id)
                except (OmviewError, TimeoutError, OSError):
                    rec = None  # the next question reconnects; the channel still carries the job
                listed = listed or rec is not None
                if rec is not None and rec.get("where") != where:
                    where = int(rec["where"])
                    upd = replace(upd, where=where)
            if upd != JobUpdate(key):
                deliver(upd)
        final = yield from _final(spec, ctx, job_id, proc.exit_status, err_tail)
        deliver(final)
    finally:
        proc.close()


def _job_stream(spec: JobSpec, mosrun: str, stop: threading.Event, ended: threading.Event,
                deliver: Callable[[JobUpdate | None], bool], ctx: LaneContext) -> Iterator[float | None]:
    """run_job, and ``ended`` set however it ends (JobControl.shutdown waits for it)."""
    try:
        yield from run_job(spec, mosrun, stop, deliver, ctx)
    finally:
        ended.set()


def _final(spec: JobSpec, ctx: LaneContext, job_id: str, code: int | None,
           err_tail: str) -> Generator[float | None, None, JobUpdate]:  # fmt: skip
    """How the job ended, from its home agent's record (the deputy's exit status alone cannot tell
    mosrun's own failures, exit 3 or 4, from a job that exited 3 or 4)."""
    rec: dict[str, Any] | None = None
    problem = ""
    if job_id:
        for _ in range(20):
            try:
                rec = _status(ctx, job_id)
            except (OmviewError, TimeoutError, OSError) as exc:
                problem = classify(exc).describe()
                rec = None
            if rec is None or rec.get("state") != "running":
                break
            yield 0.1  # the exit reached the deputy a moment before the record: ask again in 0.1 s
    if rec is not None and rec.get("state") != "running":
        return JobUpdate(spec.key, where=int(rec["where"]), state=JobState.EXITED, status=rec.get("status"),
                         exit_code=rec.get("exit_code"))  # fmt: skip
    if code == -1:
        return JobUpdate(spec.key, state=JobState.LOST, message=f"the SSH channel to {spec.home} broke; "
                         "without its deputy the job is ended by its node")  # fmt: skip
    if rec is None and not problem:
        reason = _last_line(err_tail).removeprefix("mosrun: ") or f"mosrun exited with status {code}"
        return JobUpdate(spec.key, state=JobState.FAILED, exit_code=code, message=reason)
    # the record cannot be read: report what the deputy said
    status = f"exit {code}" if code is not None and code < 128 else f"signal {code - 128}" if code else None
    return JobUpdate(spec.key, state=JobState.EXITED, status=status, exit_code=code,
                     message=problem or "the home agent still lists the job as running")  # fmt: skip


# ---- the control (GUI thread) ------------------------------------------------------------------


class JobControl(QObject):
    """Starts jobs (a stream each in the home node's lane), keeps their records and output; owns the jobs model."""

    sig_message = Signal(str)
    """A status-bar line."""
    sig_output = Signal(int, str, str)
    """(key, stream "out"/"err", text): new output of a job."""
    sig_job_ended = Signal(int)

    _sig_update = Signal(object)  # JobUpdate from the lane threads, queued to the GUI thread

    def __init__(self, links: Links, parent: QObject | None = None, *, mosrun: str = DEFAULT_MOSRUN) -> None:
        super().__init__(parent)
        self.links = links
        self.mosrun = mosrun
        self.model = JobsModel(self)
        self._ended: dict[int, threading.Event] = {}  # set when a job's stream ended
        self._stops: dict[int, threading.Event] = {}
        self._keys = 0
        self._closed = False
        self._sig_update.connect(self._on_update, Qt.ConnectionType.QueuedConnection)

    # -- public API --

    def start(self, request: RunRequest) -> list[int]:
        """Start the request's jobs (one per target node); returns their keys at once."""
        if self._closed:
            raise RuntimeError("the job control is shut down")
        if not request.argv or not request.argv[0]:
            raise ValueError("no program given")
        targets = request.targets()
        keys = []
        for target in targets:
            self._keys += 1
            spec = JobSpec(self._keys, request.home, request.mode, target, tuple(request.argv))
            self.model.add(JobRecord(spec, time.time()))
            stop, ended = threading.Event(), threading.Event()
            self._stops[spec.key] = stop
            self._ended[spec.key] = ended
            self.links.stream(request.home, "job", partial(_job_stream, spec, self.mosrun, stop, ended,
                                                           deliverer(self, "_sig_update")))  # fmt: skip
            keys.append(spec.key)
        where = "its home node" if targets == [None] else ", ".join(f"node {t}" for t in targets)
        self.sig_message.emit(f"starting {one_line(shlex.join(request.argv))[:80]} ({request.mode.value}) on {where} "
                              f"through mosrun on {request.home}…")  # fmt: skip
        return keys

    def stop(self, key: int) -> None:
        """Ask a job to end: SIGTERM to its deputy, which passes it on to the job wherever it runs."""
        stop = self._stops.get(key)
        rec = self.model.record(key)
        if stop is not None and rec is not None and rec.running:
            stop.set()
            self.sig_message.emit(f"stopping job {rec.job_id or key}…")

    def running(self) -> list[int]:
        """Jobs not known to have ended (none once shut down: their channels are closed)."""
        if self._closed:
            return []
        return [r.spec.key for r in self.model.records() if r.running]

    def shutdown(self, *, stop_jobs: bool = True, timeout: float = 15.0) -> list[int]:
        """No more jobs: with ``stop_jobs`` first ask the running jobs to end and wait (at most
        ``timeout``) for their streams to end. Closing the links then closes the channels (a deputy
        whose channel is gone ends its job, openMosix-style). Returns the keys of jobs still
        running when the time was up."""
        self._closed = True
        if stop_jobs:
            for stop in self._stops.values():
                stop.set()
            deadline = time.monotonic() + timeout
            for ended in self._ended.values():
                ended.wait(max(0.0, deadline - time.monotonic()))
        left = [k for k, ended in self._ended.items() if not ended.is_set()]
        if left and stop_jobs:
            log.warning("%d job(s) did not end within %.0f s", len(left), timeout)
        return left

    # -- updates from the jobs' streams --

    @Slot(object)
    def _on_update(self, upd: JobUpdate) -> None:
        rec = self.model.record(upd.key)
        if rec is None:
            return
        was_running = rec.running
        known = bool(rec.job_id)
        self.model.apply(upd)
        if upd.out:
            self.sig_output.emit(upd.key, "out", upd.out)
        if upd.err:
            self.sig_output.emit(upd.key, "err", upd.err)
        spec = rec.spec
        if rec.job_id and not known:
            node = "its home node" if spec.target is None else f"node {spec.target}"
            self.sig_message.emit(f"started job {rec.job_id} ({spec.mode.value}) on {node} from "
                                  f"{spec.home}: {one_line(shlex.join(spec.argv))[:80]}")  # fmt: skip
        if was_running and not rec.running:
            name = rec.job_id or f"#{spec.key}"
            if rec.state is JobState.EXITED:
                self.sig_message.emit(f"job {name} ended on node {rec.where}: {rec.status or rec.exit_text()}")
            else:
                self.sig_message.emit(f"job {name} {rec.state.value}: {rec.message}")
            self.sig_job_ended.emit(spec.key)
            self._stops.pop(spec.key, None)
            # forget streams that are done (this job's stream still closes its channel)
            self._ended = {k: e for k, e in self._ended.items() if not e.is_set()}


def one_line(text: str) -> str:
    """A command line for a table cell or a status line (a newline in an argument shown as ⏎)."""
    return text.replace("\r\n", "⏎").replace("\n", "⏎")


# ---- the jobs model and view -------------------------------------------------------------------

COLUMNS = ("Job", "Home", "Runs on", "Mode", "Command", "State", "Exit status", "Started")
COL_JOB, COL_HOME, COL_WHERE, COL_MODE, COL_COMMAND, COL_STATE, COL_EXIT, COL_STARTED = range(len(COLUMNS))
KeyRole = Qt.ItemDataRole.UserRole + 1


class JobsModel(QAbstractTableModel):
    """The jobs started from this window, newest last."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[JobRecord] = []
        self._index: dict[int, int] = {}

    def records(self) -> list[JobRecord]:
        return list(self._rows)

    def record(self, key: int) -> JobRecord | None:
        i = self._index.get(key)
        return self._rows[i] if i is not None else None

    def row_of(self, key: int) -> int | None:
        return self._index.get(key)

    def add(self, rec: JobRecord) -> None:
        n = len(self._rows)
        self.beginInsertRows(QModelIndex(), n, n)
        self._rows.append(rec)
        self._index[rec.spec.key] = n
        self.endInsertRows()

    def remove_ended(self) -> None:
        keep = [r for r in self._rows if r.running]
        if len(keep) == len(self._rows):
            return
        self.beginResetModel()
        self._rows = keep
        self._index = {r.spec.key: i for i, r in enumerate(keep)}
        self.endResetModel()

    def apply(self, upd: JobUpdate) -> None:
        row = self._index.get(upd.key)
        if row is None:
            return
        rec = self._rows[row]
        for name in ("home_id", "pid", "where", "state", "status", "exit_code"):
            value = getattr(upd, name)
            if value is not None and not (name == "state" and not rec.running):
                setattr(rec, name, value)
        if upd.message:
            rec.message = upd.message
        if upd.out:
            rec.add_output("out", upd.out)
        if upd.err:
            rec.add_output("err", upd.err)
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        rec = self._rows[index.row()]
        col = index.column()
        if role == KeyRole:
            return rec.spec.key
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(rec, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [f"mosrun {shlex.join(rec.spec.mosrun_args())}", f"deputy on {rec.spec.home}"
                     + (f", PID {rec.pid}" if rec.pid else "")]  # fmt: skip
            if rec.message:
                lines.append(rec.message)
            return "\n".join(lines)
        if role == Qt.ItemDataRole.ForegroundRole and col in (COL_STATE, COL_EXIT):
            if rec.state in (JobState.FAILED, JobState.LOST) or (rec.state is JobState.EXITED and rec.exit_code):
                return QBrush(QColor("#b41e14"))
            if rec.state is JobState.RUNNING:
                return QBrush(QColor("#1b6e2a"))
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (COL_WHERE, COL_EXIT):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def _text(rec: JobRecord, col: int) -> str:
        spec = rec.spec
        if col == COL_JOB:
            return rec.job_id or f"#{spec.key}"
        if col == COL_HOME:
            return f"{spec.home} ({rec.home_id})" if rec.home_id is not None else spec.home
        if col == COL_WHERE:
            if rec.where is not None:
                return str(rec.where)
            return str(spec.target) if spec.target is not None else "home"
        if col == COL_MODE:
            return spec.mode.value
        if col == COL_COMMAND:
            return one_line(shlex.join(spec.argv))
        if col == COL_STATE:
            if rec.state in (JobState.FAILED, JobState.LOST) and rec.message:
                return f"{rec.state.value}: {rec.message}"
            return rec.state.value
        if col == COL_EXIT:
            return rec.exit_text()
        if col == COL_STARTED:
            return time.strftime("%H:%M:%S", time.localtime(rec.started))
        return ""


class JobsView(QWidget):
    """The jobs list and the selected job's output (stdout black, stderr red), live."""

    def __init__(self, control: JobControl, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.control = control
        self.table = QTableView(self)
        self.table.setObjectName("jobs-table")
        self.table.setModel(control.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)  # one line per job; the tooltip has the mosrun command
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL_COMMAND, QHeaderView.ResizeMode.Stretch)
        self.output = QPlainTextEdit(self)
        self.output.setObjectName("job-output")
        self.output.setReadOnly(True)
        self.output.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.output.setPlaceholderText("select a job to see its output")
        self.caption = QLabel("output", self)
        self.btn_stop = QPushButton("&Stop job", self)
        self.btn_stop.setToolTip("Send SIGTERM to the job's deputy (mosrun), which passes it on to the job")
        self.btn_clear = QPushButton("&Remove finished", self)
        buttons = QHBoxLayout()
        buttons.addWidget(self.caption, 1)
        buttons.addWidget(self.btn_stop)
        buttons.addWidget(self.btn_clear)
        lower = QWidget(self)
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.addLayout(buttons)
        lower_layout.addWidget(self.output, 1)
        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(self.table)
        split.addWidget(lower)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(split)
        self._formats = {"out": QTextCharFormat(), "err": QTextCharFormat()}
        self._formats["err"].setForeground(QColor("#b41e14"))
        self._shown: int | None = None
        self.table.selectionModel().currentRowChanged.connect(self._on_current_changed)
        control.sig_output.connect(self._on_output)
        control.model.dataChanged.connect(self._update_buttons)
        control.model.rowsInserted.connect(self._on_rows_inserted)
        self.btn_stop.clicked.connect(self._on_stop)
        self.btn_clear.clicked.connect(self._on_clear)
        self._update_buttons()

    @property
    def shown_key(self) -> int | None:
        return self._shown

    def select(self, key: int) -> None:
        row = self.control.model.row_of(key)
        if row is not None:
            self.table.selectRow(row)
            self.table.setCurrentIndex(self.control.model.index(row, 0))

    def output_text(self) -> str:
        return self.output.toPlainText()

    @Slot(QModelIndex, QModelIndex)
    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        key = current.data(KeyRole) if current.isValid() else None
        self._show(key)

    def _show(self, key: int | None) -> None:
        self._shown = key
        self.output.clear()
        rec = self.control.model.record(key) if key is not None else None
        if rec is None:
            self.caption.setText("output")
        else:
            self.caption.setText(f"output of job {rec.job_id or f'#{key}'}: {one_line(shlex.join(rec.spec.argv))[:60]}")
            if rec.output_dropped:
                self._append("err", f"[{rec.output_dropped} earlier characters not kept here]\n")
            for stream, text in rec.output:
                self._append(stream, text)
        self._update_buttons()

    def _append(self, stream: str, text: str) -> None:
        bar = self.output.verticalScrollBar()
        follow = bar.value() >= bar.maximum() - 2
        cursor = QTextCursor(self.output.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text, self._formats[stream])
        if follow:
            bar.setValue(bar.maximum())

    @Slot(int, str, str)
    def _on_output(self, key: int, stream: str, text: str) -> None:
        if key == self._shown:
            self._append(stream, text)

    @Slot()
    def _on_rows_inserted(self) -> None:
        # a new job is what the admin wants to see
        rows = self.control.model.rowCount()
        if rows:
            self.table.selectRow(rows - 1)
        self._update_buttons()

    @Slot()
    def _update_buttons(self) -> None:
        rec = self.control.model.record(self._shown) if self._shown is not None else None
        self.btn_stop.setEnabled(rec is not None and rec.state in (JobState.STARTING, JobState.RUNNING))
        self.btn_clear.setEnabled(any(not r.running for r in self.control.model.records()))

    @Slot()
    def _on_stop(self) -> None:
        if self._shown is not None:
            self.control.stop(self._shown)

    @Slot()
    def _on_clear(self) -> None:
        shown = self._shown
        self.control.model.remove_ended()
        if shown is not None and self.control.model.record(shown) is None:
            self._show(None)
        elif shown is not None:
            self.select(shown)
        self._update_buttons()

