"""openmosixmigmon window: the entry node's processes as squares around the penguins of the cluster,
moved by the agents' migration events; drag a square onto a penguin to migrate it there, double-click
one to send it home.

All remote work goes through omview/gui/links.py: the process list is polled in the entry node's POLL
lane, migrations run in its ACTION lane (the same agent op and task as the process box), and the
migration events of the entry node and of every node one of its processes runs on stream in those
nodes' STREAM lanes (omview/gui/events.py). Results come back as queued signals.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QComboBox, QLabel, QMainWindow, QToolBar, QWidget

from omview.gui.events import EventBatch, event_stream
from omview.gui.links import Lane, LaneContext, TaskDone, deliverer
from omview.gui.procdrag import MigrationResult, migrate_task
from omview.gui.proclist import ProcList, list_procs
from omview.gui.session import ClusterSession
from omview.migmon.scene import MigScene
from omview.migmon.state import MigState, Move, Scope
from omview.migmon.view import MigView
from omview.model.client import AgentClient
from omview.model.cluster import NodeInfo

log = logging.getLogger(__name__)

#: the events migmon follows (names or prefixes; newer agents' phase events are ignored)
TOPICS = ("migration",)


def _poll(ctx: LaneContext) -> tuple[ProcList, int]:
    """The entry node's processes and the uid its agent knows us as (whose processes are "mine")."""
    procs = list_procs()(ctx)
    return procs, int(ctx.client().hello.get("uid", 0))


def _history(client: AgentClient) -> Any:
    return client.call("migration.history", limit=200)


