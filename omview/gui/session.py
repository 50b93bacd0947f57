"""L4 GUI layer: ClusterSession, the membership polling every window of the suite shares.

The session asks the entry node for the cluster table (``cluster.nodes``, what /proc/hpc/nodes
was) every ``poll_interval`` seconds and, with ``direct_poll``, every listed node for ``node.info``
on its own agent, which is what gives each row its own connection state (paused above
``direct_limit`` nodes unless the user turns it on for the big cluster). It also carries the
node dialog's short requests (flags, speed, apply, connection test, host keys). All of it runs
through omview.gui.links (the POLL lane of each node; host keys in the ACTION lane), which owns the
threads and connections; results come back as frozen dataclasses and leave as ``sig_*`` signals.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot

from omview.gui.connect import Connector, HostKeyConnector, HostKeyOffer
from omview.gui.links import (
    ConnectionReport,
    Lane,
    LaneContext,
    Links,
    LinkState,
    LinkStatus,
    TaskDone,
    connection_test,
    deliverer,
)
from omview.model.client import AgentClient
from omview.model.cluster import Flags, NodeInfo
from omview.model.errors import AgentFault

log = logging.getLogger(__name__)

#: Switches the configuration dialog may change, in flags.set argument names.
SWITCHES = ("stay", "lstay", "block", "quiet")


# ---- results handed to the GUI thread (frozen, so they can cross threads) ------------------


@dataclass(frozen=True)
class FlagsReply:
    """The node's admin flags as read with flags.get."""

    address: str
    flags: Flags | None
    error: LinkState | None = None


@dataclass(frozen=True)
class ApplyReport:
    """What a configuration apply did on one node: operations done, the flags read back after."""

    address: str
    done: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    flags: Flags | None = None
    error: LinkState | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and self.error is None

    def summary(self) -> str:
        parts: list[str] = []
        if self.done:
            parts.append("done: " + ", ".join(self.done))
        if self.failed:
            parts.append("FAILED: " + "; ".join(self.failed))
        if self.error is not None:
            parts.append("not applied: " + self.error.describe())
        return "; ".join(parts) or "nothing to change"


@dataclass(frozen=True)
class SpeedReport:
    """Result of setting a node's speed: the requested value and the value read back."""

    address: str
    requested: int
    speed: int | None = None
    error: LinkState | None = None


# ---- job bodies (run in worker threads) ----------------------------------------------------


def _on_client(fn: Callable[[AgentClient], Any]) -> Callable[[LaneContext], Any]:
    """A request body that needs only the lane's agent client."""
    return lambda ctx: fn(ctx.client())


def _set_speed(speed: int) -> Callable[[AgentClient], Any]:
    def body(client: AgentClient) -> int:
        client.set_flags(speed=speed)
        # the LCD shows what the node now reports, not what we asked for
        return client.flags().speed

    return body


def _apply(changes: dict[str, bool], expel: bool, bring: bool) -> Callable[[AgentClient], Any]:
    def body(client: AgentClient) -> tuple[tuple[str, ...], tuple[str, ...], Flags]:
        done: list[str] = []
        failed: list[str] = []
        ops: list[tuple[str, str, dict[str, Any]]] = []
        if changes:
            text = ", ".join(f"{k} {'on' if v else 'off'}" for k, v in changes.items())
            ops.append((text, "flags.set", dict(changes)))
        if expel:
            ops.append(("expel guests", "admin.expel", {}))
        if bring:
            ops.append(("bring processes home", "admin.bring", {}))
        for text, op, args in ops:
            try:
                client.call(op, **args)
                done.append(text)
            except AgentFault as exc:
                failed.append(f"{text}: {exc}")
        return tuple(done), tuple(failed), client.flags()

    return body


# ---- the session (GUI thread) --------------------------------------------------------------


#: above this many nodes per-node polling (a connection and lanes per node) pauses by itself
DIRECT_POLL_LIMIT = 64


