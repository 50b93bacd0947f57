"""L4 GUI layer: ClusterSession, the only way the GUI talks to agents (threaded, per-node queues).

Every node has one worker thread with a serial job queue and at most one open agent client,
opened on first use through a ``Connector`` and reopened with exponential backoff after a
failure. Workers never touch Qt objects: they hand a frozen ``JobDone`` to a queued signal whose
slot runs in the GUI thread, where it becomes one of the public ``sig_*`` signals. The GUI thread
therefore never waits on the network, and a slow or dead node only delays its own queue.

Membership comes from the entry node's ``cluster.nodes`` (what /proc/hpc/nodes was); with
``direct_poll`` every listed node is also asked for ``node.info`` on its own agent, which is what
gives each row its own connection state (paused above ``direct_limit`` nodes unless the user turns
it on for the big cluster: one SSH connection and worker per node is what it costs). A poll tick is skipped for a node whose previous request
of the same kind is still running, so a slow node never accumulates a backlog.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot

from omview.gui.connect import Connector, HostKeyConnector, HostKeyOffer
from omview.model.client import AgentClient
from omview.model.cluster import Flags, NodeInfo
from omview.model.errors import (
    AgentFault,
    AgentUnavailable,
    AuthenticationError,
    ConnectionLost,
    HostKeyError,
    OmviewError,
    TransportError,
)

log = logging.getLogger(__name__)

#: Switches the configuration dialog may change, in flags.set argument names.
SWITCHES = ("stay", "lstay", "block", "quiet")


class LinkStatus(StrEnum):
    """State of the GUI's own connection to one node's agent (shown in the node's row)."""

    UNKNOWN = "not connected yet"
    CONNECTING = "connecting"
    UP = "connected"
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "authentication failed"
    HOST_KEY_UNKNOWN = "host key unknown"
    HOST_KEY_MISMATCH = "host key mismatch"
    NO_AGENT = "no agent"
    TIMEOUT = "timeout"
    AGENT_ERROR = "agent error"

    @property
    def failed(self) -> bool:
        return self not in (LinkStatus.UNKNOWN, LinkStatus.CONNECTING, LinkStatus.UP)


#: What an administrator can do about each failure (shown in tooltips and the connection test).
ADVICE: dict[LinkStatus, str] = {
    LinkStatus.UNREACHABLE: "Check that the node is up, that its address is right and that sshd listens "
    "(try 'ssh root@ADDRESS' in a terminal).",
    LinkStatus.AUTH_FAILED: "Put your public key into the node's ~/.ssh/authorized_keys, load it into "
    "ssh-agent (ssh-add), or name the identity file in Config > Connection settings.",
    LinkStatus.HOST_KEY_UNKNOWN: "Compare the fingerprint with the node's key (on the node: ssh-keygen -lf "
    "/etc/ssh/ssh_host_ed25519_key.pub), then accept it from the row's menu.",
    LinkStatus.HOST_KEY_MISMATCH: "The node now offers a different key than known_hosts holds: a reinstalled "
    "node or an attack. Check the node first, then remove the old entry (ssh-keygen -R ADDRESS).",
    LinkStatus.NO_AGENT: "Start the agent on the node ('systemctl start omview-agent' or 'omview-agent run') "
    "and check that omview-agent is on root's PATH there.",
    LinkStatus.TIMEOUT: "The node or its agent does not answer in time: it may be overloaded, or a firewall "
    "drops the packets.",
    LinkStatus.AGENT_ERROR: "The agent refused the request; the message says why.",
}


@dataclass(frozen=True)
class LinkState:
    """One node's connection state; ``retry_in`` > 0 while the worker backs off."""

    status: LinkStatus
    message: str = ""
    fingerprint: str = ""
    retry_in: float = 0.0

    @property
    def advice(self) -> str:
        return ADVICE.get(self.status, "")

    def describe(self) -> str:
        text = self.status.value
        if self.message:
            text += f": {self.message}"
        return text


def classify(exc: BaseException) -> LinkState:
    """Map an exception from connecting or calling to the row state an admin sees."""
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, HostKeyError):
        status = LinkStatus.HOST_KEY_MISMATCH if exc.known else LinkStatus.HOST_KEY_UNKNOWN
        return LinkState(status, msg, exc.fingerprint)
    if isinstance(exc, AuthenticationError):
        return LinkState(LinkStatus.AUTH_FAILED, msg)
    if isinstance(exc, AgentUnavailable):
        return LinkState(LinkStatus.NO_AGENT, msg)
    if isinstance(exc, AgentFault):
        return LinkState(LinkStatus.AGENT_ERROR, msg)
    if isinstance(exc, TimeoutError) or isinstance(exc.__cause__, TimeoutError):
        return LinkState(LinkStatus.TIMEOUT, msg)
    if isinstance(exc, (ConnectionLost, TransportError, OSError)):
        return LinkState(LinkStatus.UNREACHABLE, msg)
    return LinkState(LinkStatus.AGENT_ERROR, msg)


