"""Benchmark: live migration of mosrun jobs of about 10 MB, 100 MB and 1 GB resident memory on a
2-node namespace cluster (root), side by side with a raw copy of the same bytes over the same SSH path.

For each size: the method the agent chose, total migration time (until the source is no longer
needed: for post-copy, until every page has arrived), when the job resumed on the target, the frozen
time seen from inside the job (largest wall-clock gap of a 1 ms loop), and the raw copy of as many
bytes (images, or metadata + resident memory for post-copy) from the source's tmpfs to the target's,
through the agent's own multiplexed SSH connection, with the ratio total/raw and PASS/MISS per target.
Also printed: the very first migration between the fresh pair of nodes (node 1 -> 2, first size), whose
prepare phase is where a link the agents had not opened yet would show (docs/migration.md).
Usage: sudo .venv/bin/python bench/migrate.py [--sizes 10,100,1000] [--runs 3] [--method auto]
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
from pathlib import Path
from typing import Any

from omview.model.channel import UnixChannel
from omview.model.client import AgentClient
from omview.testbed import Cluster, teardown

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

#: issue 3 targets: (size MiB, what, limit)
TARGETS = [(10, "frozen", 0.150), (100, "ratio", 2.0), (1000, "ratio", 2.0), (1000, "frozen", 0.200)]


def gaps_since(path: str, offset: int) -> tuple[list[float], int]:
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    return [float(x) for x in re.findall(rb"GAP ([0-9.]+)", data)], offset + len(data)


def raw_copy(cluster: Cluster, src: int, dst: int, nbytes: int) -> float:
    """Copy NBYTES of random data from the source's tmpfs to the target's through the agent's SSH master."""
    blob, out = f"/dev/shm/omview-bench-raw-{src}", f"/dev/shm/omview-bench-raw-{dst}-in"
    cluster.exec(src, ["sh", "-c", f"head -c {nbytes} /dev/urandom > {blob}"], check=True)
    ssh = ("ssh -o BatchMode=yes -o ControlMaster=auto -o ControlPersist=no -o ControlPath=/run/omview/peers/ssh-%C "
           f"-c aes128-gcm@openssh.com -l root {cluster.node(dst).address}")  # fmt: skip
    try:
        t0 = time.monotonic()
        cluster.exec(src, ["sh", "-c", f"cat {blob} | {ssh} 'cat > {out}'"], check=True)
        return time.monotonic() - t0
    finally:
        for p in (blob, out):
            Path(p).unlink(missing_ok=True)


def set_method(cluster: Cluster, method: str) -> None:
    for n in cluster.nodes:
        d = Path(f"/proc/{n.holder_pid}/root/var/lib/omview/faults")
        d.mkdir(exist_ok=True)
        if method == "auto":
            (d / "method").unlink(missing_ok=True)
        else:
            (d / "method").write_text(method)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,1000", help="ballast MiB per job (comma list)")
    ap.add_argument("--runs", type=int, default=3, help="migrations per size (A->B->A...), median reported")
    ap.add_argument("--method", default="auto", choices=("auto", "images", "lazy"),
                    help="force a method (default: what the agent chooses by size)")  # fmt: skip
    ns = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/migrate.py needs root (it builds a namespace cluster)", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="omview-bench-mig-")
    job_py = os.path.join(work, "gapjob.py")
    with open(job_py, "w") as fh:
        fh.write(GAPJOB)
    cluster = Cluster.up(os.path.join(work, "cluster"), 2, cpus_per_node=1)
    rows: list[dict[str, Any]] = []
    first: dict[str, Any] | None = None  # the first migration between the two fresh nodes
    try:
        time.sleep(2)  # gossip: both nodes up everywhere
        set_method(cluster, ns.method)
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
            runs: list[dict[str, Any]] = []
            for run in range(ns.runs):
                target = 2 if run % 2 == 0 else 1
                with AgentClient(UnixChannel(cluster.agent_socket(1)), timeout=600) as c:
                    rec = c.call("proc.migrate", pid=dep.pid, target=str(target), timeout=600)
                if first is None:
                    first = {"mb": mb, **rec}
                time.sleep(1.0)  # let the job print its gap
                g, offset = gaps_since(out_path, offset)
                moved = rec["bytes"] + (rec.get("rss", 0) if rec["method"] == "lazy" else 0)
                src = 1 if target == 2 else 2
                raw = raw_copy(cluster, src, target, moved)
                runs.append({"rec": rec, "frozen": max(g) if g else 0.0, "moved": moved, "raw": raw})
                time.sleep(0.5)
            dep.kill()
            dep.wait(30)
            med = statistics.median

            def m(key: str, rs: list[dict[str, Any]] = runs) -> float:
                return statistics.median([r["rec"][key] for r in rs])

            phases = sorted({k for r in runs for k in r["rec"].get("phases", {})})
            rows.append({
                "mb": mb, "method": "/".join(sorted({r["rec"]["method"] for r in runs})),
                "moved": med([r["moved"] for r in runs]) / 1e6, "total": m("total_s"),
                "resumed": m("resumed_s"), "frozen": med([r["frozen"] for r in runs]),
                "raw": med([r["raw"] for r in runs]),
                "ratio": med([r["rec"]["total_s"] / r["raw"] for r in runs]),
                "phases": {p: med([r["rec"].get("phases", {}).get(p, 0.0) for r in runs]) for p in phases},
                "notes": sorted({r["rec"].get("note", "") for r in runs} - {""}),
            })  # fmt: skip
    finally:
        teardown(os.path.join(work, "cluster"))
        shutil.rmtree(work, ignore_errors=True)
    print(f"omview migration benchmark: 2 netns nodes on one host, {ns.runs} runs per size (A->B, B->A, ...), "
          f"medians; method {ns.method}")  # fmt: skip
    print(f"{'job MiB':>7} {'method':>6} {'moved MB':>8} {'total s':>7} {'resumed s':>9} {'frozen s':>8} "
          f"{'raw copy s':>10} {'total/raw':>9}  phases (s)")  # fmt: skip
    for r in rows:
        ph = " ".join(f"{k}={v:.3f}" for k, v in sorted(r["phases"].items(), key=lambda kv: ORDER.get(kv[0], 9)))
        print(f"{r['mb']:>7} {r['method']:>6} {r['moved']:>8.1f} {r['total']:>7.3f} {r['resumed']:>9.3f} "
              f"{r['frozen']:>8.3f} {r['raw']:>10.3f} {r['ratio']:>9.2f}  {ph}")  # fmt: skip
        for note in r["notes"]:
            print(f"        note: {note}")
    if first is not None:
        print(f"first migration between a fresh pair (node 1 -> 2, {first['mb']} MiB job, {first['method']}): "
              f"prepare {first['phases'].get('prepare', 0.0):.3f} s, total {first['total_s']:.3f} s")  # fmt: skip
    print("targets:")
    for mb, what, limit in TARGETS:
        row = next((r for r in rows if r["mb"] == mb), None)
        if row is None:
            continue
        got = row["frozen"] if what == "frozen" else row["ratio"]
        unit = " s" if what == "frozen" else "x raw"
        label = "frozen" if what == "frozen" else "total/raw"
        print(f"  {mb:>5} MiB {label:<9} <= {limit:g}{unit}: {got:.3f}{unit}  "
              f"{'PASS' if got <= limit else 'MISS'}")  # fmt: skip
    return 0


ORDER = {"prepare": 0, "streams": 1, "dump": 2, "transfer": 3, "restore": 4}

if __name__ == "__main__":
    sys.exit(main())
