"""The cluster driver: what the campaign needs from a cluster (`Nodes`), for a namespace cluster
(`NamespaceNodes`: one /proc for all nodes, told apart by network namespace; node files through the
holder's root) and for a VM cluster (`VmNodes`: everything inside the VM over its ssh master)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from faultlab import scan
from omview.model.channel import UnixChannel
from omview.model.client import AgentClient
from omview.model.errors import AgentFault
from omview.testbed import Cluster
from omview.testbed.vm import VmCluster


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str
    cmdline: bytes


class Nodes(Protocol):
    """What the campaign needs from a cluster."""

    ids: list[int]
    #: the machine itself can be killed and booted again (the kill-vm fault)
    machines: bool
    #: how many times longer a migration takes here than on the namespace cluster, from the request
    #: to the commit; the moments of the timed faults are drawn over that span
    pace: float

    def call(self, node: int, op: str, timeout: float = 60.0, **args: Any) -> Any: ...
    def processes(self) -> dict[int, list[Proc]]: ...
    def state(self, node: int) -> dict[str, Any]: ...
    def write(self, node: int, rel: str, text: str | None) -> None: ...
    def run(self, node: int, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]: ...
    def start_deputy(self, node: int, argv: list[str], out: IO[bytes], err_path: str) -> tuple[subprocess.Popen[bytes], int]: ...  # noqa: E501
    def kill(self, node: int, pid: int, sig: int) -> None: ...
    def agent_kill(self, node: int) -> None: ...
    def agent_alive(self, node: int) -> bool: ...
    def agent_start(self, node: int) -> None: ...
    def sshd_pid(self, node: int) -> int | None: ...
    def link_sessions(self, node: int) -> list[int]: ...
    def link(self, node: int, up: bool) -> None: ...
    def kill_machine(self, node: int) -> None: ...
    def boot_machine(self, node: int) -> None: ...
    def describe(self) -> str: ...


class NamespaceNodes:
    """A namespace cluster (omview.testbed) seen from the host."""

    machines = False
    pace = 1.0

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.ids = [n.id for n in cluster.nodes]

    def describe(self) -> str:
        return f"namespace cluster, {len(self.ids)} nodes"

    def call(self, node: int, op: str, timeout: float = 60.0, **args: Any) -> Any:
        with AgentClient(UnixChannel(self.cluster.agent_socket(node)), client_name="faults", timeout=timeout) as c:
            return c.call(op, timeout=timeout, **args)

    def _netns(self, pid: int) -> int | None:
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            return None

    def processes(self) -> dict[int, list[Proc]]:
        owner = {self._netns(n.holder_pid or 0): n.id for n in self.cluster.nodes}
        owner.pop(None, None)
        out: dict[int, list[Proc]] = {n: [] for n in self.ids}
        for pid, ppid, st, cmd in scan.procs():
            node = owner.get(self._netns(pid))
            if node is not None:
                out[node].append(Proc(pid, ppid, st, cmd))
        return out

    def _root(self, node: int) -> Path:
        return Path(f"/proc/{self.cluster.node(node).holder_pid}/root")

    def state(self, node: int) -> dict[str, Any]:
        return scan.state(str(self._root(node)))

    def write(self, node: int, rel: str, text: str | None) -> None:
        path = self._root(node) / rel
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)

    def run(self, node: int, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return self.cluster.exec(node, argv, capture_output=True, text=True, timeout=timeout)

    def start_deputy(self, node: int, argv: list[str], out: IO[bytes], err_path: str) -> tuple[subprocess.Popen[bytes], int]:  # noqa: E501
        with open(err_path, "wb") as err:
            proc = self.cluster.popen(node, ["--wd=/tmp", "mosrun", *argv], stdout=out, stderr=err,
                                      stdin=subprocess.DEVNULL)  # fmt: skip
        return proc, proc.pid  # nsenter execs mosrun: the local PID is the home PID

    def kill(self, node: int, pid: int, sig: int) -> None:
        os.kill(pid, sig)  # one PID namespace for all nodes

    def agent_kill(self, node: int) -> None:
        self.cluster.agent_kill(node)

    def agent_alive(self, node: int) -> bool:
        return Cluster.load(self.cluster.state_dir).node(node).agent_alive()

    def agent_start(self, node: int) -> None:
        self.cluster.agent_start(node, timeout=60)

    def sshd_pid(self, node: int) -> int | None:
        return self.cluster.node(node).sshd_pid

    def link_sessions(self, node: int) -> list[int]:
        """NODE's sshd session processes: the other nodes' links (the host reaches a namespace node
        without ssh)."""
        main = self.sshd_pid(node)
        return [p.pid for p in self.processes()[node] if p.cmdline.startswith(b"sshd: ") and p.pid != main]

    def link(self, node: int, up: bool) -> None:
        """The node's cable: the host side of its veth, so the node keeps its address and routes."""
        subprocess.run(["ip", "link", "set", self.cluster.node(node).veth, "up" if up else "down"], check=True,
                       timeout=30)  # fmt: skip

    def kill_machine(self, node: int) -> None:
        raise NotImplementedError("namespace nodes share one kernel: there is no machine to kill")

    def boot_machine(self, node: int) -> None:
        raise NotImplementedError("namespace nodes share one kernel")


#: one agent call inside a VM, by the venv's Python (the same path there)
_CALL = (
    "import json, sys\n"
    "from omview.model.client import AgentClient\n"
    "from omview.model.errors import AgentFault\n"
    "try:\n"
    "    with AgentClient.local(client_name='faults', timeout=float(sys.argv[3])) as c:\n"
    "        print(json.dumps({'ok': c.call(sys.argv[1], timeout=float(sys.argv[3]), **json.loads(sys.argv[2]))}))\n"
    "except AgentFault as e:\n"
    "    print(json.dumps({'fault': [e.code, e.message]}))\n"
)


