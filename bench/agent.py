"""Agent benchmark (issue 2): agent CPU, request round trips over SSH, join time on 16 nodes.

Run as root:  .venv/bin/python bench/agent.py [--nodes 16] [--cpu-seconds 20] [--requests 300]

Everything is measured side by side in one run on one namespace cluster built for the purpose:
  1. CPU used by each node's agent over a window at the default 1 s sampling (target <= 1 % of a core);
  2. median request round trip through one persistent `ssh node omview-agent bridge` channel
     (OpenSSH client and paramiko) next to a fresh `ssh` exec per request (target <= 2 ms);
  3. how long a (re)joining node takes to be "up" in every other agent's table (target <= 3 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omview.cluster import Cluster, teardown
from omview.model.channel import PipeChannel, UnixChannel
from omview.model.client import AgentClient
from omview.transport.ssh import SshConnection, SshTarget

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def bench_cpu(cluster: Cluster, seconds: float) -> list[float]:
    pids = [n.agent_pid for n in cluster.nodes]
    before = [cpu_seconds(p) for p in pids]
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return [100.0 * (cpu_seconds(p) - b) / wall for p, b in zip(pids, before, strict=True)]


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
    print(f"2. request round trip, median of {args.requests} (node.info; target <= 2 ms persistent)")
    per_exec = rt["new ssh exec per request"]
    for name, ms in rt.items():
        print(f"   {name:<48} {ms:8.3f} ms   ({per_exec / ms:6.1f}x faster than ssh exec)")
    best = rt["persistent bridge, paramiko (the GUI's path)"]
    print(f"   -> {'PASS' if best <= 2.0 else 'MISS'} (paramiko persistent {best:.3f} ms)")
    print(f"3. join time of a restarted node until up in all {args.nodes - 1} other tables (target <= 3 s)")
    print(f"   {', '.join(f'{t:.2f} s' for t in join)}   median {statistics.median(join):.2f} s   "
          f"-> {'PASS' if max(join) <= 3.0 else 'MISS'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
