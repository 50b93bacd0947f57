"""Shared by the VM tests: one 2-VM cluster for the whole tests/vm package (booting it costs
~30-60 s of software emulation; every test leaves it as it found it, restarting a VM it killed),
agent calls and mosrun deputies inside the VMs."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omview.testbed.vm import VmCluster
from tests.migration.helpers import COUNTER

HOLDFILE = str(Path(COUNTER).with_name("holdfile.py"))
#: digits of pi: long enough (tens of seconds under emulation) for two migrations, exact to compare
BC_PROGRAM = "scale=3000; 4*a(1)"
#: a pipe into xz with two threads (1 MiB blocks, so both get work); its output is deterministic
XZ_LINE = "seq 1 6000000 | xz -T2 -3 --block-size=1MiB"


def run(vms: VmCluster, node: int, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return vms.exec(node, argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


#: run in a VM by the venv's Python (the same path there): one agent call with a generous timeout;
#: the CLIs' 10 s are short for an emulated machine whose peer links cost seconds to open
_CALL = (
    "import json, sys\n"
    "from omview.model.client import AgentClient\n"
    "with AgentClient.local(client_name='tests', timeout=180) as c:\n"
    "    print(json.dumps(c.call(sys.argv[1], **json.loads(sys.argv[2]))))\n"
)


def call(vms: VmCluster, node: int, op: str, **args: Any) -> Any:
    cp = run(vms, node, [sys.executable, "-c", _CALL, op, json.dumps(args)], timeout=240)
    assert cp.returncode == 0, (op, cp.stderr)
    return json.loads(cp.stdout)


class Job:
    """`mosrun ARGV` started over ssh in NODE; the remote shell prints the deputy's PID, then execs it."""

    def __init__(self, vms: VmCluster, node: int, argv: list[str]) -> None:
        self.vms, self.node = vms, node
        self.proc = vms.popen(node, ["sh", "-c", 'echo "$$"; exec "$@"', "sh", "mosrun", *argv],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)  # fmt: skip
        assert self.proc.stdout is not None
        if not select.select([self.proc.stdout], [], [], 120)[0]:  # bounded: a VM that does not answer
            self.proc.kill()
            self.proc.communicate(timeout=30)
            raise AssertionError(f"node{node} did not start the job within 120 s")
        first = self.proc.stdout.readline().decode().strip()
        assert first.isdigit(), f"no PID from the VM: {first!r}"
        self.pid = int(first)
        self.out = b""
        self.err = b""

    def migrate(self, target: str | int) -> dict[str, Any]:
        cp = run(self.vms, self.node, ["migrate", "--json", str(self.pid), str(target)], timeout=300)
        assert cp.returncode == 0, (cp.stdout, cp.stderr)
        rec: dict[str, Any] = json.loads(cp.stdout)
        assert rec["result"] == "ok", rec
        return rec

    def migrate_bg(self, target: str | int) -> subprocess.Popen[str]:
        """`migrate --json PID TARGET` on the home node, not waited for (a test kills a VM meanwhile)."""
        return self.vms.popen(self.node, ["migrate", "--json", str(self.pid), str(target)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)  # fmt: skip

    def where(self) -> int:
        return int(call(self.vms, self.node, "job.status", job=f"{self.node}:{self.pid}")["where"])

    def wait_err(self, text: str, timeout: float) -> str:
        """Read the deputy's stderr until it says TEXT (bounded); returns all of it so far."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while text.encode() not in self.err:
            left = deadline - time.monotonic()
            assert left > 0, f"the deputy did not say {text!r} within {timeout} s; it said {self.err!r}"
            if select.select([fd], [], [], min(left, 1.0))[0]:
                chunk = os.read(fd, 65536)
                assert chunk, f"the deputy closed stderr before saying {text!r}: {self.err!r}"
                self.err += chunk
        return self.err.decode(errors="replace")

    def finish(self, timeout: float = 300) -> int:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=30)
            raise
        self.out += out
        self.err += err
        return self.proc.returncode


def job_tasks(vms: VmCluster, node: int, job: str) -> list[dict[str, Any]]:
    """The job's processes that run on NODE (the deputy, on the home node, does not run it)."""
    return [p for p in call(vms, node, "procs.list") if p["job"] == job and p.get("where", node) == node]


#: the agents' state dir in every VM (on its overlay: a restarted VM starts without it)
STATE = "/var/lib/omview"


def fault(vms: VmCluster, node: int, name: str, value: str | None) -> None:
    """Switch the agent fault hook NAME on NODE on (VALUE) or off (None); docs/migration.md."""
    path = f"{STATE}/faults/{name}"
    line = f"rm -f {path}" if value is None else f"mkdir -p {STATE}/faults && echo {value} >{path}"
    assert run(vms, node, ["sh", "-c", line]).returncode == 0


def log_count(vms: VmCluster, node: int, text: str) -> int:
    """How often NODE's agent log (a share the host reads directly) says TEXT."""
    try:
        return vms.agent_log(node).read_text(errors="replace").count(text)
    except FileNotFoundError:
        return 0


def restart(vms: VmCluster, node: int) -> None:
    """Boot a VM again after a test killed it, and bring it back to what the other tests expect:
    no automatic migration, and both agents seeing each other up."""
    vms.restart_vm(node, boot_timeout=300)
    assert run(vms, node, ["mosctl", "stay"]).returncode == 0

    def both_up() -> bool:
        return all(run(vms, a, ["mosctl", "isup", str(b)]).returncode == 0 for a, b in ((1, 2), (2, 1)))

    deadline = time.monotonic() + 120
    while not both_up():
        assert time.monotonic() < deadline, f"node{node}'s agent and the other did not see each other up again"
        time.sleep(2)


def leftovers(vms: VmCluster, node: int) -> list[str]:
    """Image directories and criu processes a migration left on NODE (the fault campaign's check)."""
    script = (f"ls -d {STATE}/mig/*/images {STATE}/incoming/*/images /dev/shm/omview-in-* /dev/shm/omview-out-* "
              "2>/dev/null; pgrep -x criu | sed 's/^/criu pid /'; true")  # fmt: skip
    return run(vms, node, ["sh", "-c", script]).stdout.split("\n")[:-1]
