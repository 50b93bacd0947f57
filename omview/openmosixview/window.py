"""openmosixview window: the main window - cluster header, node table, menus, toolbar and status bar.

The window only talks to ``ClusterSession``, ``CollectorControl`` and ``JobControl`` (never to a
client or transport) and only reacts to their GUI-thread signals. Sub-windows that are separate
issues (process box, analyzer, history, migmon) are plugged in with ``register_tool``; until then
their actions are present but disabled, with a tooltip saying so.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QByteArray, QModelIndex, QPoint, QSettings, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence, QShowEvent
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QLabel,
    QMainWindow,
    QMenu,
    QStyle,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from omview.gui import errors
from omview.gui.actions import action
from omview.gui.connect import HostKeyOffer
from omview.gui.connection_dialog import ConnectionDialog
from omview.gui.history_fetch import cache_dir, fetch_history
from omview.gui.launch import ProgramLauncher, launch
from omview.gui.links import ConnectionReport, Lane, LaneContext, LinkState, LinkStatus, TaskDone, deliverer
from omview.gui.procdrag import DraggedProcs, migrate_task
from omview.gui.session import ClusterSession, SpeedReport
from omview.gui.settings import GuiSettings
from omview.gui.settings import save as save_settings
from omview.model import records
from omview.model.cluster import NodeInfo
from omview.openmosixview.cluster_header import ClusterHeader
from omview.openmosixview.collector_control import (
    Action,
    CollectorControl,
    CollectorSettingsDialog,
    CollectorState,
    CollectorStatus,
    CommandResult,
    check_label,
    load_config,
    save_config,
)
from omview.openmosixview.help import AboutDialog, HelpWindow, open_about
from omview.openmosixview.jobs import JobControl, JobsView
from omview.openmosixview.node_dialog import AgentControl, NodeConfigDialog
from omview.openmosixview.node_table import COL_NODE, NodeTableModel, NodeTableView, totals
from omview.openmosixview.run_dialog import RunDialog

log = logging.getLogger(__name__)

NOT_YET = "{what} is a separate part of omview that is not built yet"

#: Tools that plug into the main window later: key -> (menu, label, tooltip subject).
TOOLS = {
    "procs": ("View", "&Process box…", "The process box (openMosixprocs)"),
    "migmon": ("View", "&Migration monitor…", "The migration monitor (openMosixmigmon)"),
    "analyzer": ("Analyzer", "Open &analyzer…", "The analyzer (openMosixanalyzer)"),
    "history": ("Analyzer", "Open &history…", "The process history (openMosixhistory)"),
    "run_prog": ("File", "&Run program (advanced execution)…", "Advanced execution"),
}


class MainWindow(QMainWindow):
    """openmosixview: one row per node plus the cluster totals."""

    _sig_migrated = Signal(object)  # TaskDone of a drop's migration, queued from the ACTION lane
    _sig_history = Signal(object)  # TaskDone of a remote history's copy (ACTION lane)

    def __init__(
        self,
        session: ClusterSession,
        settings: GuiSettings,
        store: QSettings | None = None,
        parent: QWidget | None = None,
        collector: CollectorControl | None = None,
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.settings = settings
        self.store = store
        self.dialogs: dict[str, NodeConfigDialog] = {}
        #: starts sibling programs (the process box); set by the app, None in tests that need none
        self.launcher: ProgramLauncher | None = None
        self._asked_to_quit = False  # a quit signal arrived: close without questions
        self._tests_requested: set[str] = set()
        self._entry_link = LinkState(LinkStatus.UNKNOWN)
        self.setWindowTitle("openmosixview")
        #: the Collector menu's engine: commands run in the collector node's ACTION lane
        if collector is None:
            collector = CollectorControl(session.links, session.entry, load_config(store), self)
        self.collector = collector
        #: "start agent" / "stop agent" of the node dialogs: omview-agent start|stop on the node, in
        #: its ACTION lane; outcomes reach the status bar even after the dialog was closed
        self.agents = AgentControl(session.links, self)

        self.model = NodeTableModel(self)
        self.view = NodeTableView(self)
        self.view.setModel(self.model)
        self.view.sig_procs_dropped.connect(self._on_procs_dropped)
        #: what drops of processes on node rows did (newest last; the status bar shows each)
        self.migrations: list[str] = []
        self._deliver_migrated = deliverer(self, "_sig_migrated")
        self._sig_migrated.connect(self._on_migrated, Qt.ConnectionType.QueuedConnection)
        self._deliver_history = deliverer(self, "_sig_history")
        self._sig_history.connect(self._on_history_fetched, Qt.ConnectionType.QueuedConnection)
        self.header = ClusterHeader(self)
        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 0)
        layout.setSpacing(6)
        layout.addWidget(self.header)
        layout.addWidget(self.view, 1)
        self.setCentralWidget(central)

        self.tools: dict[str, QAction] = {}
        self._collector_watched = False
        # advanced execution: jobs started through mosrun, listed with their output in a dock
        self.jobs = JobControl(session.links, self)
        self.jobs_view = JobsView(self.jobs)
        self.jobs_dock = QDockWidget("Jobs", self)
        self.jobs_dock.setObjectName("jobs-dock")
        self.jobs_dock.setWidget(self.jobs_view)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.jobs_dock)
        self.jobs_dock.hide()
        self.run_dialog: RunDialog | None = None
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self.statusBar().showMessage(f"connecting to entry node {session.entry}…")
        self.register_tool("run_prog", self.open_run_dialog,
                           "Start a program on the cluster with mosrun (advanced execution)")  # fmt: skip
        self.register_tool("analyzer", lambda: self.open_history_program("openmosixanalyzer"),
                           "Load and memory history of the cluster (openmosixanalyzer on the collector's history)")  # fmt: skip
        self.register_tool("history", lambda: self.open_history_program("openmosixhistory"),
                           "Process list of the collector's node in the past (openmosixhistory)")  # fmt: skip
        self.jobs.sig_message.connect(self._on_session_message)
        self.agents.sig_message.connect(self._on_session_message)

        # totals are recomputed once per event-loop pass, however many rows changed
        self._totals_timer = QTimer(self)
        self._totals_timer.setSingleShot(True)
        self._totals_timer.setInterval(0)
        self._totals_timer.timeout.connect(self._on_totals_timer_timeout)
        for sig in (self.model.dataChanged, self.model.rowsInserted, self.model.rowsRemoved):
            sig.connect(self._totals_timer.start)

        session.sig_cluster_updated.connect(self._on_session_cluster_updated)
        session.sig_entry_failed.connect(self._on_session_entry_failed)
        session.sig_node_info_updated.connect(self._on_session_node_info_updated)
        session.sig_link_changed.connect(self._on_session_link_changed)
        session.sig_speed_set.connect(self._on_session_speed_set)
        session.sig_message.connect(self._on_session_message)
        session.sig_connection_tested.connect(self._on_session_connection_tested)
        session.sig_host_key_fetched.connect(self._on_session_host_key_fetched)
        session.sig_host_key_accepted.connect(self._on_session_host_key_accepted)
        self.model.sig_speed_requested.connect(self._on_model_speed_requested)
        self.view.sig_node_clicked.connect(self.open_node_dialog)
        self.view.activated.connect(self._on_view_activated)
        self.view.customContextMenuRequested.connect(self._on_view_context_menu)
        self.header.sig_all_nodes_requested.connect(self.open_all_nodes_dialog)
        self.collector.sig_result.connect(self._on_collector_result)
        self.collector.sig_status.connect(self._on_collector_status)
        self.collector.sig_busy.connect(self._on_collector_busy)
        self._update_collector_status()
        self._update_entry_text()
        self.resize(1080, 560)
        self.restore_geometry()

    # -- construction --

    def _build_actions(self) -> None:
        style = self.style()
        self.act_quit = action("&Quit", self, shortcut=QKeySequence.StandardKey.Quit, triggered=self.close)
        self.act_refresh = action(
            style.standardIcon(QStyle.StandardPixmap.SP_BrowserReload), "&Refresh now", self,
            shortcut=QKeySequence.StandardKey.Refresh, triggered=self.session.refresh_now,
        )  # fmt: skip
        self.act_direct = QAction("Ask every node &directly", self, checkable=True, checked=self.session.direct_poll)
        self.act_direct.setToolTip("Poll each node's own agent too, so each row shows its own connection state")
        self.act_direct.toggled.connect(self.session.set_direct_poll)
        self.session.sig_direct_paused.connect(self._on_session_direct_paused)
        self.act_all_nodes = action(
            style.standardIcon(QStyle.StandardPixmap.SP_ComputerIcon), "&All nodes…", self,
            triggered=self.open_all_nodes_dialog,
        )  # fmt: skip
        self.act_test_entry = action("&Test connection to the entry node", self, triggered=self._on_test_entry)
        self.act_connection = action("&Connection settings…", self, triggered=self.edit_connection_settings)
        self.act_save = action("&Save configuration", self, shortcut=QKeySequence.StandardKey.Save,
                                triggered=self.save_configuration)
        self.act_ssh = QAction("Use &SSH", self, checkable=True, checked=True, enabled=False)
        self.act_ssh.setToolTip("openmosixview always uses SSH; rsh is not supported")
        self.act_about = action("&About openmosixview", self, triggered=self._on_about)
        self.act_help = action("&Documentation", self, shortcut=QKeySequence.StandardKey.HelpContents,
                                triggered=self.open_help)  # fmt: skip
        self.help_window: HelpWindow | None = None
        for key, (_menu, label, subject) in TOOLS.items():
            act = QAction(label, self, enabled=False)
            act.setToolTip(NOT_YET.format(what=subject))
            act.setStatusTip(NOT_YET.format(what=subject))
            self.tools[key] = act
        self.tools["run_prog"].setIcon(style.standardIcon(QStyle.StandardPixmap.SP_DialogOpenButton))
        # the Collector menu (HOWTO 12.6): openmosixcollector -d, -k, -n LABEL, -r, -s on its node
        self.act_collector_start = action(
            style.standardIcon(QStyle.StandardPixmap.SP_MediaPlay), "&Start collector", self,
            triggered=self.collector.start,
        )  # fmt: skip
        self.act_collector_stop = action(
            style.standardIcon(QStyle.StandardPixmap.SP_MediaStop), "S&top collector", self,
            triggered=self.collector.stop,
        )  # fmt: skip
        self.act_collector_checkpoint = action("Write &checkpoint…", self, triggered=self.ask_checkpoint)
        self.act_collector_rotate = action("&Rotate logs", self, triggered=self.collector.rotate)
        self.act_collector_status = action("Show collector s&tatus", self, triggered=self.collector.show_status)
        self.act_collector_settings = action("Collector se&ttings…", self, triggered=self.edit_collector_settings)
        for act, tip in (
            (self.act_collector_start, "Start openmosixcollector as a daemon on its node (openmosixcollector -d)"),
            (self.act_collector_stop, "Stop the collector on its node (openmosixcollector -k)"),
            (self.act_collector_checkpoint, "Mark this moment in the history with a label (openmosixcollector -n)"),
            (self.act_collector_rotate, "Save the current history to a dated backup and start a new one (-r)"),
            (self.act_collector_status, "Ask the collector whether it runs (openmosixcollector -s)"),
            (self.act_collector_settings, "The collector's node, command, history directory and PID file"),
        ):
            act.setToolTip(tip)
            act.setStatusTip(tip)

    def _build_menus(self) -> None:
        mb = self.menuBar()
        menus = {name: mb.addMenu(f"&{name}") for name in ("File", "View", "Config", "Collector", "Analyzer", "Help")}
        for m in menus.values():
            m.setToolTipsVisible(True)
        menus["File"].addAction(self.tools["run_prog"])
        menus["File"].addAction(self.act_test_entry)
        menus["File"].addSeparator()
        menus["File"].addAction(self.act_quit)
        menus["View"].addAction(self.act_refresh)
        menus["View"].addAction(self.act_direct)
        interval = menus["View"].addMenu("Refresh &interval")
        group = QActionGroup(self)
        for seconds in (1, 2, 5, 10, 30):
            act = QAction(f"{seconds} s", self, checkable=True, checked=abs(self.session.poll_interval - seconds) < 0.01)
            act.setData(seconds)
            act.triggered.connect(self._on_interval_triggered)
            group.addAction(act)
            interval.addAction(act)
        menus["View"].addSeparator()
        act_jobs = self.jobs_dock.toggleViewAction()
        act_jobs.setText("&Jobs (advanced execution)")
        act_jobs.setStatusTip("The jobs started from this window and their output")
        menus["View"].addAction(act_jobs)
        menus["Config"].addAction(self.act_all_nodes)
        menus["Config"].addAction(self.act_connection)
        menus["Config"].addAction(self.act_ssh)
        menus["Config"].addAction(self.act_save)
        for key, (menu, _label, _subject) in TOOLS.items():
            if key != "run_prog":
                menus[menu].addAction(self.tools[key])
        col = menus["Collector"]
        for act in (self.act_collector_start, self.act_collector_stop, self.act_collector_checkpoint,
                    self.act_collector_rotate):  # fmt: skip
            col.addAction(act)
        col.addSeparator()
        col.addAction(self.act_collector_status)
        self.menu_collector_node = col.addMenu("Collector &node")
        self.menu_collector_node.setToolTipsVisible(True)
        self.menu_collector_node.aboutToShow.connect(self._fill_collector_node_menu)
        col.addAction(self.act_collector_settings)
        menus["Help"].addAction(self.act_help)
        menus["Help"].addAction(self.act_about)
        self.menus = menus

    def _build_toolbar(self) -> None:
        tb = QToolBar("main", self)
        tb.setObjectName("main-toolbar")
        tb.setMovable(False)
        tb.addAction(self.tools["run_prog"])
        tb.addAction(self.act_refresh)
        tb.addAction(self.act_all_nodes)
        tb.addSeparator()
        tb.addAction(self.act_collector_start)
        tb.addAction(self.act_collector_stop)
        self.collector_status = QLabel(" openMosixcollector status: not monitored ")
        self.collector_status.setObjectName("collector-status")
        self.collector_status.setTextFormat(Qt.TextFormat.PlainText)
        tb.addWidget(self.collector_status)
        self.addToolBar(tb)
        self.toolbar = tb

    def open_history_program(self, name: str) -> None:
        """Start the analyzer or history browser on the collector's history directory.

        The programs read files here. A collector on a node reached over SSH: its history is
        first copied into a local cache by one ``tar`` on the node link's connection (ACTION
        lane, ``omview.gui.history_fetch``), then the program opens the copy.
        """
        logdir = self.collector.config.logdir or records.default_logdir()
        node = self.collector.node
        if not self.session.links.over_ssh(node):
            error = launch(name, [logdir])
            self.statusBar().showMessage(error or f"started {name} on {logdir}", 15000)
            return
        dest = cache_dir(node, logdir)
        self.statusBar().showMessage(f"copying the history {logdir} from {node}…")

        def fetch(ctx: LaneContext) -> tuple[str, Path, int]:
            return name, dest, fetch_history(ctx.runner(), logdir, dest)

        self.session.links.submit(node, Lane.ACTION, "history", fetch, self._deliver_history, urgent=True)

    @Slot(object)
    def _on_history_fetched(self, done: TaskDone) -> None:
        if done.error is not None:
            self.statusBar().showMessage(f"history from {done.address}: {done.error.describe()}", 15000)
            return
        name, dest, count = done.value
        error = launch(name, [str(dest)])
        self.statusBar().showMessage(error or f"started {name} on {dest} ({count} files copied from {done.address})",
                                     15000)  # fmt: skip

    @Slot(int, object)
    def _on_procs_dropped(self, row: int, drag: DraggedProcs) -> None:
        """Processes dropped on a node row: migrate them there, through the links of their node."""
        node = self.model.node_at(row).gossip
        self.statusBar().showMessage(f"migrating {' '.join(map(str, drag.pids))} to node {node.id}…")
        self.session.links.submit(drag.address, Lane.ACTION, "migrate", migrate_task(drag.pids, str(node.id)),
                                  self._deliver_migrated, urgent=True)  # fmt: skip

    @Slot(object)
    def _on_migrated(self, done: TaskDone) -> None:
        texts = [f"migration from {done.address}: {done.error.describe()}"] if done.error is not None else [
            r.text() for r in done.value]  # fmt: skip
        self.migrations += texts
        self.statusBar().showMessage("; ".join(texts), 15000)

    def set_launcher(self, launcher: ProgramLauncher) -> None:
        """How sibling programs are started (the process box): enables their actions."""
        self.launcher = launcher
        self.register_tool("procs", lambda: self.open_procs(None),
                           "The process box (openmosixprocs) of the entry node")  # fmt: skip
        self.register_tool("migmon", self.open_migmon,
                           "The migration monitor (openmosixmigmon): drag processes onto nodes")  # fmt: skip

    def open_migmon(self) -> bool:
        """Start openmosixmigmon (its main penguin: the entry node) as its own process."""
        launcher = self.launcher
        if launcher is None:
            return False
        ok = launcher.open_migmon()
        self.statusBar().showMessage("migration monitor started" if ok else "cannot start openmosixmigmon", 8000)
        return ok

    def open_procs(self, address: str | None) -> bool:
        """Start openmosixprocs for the node at ``address`` (None: the entry node) as its own process."""
        launcher = self.launcher
        if launcher is None:
            return False
        node = next((n.id for n in self.session.table if n.address == address), None) if address else None
        if node is None and address not in (None, self.session.entry):
            self.statusBar().showMessage(f"{address} is not in the cluster table yet", 8000)
            return False
        ok = launcher.open_procs(node)
        what = f"node {node}" if node is not None else "the entry node"
        self.statusBar().showMessage(f"process box of {what} started" if ok else
                                     f"cannot start openmosixprocs for {what}", 8000)  # fmt: skip
        return ok

    def register_tool(self, key: str, opener: Callable[[], object], tooltip: str = "") -> None:
        """Plug in a sub-window or collector action: enables its menu/toolbar action."""
        act = self.tools[key]
        act.triggered.connect(opener)
        act.setToolTip(tooltip)
        act.setStatusTip(tooltip)
        act.setEnabled(True)

    # -- the collector (GUI thread) --

    def _update_collector_status(self) -> None:
        st = self.collector.status
        self.collector_status.setText(f" openMosixcollector on {st.node}: {st.text()} ")
        colour = {CollectorState.RUNNING: "#1b6e2a", CollectorState.UNREACHABLE: "#b41e14",
                  CollectorState.ERROR: "#9a5a00"}.get(st.state, "")  # fmt: skip
        self.collector_status.setStyleSheet(f"color: {colour};" if colour else "")
        tip = [f"openmosixcollector on {st.node} (Collector > Collector node changes it)"]
        if st.state is CollectorState.RUNNING and st.logdir:
            tip.append(f"writing to {st.logdir}")
        elif st.detail and st.state is not CollectorState.RUNNING:
            tip.append(st.detail)
        if st.advice:
            tip.append(st.advice)
        if st.checked:
            tip.append("checked at " + time.strftime("%H:%M:%S", time.localtime(st.checked)))
        self.collector_status.setToolTip("\n".join(tip))
        self._update_collector_actions()

    def _update_collector_actions(self) -> None:
        state = self.collector.status.state
        idle = not self.collector.busy
        running = state is CollectorState.RUNNING
        unsure = state in (CollectorState.UNKNOWN, CollectorState.ERROR)
        self.act_collector_start.setEnabled(idle and (state is CollectorState.NOT_RUNNING or unsure))
        for act in (self.act_collector_stop, self.act_collector_checkpoint, self.act_collector_rotate):
            act.setEnabled(idle and (running or unsure))

    @Slot(object)
    def _on_collector_status(self, _status: CollectorStatus) -> None:
        self._update_collector_status()

    @Slot(bool)
    def _on_collector_busy(self, busy: bool) -> None:
        if busy:
            self.statusBar().showMessage(f"asking the collector on {self.collector.node}…")
        self._update_collector_actions()

    @Slot(object)
    def _on_collector_result(self, result: CommandResult) -> None:
        self.statusBar().showMessage(result.summary(), 15000)
        details = "\n".join([
            f"command: {' '.join(result.argv) or '(not run)'}",
            f"node: {result.node}, reached as {result.where or '?'}",
            f"exit status: {result.status if result.status is not None else 'not run'}",
            f"took {result.elapsed:.1f} s", "", "output:", result.stdout.strip(), "", "errors:", result.stderr.strip(),
        ])  # fmt: skip
        if result.action is Action.STATUS:
            st = self.collector.status
            if st.state in (CollectorState.RUNNING, CollectorState.NOT_RUNNING):
                errors.show_info(self, "Collector status", f"openmosixcollector on {result.node}: {st.text()}.",
                                 details)  # fmt: skip
                return
        elif result.ok:
            return
        what = {Action.START: "start", Action.STOP: "stop", Action.CHECKPOINT: "write a checkpoint with",
                Action.ROTATE: "rotate the history of", Action.STATUS: "ask the status of"}[result.action]  # fmt: skip
        text = f"Could not {what} the collector on {result.node}: {result.first_line()}"
        if result.advice:
            text += f"\n\nWhat to do: {result.advice}"
        errors.show_error(self, "Collector", text, details)

    @Slot()
    def ask_checkpoint(self) -> None:
        """Collector > Write checkpoint…: ask for a label, then run openmosixcollector -n LABEL."""
        label = errors.ask_text(self, "Write checkpoint",
                                "Label for the checkpoint (a blue line in the analyzer; may be empty):")  # fmt: skip
        if label is None:
            return
        label = label.strip()
        problem = check_label(label)
        if problem:
            errors.show_error(self, "Collector", f"Cannot use this checkpoint label: {problem}.")
            return
        self.collector.checkpoint(label)

    @Slot()
    def _fill_collector_node_menu(self) -> None:
        menu = self.menu_collector_node
        menu.clear()
        group = QActionGroup(menu)
        choices = [("", f"the entry node ({self.session.entry})")]
        choices += [(a, a) for a in self.session.addresses() if a != self.session.entry]
        if self.collector.config.node and all(a != self.collector.config.node for a, _ in choices):
            choices.append((self.collector.config.node, self.collector.config.node))
        for address, label in choices:
            act = QAction(label, menu, checkable=True, checked=address == self.collector.config.node)
            act.setData(address)
            act.triggered.connect(self._on_collector_node_triggered)
            group.addAction(act)
            menu.addAction(act)

    @Slot()
    def _on_collector_node_triggered(self) -> None:
        act = self.sender()
        if isinstance(act, QAction):
            self.set_collector_node(str(act.data() or ""))

    def set_collector_node(self, address: str) -> None:
        """Run (and watch) the collector on ``address``; "" means the entry node. Saved at once."""
        self.collector.set_config(replace(self.collector.config, node=address))
        save_config(self.store, self.collector.config)
        self._update_collector_status()
        self.statusBar().showMessage(f"the collector is now watched on {self.collector.node}", 10000)

    @Slot()
    def edit_collector_settings(self) -> None:
        config = CollectorSettingsDialog.ask(self, self.collector.config, self.session.entry, self.session.addresses())
        if config is not None:
            self.collector.set_config(config)
            save_config(self.store, config)
            self._update_collector_status()

    # -- session signals (GUI thread) --

    @Slot(object)
    def _on_session_cluster_updated(self, table: tuple[NodeInfo, ...]) -> None:
        joined = [info.address for info in table if self.model.row_of(info.address) is None]
        self.model.set_table(table)
        # a new row may belong to a node whose connection state changed before the row existed
        for address in joined:
            self.model.update_link(address, self.session.link(address))
        if self._entry_link.status is not LinkStatus.UP:
            self._entry_link = LinkState(LinkStatus.UP)
            self.statusBar().showMessage(f"connected to {self.session.entry}: {len(table)} nodes", 5000)
            log.info("connected to entry node %s: %d nodes, %d rows", self.session.entry, len(table),
                     self.model.rowCount())  # fmt: skip
        self._update_entry_text()

    @Slot(object)
    def _on_session_entry_failed(self, link: LinkState) -> None:
        changed = link.status is not self._entry_link.status
        self._entry_link = link
        self._update_entry_text()
        if changed:
            self.statusBar().showMessage(f"entry node {self.session.entry}: {link.describe()}")

    @Slot(str, object)
    def _on_session_node_info_updated(self, address: str, info: NodeInfo) -> None:
        self.model.update_direct(address, info)

    @Slot(str, object)
    def _on_session_link_changed(self, address: str, link: LinkState) -> None:
        self.model.update_link(address, link)

    @Slot(str, object)
    def _on_session_speed_set(self, _address: str, report: SpeedReport) -> None:
        self.model.apply_speed_report(report)

    @Slot(str)
    def _on_session_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 15000)

    @Slot(bool)
    def _on_session_direct_paused(self, paused: bool) -> None:
        # show the state without it counting as the user's choice (which would ask all nodes again)
        blocked = self.act_direct.blockSignals(True)
        self.act_direct.setChecked(not paused)
        self.act_direct.blockSignals(blocked)

    @Slot(str, object)
    def _on_session_connection_tested(self, address: str, report: ConnectionReport) -> None:
        if address in self._tests_requested:
            self._tests_requested.discard(address)
            errors.show_report(self, f"Connection test: {address}", report.text(), report.ok)

    @Slot(str, object)
    def _on_session_host_key_fetched(self, address: str, result: HostKeyOffer | LinkState) -> None:
        if isinstance(result, LinkState):
            errors.show_error(self, "Host key", f"Cannot read the host key of {address}: {result.describe()}")
            return
        if errors.ask_accept_host_key(self, address, result.key_type, result.fingerprint):
            self.session.accept_host_key(result)
        else:
            self.statusBar().showMessage(f"host key of {address} not accepted", 10000)

    @Slot(str, object)
    def _on_session_host_key_accepted(self, address: str, error: LinkState | None) -> None:
        if error is not None:
            errors.show_error(self, "Host key", f"Could not add the key of {address}: {error.describe()}")

    @Slot(str, int)
    def _on_model_speed_requested(self, address: str, speed: int) -> None:
        self.statusBar().showMessage(f"setting speed to {speed} on {address}…")
        self.session.set_speed(address, speed)

    @Slot()
    def _on_totals_timer_timeout(self) -> None:
        # a node we cannot reach counts as down even before the entry node's gossip notices
        infos = [r.info if r.lamp != "down" else replace(r.info, status="down") for r in self.model.rows()]
        self.header.set_totals(totals(infos))
        self._update_entry_text()

    def _update_entry_text(self) -> None:
        rows = self.model.rows()
        up = sum(1 for r in rows if r.lamp == "up")
        state = "connected" if self._entry_link.status is LinkStatus.UP else self._entry_link.describe()
        self.header.set_entry_text(
            f"entry node {self.session.entry} ({state}) · {len(rows)} nodes, {up} reachable"
        )

    # -- user actions --

    @Slot(str)
    def open_node_dialog(self, address: str) -> NodeConfigDialog:
        dlg = self.dialogs.get(address)
        if dlg is None or not dlg.isVisible():
            dlg = NodeConfigDialog(self.session, [address], self, self.agents)
            dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            dlg.destroyed.connect(self._on_dialog_destroyed)
            if self.launcher is not None:
                dlg.set_procs_opener(lambda: self.open_procs(address))
            self.dialogs[address] = dlg
        dlg.show()
        dlg.raise_()
        return dlg

    @Slot()
    def open_all_nodes_dialog(self) -> NodeConfigDialog | None:
        addresses = [r.gossip.address for r in self.model.rows()]
        if not addresses:
            self.statusBar().showMessage("no nodes known yet", 5000)
            return None
        dlg = NodeConfigDialog(self.session, addresses, self, self.agents)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        return dlg

    @Slot()
    def _on_dialog_destroyed(self) -> None:
        self.dialogs = {a: d for a, d in self.dialogs.items() if _alive(d)}

    @Slot(QModelIndex)
    def _on_view_activated(self, index: QModelIndex) -> None:
        if index.column() == COL_NODE:
            self.view.click_node(index.row())

    @Slot(QPoint)
    def _on_view_context_menu(self, pos: QPoint) -> None:
        index = self.view.indexAt(pos)
        if not index.isValid():
            return
        row = self.model.node_at(index.row())
        address = row.gossip.address
        menu = QMenu(self)
        menu.addAction(f"Configure {address}…", lambda: self.open_node_dialog(address))
        menu.addAction("Test connection", lambda: self.test_connection(address))
        procs_act = menu.addAction("Process box…", lambda: self.open_procs(address))
        procs_act.setEnabled(self.launcher is not None)
        key_act = menu.addAction("Accept host key…", lambda: self.session.fetch_host_key(address))
        key_act.setEnabled(self.session.supports_host_keys() and row.link.status is LinkStatus.HOST_KEY_UNKNOWN)
        menu.exec(self.view.viewport().mapToGlobal(pos))

    def test_connection(self, address: str) -> None:
        self._tests_requested.add(address)
        self.statusBar().showMessage(f"testing the connection to {address}…")
        self.session.test_connection(address)

    @Slot()
    def _on_test_entry(self) -> None:
        self.test_connection(self.session.entry)

    @Slot()
    def _on_interval_triggered(self) -> None:
        act = self.sender()
        if isinstance(act, QAction):
            self.session.set_poll_interval(float(act.data()))
            self.settings = self.settings.with_overrides(poll_interval=float(act.data()))

    @Slot()
    def edit_connection_settings(self) -> None:
        dlg = ConnectionDialog(self.settings, self)
        if dlg.exec() and self.store is not None:
            self.settings = dlg.settings()
            save_settings(self.store, self.settings)
            self.statusBar().showMessage(f"connection settings saved to {self.store.fileName()}", 10000)

    @Slot()
    def save_configuration(self) -> None:
        if self.store is None:
            return
        self.settings = self.settings.with_overrides(direct_poll=self.session.direct_poll)
        save_settings(self.store, self.settings)
        self.save_geometry()
        self.statusBar().showMessage(f"configuration saved to {self.store.fileName()}", 10000)

    @Slot()
    def _on_about(self) -> AboutDialog:
        """Help > About: versions here, and each node's agent and CRIU (one node.info per node)."""
        return open_about(self.session.links, self.session.table, self)

    @Slot()
    def open_help(self) -> HelpWindow:
        """Help > Documentation (F1): the shipped docs in one help window, reused."""
        if self.help_window is None:
            self.help_window = HelpWindow(self)
        self.help_window.show()
        self.help_window.raise_()
        return self.help_window

    # -- advanced execution --

    @Slot()
    def open_run_dialog(self) -> RunDialog:
        """File > Run program / the toolbar's run-prog: the advanced-execution dialog (one, reused)."""
        if self.run_dialog is None or not _alive(self.run_dialog):
            dlg = RunDialog(self.jobs, self.session.table, self.session.entry, self)
            dlg.sig_started.connect(self._on_jobs_started)
            self.session.sig_cluster_updated.connect(dlg.set_nodes)
            self.run_dialog = dlg
        self.run_dialog.show()
        self.run_dialog.raise_()
        return self.run_dialog

    @Slot(object)
    def _on_jobs_started(self, keys: list[int]) -> None:
        if not self.jobs_dock.isVisible():
            self.jobs_dock.show()
            # room for the jobs and their output, the node table keeps the rest
            self.resizeDocks([self.jobs_dock], [max(260, self.height() // 2)], Qt.Orientation.Vertical)
        if keys:
            self.jobs_view.select(keys[-1])

    def _close_jobs(self) -> bool:
        """Jobs started here run as long as their deputies (mosrun in this window's channels): ask
        before ending them. False when the admin keeps the window open."""
        running = self.jobs.running()
        if running:
            if not errors.ask_yes_no(
                self, "Running jobs",
                f"{len(running)} job(s) started from this window still run. Their deputies (mosrun) run in "
                "this window's connections, and a job ends when its deputy ends, as in openMosix.\n\n"
                "End them and close openmosixview?",
            ):  # fmt: skip
                return False
            self.statusBar().showMessage(f"ending {len(running)} job(s)…")
        left = self.jobs.shutdown(stop_jobs=True, timeout=15.0)
        if left:
            log.warning("jobs %s did not confirm their end; their channels are closed now", left)
        return True

    # -- geometry --

    def restore_geometry(self) -> None:
        if self.store is None:
            return
        geometry = self.store.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        state = self.store.value("window/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)

    def save_geometry(self) -> None:
        if self.store is None:
            return
        self.store.setValue("window/geometry", self.saveGeometry())
        self.store.setValue("window/state", self.saveState())
        self.store.sync()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt override)
        super().showEvent(event)
        if not self._collector_watched:
            self._collector_watched = True
            log.info("window shown")
            self.collector.start_monitoring()

    def quit_on_signal(self, signum: int) -> None:
        """SIGTERM, SIGINT or SIGHUP: close without asking (running jobs are ended), then quit."""
        log.info("%s: closing openmosixview", signal.Signals(signum).name)
        self._asked_to_quit = True
        self.close()
        app = QApplication.instance()
        if app is not None:
            app.quit()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        if self._asked_to_quit:
            # nobody to ask: end the jobs as "yes" would, within a time a service manager allows
            self.jobs.shutdown(stop_jobs=True, timeout=5.0)
        elif not self._close_jobs():
            event.ignore()
            return
        self.save_geometry()
        self.collector.shutdown()
        super().closeEvent(event)


def _alive(widget: QWidget) -> bool:
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True