class MigmonWindow(QMainWindow):
    """openmosixmigmon on ``session`` (its entry node is the main penguin)."""

    _sig_done = Signal(object)  # TaskDone from the POLL and ACTION lanes
    _sig_events = Signal(object)  # EventBatch from the STREAM lanes

    def __init__(self, session: ClusterSession, *, poll_interval: float | None = None,
                 parent: QWidget | None = None) -> None:  # fmt: skip
        super().__init__(parent)
        self.session = session
        self.state = MigState()
        self.updates = 0  # process lists applied (tests and --screenshot wait on it)
        self.messages: list[str] = []  # every status-bar message (tests read it)
        self.animations: list[Move] = []  # every move animated, with its cause
        self.events_seen = 0
        self._streams: dict[str, threading.Event] = {}
        self._subscribed: set[str] = set()
        self._requests: dict[int, tuple[int, str]] = {}  # ticket -> (key, target)
        self._sent: dict[int, float] = {}  # poll ticket -> when it was sent
        self._deliver = deliverer(self, "_sig_done")
        self._deliver_events = deliverer(self, "_sig_events")
        self._sig_done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        self._sig_events.connect(self._on_events, Qt.ConnectionType.QueuedConnection)
        self.scene = MigScene(self)
        self.view = MigView(self.scene, self)
        self.view.sig_dropped.connect(self._on_dropped)
        self.view.sig_home_requested.connect(self._on_home_requested)
        self.setCentralWidget(self.view)
        self._build_toolbar()
        self.summary = QLabel("")
        self.statusBar().addPermanentWidget(self.summary)
        session.sig_cluster_updated.connect(self._on_cluster)
        session.sig_entry_failed.connect(lambda link: self._say(f"{session.entry}: {link.describe()}"))
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.refresh_now)
        self._timer.setInterval(int(max(0.2, poll_interval or session.poll_interval or 1.0) * 1000))
        self.setWindowTitle(f"openmosixmigmon - {session.entry}")
        self.resize(900, 820)

    def _build_toolbar(self) -> None:
        bar = QToolBar("migmon", self)
        bar.setObjectName("migmon-toolbar")
        bar.setMovable(False)
        bar.addWidget(QLabel(" show: "))
        self.scope_box = QComboBox(self)
        for scope in Scope:
            self.scope_box.addItem(scope.value, scope)
        self.scope_box.setCurrentIndex(list(Scope).index(self.state.scope))
        self.scope_box.setToolTip("Which processes of the main node are drawn: your own, every one that can "
                                  "migrate (and every migrated one), or all")  # fmt: skip
        self.scope_box.currentIndexChanged.connect(self._on_scope_changed)
        bar.addWidget(self.scope_box)
        legend = QLabel("   ■ at home   <span style='color:#23a046'>■</span> migrated   "
                        "<span style='color:#8a8f96'>■</span> cannot move   "
                        "<span style='color:#e8960c'>■</span> moving ")  # fmt: skip
        legend.setTextFormat(Qt.TextFormat.RichText)
        legend.setToolTip("Drag a square onto a penguin to migrate the process there; double-click a green "
                          "one to send it home. A green square's line leads to its home node.")  # fmt: skip
        bar.addWidget(legend)
        self.addToolBar(bar)

    # -- polling and streams (GUI thread) --
    def start(self) -> None:
        self.session.start()
        self._ensure_streams()
        self.refresh_now()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        for stop in self._streams.values():
            stop.set()

    @Slot()
    def refresh_now(self) -> None:
        ticket = self.session.links.poll(self.session.entry, "procs", _poll, self._deliver)
        if ticket is not None:
            self._sent[ticket] = time.monotonic()

    def _address_of(self, node: int) -> str | None:
        return next((n.address for n in self.session.table if n.id == node), None)

    def _ensure_streams(self) -> None:
        """Events of the entry node and of every node a square runs on (where its next move starts)."""
        wanted = {self.session.entry}
        for node in self.state.nodes_in_use():
            address = self._address_of(node)
            if address is not None:
                wanted.add(address)
        table = {n.address for n in self.session.table}
        for address in [a for a in self._streams if a not in table and a != self.session.entry and table]:
            self._streams.pop(address).set()  # the node left the cluster: its stream ends
            self._subscribed.discard(address)
        for address in sorted(wanted - self._streams.keys()):
            stop = self._streams[address] = threading.Event()
            self.session.links.stream(address, "events", event_stream(TOPICS, self._deliver_events, stop, _history))

    @property
    def subscribed(self) -> set[str]:
        """Addresses whose agents' migration events arrive now."""
        return set(self._subscribed)

    # -- answers (GUI thread) --
    @Slot(object)
    def _on_cluster(self, table: tuple[NodeInfo, ...]) -> None:
        entry = self.state.entry or next((n.id for n in table if n.address == self.session.entry), 0)
        if entry:
            self.scene.set_nodes(table, entry)
            self._update_summary()
        self._ensure_streams()

    @Slot(object)
    def _on_done(self, done: TaskDone) -> None:
        if done.kind == "procs":
            self._on_procs(done)
        elif done.kind == "migrate":
            self._on_migrated(done)

    def _on_procs(self, done: TaskDone) -> None:
        sent = self._sent.pop(done.ticket, time.monotonic())
        if done.error is not None:
            self._say(f"{done.address}: {done.error.describe()}")
            return
        procs, uid = done.value
        assert isinstance(procs, ProcList)
        first = self.state.entry != procs.node
        self.state.uid = uid
        moves, _appeared, _gone = self.state.apply_list(procs.node, procs.procs, sent)
        if first and self.session.table:
            self.scene.set_nodes(self.session.table, procs.node)
        for move in moves:  # before the full pass: a flight starts where the square was drawn
            if move.key not in self.scene.held:
                self._animate(move)
        self.scene.place(self.state.marks, restyled=self.state.restyled)
        self.updates += 1
        self._ensure_streams()
        self._update_summary()

    def _on_migrated(self, done: TaskDone) -> None:
        key, target = self._requests.pop(done.ticket, (0, ""))
        if done.error is not None:
            self._refused(key, f"process {key} not migrated to {target}: {done.error.describe()}")
            return
        for res in done.value:
            assert isinstance(res, MigrationResult)
            if res.error:
                self._refused(key, res.text())
                continue
            rec = res.record or {}
            mark = self.state.marks.get(key)
            if mark is not None:
                mark.moving_to = None
                try:
                    where = int(rec.get("target", mark.where))
                except (TypeError, ValueError):
                    where = mark.where
                if isinstance(rec.get("frozen_s"), (int, float)):
                    mark.frozen_s = float(rec["frozen_s"])
                if where != mark.where:  # the event has not come (yet): the answer moves it
                    move = Move(key, mark.where, where, "reply")
                    mark.where, mark.changed_at = where, time.monotonic()
                    self._animate(move)
                elif key in self.scene.held:
                    self.scene.fly(key, where, where)
                self.scene.refresh({key})
            self._say(res.text())
        self._update_summary()

    def _refused(self, key: int, text: str) -> None:
        """A move the agent refused: the square snaps back to its ring, the status bar says why."""
        mark = self.state.marks.get(key)
        if mark is not None:
            mark.moving_to = None
            if key in self.scene.held:
                self.scene.fly(key, mark.where, mark.where)
            self.scene.refresh({key})
        else:
            self.scene.release(key)
        self._say(text)

    @Slot(object)
    def _on_events(self, batch: EventBatch) -> None:
        if batch.error is not None:
            if batch.address in self._subscribed:  # (a node never reached says so once a retry: quiet)
                self._subscribed.discard(batch.address)
                self._say(f"migration events of {batch.address} lost ({batch.error.describe()}); retrying")
                self._update_summary()
            return
        if batch.subscribed:
            self._subscribed.add(batch.address)
            self.state.apply_history(batch.snapshot)
            self._update_summary()
        changed: set[int] = set()
        for name, data in batch.events:
            self.events_seen += 1
            mark, move = self.state.apply_event(name, data)
            if mark is None:
                continue
            changed.add(mark.key)  # a failed move of a dropped square: the agent's answer snaps it back
            if move is not None:
                self._animate(move)
        if changed:  # (the summary's counts follow with the next poll: a sum over every square)
            self.scene.refresh(changed)
            self._ensure_streams()

    def _animate(self, move: Move) -> None:
        self.animations.append(move)
        del self.animations[:-1000]
        self.scene.fly(move.key, move.source, move.target)

    # -- requests (GUI thread) --
    @Slot(int, int)
    def _on_dropped(self, key: int, node: int) -> None:
        mark = self.state.marks.get(key)
        if mark is None:
            self.scene.release(key)
            return
        if node < 0 or node == mark.where:
            self.scene.fly(key, mark.where, mark.where)  # back to its place: nothing asked
            if node == mark.where:
                self._say(f"process {key} already runs on node {node}")
            return
        pos = self.scene.square_pos(key)
        if pos is not None:
            self.scene.hold(key, pos, dashed=True)
        self.migrate(key, str(node))

    @Slot(int)
    def _on_home_requested(self, key: int) -> None:
        mark = self.state.marks.get(key)
        if mark is None:
            return
        if not mark.migrated:
            self._say(f"process {key} runs on its home node {mark.home}")
            return
        mark.moving_to = mark.home
        self.scene.refresh({key})
        self.migrate(key, "home")

    def migrate(self, key: int, target: str) -> int:
        """Migrate the square ``key`` to ``target`` (a node ID or "home") through the entry node's agent."""
        what = f"node {target}" if target.isdigit() else target
        self._say(f"migrating {key} to {what}…")
        ticket = self.session.links.submit(self.session.entry, Lane.ACTION, "migrate", migrate_task((key,), target),
                                           self._deliver, urgent=True)  # fmt: skip
        self._requests[ticket] = (key, target)
        return ticket

    @Slot(int)
    def _on_scope_changed(self, index: int) -> None:
        try:  # (Qt hands the item's data back as a plain str)
            scope = Scope(str(self.scope_box.itemData(index)))
        except ValueError:
            return
        self.state.set_scope(scope)
        self.scene.place(self.state.marks)
        self._update_summary()

    # -- status --
    def _say(self, text: str) -> None:
        self.messages.append(text)
        del self.messages[:-200]
        self.statusBar().showMessage(text, 15000)

    def _update_summary(self) -> None:
        marks = self.state.marks.values()
        migrated = sum(m.migrated for m in marks)
        live = len(self._subscribed)
        self.summary.setText(f"{len(self.state.marks)} processes, {migrated} migrated  ·  "
                             f"{len(self.scene.nodes)} nodes  ·  events from {live} of {len(self._streams)} agents ")  # fmt: skip

    def closeEvent(self, event: QCloseEvent) -> None:
        self.stop()
        super().closeEvent(event)
