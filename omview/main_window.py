"""L6 main window of openmosixview: cluster header, node table, menus, toolbar and status bar.

The window only talks to ``ClusterSession`` (never to a client or transport) and only reacts to
its GUI-thread signals. Sub-windows that are separate issues (process box, analyzer, history,
migmon, advanced execution, collector control) are plugged in with ``register_tool``; until then
their actions are present but disabled, with a tooltip saying so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from PySide6.QtCore import QByteArray, QModelIndex, QPoint, QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QLabel, QMainWindow, QMenu, QStyle, QToolBar, QVBoxLayout, QWidget

from omview import __version__
from omview.gui import errors
from omview.gui.cluster_header import ClusterHeader
from omview.gui.connect import HostKeyOffer
from omview.gui.connection_dialog import ConnectionDialog
from omview.gui.node_dialog import NodeConfigDialog
from omview.gui.node_table import COL_NODE, NodeTableModel, NodeTableView, totals
from omview.gui.session import ClusterSession, ConnectionReport, LinkState, LinkStatus, SpeedReport
from omview.gui.settings import GuiSettings
from omview.gui.settings import save as save_settings
from omview.model.cluster import NodeInfo

log = logging.getLogger(__name__)

NOT_YET = "{what} is a separate part of omview that is not built yet"

#: Tools that plug into the main window later: key -> (menu, label, tooltip subject).
TOOLS = {
    "procs": ("View", "&Process box…", "The process box (openMosixprocs)"),
    "migmon": ("View", "&Migration monitor…", "The migration monitor (openMosixmigmon)"),
    "collector_start": ("Collector", "&Start collector", "Collector control"),
    "collector_stop": ("Collector", "S&top collector", "Collector control"),
    "collector_checkpoint": ("Collector", "Write &checkpoint", "Collector control"),
    "collector_rotate": ("Collector", "&Rotate logs", "Collector control"),
    "analyzer": ("Analyzer", "Open &analyzer…", "The analyzer (openMosixanalyzer)"),
    "history": ("Analyzer", "Open &history…", "The process history (openMosixhistory)"),
    "run_prog": ("File", "&Run program (advanced execution)…", "Advanced execution"),
}


class MainWindow(QMainWindow):
    """openmosixview: one row per node plus the cluster totals."""

    def __init__(
        self,
        session: ClusterSession,
        settings: GuiSettings,
        store: QSettings | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.settings = settings
        self.store = store
        self.dialogs: dict[str, NodeConfigDialog] = {}
        self._tests_requested: set[str] = set()
        self._entry_link = LinkState(LinkStatus.UNKNOWN)
        self.setWindowTitle("openmosixview")

        self.model = NodeTableModel(self)
        self.view = NodeTableView(self)
        self.view.setModel(self.model)
        self.header = ClusterHeader(self)
        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 0)
        layout.setSpacing(6)
        layout.addWidget(self.header)
        layout.addWidget(self.view, 1)
        self.setCentralWidget(central)

        self.tools: dict[str, QAction] = {}
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self.statusBar().showMessage(f"connecting to entry node {session.entry}…")

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
        self._update_entry_text()
        self.resize(1080, 560)
        self.restore_geometry()

    # -- construction --

    def _build_actions(self) -> None:
        style = self.style()
        self.act_quit = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit, triggered=self.close)
        self.act_refresh = QAction(
            style.standardIcon(QStyle.StandardPixmap.SP_BrowserReload), "&Refresh now", self,
            shortcut=QKeySequence.StandardKey.Refresh, triggered=self.session.refresh_now,
        )  # fmt: skip
        self.act_direct = QAction("Ask every node &directly", self, checkable=True, checked=self.session.direct_poll)
        self.act_direct.setToolTip("Poll each node's own agent too, so each row shows its own connection state")
        self.act_direct.toggled.connect(self.session.set_direct_poll)
        self.act_all_nodes = QAction(
            style.standardIcon(QStyle.StandardPixmap.SP_ComputerIcon), "&All nodes…", self,
            triggered=self.open_all_nodes_dialog,
        )  # fmt: skip
        self.act_test_entry = QAction("&Test connection to the entry node", self, triggered=self._on_test_entry)
        self.act_connection = QAction("&Connection settings…", self, triggered=self.edit_connection_settings)
        self.act_save = QAction("&Save configuration", self, shortcut=QKeySequence.StandardKey.Save,
                                triggered=self.save_configuration)
        self.act_ssh = QAction("Use &SSH", self, checkable=True, checked=True, enabled=False)
        self.act_ssh.setToolTip("openmosixview always uses SSH; rsh is not supported")
        self.act_about = QAction("&About openmosixview", self, triggered=self._on_about)
        for key, (_menu, label, subject) in TOOLS.items():
            act = QAction(label, self, enabled=False)
            act.setToolTip(NOT_YET.format(what=subject))
            act.setStatusTip(NOT_YET.format(what=subject))
            self.tools[key] = act
        self.tools["run_prog"].setIcon(style.standardIcon(QStyle.StandardPixmap.SP_DialogOpenButton))

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
        menus["Config"].addAction(self.act_all_nodes)
        menus["Config"].addAction(self.act_connection)
        menus["Config"].addAction(self.act_ssh)
        menus["Config"].addAction(self.act_save)
        for key, (menu, _label, _subject) in TOOLS.items():
            if key != "run_prog":
                menus[menu].addAction(self.tools[key])
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
        self.collector_status = QLabel(" openMosixcollector status: not monitored ")
        self.collector_status.setEnabled(False)
        self.collector_status.setToolTip(NOT_YET.format(what="Collector control"))
        tb.addWidget(self.collector_status)
        self.addToolBar(tb)
        self.toolbar = tb

    def register_tool(self, key: str, opener: Callable[[], None], tooltip: str = "") -> None:
        """Plug in a sub-window or collector action: enables its menu/toolbar action."""
        act = self.tools[key]
        act.triggered.connect(opener)
        act.setToolTip(tooltip)
        act.setStatusTip(tooltip)
        act.setEnabled(True)

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
            dlg = NodeConfigDialog(self.session, [address], self)
            dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            dlg.destroyed.connect(self._on_dialog_destroyed)
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
        dlg = NodeConfigDialog(self.session, addresses, self)
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
    def _on_about(self) -> None:
        errors.show_info(
            self,
            "About openmosixview",
            f"openmosixview {__version__} (omview)\n\nWatch and steer a process-migration cluster: "
            "per-node speed, load and memory, node switches and cluster-wide settings, over SSH.",
        )

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

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        self.save_geometry()
        super().closeEvent(event)


def _alive(widget: QWidget) -> bool:
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True