#: Errors a worker turns into a node state; anything else is a bug and is logged with traceback.
_EXPECTED = (OmviewError, TimeoutError, OSError, ValueError)
#: Errors after which the open client is no longer trusted and is closed.
_BROKEN = (TransportError, AgentUnavailable, TimeoutError, OSError, ValueError)


# ---- results handed to the GUI thread (frozen, so they can cross threads) ------------------


@dataclass(frozen=True)
class JobDone:
    """A worker finished one job (``error`` set when it failed)."""

    address: str
    kind: str
    ticket: int
    value: Any = None
    error: LinkState | None = None
    link: LinkState = LinkState(LinkStatus.UNKNOWN)
    elapsed: float = 0.0


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


@dataclass(frozen=True)
class TestStep:
    """One step of a connection test."""

    name: str
    ok: bool
    detail: str
    ms: float = 0.0


@dataclass(frozen=True)
class ConnectionReport:
    """Outcome of "test connection": each step, and what to do about the first failure."""

    address: str
    how: str
    steps: tuple[TestStep, ...]
    link: LinkState

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def text(self) -> str:
        lines = [f"Connection test for {self.address} ({self.how})", ""]
        for s in self.steps:
            mark = "ok  " if s.ok else "FAIL"
            timing = f" ({s.ms:.0f} ms)" if s.ms else ""
            lines.append(f"[{mark}] {s.name}{timing}: {s.detail}")
        if not self.ok and self.link.advice:
            lines += ["", "What to try: " + self.link.advice.replace("ADDRESS", self.address)]
        return "\n".join(lines)


# ---- the per-node worker (runs in its own thread; no Qt) -----------------------------------


@dataclass(frozen=True)
class _Job:
    kind: str
    ticket: int
    fn: Callable[[AgentClient], Any] | None  # None: connection test
    urgent: bool = False  # an admin's explicit action: connect now even while backing off


