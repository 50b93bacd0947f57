"""Test support: real ``omview-agent run`` processes on loopback addresses (127.0.0.2, ...).

Used by the agent, CLI and collector tests. Every agent gets its own temp dir (config, state,
socket); all share one cluster key, one map and one random UDP port. Callers stop every agent they
started, by PID (``Cluster.stop``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omview.model import protocol
from omview.model.client import AgentClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``cond`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def free_udp_port(addresses: list[str]) -> int:
    """A UDP port that is free on all the given addresses right now."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((addresses[0], 0))
            port = probe.getsockname()[1]
        ok = True
        for addr in addresses:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((addr, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no free UDP port")


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v)


@dataclass
class AgentProc:
    """One agent process and its files."""

    name: str
    dir: str
    settings: dict[str, Any]
    env: dict[str, str]
    wrap: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""
    #: the source tree the agent runs from (bench/procs.py --baseline runs another checkout's agent)
    root: str = REPO

    @property
    def socket(self) -> str:
        return str(self.settings["socket"])

    @property
    def state_dir(self) -> str:
        return str(self.settings["state_dir"])

    @property
    def config(self) -> str:
        return os.path.join(self.dir, "agent.toml")

    def write_config(self) -> None:
        with open(self.config, "w", encoding="utf-8") as fh:
            for k, v in self.settings.items():
                fh.write(f"{k} = {toml_value(v)}\n")

    def start(self, *, wait: bool = True) -> AgentProc:
        self.write_config()
        self.log_path = os.path.join(self.dir, "agent.log")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [*self.wrap, PY, "-m", "omview.agent", "run", "--config", self.config, "-v"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=self.env,
            cwd=self.root,  # `python -m` puts the working directory first on sys.path
        )
        log.close()
        if wait:
            wait_for(self._ready, 15, f"agent {self.name} to serve {self.socket}\n{self.log()}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent {self.name} exited with {self.proc.returncode}:\n{self.log()}")
        if not os.path.exists(self.socket):
            return False
        try:
            with self.client() as c:
                c.call("ping")
            return True
        except Exception:
            return False

    def client(self, timeout: float = 10.0) -> AgentClient:
        return AgentClient.local(self.socket, client_name="pytest", timeout=timeout)

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()[-6000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Stop by PID; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        self.proc = None
        return rc

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """N agents on 127.0.0.2.. with one key, one map and one UDP port."""

    def __init__(self, base: str, size: int, **overrides: Any) -> None:
        self.base = base
        self.addresses = [f"127.0.0.{i + 2}" for i in range(size)]
        self.port = free_udp_port(self.addresses + ["127.0.0.9"])
        self.key = os.path.join(base, "cluster.key")
        subprocess.run(
            [PY, "-m", "omview.agent", "genkey", self.key], check=True, capture_output=True, cwd=REPO
        )
        self.map_path = os.path.join(base, "openmosix.map")
        with open(self.map_path, "w", encoding="utf-8") as fh:
            fh.write(f"# test map\n1 {self.addresses[0]} {size}\n")
        self.agents: list[AgentProc] = []
        for i, addr in enumerate(self.addresses):
            d = os.path.join(base, f"node{i + 1}")
            os.makedirs(d)
            os.chmod(d, 0o755)
            settings: dict[str, Any] = {
                "address": addr,
                "map_file": self.map_path,
                "port": self.port,
                "key_file": self.key,
                "socket": os.path.join(d, "run", "agent.sock"),
                "state_dir": os.path.join(d, "state"),
                "process_scope": "all",
                "down_after": 3.0,
                "gossip_fanout": 3,
                "request_timeout": 1.0,
            }
            settings.update(overrides)
            env = dict(os.environ)
            env.update(
                OMVIEW_SOCKET=settings["socket"], OMVIEW_STATE_DIR=settings["state_dir"], OMVIEW_CONFIG_DIR=d
            )
            env["PYTHONPATH"] = REPO
            self.agents.append(AgentProc(f"node{i + 1}", d, settings, env))

    def start(self) -> Cluster:
        for a in self.agents:
            a.start(wait=False)
        for a in self.agents:
            wait_for(a._ready, 15, f"agent {a.name}\n{a.log()}")
        return self

    def stop(self) -> None:
        for a in self.agents:
            a.stop()


def make_base() -> str:
    base = tempfile.mkdtemp(prefix="omview-h2-")
    os.chmod(base, 0o755)  # the non-root test must reach the sockets inside
    return base


class RawConn:
    """A bare socket speaking NDJSON by hand, for protocol-level tests."""

    def __init__(self, path: str, timeout: float = 10.0, *, sock: socket.socket | None = None) -> None:
        """SOCK: one already connected (e.g. by tests.support.asuser.connect_as)."""
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(path)
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the agent (buffer {self.buf[:200]!r})")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\n", 1)
        return json.loads(raw)

    def reply(self) -> dict[str, Any]:
        """Next reply, skipping events."""
        while True:
            msg = self.line()
            if "event" not in msg:
                return msg

    def request(self, req_id: Any, op: str, **args: Any) -> dict[str, Any]:
        self.send(protocol.request(req_id, op, args))
        return self.reply()

    def hello(self) -> dict[str, Any]:
        r = self.request(0, "hello", protocol=protocol.PROTOCOL_VERSION, client="raw")
        assert "result" in r, r
        return r

    def close(self) -> None:
        self.sock.close()


def fault_code(msg: dict[str, Any]) -> int | None:
    err = msg.get("error")
    return int(err["code"]) if isinstance(err, dict) else None
