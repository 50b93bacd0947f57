"""Agent benchmark (issue 2): agent CPU, request round trips over SSH, join time on 16 nodes.

Run as root:  .venv/bin/python bench/agent.py [--nodes 16] [--cpu-seconds 20] [--requests 300]
                                              [--busy-procs 250]

Everything is measured side by side in one run on one namespace cluster built for the purpose:
  1. CPU used by each node's agent over a window at the default 1 s sampling (target <= 1 % of a core),
     then over a second window of the same length while a client polls every node's `procs.list`
     once a second (what the collector and the GUI do; same target);
  2. the time of one `procs.list` on an ordinary node and on a node carrying --busy-procs extra
     ordinary processes (sleepers, session leaders, small trees, PID-namespace inits, TCP holders):
     per call and per process, and that busy agent's CPU idle and polled at 1 Hz;
  3. median request round trip through one persistent `ssh node omview-agent bridge` channel
     (OpenSSH client and paramiko) next to a fresh `ssh` exec per request (target <= 2 ms);
  4. how long a (re)joining node takes to be "up" in every other agent's table (target <= 3 s).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from omview.agent.criu import descendants
from omview.model.channel import PipeChannel, UnixChannel
from omview.model.client import AgentClient
from omview.model.procfs import HZ, read_stat
from omview.testbed import Cluster, teardown
from omview.transport.ssh import SshConnection, SshTarget


def cpu_seconds(pid: int) -> float:
    st = read_stat(pid)
    if st is None:
        raise RuntimeError(f"pid {pid} is gone")
    return (st.utime + st.stime) / HZ


def bench_cpu(cluster: Cluster, seconds: float) -> list[float]:
    pids = [n.agent_pid for n in cluster.nodes]
    before = [cpu_seconds(p) for p in pids]
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return [100.0 * (cpu_seconds(p) - b) / wall for p, b in zip(pids, before, strict=True)]


class Poller:
    """Calls procs.list on the given agents once a second (one persistent Unix-socket client each),
    like the collector does, in a thread; keeps how many processes each agent listed last."""

    def __init__(self, sockets: list[str]) -> None:
        self.clients = [AgentClient(UnixChannel(s), client_name="bench-poll", timeout=30) for s in sockets]
        self.rows = [0] * len(sockets)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="procs-poller", daemon=True)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            for i, c in enumerate(self.clients):
                self.rows[i] = len(c.call("procs.list"))
            next_at += 1.0
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Poller:
        for c in self.clients:
            c.call("procs.list")  # connect and warm up before the window starts
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        for c in self.clients:
            c.close()


def bench_poll_cpu(cluster: Cluster, seconds: float) -> tuple[list[float], list[int]]:
    """Agent CPU per node while every node's procs.list is polled at 1 Hz; and each node's process count
    (the node the others ask which PIDs are in use also has their SSH sessions and bridges)."""
    with Poller([cluster.agent_socket(n.id) for n in cluster.nodes]) as poller:
        cpu = bench_cpu(cluster, seconds)
        rows = list(poller.rows)
    return cpu, rows


#: started inside the busy node: the mix of processes a node has (prints its PID, then waits)
BUSY_LAUNCHER = r"""
import os, socket, subprocess, sys, time
n = int(sys.argv[1])
py = sys.executable
quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
kids = []
tcp = "import socket,time\ns=socket.create_server(('127.0.0.1',0))\nc=socket.create_connection(s.getsockname())\na,_=s.accept()\ntime.sleep(3600)"
for _ in range(2):
    kids.append(subprocess.Popen(["setsid", py, "-c", tcp], **quiet))
