"""L4 GUI layer: the only way work leaves the GUI thread - one owner per node, with lanes.

``Links`` keeps one ``NodeLink`` per node address. A node link owns the GUI's one connection to
that node (over SSH: one ``SshConnection``, opened on first use and reopened with exponential
backoff after a failure; locally: the agent's Unix socket) and runs work for it in three lanes,
each one thread with its own queue:

* ``POLL``: short agent requests (cluster table, node.info, flags, speed, apply, connection test)
  over the lane's own ``omview-agent bridge`` channel;
* ``ACTION``: long actions (collector commands, agent start/stop, host keys), on exec channels
  of the same connection;
* ``STREAM``: long-running commands whose output streams back (advanced-execution jobs), as
  generators the lane steps in turn, each on an exec channel of the same connection, with the
  lane's own bridge channel for ``job.status``.

So a 3 s action never delays the node's 1 s poll, and a node costs one SSH connection however many
windows and controls use it. Lane threads never touch Qt objects: each task hands its frozen
result to a ``deliver`` function (see ``deliverer``) that emits a queued signal of a QObject in the
GUI thread. A poll is skipped while the previous one of the same kind for that node still runs,
so a slow or dead node never builds a backlog and never blocks other nodes or the GUI thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

import shiboken6
from PySide6.QtCore import QObject

from omview.gui.connect import Connector, SshConnector, UnixConnector
from omview.gui.node_exec import CommandRunner, LocalRunner, SshRunner
from omview.model.channel import Channel
from omview.model.client import AgentClient
from omview.model.errors import (
    AgentFault,
    AgentUnavailable,
    AuthenticationError,
    ConfigError,
    ConnectionLost,
    HostKeyError,
    OmviewError,
    TransportError,
)
from omview.transport.ssh import SshConnection

log = logging.getLogger(__name__)


# ---- connection states ---------------------------------------------------------------------


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
    """One node's connection state; ``retry_in`` > 0 while the link backs off."""

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
    if isinstance(exc, _NotConnected):
        return exc.link
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


#: Errors a lane turns into a node state; anything else is a bug and is logged with traceback.
EXPECTED = (OmviewError, TimeoutError, OSError, ValueError)
#: Errors after which a lane's agent client is no longer trusted and is closed.
_BROKEN = (TransportError, AgentUnavailable, TimeoutError, OSError, ValueError)


class _NotConnected(TransportError):
    """No connection: the link backs off, or the attempt just failed (``link`` says why)."""

    def __init__(self, link: LinkState) -> None:
        super().__init__(link.message or link.status.value)
        self.link = link


# ---- delivery to the GUI thread --------------------------------------------------------------


def deliverer(target: QObject, signal_name: str) -> Callable[[Any], bool]:
    """A lane thread's way back to ``target`` in the GUI thread, holding it only weakly.

    The returned function emits ``target.<signal_name>(item)`` (a queued connection carries it to
    the GUI thread) and returns False once the target is gone; ``None`` only asks whether it exists.
    """
    ref = weakref.ref(target)

    def deliver(item: Any) -> bool:
        obj = ref()
        if obj is None or not shiboken6.isValid(obj):
            return False
        if item is not None:
            try:
                getattr(obj, signal_name).emit(item)
            except RuntimeError:  # deleted between the check and the emit
                return False
        return True

    return deliver


Deliver = Callable[[Any], bool]


@dataclass(frozen=True)
class TaskDone:
    """A lane finished one task (``error`` set when it failed); ``kind`` "link" is a state change."""

    address: str
    kind: str
    ticket: int
    value: Any = None
    error: LinkState | None = None
    link: LinkState = LinkState(LinkStatus.UNKNOWN)
    elapsed: float = 0.0


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


# ---- how a node is reached (no Qt, no threads) -----------------------------------------------


class _Endpoint(Protocol):
    """The one connection to a node: channels to its agent and commands on it."""

    def describe(self) -> str: ...

    def connected(self) -> bool:
        """Whether the connection is open now (a channel would not need a login)."""

    def connect(self) -> None:
        """Open the connection if it is not open (raises TransportError subclasses)."""

    def open_channel(self) -> Channel:
        """A new agent channel on the connection (connect() first)."""

    def runner(self) -> CommandRunner:
        """Runs commands on the node over the connection."""

    def close(self) -> None: ...


