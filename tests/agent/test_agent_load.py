"""Load, speed and memory measurement with a real agent in its own network namespace.

process_scope "netns" makes only processes in the agent's namespace count, so a CPU burner
started there (nsenter) is the node's only work, whatever else runs on this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from omview.model.errors import AgentFault
from omview.model.protocol import FaultCode
from tests.support.agents import Cluster, wait_for

GIB = 1 << 30
BURN = "import time\nwhile True: pass\n"


@pytest.fixture
def netns_agent(cluster_factory):  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1, process_scope="netns", cpus=2, memory=2 * GIB)
    a = cl.agents[0]
    # a fresh network namespace with only lo up: the agent is alone in it
    a.wrap = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']
    a.start()
    yield a


def burner(agent_pid: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["nsenter", f"--net=/proc/{agent_pid}/ns/net", sys.executable, "-c", BURN])


def load(agent) -> int:  # type: ignore[no-untyped-def]
    with agent.client() as c:
        return c.node_info().load


def test_load_follows_cpu_burners_and_speed(netns_agent) -> None:  # type: ignore[no-untyped-def]
    a = netns_agent
    agent_pid = a.proc.pid
    with a.client() as c:
        c.set_flags(speed=10000)
        me = c.node_info()
        assert me.cpus == 2 and me.tmem == 2 * GIB and 0 < me.mem < 2 * GIB and me.rmem <= me.mem
        # only the agent is in scope: this test process is on "another node"
        with pytest.raises(AgentFault) as e:
            c.processes(pid=os.getpid())
        assert e.value.code == FaultCode.NO_SUCH_PROCESS
        listed = {p.pid: p for p in c.processes()}
        # the agent, and at most its own short-lived helpers (criu check)
        assert agent_pid in listed and os.getpid() not in listed
        assert all(pid == agent_pid or p.ppid != os.getpid() for pid, p in listed.items())
    wait_for(lambda: load(a) <= 10, 10, "an idle node to read load <= 10")
    procs = [burner(agent_pid)]
    try:
        # one CPU-bound process at speed 10000 = load 100 (time constant 1.3 s: ~3 s to 90%)
        wait_for(lambda: load(a) >= 80, 10, "load ~100 with one burner")
        with a.client() as c:
            assert c.node_info().util >= 20
            listed = c.processes(pid=procs[0].pid)[0]
            assert listed.cpu > 50 and listed.state in "RS"
            # twice as fast a node: the same work is half the load
            c.set_flags(speed=20000)
        wait_for(lambda: 35 <= load(a) <= 65, 15, "load ~50 at speed 20000")
        with a.client() as c:
            c.set_flags(speed=10000)
        procs.append(burner(agent_pid))
        wait_for(lambda: load(a) >= 160, 12, "load ~200 with two burners")
    finally:
        for p in procs:
            p.kill()
            p.wait()
    # falls after they stop (time constant 3.9 s down: ~12 s from 200 to 10)
    wait_for(lambda: load(a) <= 15, 25, "load back near 0 after the burners stopped")
    with a.client() as c:
        assert c.node_info().mem > 2 * GIB - 512 * (1 << 20)


def test_calibrated_speed_is_persisted_and_reported(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0].start()
    with a.client() as c:
        speed = c.flags().speed
        assert c.node_info().speed == speed
    # an honest calibration lands within a sane range of the reference machine's 10000
    assert 1000 <= speed <= 200_000
    out = subprocess.run(
        [sys.executable, "-m", "omview.agent", "calibrate"], capture_output=True, text=True, check=True
    )
    assert 1000 <= int(out.stdout.strip()) <= 200_000


class _OnlyThese:
    """Scope limited to given PIDs, so the measurement sees exactly one burner."""

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids

    def pids(self):  # type: ignore[no-untyped-def]
        return iter(self._pids)


@pytest.mark.parametrize("method", ["schedstat", "runnable"])
def test_demand_of_one_burner_in_process(method: str) -> None:
    import time

    from omview.agent.node.sampler import Sampler
    from omview.model.cluster import Flags
    from omview.model.procfs import HZ

    p = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        s = Sampler(_OnlyThese([p.pid]), cpus=2)  # type: ignore[arg-type]
        s.method = method
        flags = Flags(speed=10000, fast_decay=0, slow_decay=0)  # no smoothing: load = 100 * demand
        s.sample(flags)
        demands = []
        for _ in range(4):
            time.sleep(0.4)
            smp = s.sample(flags)
            demands.append(smp.demand)
        # one runnable thread; "runnable" may miss it in one snapshot but CPU time catches it
        assert max(demands) >= 0.9 and sum(demands) / len(demands) >= 0.7, demands
        # never more than the one thread there is: schedstat counts nanoseconds; "runnable" is a 0/1
        # snapshot or CPU time in clock ticks, off by up to a tick at each end of the ~0.4 s interval
        # (plus the few ms between reading the clock and reading /proc)
        bound = 1.05 if method == "schedstat" else 1.0 + 3 / (0.4 * HZ)
        assert all(d <= bound for d in demands), (bound, demands)
        assert smp.load == round(100 * smp.demand) and smp.cpu and smp.util > 0
    finally:
        p.kill()
        p.wait()