class _NodeWorker:
    """One thread, one queue and at most one agent client for one node."""

    def __init__(
        self,
        address: str,
        connector: Connector,
        deliver: Callable[[JobDone], None],
        *,
        call_timeout: float,
        backoff: tuple[float, float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self._connector = connector
        self._deliver = deliver
        self._call_timeout = call_timeout
        self._backoff_min, self._backoff_max = backoff
        self._clock = clock
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"omview-node-{address}", daemon=True)
        self._started = False
        self._client: AgentClient | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self._link = LinkState(LinkStatus.UNKNOWN)

    def submit(self, job: _Job) -> None:
        if not self._started:
            self._started = True
            self._thread.start()
        self._queue.put(job)

    def stop(self) -> None:
        if self._started:
            self._queue.put(None)

    def join(self, timeout: float) -> bool:
        if self._started:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # -- worker thread from here on --

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                break
            started = self._clock()
            if job.fn is None:
                value, error = self._test(), None
            else:
                value, error = self._execute(job)
            self._deliver(
                JobDone(self.address, job.kind, job.ticket, value, error, self._link, self._clock() - started)
            )
        self._close()

    def _close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except OSError as exc:
                log.debug("closing the channel to %s: %s", self.address, exc)
            self._client = None

    def _set_link(self, link: LinkState) -> None:
        if link != self._link:
            self._link = link
            if link.status is LinkStatus.CONNECTING:
                # let the row say "connecting" while a slow login is under way
                self._deliver(JobDone(self.address, "link", 0, None, None, link))

    def _connect(self, urgent: bool) -> AgentClient:
        if self._client is not None:
            return self._client
        now = self._clock()
        if not urgent and now < self._next_attempt:
            raise _BackingOff(replace(self._link, retry_in=self._next_attempt - now))
        self._set_link(LinkState(LinkStatus.CONNECTING, self._connector.describe(self.address)))
        try:
            channel = self._connector.open(self.address)
            self._client = AgentClient(channel, client_name="openmosixview", timeout=self._call_timeout)
        except _EXPECTED as exc:
            self._failures += 1
            delay = min(self._backoff_max, self._backoff_min * 2 ** (self._failures - 1))
            self._next_attempt = self._clock() + delay
            self._set_link(replace(classify(exc), retry_in=delay))
            log.info("%s: %s (next attempt in %.0f s)", self.address, exc, delay)
            raise
        self._failures = 0
        self._set_link(LinkState(LinkStatus.UP))
        return self._client

    def _execute(self, job: _Job) -> tuple[Any, LinkState | None]:
        assert job.fn is not None
        try:
            client = self._connect(job.urgent)
        except _BackingOff as exc:
            return None, exc.link
        except _EXPECTED:
            return None, self._link
        try:
            return job.fn(client), None
        except AgentFault as exc:
            # the agent answered: the connection is fine, only this request failed
            return None, classify(exc)
        except _BROKEN as exc:
            self._close()
            self._set_link(classify(exc))
            log.info("%s: %s failed: %s", self.address, job.kind, exc)
            return None, self._link
        except OmviewError as exc:
            return None, classify(exc)

    def _test(self) -> ConnectionReport:
        """Open a fresh connection step by step and say which step fails."""
        self._close()
        how = self._connector.describe(self.address)
        steps: list[TestStep] = []
        t0 = self._clock()
        try:
            channel = self._connector.open(self.address)
        except _EXPECTED as exc:
            link = classify(exc)
            steps.append(TestStep("connect", False, link.describe(), (self._clock() - t0) * 1000))
            self._set_link(link)
            return ConnectionReport(self.address, how, tuple(steps), link)
        steps.append(TestStep("connect", True, f"channel open ({how})", (self._clock() - t0) * 1000))
        t0 = self._clock()
        try:
            client = AgentClient(channel, client_name="openmosixview", timeout=self._call_timeout)
        except _EXPECTED as exc:
            link = classify(exc)
            steps.append(TestStep("agent handshake", False, link.describe(), (self._clock() - t0) * 1000))
            self._set_link(link)
            return ConnectionReport(self.address, how, tuple(steps), link)
        hello = client.hello if isinstance(client.hello, dict) else {}
        steps.append(
            TestStep(
                "agent handshake",
                True,
                f"node {hello.get('node', '?')}, agent {hello.get('agent', hello.get('version', '?'))}, "
                f"protocol {hello.get('protocol', '?')}",
                (self._clock() - t0) * 1000,
            )
        )
        self._client = client
        self._failures = 0
        self._next_attempt = 0.0
        for name, op in (("round trip", "ping"), ("read admin flags", "flags.get")):
            t0 = self._clock()
            try:
                client.call(op)
                steps.append(TestStep(name, True, f"{op} answered", (self._clock() - t0) * 1000))
            except _EXPECTED as exc:
                link = classify(exc)
                steps.append(TestStep(name, False, link.describe(), (self._clock() - t0) * 1000))
                if isinstance(exc, _BROKEN):
                    self._close()
                self._set_link(link)
                return ConnectionReport(self.address, how, tuple(steps), link)
        self._set_link(LinkState(LinkStatus.UP))
        return ConnectionReport(self.address, how, tuple(steps), self._link)


class _BackingOff(Exception):
    def __init__(self, link: LinkState) -> None:
        super().__init__(link.message)
        self.link = link


# ---- job bodies (run in worker threads) ----------------------------------------------------


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


@dataclass
class _NodeState:
    worker: _NodeWorker
    link: LinkState = field(default_factory=lambda: LinkState(LinkStatus.UNKNOWN))


#: above this many nodes per-node polling (a connection and a worker thread per node) pauses by itself
DIRECT_POLL_LIMIT = 64


class ClusterSession(QObject):
    """Owns the per-node workers, polls the cluster and republishes results as GUI-thread signals.

    Parameters
    ----------
    connector
        Opens a channel to a node's agent (SSH in production, Unix sockets in tests).
    entry
        Address of the entry node, whose agent provides the cluster table.
    poll_interval
        Seconds between poll ticks; 0 disables the timer (tests call ``refresh_now``).
    direct_poll
        Also ask every node's own agent for node.info each tick (per-row connection state).
    direct_limit
        Above this many nodes direct polling pauses (sig_direct_paused) until set_direct_poll(True).
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

    _sig_job_done = Signal(object)  # emitted from worker threads; queued to the GUI thread

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
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.connector = connector
        self.entry = entry
        self.direct_poll = direct_poll
        self.direct_limit = direct_limit
        self._direct_all = False  # the user asked for direct polling on a cluster above the limit
        self.call_timeout = call_timeout
        self._backoff = backoff
        self._nodes: dict[str, _NodeState] = {}
        self._retired: list[_NodeWorker] = []
        self._table: tuple[NodeInfo, ...] = ()
        self._in_flight: set[tuple[str, str]] = set()
        self._tickets = 0
        self._meta: dict[int, Any] = {}
        self._side_threads: list[threading.Thread] = []
        self._stopped = False
        #: poll requests not sent because the previous one of that node and kind still ran
        self.skipped: Counter[tuple[str, str]] = Counter()
        self._sig_job_done.connect(self._on_worker_done, Qt.ConnectionType.QueuedConnection)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._on_timer_timeout)
        self.set_poll_interval(poll_interval)

    # -- public API (GUI thread only) --

    @property
    def table(self) -> tuple[NodeInfo, ...]:
        """The last cluster table from the entry node."""
        return self._table

    def addresses(self) -> list[str]:
        return [n.address for n in self._table]

    def link(self, address: str) -> LinkState:
        state = self._nodes.get(address)
        return state.link if state else LinkState(LinkStatus.UNKNOWN)

    def busy(self, address: str, kind: str) -> bool:
        return (address, kind) in self._in_flight

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
        """Stop polling and end every worker thread (waits at most ``timeout`` in total)."""
        self._stopped = True
        self._timer.stop()
        workers = [s.worker for s in self._nodes.values()] + self._retired
        for w in workers:
            w.stop()
        deadline = time.monotonic() + timeout
        for w in workers:
            if not w.join(max(0.0, deadline - time.monotonic())):
                log.warning("worker for %s did not stop within %.0f s", w.address, timeout)
        for t in self._side_threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._side_threads.clear()
        self._nodes.clear()
        self._retired.clear()

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
        return self._submit(address, "flags", AgentClient.flags, urgent=True)

    def set_speed(self, address: str, speed: int) -> int:
        return self._submit(address, "speed", _set_speed(speed), urgent=True, meta=speed)

    def apply_config(self, address: str, changes: dict[str, bool], *, expel: bool = False, bring: bool = False) -> int:
        """Send only ``changes`` (flags.set) and the one-shot actions to one node."""
        bad = set(changes) - set(SWITCHES)
        if bad:
            raise ValueError(f"not a node switch: {', '.join(sorted(bad))} (allowed: {', '.join(SWITCHES)})")
        return self._submit(address, "apply", _apply(dict(changes), expel, bring), urgent=True)

    def test_connection(self, address: str) -> int:
        return self._submit(address, "test", None, urgent=True)

    def reconnect(self, address: str) -> int:
        """Drop and reopen the node's connection (the test does exactly that)."""
        return self.test_connection(address)

    def supports_host_keys(self) -> bool:
        return isinstance(self.connector, HostKeyConnector)

    def fetch_host_key(self, address: str) -> None:
        """Read the node's host key in a helper thread; answers with sig_host_key_fetched."""
        if not isinstance(self.connector, HostKeyConnector):
            return
        connector = self.connector
        self._side_job(address, "hostkey", lambda: connector.fetch_host_key(address))

    def accept_host_key(self, offer: HostKeyOffer) -> None:
        """Write an admin-approved key to known_hosts, then reconnect the node."""
        if not isinstance(self.connector, HostKeyConnector):
            return
        connector = self.connector
        self._side_job(offer.address, "accept", lambda: connector.accept_host_key(offer))

    # -- internals --

    def _state(self, address: str) -> _NodeState:
        state = self._nodes.get(address)
        if state is None:
            worker = _NodeWorker(
                address,
                self.connector,
                self._sig_job_done.emit,
                call_timeout=self.call_timeout,
                backoff=self._backoff,
            )
            state = self._nodes[address] = _NodeState(worker)
        return state

    def _next_ticket(self) -> int:
        self._tickets += 1
        return self._tickets

    def _poll(self, address: str, kind: str, fn: Callable[[AgentClient], Any]) -> None:
        if (address, kind) in self._in_flight:
            self.skipped[(address, kind)] += 1
            return
        self._submit(address, kind, fn)

    def _submit(
        self, address: str, kind: str, fn: Callable[[AgentClient], Any] | None, *, urgent: bool = False, meta: Any = None
    ) -> int:
        ticket = self._next_ticket()
        self._in_flight.add((address, kind))
        self._meta[ticket] = meta
        self._state(address).worker.submit(_Job(kind, ticket, fn, urgent))
        return ticket

    def _side_job(self, address: str, kind: str, fn: Callable[[], Any]) -> None:
        """Host-key work: its own short-lived thread, since the node's worker may be stuck connecting."""
        ticket = self._next_ticket()
        emit = self._sig_job_done.emit

        def run() -> None:
            try:
                emit(JobDone(address, kind, ticket, fn()))
            except _EXPECTED as exc:
                emit(JobDone(address, kind, ticket, None, classify(exc)))

        thread = threading.Thread(target=run, name=f"omview-{kind}-{address}", daemon=True)
        self._side_threads = [t for t in self._side_threads if t.is_alive()]
        self._side_threads.append(thread)
        thread.start()

    @Slot()
    def _on_timer_timeout(self) -> None:
        self.refresh_now()

    @Slot(object)
    def _on_worker_done(self, done: JobDone) -> None:
        if done.kind != "link":
            self._in_flight.discard((done.address, done.kind))
        meta = self._meta.pop(done.ticket, None)
        if self._stopped:
            return
        state = self._nodes.get(done.address)
        if state is not None and done.kind not in ("hostkey", "accept") and state.link != done.link:
            state.link = done.link
            self.sig_link_changed.emit(done.address, done.link)
        handler = getattr(self, f"_done_{done.kind}", None)
        if handler is not None:
            handler(done, meta)

    def _done_cluster(self, done: JobDone, _meta: Any) -> None:
        if done.error is not None:
            self.sig_entry_failed.emit(done.error)
            return
        table: tuple[NodeInfo, ...] = tuple(sorted(done.value, key=lambda n: n.id))
        old = {n.address for n in self._table}
        new = {n.address for n in table}
        for address in old - new:
            # a node left the cluster: end its worker without waiting for it here
            if address != self.entry and address in self._nodes:
                state = self._nodes.pop(address)
                state.worker.stop()
                self._retired.append(state.worker)
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

    def _done_info(self, done: JobDone, _meta: Any) -> None:
        if done.error is None:
            self.sig_node_info_updated.emit(done.address, done.value)

    def _done_flags(self, done: JobDone, _meta: Any) -> None:
        self.sig_flags_read.emit(done.address, FlagsReply(done.address, done.value, done.error))

    def _done_speed(self, done: JobDone, requested: Any) -> None:
        report = SpeedReport(done.address, int(requested), done.value, done.error)
        if done.error is None:
            self.sig_message.emit(f"set speed to {done.value} on {done.address}")
        else:
            self.sig_message.emit(f"could not set speed {requested} on {done.address}: {done.error.describe()}")
        self.sig_speed_set.emit(done.address, report)

    def _done_apply(self, done: JobDone, _meta: Any) -> None:
        if done.error is not None:
            report = ApplyReport(done.address, error=done.error)
        else:
            ok_ops, failed_ops, flags = done.value
            report = ApplyReport(done.address, ok_ops, failed_ops, flags)
        self.sig_message.emit(f"{done.address}: {report.summary()}")
        self.sig_flags_applied.emit(done.address, report)

    def _done_test(self, done: JobDone, _meta: Any) -> None:
        report: ConnectionReport = done.value
        self.sig_message.emit(
            f"connection to {done.address}: " + ("ok" if report.ok else report.link.describe())
        )
        self.sig_connection_tested.emit(done.address, report)

    def _done_hostkey(self, done: JobDone, _meta: Any) -> None:
        self.sig_host_key_fetched.emit(done.address, done.error if done.error is not None else done.value)

    def _done_accept(self, done: JobDone, _meta: Any) -> None:
        self.sig_host_key_accepted.emit(done.address, done.error)
        if done.error is None:
            self.sig_message.emit(f"host key of {done.address} added to known_hosts; reconnecting")
            self.test_connection(done.address)