class ClusterSession(QObject):
    """Polls the cluster through the node links and republishes results as GUI-thread signals.

    Parameters
    ----------
    connector
        How nodes are reached (SSH in production, Unix sockets in tests); ignored with ``links``.
    entry
        Address of the entry node, whose agent provides the cluster table.
    poll_interval
        Seconds between poll ticks; 0 disables the timer (tests call ``refresh_now``).
    direct_poll
        Also ask every node's own agent for node.info each tick (per-row connection state).
    direct_limit
        Above this many nodes direct polling pauses (sig_direct_paused) until set_direct_poll(True).
    links
        The node links to share (default: the session makes its own and stops them in ``stop``).
    """

    sig_cluster_updated = Signal(object)
    """tuple[NodeInfo, ...]: the entry node's cluster table after a successful poll."""
    sig_entry_failed = Signal(object)
    """LinkState: the entry node could not be asked for the cluster table."""
    sig_node_info_updated = Signal(str, object)
    """(address, NodeInfo): a node answered node.info on its own agent."""
    sig_link_changed = Signal(str, object)
    """(address, LinkState): the GUI's connection to a node changed state."""
    sig_flags_read = Signal(str, object)
    """(address, FlagsReply)."""
    sig_flags_applied = Signal(str, object)
    """(address, ApplyReport)."""
    sig_speed_set = Signal(str, object)
    """(address, SpeedReport): speed set and read back (or the error)."""
    sig_connection_tested = Signal(str, object)
    """(address, ConnectionReport)."""
    sig_host_key_fetched = Signal(str, object)
    """(address, HostKeyOffer | LinkState)."""
    sig_host_key_accepted = Signal(str, object)
    """(address, LinkState | None): None when the key was written to known_hosts."""
    sig_message = Signal(str)
    """A one-line status-bar message."""
    sig_direct_paused = Signal(bool)
    """True: the cluster grew beyond direct_limit and direct polling paused; False: it runs again."""

    _sig_done = Signal(object)  # TaskDone from lane threads; queued to the GUI thread

    def __init__(
        self,
        connector: Connector,
        entry: str,
        *,
        poll_interval: float = 1.0,
        direct_poll: bool = True,
        direct_limit: int = DIRECT_POLL_LIMIT,
        call_timeout: float = 5.0,
        backoff: tuple[float, float] = (1.0, 30.0),
        links: Links | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.links = links if links is not None else Links(connector, call_timeout=call_timeout, backoff=backoff)
        self.entry = entry
        self.direct_poll = direct_poll
        self.direct_limit = direct_limit
        self._direct_all = False  # the user asked for direct polling on a cluster above the limit
        self.call_timeout = call_timeout
        self._links: dict[str, LinkState] = {}
        self._table: tuple[NodeInfo, ...] = ()
        self._meta: dict[int, Any] = {}
        self._stopped = False
        self._deliver = deliverer(self, "_sig_done")
        self._sig_done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        self.links.add_listener(self._deliver)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._on_timer_timeout)
        self.set_poll_interval(poll_interval)

    # -- public API (GUI thread only) --

    @property
    def connector(self) -> object:
        return self.links.connector

    @property
    def skipped(self) -> Counter[tuple[str, str]]:
        """Poll requests not sent because the previous one of that node and kind still ran."""
        return self.links.skipped

    @property
    def table(self) -> tuple[NodeInfo, ...]:
        """The last cluster table from the entry node."""
        return self._table

    def addresses(self) -> list[str]:
        return [n.address for n in self._table]

    def link(self, address: str) -> LinkState:
        return self._links.get(address, LinkState(LinkStatus.UNKNOWN))

    def busy(self, address: str, kind: str) -> bool:
        return self.links.busy(address, kind)

    def set_poll_interval(self, seconds: float) -> None:
        self.poll_interval = seconds
        if seconds > 0:
            self._timer.setInterval(int(seconds * 1000))
        elif self._timer.isActive():
            self._timer.stop()

    def start(self) -> None:
        """Poll now and then every ``poll_interval`` seconds."""
        self._stopped = False
        self.refresh_now()
        if self.poll_interval > 0:
            self._timer.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling, end every lane thread and close every connection (waits at most ``timeout``)."""
        self._stopped = True
        self._timer.stop()
        self.links.stop(timeout)

    def refresh_now(self) -> None:
        """One poll tick: cluster table from the entry node, node.info from every node."""
        if self._stopped:
            return
        self._poll(self.entry, "cluster", AgentClient.nodes)
        if self.direct_active:
            for address in self.addresses():
                self._poll(address, "info", AgentClient.node_info)

    @property
    def direct_active(self) -> bool:
        """Whether each tick asks every node's own agent (the preference, and not paused by size)."""
        return self.direct_poll and (self._direct_all or len(self._table) <= self.direct_limit)

    def set_direct_poll(self, on: bool) -> None:
        """The user's choice (View menu): on means every node, however big the cluster is."""
        self.direct_poll = on
        self._direct_all = on and len(self._table) > self.direct_limit

    def request_flags(self, address: str) -> int:
        return self._submit(address, "flags", _on_client(AgentClient.flags))

    def set_speed(self, address: str, speed: int) -> int:
        return self._submit(address, "speed", _on_client(_set_speed(speed)), meta=speed)

    def apply_config(self, address: str, changes: dict[str, bool], *, expel: bool = False, bring: bool = False) -> int:
        """Send only ``changes`` (flags.set) and the one-shot actions to one node."""
        bad = set(changes) - set(SWITCHES)
        if bad:
            raise ValueError(f"not a node switch: {', '.join(sorted(bad))} (allowed: {', '.join(SWITCHES)})")
        return self._submit(address, "apply", _on_client(_apply(dict(changes), expel, bring)))

    def test_connection(self, address: str) -> int:
        return self._submit(address, "test", connection_test)

    def reconnect(self, address: str) -> int:
        """Drop and reopen the node's agent channel (the test does exactly that)."""
        return self.test_connection(address)

    def supports_host_keys(self) -> bool:
        return isinstance(self.links.connector, HostKeyConnector)

    def fetch_host_key(self, address: str) -> None:
        """Read the node's host key (ACTION lane: the POLL lane may be stuck connecting)."""
        connector = self.links.connector
        if isinstance(connector, HostKeyConnector):
            self._submit(address, "hostkey", lambda _ctx: connector.fetch_host_key(address), lane=Lane.ACTION)

    def accept_host_key(self, offer: HostKeyOffer) -> None:
        """Write an admin-approved key to known_hosts, then reconnect the node."""
        connector = self.links.connector
        if isinstance(connector, HostKeyConnector):
            self._submit(offer.address, "accept", lambda _ctx: connector.accept_host_key(offer), lane=Lane.ACTION)

    # -- internals --

    def _poll(self, address: str, kind: str, fn: Callable[[AgentClient], Any]) -> None:
        self.links.poll(address, kind, _on_client(fn), self._deliver)

    def _submit(self, address: str, kind: str, fn: Callable[[LaneContext], Any], *, lane: Lane = Lane.POLL,
                meta: Any = None) -> int:  # fmt: skip
        """An admin's request: urgent (connects now even while the node backs off)."""
        ticket = self.links.submit(address, lane, kind, fn, self._deliver, urgent=True)
        self._meta[ticket] = meta
        return ticket

    @Slot()
    def _on_timer_timeout(self) -> None:
        self.refresh_now()

    @Slot(object)
    def _on_done(self, done: TaskDone) -> None:
        meta = self._meta.pop(done.ticket, None)
        if self._stopped:
            return
        if done.kind not in ("hostkey", "accept") and self.link(done.address) != done.link:
            self._links[done.address] = done.link
            self.sig_link_changed.emit(done.address, done.link)
        handler = getattr(self, f"_done_{done.kind}", None)
        if handler is not None:
            handler(done, meta)

    def _done_cluster(self, done: TaskDone, _meta: Any) -> None:
        if done.error is not None:
            self.sig_entry_failed.emit(done.error)
            return
        table: tuple[NodeInfo, ...] = tuple(sorted(done.value, key=lambda n: n.id))
        old = {n.address for n in self._table}
        new = {n.address for n in table}
        for address in old - new:
            # a node left the cluster: stop polling it without waiting for it here
            if address != self.entry:
                self.links.retire(address)
                self._links.pop(address, None)
        was_active = self.direct_active
        self._table = table
        self.sig_cluster_updated.emit(table)
        if self.direct_poll and was_active != self.direct_active:
            if was_active:
                self.sig_message.emit(
                    f"{len(table)} nodes: stopped asking every node directly (more than {self.direct_limit}; "
                    "rows show the entry node's view). View > Ask every node directly asks them all"
                )
            self.sig_direct_paused.emit(was_active)
        if self.direct_active:
            # a node that just joined gets its own state now, not one tick later
            for address in sorted(new - old):
                self._poll(address, "info", AgentClient.node_info)

    def _done_info(self, done: TaskDone, _meta: Any) -> None:
        if done.error is None:
            self.sig_node_info_updated.emit(done.address, done.value)

    def _done_flags(self, done: TaskDone, _meta: Any) -> None:
        self.sig_flags_read.emit(done.address, FlagsReply(done.address, done.value, done.error))

    def _done_speed(self, done: TaskDone, requested: Any) -> None:
        report = SpeedReport(done.address, int(requested), done.value, done.error)
        if done.error is None:
            self.sig_message.emit(f"set speed to {done.value} on {done.address}")
        else:
            self.sig_message.emit(f"could not set speed {requested} on {done.address}: {done.error.describe()}")
        self.sig_speed_set.emit(done.address, report)

    def _done_apply(self, done: TaskDone, _meta: Any) -> None:
        if done.error is not None:
            report = ApplyReport(done.address, error=done.error)
        else:
            ok_ops, failed_ops, flags = done.value
            report = ApplyReport(done.address, ok_ops, failed_ops, flags)
        self.sig_message.emit(f"{done.address}: {report.summary()}")
        self.sig_flags_applied.emit(done.address, report)

    def _done_test(self, done: TaskDone, _meta: Any) -> None:
        report: ConnectionReport = done.value
        self.sig_message.emit(
            f"connection to {done.address}: " + ("ok" if report.ok else report.link.describe())
        )
        self.sig_connection_tested.emit(done.address, report)

    def _done_hostkey(self, done: TaskDone, _meta: Any) -> None:
        self.sig_host_key_fetched.emit(done.address, done.error if done.error is not None else done.value)

    def _done_accept(self, done: TaskDone, _meta: Any) -> None:
        self.sig_host_key_accepted.emit(done.address, done.error)
        if done.error is None:
            self.sig_message.emit(f"host key of {done.address} added to known_hosts; reconnecting")
            self.test_connection(done.address)