class _SshEndpoint:
    """One SshConnection, shared by every lane of the node (paramiko channels are thread-safe)."""

    def __init__(self, connector: SshConnector, address: str) -> None:
        self._connector = connector
        self._address = address
        self._conn: SshConnection | None = None
        self._lock = threading.Lock()  # two lanes may connect at once: only one logs in

    def describe(self) -> str:
        return self._connector.describe(self._address)

    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and conn.alive

    def connect(self) -> None:
        self.connection()

    def connection(self, *, fresh: bool = False) -> SshConnection:
        """The node's connection; a new one when there is none, it died, or ``fresh``."""
        with self._lock:
            if self._conn is not None and (fresh or not self._conn.alive):
                self._conn.close()
                self._conn = None
            if self._conn is None:
                self._conn = self._connector.connect(self._address)
            return self._conn

    def open_channel(self) -> Channel:
        return self.connection().open_bridge()

    def runner(self) -> CommandRunner:
        return SshRunner(self.connection, self.describe())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class _ChannelEndpoint:
    """A connector without a login (Unix sockets, tests, benchmarks): each channel is its own."""

    def __init__(self, connector: Connector, address: str) -> None:
        self._connector = connector
        self._address = address

    def describe(self) -> str:
        return self._connector.describe(self._address)

    def connected(self) -> bool:
        return True

    def connect(self) -> None:
        pass

    def open_channel(self) -> Channel:
        return self._connector.open(self._address)

    def runner(self) -> CommandRunner:
        raise ConfigError(
            f"openmosixview cannot run commands on {self._address} through {type(self._connector).__name__}; "
            "connect over SSH or through the node's local agent socket"
        )

    def close(self) -> None:
        pass


class _LocalEndpoint(_ChannelEndpoint):
    """An agent on a Unix socket of this machine: commands run here, as subprocesses."""

    def __init__(self, connector: UnixConnector, address: str) -> None:
        super().__init__(connector, address)
        self._unix = connector

    def runner(self) -> CommandRunner:
        return LocalRunner(self._unix.socket_path(self._address))


def endpoint_for(connector: object, address: str) -> _Endpoint:
    """How ``address`` is reached with ``connector`` (a routing connector picks one per node)."""
    route = getattr(connector, "connector_for", None)
    if callable(route):
        connector = route(address)
    if isinstance(connector, SshConnector):
        return _SshEndpoint(connector, address)
    if isinstance(connector, UnixConnector):
        return _LocalEndpoint(connector, address)
    return _ChannelEndpoint(connector, address)  # type: ignore[arg-type]


# ---- lanes -----------------------------------------------------------------------------------


class Lane(StrEnum):
    POLL = "poll"
    ACTION = "action"
    STREAM = "stream"


class LaneContext:
    """What a task gets in its lane thread: the lane's agent client and the node's runner."""

    def __init__(self, node: NodeLink, lane: Lane) -> None:
        self.node = node
        self.lane = lane
        self.address = node.address
        #: the running task is an admin's action: connect now even while the node backs off
        self.urgent = False
        self._client: AgentClient | None = None

    def client(self, *, urgent: bool = False) -> AgentClient:
        """The lane's agent client (its own bridge channel on the node's connection)."""
        if self._client is None:
            channel = self.node.connect(urgent or self.urgent, open_channel=True)
            assert channel is not None
            try:
                self._client = AgentClient(channel, client_name="openmosixview", timeout=self.node.call_timeout)
            except EXPECTED as exc:
                raise _NotConnected(self.node.failed(exc)) from exc
            self.node.set_link(LinkState(LinkStatus.UP))
        return self._client

    def runner(self) -> CommandRunner:
        """Runs commands on the node over its one connection (an admin's action: no backoff)."""
        self.node.connect(urgent=True)
        return self.node.endpoint.runner()

    def adopt(self, client: AgentClient) -> None:
        """Use ``client`` (opened step by step by the connection test) from now on."""
        self.drop_client()
        self._client = client

    def drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except OSError as exc:
                log.debug("closing a channel to %s: %s", self.address, exc)
            self._client = None


