"""Test support: real omview agents on loopback addresses (127.0.0.x), each in its own temp dir.

Every agent is ``python -m omview.agent run --config FILE`` with its own socket and state dir,
one shared map file and one cluster key (``omview-agent genkey``), process_scope "all". They gossip
over UDP on a port chosen per cluster. Agents are stopped by PID, never by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omview.model.client import AgentClient
from omview.model.errors import OmviewError


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RealAgents:
    """N agents on 127.0.0.2, 127.0.0.3, ...; ``sockets`` maps address -> socket path."""

    directory: Path
    count: int = 3
    port: int = field(default_factory=_free_udp_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.{i + 2}" for i in range(self.count)]

    def socket_of(self, address: str) -> str:
        return str(self.directory / address / "agent.sock")

    def start(self, timeout: float = 30.0) -> RealAgents:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        key = d / "cluster.key"
        if not key.exists():
            subprocess.run([sys.executable, "-m", "omview.agent", "genkey", str(key)], check=True, capture_output=True)
        (d / "openmosix.map").write_text(f"1 {self.addresses[0]} {self.count}\n")
        for address in self.addresses:
            self.start_one(address)
        self.wait_all_up(timeout)
        return self

    def start_one(self, address: str) -> None:
        nd = self.directory / address
        nd.mkdir(exist_ok=True)
        conf = nd / "agent.toml"
        conf.write_text(
            f'address = "{address}"\nmap_file = "{self.directory / "openmosix.map"}"\n'
            f'key_file = "{self.directory / "cluster.key"}"\nsocket = "{self.socket_of(address)}"\n'
            f'state_dir = "{nd / "state"}"\nprocess_scope = "all"\ncpus = 2\nmemory = 2147483648\n'
            f"port = {self.port}\ndown_after = 2.0\n"
        )
        env = dict(os.environ, OMVIEW_SOCKET=self.socket_of(address), OMVIEW_STATE_DIR=str(nd / "state"),
                   OMVIEW_CONFIG_DIR=str(nd))  # fmt: skip
        log = open(nd / "agent.log", "ab")  # noqa: SIM115 (the child owns it)
        self.procs[address] = subprocess.Popen(
            [sys.executable, "-m", "omview.agent", "run", "--config", str(conf)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()

    def wait_all_up(self, timeout: float) -> None:
        """Poll until the first agent lists every node as up (the agents start in parallel)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for address, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"agent {address} exited: {self.log(address)}")
            try:
                with AgentClient.local(self.socket_of(self.addresses[0]), timeout=2.0) as c:
                    nodes = c.nodes()
                if sum(n.up for n in nodes) == self.count:
                    return
                last = str([(n.address, n.status) for n in nodes])
            except (OmviewError, TimeoutError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise RuntimeError(f"agents not all up after {timeout:.0f} s: {last}\n{self.log(self.addresses[0])}")

    def log(self, address: str) -> str:
        p = self.directory / address / "agent.log"
        return p.read_text(errors="replace")[-2000:] if p.exists() else ""

    def kill(self, address: str) -> None:
        """SIGKILL one agent (a crash) by its PID."""
        proc = self.procs.pop(address)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()
