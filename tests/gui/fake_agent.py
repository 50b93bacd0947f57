"""Test support: a small, real agent server (Unix sockets, the NDJSON protocol) in this process.

Each ``FakeNode`` listens on its own socket and validates every request with
``omview.model.protocol.parse_request`` like the real agent. Tests control it: ``delay`` slows
every reply, ``hold()`` makes replies wait until ``release()``, ``kill()`` closes the listener and
every connection (the node's agent died), ``revive()`` listens again. Used for the "a slow or dead
node does not freeze the window" cases; the real agent is used wherever timing does not matter.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import replace
from typing import Any

from omview.model import protocol
from omview.model.cluster import Flags, NodeInfo
from omview.model.protocol import FaultCode


class FakeNode:
    def __init__(self, cluster: FakeCluster, info: NodeInfo, path: str) -> None:
        self.cluster = cluster
        self.info = info
        self.flags = Flags(speed=info.speed)
        self.path = path
        self.delay = 0.0
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._gate = threading.Event()
        self._gate.set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.alive = False

    # -- control --

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst.bind(self.path)
        lst.listen(16)
        self._listener = lst
        self.alive = True
        t = threading.Thread(target=self._accept, args=(lst,), name=f"fake-agent-{self.info.address}", daemon=True)
        t.start()
        self._threads.append(t)

    def kill(self) -> None:
        """The agent dies: no listener, every connection reset."""
        self.alive = False
        lst, self._listener = self._listener, None
        if lst is not None:
            with contextlib.suppress(OSError):
                lst.shutdown(socket.SHUT_RDWR)
            lst.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._gate.set()

    def revive(self) -> None:
        self.start()

    def hold(self) -> None:
        """Replies wait until release() (a node that hangs)."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [args for name, args in self.requests if name == op]

    def join(self, timeout: float = 5.0) -> None:
        for t in self._threads:
            t.join(timeout)

    # -- serving --

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    reply = self._answer(line)
                    self._gate.wait(60)
                    if self.delay:
                        time.sleep(self.delay)
                    if not self.alive:
                        return
                    conn.sendall(reply)
        except OSError:
            return
        finally:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            conn.close()

    def _answer(self, line: bytes) -> bytes:
        try:
            req = protocol.parse_request(line)
        except protocol.ProtocolError as exc:
            return protocol.fault(getattr(exc, "req_id", None), exc.code, str(exc))
        self.requests.append((req.op, dict(req.args)))
        try:
            return protocol.ok(req.id, self._result(req.op, req.args))
        except KeyError as exc:
            return protocol.fault(req.id, FaultCode.UNKNOWN_OP, f"fake agent does not serve {exc}")

    def current_info(self) -> NodeInfo:
        f = self.flags
        return replace(self.info, speed=f.speed, stay=f.stay, block=f.block, quiet=f.quiet)

    def _result(self, op: str, args: dict[str, Any]) -> Any:
        if op == "hello":
            return {"node": self.info.id, "protocol": protocol.PROTOCOL_VERSION, "version": "fake-1"}
        if op == "ping":
            return {"pong": True}
        if op == "node.info":
            return self.current_info().to_dict()
        if op == "cluster.nodes":
            return [n.to_dict() for n in self.cluster.table()]
        if op == "flags.get":
            return self.flags.to_dict()
        if op == "flags.set":
            self.flags = replace(self.flags, **args)
            return self.flags.to_dict()
        if op in ("admin.expel", "admin.bring"):
            return {"moved": 0}
        raise KeyError(op)


class FakeCluster:
    """Fake agents sharing one cluster table (what gossip gives real agents)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.nodes: dict[str, FakeNode] = {}
        self.hidden: set[str] = set()  # left the cluster: not in cluster.nodes at all

    def add(self, node_id: int, address: str, **info: Any) -> FakeNode:
        defaults: dict[str, Any] = {
            "status": "up", "hostname": f"node{node_id}", "cpus": 2, "tmem": 4 << 30, "mem": 3 << 30,
            "rmem": 2 << 30, "load": 40, "util": 20, "speed": 10000,
        }  # fmt: skip
        defaults.update(info)
        node = FakeNode(self, NodeInfo(id=node_id, address=address, **defaults), os.path.join(self.directory, f"{address}.sock"))
        node.start()
        self.nodes[address] = node
        self.hidden.discard(address)
        return node

    def table(self) -> list[NodeInfo]:
        out = []
        for address, node in self.nodes.items():
            if address in self.hidden:
                continue
            info = node.current_info()
            out.append(info if node.alive else replace(info, status="down"))
        return out

    def sockets(self) -> dict[str, str]:
        return {a: n.path for a, n in self.nodes.items()}

    def socket_of(self, address: str) -> str:
        node = self.nodes.get(address)
        return node.path if node else os.path.join(self.directory, f"{address}.sock")

    def close(self) -> None:
        for node in self.nodes.values():
            node.release()
            node.kill()
        for node in self.nodes.values():
            node.join()