def connection_test(ctx: LaneContext) -> ConnectionReport:
    """Reopen the lane's agent channel step by step (and the connection, when no job or command
    shares it) and say which step fails."""
    node = ctx.node
    ctx.drop_client()
    if not any(node.lanes[lane].started for lane in (Lane.ACTION, Lane.STREAM)):
        node.endpoint.close()
    node.reset()
    how = node.endpoint.describe()
    steps: list[TestStep] = []

    def step(name: str, ok: bool, detail: str, t0: float) -> None:
        steps.append(TestStep(name, ok, detail, (time.monotonic() - t0) * 1000))

    def failed(name: str, exc: BaseException, t0: float) -> ConnectionReport:
        link = exc.link if isinstance(exc, _NotConnected) else classify(exc)
        step(name, False, link.describe(), t0)
        node.set_link(link)
        return ConnectionReport(ctx.address, how, tuple(steps), link)

    t0 = time.monotonic()
    try:
        channel = node.connect(urgent=True, open_channel=True)
        assert channel is not None
    except EXPECTED as exc:
        return failed("connect", exc, t0)
    step("connect", True, f"channel open ({how})", t0)
    t0 = time.monotonic()
    try:
        client = AgentClient(channel, client_name="openmosixview", timeout=node.call_timeout)
    except EXPECTED as exc:
        return failed("agent handshake", exc, t0)
    hello = client.hello if isinstance(client.hello, dict) else {}
    step("agent handshake", True, f"node {hello.get('node', '?')}, agent "
         f"{hello.get('agent', hello.get('version', '?'))}, protocol {hello.get('protocol', '?')}", t0)  # fmt: skip
    ctx.adopt(client)
    for name, op in (("round trip", "ping"), ("read admin flags", "flags.get")):
        t0 = time.monotonic()
        try:
            client.call(op)
        except EXPECTED as exc:
            if isinstance(exc, _BROKEN):
                ctx.drop_client()
            return failed(name, exc, t0)
        step(name, True, f"{op} answered", t0)
    node.set_link(LinkState(LinkStatus.UP))
    return ConnectionReport(ctx.address, how, tuple(steps), node.link)


@dataclass(frozen=True)
class _Task:
    kind: str
    ticket: int
    fn: Callable[[LaneContext], Any]
    deliver: Deliver
    urgent: bool = False  # an admin's explicit action: connect now even while backing off
    key: tuple[str, str] | None = None  # (address, kind) of a skippable poll


#: the STREAM lane's "no new task: step the running ones" marker
_ROUND = _Task("round", 0, lambda _ctx: None, lambda _item: True)


class _LaneThread:
    """One thread and one queue of one node; STREAM lanes step generator tasks in turn."""

    def __init__(self, node: NodeLink, lane: Lane) -> None:
        self.node = node
        self.lane = lane
        self.ctx = LaneContext(node, lane)
        self._queue: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"omview-{lane.value}-{node.address}", daemon=True)
        self._started = False

    def submit(self, task: _Task) -> None:
        if not self._started:
            self._started = True
            self.node.lane_started()
            self._thread.start()
        self._queue.put(task)

    def stop(self) -> None:
        if self._started:
            self._queue.put(None)

    def join(self, timeout: float) -> bool:
        if self._started:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def started(self) -> bool:
        return self._started

    def _run(self) -> None:
        try:
            if self.lane is Lane.STREAM:
                self._run_streams()
            else:
                while (task := self._queue.get()) is not None:
                    self._do(task)
        finally:
            self.ctx.drop_client()
            self.node.lane_ended()

    def _do(self, task: _Task) -> None:
        started = time.monotonic()
        value, error = self.node.execute(self.ctx, task)
        self.node.hub.finished(task)
        task.deliver(TaskDone(self.node.address, task.kind, task.ticket, value, error, self.node.link,
                              time.monotonic() - started))  # fmt: skip

    def _run_streams(self) -> None:
        """Step every running stream in turn; a stream that yields N waits N seconds for its next step."""
        streams: list[tuple[_Task, Iterator[float | None]]] = []
        due: dict[int, float] = {}  # ticket -> when its stream is stepped next
        try:
            while True:
                wait = max(0.0, min(due.values()) - time.monotonic()) if streams else None
                try:
                    task = self._queue.get(timeout=wait) if wait != 0.0 else self._queue.get_nowait()
                except queue.Empty:
                    task = _ROUND
                if task is None:
                    return
                if task is not _ROUND:
                    streams.append((task, iter(task.fn(self.ctx))))
                    due[task.ticket] = 0.0
                    continue
                for item in list(streams):
                    task = item[0]
                    if due[task.ticket] > time.monotonic():
                        continue
                    try:
                        delay = next(item[1])
                    except StopIteration:
                        delay = -1.0
                    except Exception:  # a bug in one stream must not end the others
                        log.exception("stream %s on %s failed", task.kind, self.node.address)
                        delay = -1.0
                    if delay is not None and delay < 0:
                        streams.remove(item)
                        del due[task.ticket]
                    else:
                        due[task.ticket] = time.monotonic() + (delay or 0.0)
        finally:
            for _, gen in streams:
                close = getattr(gen, "close", None)
                if callable(close):
                    close()  # runs its finally: closes the command's channel