class VmNodes:
    """A VM cluster (omview.testbed.vm): every look and action runs inside the VM over ssh."""

    machines = True
    #: a request reaches the VM's agent ~2 s after it is made (an ssh command, a Python start under
    #: emulation) and a small job's migration then takes 3-4 s (README, VM figures): 0-6 s, not 0-1.2 s
    pace = 5.0

    def __init__(self, cluster: VmCluster) -> None:
        self.cluster = cluster
        self.ids = [n.id for n in cluster.nodes]
        for n in self.ids:
            self._stay(n)

    def _stay(self, node: int) -> None:
        """No automatic migration: each VM sees its own load, so its balancer would move the campaign's
        job on its own, between and during runs (namespace nodes share one load and never do)."""
        cp = self.run(node, ["mosctl", "stay"], 120)
        if cp.returncode != 0:
            raise RuntimeError(f"mosctl stay on node {node}: {cp.stderr.strip()}")

    def describe(self) -> str:
        return f"VM cluster ({self.cluster.accel}), {len(self.ids)} VMs"

    def run(self, node: int, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return self.cluster.exec(node, argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def call(self, node: int, op: str, timeout: float = 60.0, **args: Any) -> Any:
        try:
            cp = self.run(node, [sys.executable, "-c", _CALL, op, json.dumps(args), str(timeout)], timeout + 60)
        except subprocess.TimeoutExpired:
            raise OSError(f"node {node}: {op} did not return") from None
        if cp.returncode != 0 or not cp.stdout.strip():
            raise OSError(f"node {node}: {op}: {cp.stderr.strip()[-300:]}")
        res = json.loads(cp.stdout)
        if "fault" in res:
            raise AgentFault(*res["fault"])
        return res["ok"]

    def processes(self) -> dict[int, list[Proc]]:
        out: dict[int, list[Proc]] = {}
        for n in self.ids:
            out[n] = []
            try:
                cp = self.run(n, ["python3", scan.__file__, "procs"], 60)
            except subprocess.TimeoutExpired:
                continue
            if cp.returncode == 0:
                out[n] = [Proc(p, pp, st, bytes.fromhex(cmd)) for p, pp, st, cmd in json.loads(cp.stdout)]
        return out

    def state(self, node: int) -> dict[str, Any]:
        cp = self.run(node, ["python3", scan.__file__, "state", "/"], 60)
        return dict(json.loads(cp.stdout)) if cp.returncode == 0 else {}

    def write(self, node: int, rel: str, text: str | None) -> None:
        path = "/" + rel
        line = f"rm -f {path}" if text is None else f"mkdir -p {os.path.dirname(path)} && cat >{path}"
        cp = self.cluster.exec(node, ["sh", "-c", line], input=text or "", capture_output=True, text=True, timeout=60)
        if cp.returncode != 0:
            raise OSError(f"node {node}: {line}: {cp.stderr.strip()}")

    def start_deputy(self, node: int, argv: list[str], out: IO[bytes], err_path: str) -> tuple[subprocess.Popen[bytes], int]:  # noqa: E501
        # the remote shell says its PID (the deputy's: it execs mosrun) first on stderr
        with open(err_path, "wb") as err:
            proc = self.cluster.popen(node, ["sh", "-c", 'cd /tmp && echo "$$" >&2 && exec "$@"', "sh", "mosrun",
                                             *argv], stdout=out, stderr=err, stdin=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            first = Path(err_path).read_bytes().split(b"\n", 1)
            if len(first) == 2 and first[0].strip().isdigit():
                return proc, int(first[0])
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no deputy PID from node {node}: {Path(err_path).read_bytes()[-300:]!r}")
            time.sleep(0.2)

    def kill(self, node: int, pid: int, sig: int) -> None:
        self.run(node, ["kill", f"-{signal.Signals(sig).name[3:]}", str(pid)], 60)

    def agent_kill(self, node: int) -> None:
        self.cluster.agent_kill(node)

    def agent_alive(self, node: int) -> bool:
        return self.cluster.agent_pid(node) is not None

    def agent_start(self, node: int) -> None:
        self.cluster.agent_start(node, timeout=120)

    def sshd_pid(self, node: int) -> int | None:
        cp = self.run(node, ["cat", "/run/sshd.pid"], 60)
        return int(cp.stdout) if cp.returncode == 0 and cp.stdout.strip().isdigit() else None

    def link_sessions(self, node: int) -> list[int]:
        """The sshd processes holding NODE's ssh connections from other VMs, the agents' links; not the
        host's (from the bridge address), which carry this campaign's own deputy and agent calls."""
        cp = self.run(node, ["ss", "-Htnp", "state", "established", "( sport = :22 )"], 60)
        pids: list[int] = []
        for line in cp.stdout.splitlines():
            fields = line.split()
            peer = next((f for f in fields if f.count(":") == 1 and not f.endswith(":22")), "")
            if peer and peer.rsplit(":", 1)[0] != self.cluster.bridge_address:
                pids += [int(x) for x in re.findall(r"pid=(\d+)", line)]
        return sorted(set(pids))

    def link(self, node: int, up: bool) -> None:
        """The VM's cable: its tap on the host's bridge."""
        subprocess.run(["ip", "link", "set", self.cluster.node(node).tap, "up" if up else "down"], check=True,
                       timeout=30)  # fmt: skip

    def kill_machine(self, node: int) -> None:
        self.cluster.kill_vm(node)

    def boot_machine(self, node: int) -> None:
        self.cluster.restart_vm(node, boot_timeout=300)
        self._stay(node)  # the flag was on the old disk
