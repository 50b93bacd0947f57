"""Benchmark: live migration of mosrun jobs of about 10 MB, 100 MB and 1 GB resident memory on a
2-node namespace cluster (root), side by side with a raw copy of the same bytes over the same SSH path.

For each size: total migration time (agent record), frozen time seen from inside the job (largest
wall-clock gap of a 1 ms loop), and the raw `tar | ssh node2 tar -x` copy of an equally big file,
with the ratio total/raw. Usage: sudo .venv/bin/python bench/migrate.py [--sizes 10,100,1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from omview.cluster import Cluster, teardown
from omview.model.channel import UnixChannel
from omview.model.client import AgentClient

GAPJOB = textwrap.dedent(
    """
    import os, sys, time
    ballast = bytearray(os.urandom(int(sys.argv[1]) << 20))
    print("ready", flush=True)
    last = time.time()
    while True:
        time.sleep(0.001)
        now = time.time()
        if now - last > 0.015:
            print(f"GAP {now - last:.4f}", flush=True)
        last = now
    """
)


def gaps_since(path: str, offset: int) -> tuple[list[float], int]:
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    return [float(x) for x in re.findall(rb"GAP ([0-9.]+)", data)], offset + len(data)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,1000", help="ballast MiB per job (comma list)")
    ap.add_argument("--runs", type=int, default=3, help="migrations per size (A->B->A...), median reported")
    ns = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/migrate.py needs root (it builds a namespace cluster)", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="omview-bench-mig-")
    job_py = os.path.join(work, "gapjob.py")
    with open(job_py, "w") as fh:
        fh.write(GAPJOB)
    cluster = Cluster.up(os.path.join(work, "cluster"), 2, cpus_per_node=1)
    rows = []
    try:
        time.sleep(2)  # gossip: both nodes up everywhere
        for mb in [int(x) for x in ns.sizes.split(",")]:
            out_path = os.path.join(work, f"job{mb}.out")
            with open(out_path, "wb") as out:
                dep = cluster.popen(1, ["--wd=/tmp", "mosrun", "/usr/bin/python3", job_py, str(mb)], stdout=out,
                                    stderr=subprocess.DEVNULL)  # fmt: skip
            deadline = time.monotonic() + 120
            while b"ready" not in open(out_path, "rb").read():
                if time.monotonic() > deadline or dep.poll() is not None:
                    raise SystemExit(f"the {mb} MiB job did not start")
                time.sleep(0.2)
            time.sleep(1.0)
            _, offset = gaps_since(out_path, 0)
            totals, frozen, raw, sizes, parts = [], [], [], [], []
            for run in range(ns.runs):
                target = 2 if run % 2 == 0 else 1
                with AgentClient(UnixChannel(cluster.agent_socket(1)), timeout=600) as c:
                    rec = c.call("proc.migrate", pid=dep.pid, target=str(target), timeout=600)
                time.sleep(1.0)  # let the job print its gap
                g, offset = gaps_since(out_path, offset)
                totals.append(rec["total_s"])
                frozen.append(max(g) if g else 0.0)
                sizes.append(rec["bytes"])
                parts.append((rec["dump_s"], rec["transfer_s"], rec["restore_s"]))
                # raw copy of as many bytes over the same path (node -> node ssh, same options)
                src, dst = (1, 2) if target == 2 else (2, 1)
                blob = f"/var/lib/omview/bench-{mb}.bin"
                cluster.exec(src, ["sh", "-c", f"head -c {rec['bytes']} /dev/urandom > {blob}"], check=True)
                # the agent's own multiplexed connection to that node (its peer link holds the master)
                ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ControlMaster=auto", "-o", "ControlPersist=no",
                       "-o", "ControlPath=/run/omview/peers/ssh-%C", "-c", "aes128-gcm@openssh.com", "-l", "root",
                       cluster.node(dst).address]  # fmt: skip
                t0 = time.monotonic()
                cluster.exec(src, ["sh", "-c", f"tar -C /var/lib/omview -cf - bench-{mb}.bin | "
                                   f"{' '.join(ssh)} 'tar -C /var/lib/omview -xf -'"], check=True)  # fmt: skip
                raw.append(time.monotonic() - t0)
                for n in (1, 2):
                    cluster.exec(n, ["rm", "-f", blob])
            dep.kill()
            dep.wait(30)
            med = statistics.median
            rows.append((mb, med(sizes) / 1e6, med(totals), med(frozen), med(raw),
                         med([p[0] for p in parts]), med([p[1] for p in parts]), med([p[2] for p in parts])))  # fmt: skip
    finally:
        teardown(os.path.join(work, "cluster"))
        shutil.rmtree(work, ignore_errors=True)
    print(f"omview migration benchmark: 2 netns nodes on one host, method 'images' (dump -> tar|ssh -> restore), "
          f"median of {ns.runs} runs")  # fmt: skip
    print(f"{'job MiB':>8} {'image MB':>9} {'total s':>8} {'frozen s':>9} {'raw copy s':>11} {'total/raw':>10}"
          f" {'dump s':>7} {'copy s':>7} {'restore s':>9}")  # fmt: skip
    for mb, size, total, fr, rw, d, t, r in rows:
        print(
            f"{mb:>8} {size:>9.1f} {total:>8.3f} {fr:>9.3f} {rw:>11.3f} {total / rw:>10.2f} {d:>7.3f} {t:>7.3f} {r:>9.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
