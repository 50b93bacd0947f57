"""Shared helpers of the migration tests: mosrun deputies in cluster nodes, agent clients, waits."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omview.model import procfs
from omview.model.channel import UnixChannel
from omview.model.client import AgentClient
from omview.testbed import Cluster

PROGS = Path(__file__).parent / "progs"
COUNTER = str(PROGS / "counter.py")
FAMILY = str(PROGS / "family.py")
PY = "/usr/bin/python3"


def client(cluster: Cluster, node: int) -> AgentClient:
    return AgentClient(UnixChannel(cluster.agent_socket(node)), client_name="tests", timeout=60)


def call(cluster: Cluster, node: int, op: str, **args: Any) -> Any:
    with client(cluster, node) as c:
        return c.call(op, **args)


def wait(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class Deputy:
    """`mosrun ...` running inside a node (nsenter execs it, so Popen.pid is the home PID)."""

    def __init__(self, cluster: Cluster, node: int, argv: list[str], opts: list[str] | None = None) -> None:
        self.cluster = cluster
        self.node = node
        self.proc = cluster.popen(
            node,
            ["--wd=/tmp", "mosrun", *(opts or []), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.pid = self.proc.pid
        self.job = f"{node}:{self.pid}"
        self.out = b""
        self.err = b""

    def status(self) -> dict[str, Any]:
        return call(self.cluster, self.node, "job.status", job=self.job)

    def wait_started(
        self, timeout: float = 20.0, pred: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """Wait until the job runs and printed something (or until PRED(status) holds)."""

        def started() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"mosrun exited {self.proc.returncode}: {self.proc.stderr.read().decode()}"
                )
            try:
                st = self.status()
            except Exception:
                return None
            if pred is not None:
                return st if pred(st) else None
            return st if st["out_sent"] > 0 or st["state"] != "running" else None

        return wait(started, timeout, f"job {self.job} to start and print")

    def finish(self, timeout: float = 90.0) -> int:
        try:
            self.out, self.err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.out, self.err = self.proc.communicate(timeout=30)


def migrate(
    cluster: Cluster, node: int, what: str | int, target: str | int, *opts: str
) -> subprocess.CompletedProcess[str]:
    return cluster.exec(
        node, ["migrate", *opts, str(what), str(target)], capture_output=True, text=True, timeout=180
    )


def counts(out: bytes) -> tuple[list[int], set[str]]:
    nums, hosts = [], set()
    for line in out.decode().splitlines():
        parts = line.split()
        if parts and parts[0] == "count":
            nums.append(int(parts[1]))
            hosts.add(parts[2])
    return nums, hosts


def alive(pid: int) -> bool:
    """PID runs (exists and has not ended)."""
    return procfs.alive(pid, None)


def all_up(cluster: Cluster, timeout: float = 20.0) -> Cluster:
    """Wait until every agent lists every node up (gossip needs a moment after the cluster starts)
    and has finished its `criu check` (run in the background at start; until it ends every process
    is "CRIU check has not finished yet", which takes seconds on a busy machine)."""
    ids = {n.id for n in cluster.nodes}

    def ok() -> bool:
        for n in ids:
            nodes = call(cluster, n, "cluster.nodes")
            if {x["id"] for x in nodes if x["status"] == "up"} != ids:
                return False
            if not call(cluster, n, "node.info")["criu"]["checked"]:
                return False
        return True

    wait(ok, timeout, "all nodes up everywhere", every=0.2)
    return cluster