for _ in range(n // 50):
    kids.append(subprocess.Popen(["unshare", "--pid", "--fork", "setsid", "sh", "-c", "sleep 3600 & wait"], **quiet))
for _ in range(n // 25):
    kids.append(subprocess.Popen(["setsid", "sh", "-c", "sleep 3600 & sleep 3600 & wait"], **quiet))
for _ in range(n // 5):
    kids.append(subprocess.Popen(["setsid", py, "-c", "import time; time.sleep(3600)"], **quiet))
# trees count 3 processes each (unshare, sh, sleep / sh and two sleeps); the rest are plain sleeps
for _ in range(n - 2 - 3 * (n // 50) - 3 * (n // 25) - n // 5):
    kids.append(subprocess.Popen(["sleep", "3600"], **quiet))
print(os.getpid(), flush=True)
time.sleep(3600)
"""


def time_listing(cluster: Cluster, node_id: int, calls: int) -> tuple[int, float]:
    """Processes listed and the median wall time (ms) of one procs.list, calls 0.2 s apart."""
    times = []
    with AgentClient(UnixChannel(cluster.agent_socket(node_id)), client_name="bench", timeout=30) as c:
        rows = len(c.call("procs.list"))
        for _ in range(calls):
            t = time.perf_counter()
            c.call("procs.list")
            times.append((time.perf_counter() - t) * 1000)
            time.sleep(0.2)
    return rows, statistics.median(times)


def bench_busy_node(cluster: Cluster, extra: int, calls: int, seconds: float) -> dict[str, float]:
    """procs.list on a node with EXTRA more processes: per call, per process, agent CPU idle/polled."""
    node = cluster.nodes[1]
    launcher = cluster.popen(node.id, [sys.executable, "-c", BUSY_LAUNCHER, str(extra)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert launcher.stdout is not None
        launcher.stdout.readline()  # all started
        time.sleep(2)  # let the sampler see them settle
        rows, ms = time_listing(cluster, node.id, calls)
        pid = node.agent_pid
        before = cpu_seconds(pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        idle = 100.0 * (cpu_seconds(pid) - before) / (time.monotonic() - t0)
        with Poller([cluster.agent_socket(node.id)]):
            before = cpu_seconds(pid)
            t0 = time.monotonic()
            time.sleep(seconds)
            polled = 100.0 * (cpu_seconds(pid) - before) / (time.monotonic() - t0)
    finally:
        for victim in [launcher.pid, *descendants(launcher.pid)]:  # every process it started, by PID
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        launcher.wait(10)
    return {"rows": rows, "ms": ms, "us_per_proc": 1000.0 * ms / max(1, rows), "idle": idle, "polled": polled}


def timed_requests(client: AgentClient, count: int) -> list[float]:
    out = []
    for _ in range(count):
        t = time.perf_counter()
        client.call("node.info")
        out.append((time.perf_counter() - t) * 1000)
    return out


def bench_round_trips(cluster: Cluster, count: int) -> dict[str, float]:
    node = cluster.nodes[1]
    res: dict[str, float] = {}
    with AgentClient(UnixChannel(cluster.agent_socket(node.id)), client_name="bench") as c:
        res["local Unix socket (no SSH), reference"] = statistics.median(timed_requests(c, count))
    with AgentClient(PipeChannel(cluster.ssh_argv(node.id, "omview-agent", "bridge")), client_name="bench") as c:
        timed_requests(c, 10)  # warm up
        res["persistent bridge, OpenSSH client"] = statistics.median(timed_requests(c, count))
    target = SshTarget.from_ssh_config(node.name, str(cluster.ssh_config_path), agent_command=cluster.agent_command)
    conn = SshConnection(target)
    try:
        with AgentClient(conn.open_bridge(), client_name="bench") as c:
            timed_requests(c, 10)
            res["persistent bridge, paramiko (the GUI's path)"] = statistics.median(timed_requests(c, count))
    finally:
        conn.close()
    per_exec = []
    for _ in range(max(10, count // 20)):
        t = time.perf_counter()
        with AgentClient(PipeChannel(cluster.ssh_argv(node.id, "omview-agent", "bridge")), client_name="bench") as c:
            c.call("node.info")
        per_exec.append((time.perf_counter() - t) * 1000)
    res["new ssh exec per request"] = statistics.median(per_exec)
    return res


def _up_everywhere(cluster: Cluster, node_id: int) -> bool:
    for n in cluster.nodes:
        if n.id == node_id:
            continue
        try:
            with AgentClient(UnixChannel(cluster.agent_socket(n.id)), client_name="bench", timeout=2) as c:
                row = next((x for x in c.nodes() if x.id == node_id), None)
        except (OSError, TimeoutError):
            return False
        if row is None or not row.up:
            return False
    return True


def bench_join(cluster: Cluster, rounds: int) -> list[float]:
    joiner = cluster.nodes[-1].id
    times = []
    for _ in range(rounds):
        cluster.agent_stop(joiner)
        deadline = time.monotonic() + 15
        while _up_everywhere(cluster, joiner) and time.monotonic() < deadline:
            time.sleep(0.1)
        t0 = time.monotonic()
        cluster.agent_start(joiner)  # returns once its socket answers
        while not _up_everywhere(cluster, joiner):
            if time.monotonic() - t0 > 30:
                raise SystemExit("joining node never appeared everywhere within 30 s")
            time.sleep(0.05)
        times.append(time.monotonic() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--cpu-seconds", type=float, default=20.0)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--join-rounds", type=int, default=3)
    ap.add_argument("--busy-procs", type=int, default=250, help="extra processes on the busy node (default 250)")
    ap.add_argument("--list-calls", type=int, default=30, help="procs.list calls timed on the busy node")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/agent.py needs root (it builds a namespace cluster)", file=sys.stderr)
        return 2
    state = tempfile.mkdtemp(prefix="omview-bench-agent-", dir="/var/tmp")
    print(f"building a {args.nodes}-node cluster in {state} ...", flush=True)
    cluster = Cluster.up(state, args.nodes)
    try:
        time.sleep(3)  # let gossip settle before measuring steady-state CPU
        cpu = bench_cpu(cluster, args.cpu_seconds)
        polled, rows = bench_poll_cpu(cluster, args.cpu_seconds)
        plain = time_listing(cluster, cluster.nodes[-1].id, args.list_calls)
        busy = bench_busy_node(cluster, args.busy_procs, args.list_calls, args.cpu_seconds / 2)
        rt = bench_round_trips(cluster, args.requests)
        join = bench_join(cluster, args.join_rounds)
    finally:
        teardown(state)
        subprocess.run(["rm", "-rf", state], check=False)
    print()
    print(f"omview agent benchmark: {args.nodes} nodes on {os.cpu_count()} host cores")
    print(f"1. agent CPU at 1 s sampling over {args.cpu_seconds:.0f} s (% of one core; target <= 1 %)")
    print(f"   median {statistics.median(cpu):.2f} %   max {max(cpu):.2f} %   "
          f"-> {'PASS' if max(cpu) <= 1.0 else 'MISS'}")
    top = max(range(len(polled)), key=polled.__getitem__)
    print(f"   agent CPU while procs.list is polled at 1 Hz: median {statistics.median(polled):.2f} %, "
          f"max {max(polled):.2f} % (target <= 1 %)   -> {'PASS' if max(polled) <= 1.0 else 'MISS'}")
    print(f"   ({statistics.median(rows):.0f} processes per node, {min(rows)}..{max(rows)}; the max is node "
          f"{cluster.nodes[top].id} with {rows[top]} processes)")
    print(f"2. one procs.list, median of {args.list_calls}: {plain[1]:.2f} ms on node {cluster.nodes[-1].id} "
          f"({plain[0]} processes); on a busy node ({busy['rows']:.0f} processes):")
    print(f"   {busy['ms']:.2f} ms per call, {busy['us_per_proc']:.1f} us per process; that agent's CPU over "
          f"{args.cpu_seconds / 2:.0f} s: idle {busy['idle']:.2f} %, polled at 1 Hz {busy['polled']:.2f} %")
    print(f"3. request round trip, median of {args.requests} (node.info; target <= 2 ms persistent)")
    per_exec = rt["new ssh exec per request"]
    for name, ms in rt.items():
        print(f"   {name:<48} {ms:8.3f} ms   ({per_exec / ms:6.1f}x faster than ssh exec)")
    best = rt["persistent bridge, paramiko (the GUI's path)"]
    print(f"   -> {'PASS' if best <= 2.0 else 'MISS'} (paramiko persistent {best:.3f} ms)")
    print(f"4. join time of a restarted node until up in all {args.nodes - 1} other tables (target <= 3 s)")
    print(f"   {', '.join(f'{t:.2f} s' for t in join)}   median {statistics.median(join):.2f} s   "
          f"-> {'PASS' if max(join) <= 3.0 else 'MISS'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