class NodeLink:
    """The owner of one node's connection and lanes (used from lane threads and the GUI thread)."""

    def __init__(self, hub: Links, address: str) -> None:
        self.hub = hub
        self.address = address
        self.endpoint = endpoint_for(hub.connector, address)
        self.call_timeout = hub.call_timeout
        self._backoff_min, self._backoff_max = hub.backoff
        self._lock = threading.Lock()
        self._failures = 0
        self._next_attempt = 0.0
        self.link = LinkState(LinkStatus.UNKNOWN)
        self.lanes = {lane: _LaneThread(self, lane) for lane in Lane}
        self._live = 0  # lane threads running
        self._stopping = False

    # -- connection state (any lane thread) --

    def set_link(self, link: LinkState) -> None:
        with self._lock:
            if link == self.link:
                return
            self.link = link
        self.hub.link_changed(self.address, link)

    def failed(self, exc: BaseException) -> LinkState:
        """A connection attempt failed: back off before the next one that is not urgent."""
        with self._lock:
            self._failures += 1
            delay = min(self._backoff_max, self._backoff_min * 2 ** (self._failures - 1))
            self._next_attempt = time.monotonic() + delay
        link = replace(classify(exc), retry_in=delay)
        self.set_link(link)
        log.info("%s: %s (next attempt in %.0f s)", self.address, exc, delay)
        return link

    def connect(self, urgent: bool, *, open_channel: bool = False) -> Channel | None:
        """Open the node's connection if needed (and with ``open_channel`` a new agent channel).

        Raises _NotConnected while backing off (unless ``urgent``) and when the attempt fails."""
        now = time.monotonic()
        if not urgent and now < self._next_attempt:
            raise _NotConnected(replace(self.link, retry_in=self._next_attempt - now))
        if not self.endpoint.connected():
            self.set_link(LinkState(LinkStatus.CONNECTING, self.endpoint.describe()))
        try:
            self.endpoint.connect()
            channel = self.endpoint.open_channel() if open_channel else None
        except EXPECTED as exc:
            raise _NotConnected(self.failed(exc)) from exc
        self.reset()
        return channel

    def execute(self, ctx: LaneContext, task: _Task) -> tuple[Any, LinkState | None]:
        """Run one task; an error becomes the LinkState it means for the row."""
        ctx.urgent = task.urgent
        try:
            return task.fn(ctx), None
        except AgentFault as exc:
            # the agent answered: the connection is fine, only this request failed
            return None, classify(exc)
        except _NotConnected as exc:
            return None, exc.link  # backing off, or connecting failed
        except _BROKEN as exc:
            ctx.drop_client()
            self.set_link(classify(exc))
            log.info("%s: %s failed: %s", self.address, task.kind, exc)
            return None, self.link
        except OmviewError as exc:
            return None, classify(exc)
        except Exception as exc:  # a bug in the task: log it, keep the lane (and the node) alive
            log.exception("%s on %s failed", task.kind, self.address)
            return None, LinkState(LinkStatus.AGENT_ERROR, f"internal error: {exc}")

    def reset(self) -> None:
        """Forget the backoff (an admin asked to reconnect)."""
        with self._lock:
            self._failures = 0
            self._next_attempt = 0.0

    def lane_started(self) -> None:
        with self._lock:
            self._live += 1

    def lane_ended(self) -> None:
        """A lane thread ends; the last one of a stopped node closes its connection."""
        with self._lock:
            self._live -= 1
            last = self._stopping and self._live == 0
        if last:
            self.endpoint.close()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            idle = self._live == 0
        for lane in self.lanes.values():
            lane.stop()
        if idle:
            self.endpoint.close()

    def join(self, deadline: float) -> bool:
        ok = all([lane.join(max(0.0, deadline - time.monotonic())) for lane in self.lanes.values()])
        self.endpoint.close()
        return ok


