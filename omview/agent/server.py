"""L2 agent: the Unix socket server (NDJSON, SO_PEERCRED access checks, events). A bad client only
ever gets faults on its own connection; slow subscribers lose events (counted), not agent memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from omview.model import protocol
from omview.model.errors import ConfigError
from omview.model.protocol import MAX_LINE, FaultCode, ProtocolError, Request

log = logging.getLogger(__name__)

READ_CHUNK = 65536
#: bytes queued to one connection beyond which new events are dropped (and counted)
EVENT_BUFFER_LIMIT = 512 * 1024
LOG_HINT = "see the agent log (journalctl -u omview-agent, or the stderr of 'omview-agent run')"


class OpFault(Exception):
    """Raised by an operation handler to answer with a fault."""

    def __init__(self, code: FaultCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def topic_matches(topics: list[str], name: str) -> bool:
    """'*' matches all; 'node' or 'node.*' match node.up/node.down/...; else exact names."""
    for t in topics:
        base = t[:-2] if t.endswith(".*") else t
        if base in ("*", "") or name == base or name.startswith(base + "."):
            return True
    return False


class Connection:
    """One client of the socket, with the credentials the kernel vouches for."""

    def __init__(self, cid: int, writer: asyncio.StreamWriter, pid: int, uid: int, gid: int) -> None:
        self.id = cid
        self.writer = writer
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.handshaken = False
        self.client = ""
        self.topics: list[str] | None = None
        self.dropped = 0
        self.closed = False
        self._notice: asyncio.Task[None] | None = None

    async def send(self, line: bytes) -> None:
        self.writer.write(line)
        await self.writer.drain()

    def push_event(self, name: str, line: bytes) -> bool:
        """Queue an event without waiting; False when it had to be dropped (slow reader)."""
        if self.closed or self.topics is None or not topic_matches(self.topics, name):
            return True
        transport = self.writer.transport
        if transport.is_closing():
            return True
        if transport.get_write_buffer_size() > EVENT_BUFFER_LIMIT:
            self.dropped += 1
            if self._notice is None:
                # tell the client how many it missed as soon as it has caught up
                self._notice = asyncio.get_running_loop().create_task(self._notify_dropped())
            return False
        self._flush_notice()
        self.writer.write(line)
        return True

    def _flush_notice(self) -> None:
        if self.dropped:
            self.writer.write(protocol.event("events.dropped", {"count": self.dropped}))
            self.dropped = 0

    async def _notify_dropped(self) -> None:
        try:
            while not self.closed and self.writer.transport.get_write_buffer_size() > EVENT_BUFFER_LIMIT // 4:
                await self.writer.drain()
                await asyncio.sleep(0.05)
            if not self.closed and not self.writer.transport.is_closing():
                self._flush_notice()
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self._notice = None


Dispatcher = Callable[[Connection, Request], Awaitable[Any]]



# one op handler: the connection it came on and its arguments -> the JSON-able result
Handler = Callable[["Connection", dict[str, Any]], Awaitable[Any]]

class Server:
    """Serves the agent socket; ``dispatch`` does the work of each request."""

    def __init__(
        self, path: str, dispatch: Dispatcher, *, request_timeout: float, max_clients: int,
        max_clients_per_user: int | None = None,
    ) -> None:  # fmt: skip
        self.path = path
        self.dispatch = dispatch
        self.request_timeout = request_timeout
        self.max_clients = max_clients
        self.max_clients_per_user = max_clients_per_user or max_clients
        self.conns: set[Connection] = set()
        self.stats: dict[str, int] = {
            "connections": 0, "requests": 0, "faults": 0, "internal_errors": 0, "busy_rejected": 0,
            "events_sent": 0, "events_dropped": 0,
        }  # fmt: skip
        self._ids = itertools.count(1)
        self._server: asyncio.base_events.Server | None = None
        self._inode: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, *, serving: bool = True) -> None:
        """Bind and claim the socket; with SERVING False, connections wait in the listen queue until
        serve() (the agent claims its socket first, then answers once it has measured the node)."""
        directory = os.path.dirname(self.path) or "."
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=0o755, exist_ok=True)
                os.chmod(directory, 0o755)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the socket directory {directory}: {exc.strerror}", path=self.path
            ) from None
        if os.path.exists(self.path) or os.path.islink(self.path):
            self._claim_stale_socket()
        try:
            self._server = await asyncio.start_unix_server(
                self._client, path=self.path, limit=READ_CHUNK, start_serving=serving
            )
        except OSError as exc:
            raise ConfigError(f"cannot listen on the agent socket: {exc.strerror}", path=self.path) from None
        os.chmod(self.path, 0o666)  # everyone may connect; each request is checked by SO_PEERCRED uid
        self._inode = os.stat(self.path).st_ino

    async def serve(self) -> None:
        """Start answering the connections that start(serving=False) left waiting."""
        if self._server is not None:
            await self._server.start_serving()

    def _claim_stale_socket(self) -> None:
        st = os.lstat(self.path)
        if not stat.S_ISSOCK(st.st_mode):
            raise ConfigError(
                "exists and is not a socket; remove it or choose another 'socket' path", path=self.path
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)  # left behind by an agent that died; nobody listens
            return
        finally:
            probe.close()
        raise ConfigError(
            "another omview agent is already serving this socket; stop it first", path=self.path
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.conns):
            conn.closed = True
            conn.writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(OSError):
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    def publish(self, name: str, data: Any, *, owner: int | None = None) -> None:
        """Send an event to every subscriber whose topics match; with OWNER only to root and that uid
        (the event carries what the op reading the same data shows only to them)."""
        line = protocol.event(name, data)
        for conn in list(self.conns):
            if conn.topics is None or (owner is not None and conn.uid not in (0, owner)):
                continue
            if conn.push_event(name, line):
                self.stats["events_sent"] += 1
            else:
                self.stats["events_dropped"] += 1

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("connection handler failed")
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", creds)
        refusal = self._refusal(uid)
        if refusal:
            self.stats["busy_rejected"] += 1
            writer.write(protocol.fault(None, FaultCode.BUSY, refusal))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), 5.0)
            return
        conn = Connection(next(self._ids), writer, pid, uid, gid)
        self.conns.add(conn)
        self.stats["connections"] += 1
        log.debug("client %d connected (pid %d, uid %d)", conn.id, pid, uid)
        try:
            await self._read_loop(conn, reader)
        finally:
            conn.closed = True
            self.conns.discard(conn)
            log.debug("client %d gone", conn.id)

    def _refusal(self, uid: int) -> str:
        """Why a new connection of UID is refused ('' when it is served). Root's connections and
        everybody else's are counted apart, and every other user also has a share of their own:
        idle connections of one local user can neither lock out root's tools (collector, GUI,
        peers) nor the other users."""
        same = sum(1 for c in self.conns if c.uid == uid)
        if uid == 0:
            if same >= self.max_clients:
                return (f"the agent already serves {same} connections of root (max_clients = {self.max_clients}); "
                        "close idle clients or try again later")  # fmt: skip
            return ""
        others = sum(1 for c in self.conns if c.uid != 0)
        if same >= self.max_clients_per_user:
            return (f"the agent already serves {same} connections of uid {uid} "
                    f"(max_clients_per_user = {self.max_clients_per_user}); close idle clients or try again later")  # fmt: skip
        if others >= self.max_clients:
            return (f"the agent already serves {others} connections of non-root users "
                    f"(max_clients = {self.max_clients}); try again later")  # fmt: skip
        return ""

    async def _read_loop(self, conn: Connection, reader: asyncio.StreamReader) -> None:
        buf = bytearray()
        discarding = False
        loop = asyncio.get_running_loop()
        # a connection that never says hello holds a slot for nothing: it gets request_timeout to do so
        hello_by = loop.time() + self.request_timeout
        while True:
            pending = bool(buf) or discarding
            wait = self.request_timeout if pending else None
            if not conn.handshaken:  # trickling bytes does not buy more time before the hello either
                left = max(0.0, hello_by - loop.time())
                wait = left if wait is None else min(wait, left)
            try:
                chunk = await asyncio.wait_for(reader.read(READ_CHUNK), wait)
            except TimeoutError:
                self.stats["faults"] += 1
                if conn.handshaken or loop.time() < hello_by:
                    why = (f"incomplete request: no end of line for {self.request_timeout:g} s; closing the "
                           "connection (every request must end with a newline)")  # fmt: skip
                else:
                    why = f"no hello within {self.request_timeout:g} s of connecting; closing the connection"
                await conn.send(protocol.fault(None, FaultCode.TIMEOUT, why))
                return
            if not chunk:
                return
            start = 0
            while start <= len(chunk):
                nl = chunk.find(b"\n", start)
                if discarding:
                    if nl < 0:
                        break
                    discarding = False
                    start = nl + 1
                    self.stats["faults"] += 1
                    await conn.send(protocol.fault(
                        None, FaultCode.TOO_LARGE,
                        f"request line longer than {MAX_LINE} bytes; it was discarded (the connection stays open)",
                    ))  # fmt: skip
                    continue
                if nl < 0:
                    buf += chunk[start:]
                    if len(buf) > MAX_LINE:
                        discarding = True
                        buf.clear()
                    break
                buf += chunk[start:nl]
                start = nl + 1
                line = bytes(buf)
                buf.clear()
                await self._handle_line(conn, line)

    async def _handle_line(self, conn: Connection, line: bytes) -> None:
        self.stats["requests"] += 1
        try:
            req = protocol.parse_request(line)
        except ProtocolError as exc:
            self.stats["faults"] += 1
            await conn.send(protocol.fault(getattr(exc, "req_id", None), exc.code, str(exc)))
            return
        try:
            if not conn.handshaken and req.op != "hello":
                raise OpFault(
                    FaultCode.HANDSHAKE_REQUIRED,
                    f'send hello first, e.g. {{"id":1,"op":"hello","args":{{"protocol":{protocol.PROTOCOL_VERSION}}}}}',
                )
            spec = protocol.OPS[req.op]
            if spec.access == "root" and conn.uid != 0:
                raise OpFault(FaultCode.PERMISSION_DENIED, f"{req.op} needs root (you are uid {conn.uid})")
            result = await self.dispatch(conn, req)
            reply = protocol.ok(req.id, result)
        except OpFault as fault:
            self.stats["faults"] += 1
            reply = protocol.fault(req.id, fault.code, fault.message)
        except Exception as exc:
            self.stats["faults"] += 1
            self.stats["internal_errors"] += 1
            log.exception("internal error in %s (client %d, uid %d)", req.op, conn.id, conn.uid)
            reply = protocol.fault(
                req.id,
                FaultCode.INTERNAL,
                f"internal error in {req.op} ({type(exc).__name__}: {exc}); {LOG_HINT}",
            )
        await conn.send(reply)
