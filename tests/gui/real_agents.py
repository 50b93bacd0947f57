"""Test support for the GUI tests: real agents on 127.0.0.2.., addressed by IP as the GUI does.

A thin view over tests.support.agents (the shared loopback-agent harness): node agents with 2
CPUs and 2 GiB each, down after 2 s of silence, stopped by PID.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from omview.model.errors import OmviewError
from tests.support.agents import AgentProc, Cluster


class RealAgents:
    """N agents on 127.0.0.2, 127.0.0.3, ...; files live under ``directory``."""

    def __init__(self, directory: Path, count: int = 3) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.count = count
        self.cluster = Cluster(str(directory), count, cpus=2, memory=2 << 30, down_after=2.0)
        self._by_address = dict(zip(self.cluster.addresses, self.cluster.agents, strict=True))

    @property
    def addresses(self) -> list[str]:
        return self.cluster.addresses

    def _agent(self, address: str) -> AgentProc:
        return self._by_address[address]

    def socket_of(self, address: str) -> str:
        return self._agent(address).socket

    def start(self, timeout: float = 30.0) -> RealAgents:
        for address in self.addresses:
            self.start_one(address)
        self.wait_all_up(timeout)
        return self

    def start_one(self, address: str) -> None:
        self._agent(address).start(wait=False)

    def wait_all_up(self, timeout: float) -> None:
        """Poll until the first agent lists every node as up (the agents start in parallel)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for agent in self.cluster.agents:
                if agent.proc is not None and agent.proc.poll() is not None:
                    raise RuntimeError(f"agent {agent.name} exited: {agent.log()}")
            try:
                with self._agent(self.addresses[0]).client(timeout=2.0) as c:
                    nodes = c.nodes()
                if sum(n.up for n in nodes) == self.count:
                    return
                last = str([(n.address, n.status) for n in nodes])
            except (OmviewError, TimeoutError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise RuntimeError(f"agents not all up after {timeout:.0f} s: {last}\n{self.log(self.addresses[0])}")

    def log(self, address: str) -> str:
        return self._agent(address).log()[-2000:]

    def kill(self, address: str) -> None:
        """SIGKILL one agent (a crash) by its PID."""
        self._agent(address).stop(signal.SIGKILL)

    def stop(self) -> None:
        self.cluster.stop()