class Links:
    """One ``NodeLink`` per node address; the GUI thread submits, lane threads deliver.

    Parameters
    ----------
    connector
        How nodes are reached (SshConnector, UnixConnector, a routing connector, a test's own).
    call_timeout
        Seconds an agent request may take.
    backoff
        (first, longest) wait in seconds before reconnecting after failures, doubling each time.
    """

    def __init__(self, connector: object, *, call_timeout: float = 5.0,
                 backoff: tuple[float, float] = (1.0, 30.0)) -> None:  # fmt: skip
        self.connector = connector
        self.call_timeout = call_timeout
        self.backoff = backoff
        self._nodes: dict[str, NodeLink] = {}
        self._retired: list[NodeLink] = []
        self._lock = threading.Lock()  # the busy set is cleared from lane threads
        self._busy: set[tuple[str, str]] = set()
        self._tickets = 0
        self._stopped = False
        self._listeners: list[Deliver] = []
        #: polls not sent because the previous one of that node and kind still ran
        self.skipped: Counter[tuple[str, str]] = Counter()

    # -- GUI thread --

    def node(self, address: str) -> NodeLink:
        link = self._nodes.get(address)
        if link is None:
            link = self._nodes[address] = NodeLink(self, address)
        return link

    def link(self, address: str) -> LinkState:
        node = self._nodes.get(address)
        return node.link if node else LinkState(LinkStatus.UNKNOWN)

    def over_ssh(self, address: str) -> bool:
        """The node is reached over SSH (its files are not this machine's)."""
        return isinstance(self.node(address).endpoint, _SshEndpoint)

    def add_listener(self, deliver: Deliver) -> None:
        """``deliver`` gets a TaskDone of kind "link" whenever a node's connection state changes."""
        self._listeners.append(deliver)

    def busy(self, address: str, kind: str) -> bool:
        with self._lock:
            return (address, kind) in self._busy

    def submit(self, address: str, lane: Lane, kind: str, fn: Callable[[LaneContext], Any], deliver: Deliver,
               *, urgent: bool = False) -> int:  # fmt: skip
        """Run ``fn(ctx)`` in the node's lane; its TaskDone goes to ``deliver``. Returns the ticket."""
        return self._put(address, lane, _Task(kind, self._ticket(), fn, deliver, urgent))

    def poll(self, address: str, kind: str, fn: Callable[[LaneContext], Any], deliver: Deliver) -> int | None:
        """A periodic request: skipped (None) while the previous one of this kind for the node runs."""
        key = (address, kind)
        with self._lock:
            if key in self._busy:
                self.skipped[key] += 1
                return None
            self._busy.add(key)
        return self._put(address, Lane.POLL, _Task(kind, self._ticket(), fn, deliver, key=key))

    def stream(self, address: str, kind: str, fn: Callable[[LaneContext], Iterator[float | None]]) -> None:
        """Step the generator ``fn(ctx)`` in the node's STREAM lane until it ends (it delivers itself).

        Each ``yield`` gives the lane to the node's other streams; ``yield N`` asks for the next
        step not before N seconds. Steps must be short (a read with a timeout of a few 10 ms)."""
        self._put(address, Lane.STREAM, _Task(kind, self._ticket(), fn, lambda _item: True))

    def retire(self, address: str) -> None:
        """The node left: stop polling it; its link ends once no action or stream uses it."""
        node = self._nodes.get(address)
        if node is None:
            return
        if any(node.lanes[lane].started for lane in (Lane.ACTION, Lane.STREAM)):
            return  # jobs or commands still use its connection
        del self._nodes[address]
        node.stop()
        self._retired.append(node)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop every lane, wait (at most ``timeout`` in all) and close every connection."""
        self._stopped = True
        nodes = list(self._nodes.values()) + self._retired
        for node in nodes:
            node.stop()
        deadline = time.monotonic() + timeout
        ok = True
        for node in nodes:
            if not node.join(deadline):
                ok = False
                log.warning("lanes of %s did not stop within %.0f s", node.address, timeout)
        self._nodes.clear()
        self._retired.clear()
        return ok

    @property
    def stopped(self) -> bool:
        return self._stopped

    def threads(self) -> list[str]:
        """Names of the lane threads that run now (for tests and diagnostics)."""
        names = [f"omview-{lane.value}-{a}" for a in self._nodes for lane in Lane]
        return [t.name for t in threading.enumerate() if t.name in names and t.is_alive()]

    # -- internals --

    def _ticket(self) -> int:
        self._tickets += 1
        return self._tickets

    def _put(self, address: str, lane: Lane, task: _Task) -> int:
        if self._stopped:
            self.finished(task)
            return task.ticket
        self.node(address).lanes[lane].submit(task)
        return task.ticket

    def finished(self, task: _Task) -> None:
        """A lane ended a task (lane thread): a skipped poll may run again."""
        if task.key is not None:
            with self._lock:
                self._busy.discard(task.key)

    def link_changed(self, address: str, link: LinkState) -> None:
        """Tell the listeners (lane thread); CONNECTING shows while a slow login runs."""
        for deliver in self._listeners:
            deliver(TaskDone(address, "link", 0, None, None, link))
