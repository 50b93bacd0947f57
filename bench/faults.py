"""Randomized fault campaign (issue 15): repeated migrations of a checksumming mosrun job between the
nodes of a cluster, each under a fault drawn at random, and after each run the invariants checked.

Faults (--only KIND): none (control); the agent's own fault points (stall, pause, restore-script,
corrupt-image, flip-byte); kill-target / kill-source (the agent, by PID, at a random moment);
cut-ssh (the target's sshd sessions or the source's ssh clients, by PID); partition (the node's link
down for a moment); fill-target (its image space and incoming dir on small tmpfs mounts, filled up
before or during the copy); block-target (switched on at a random moment); concurrent (two clients
migrate the same job at once).

Invariants after every run: exactly one live copy of the job on exactly one node (its namespace init
and its program, not stopped); the job's own state continuous (bench/faultjob.py: every step's line
chains the one before, so nothing was lost, repeated or restored wrong); the deputy's view (job.status
on the home node, and on the node it runs on) matching where the copy is; no leftover images, tmpfs
directories, job-directory copies, temporary files or criu processes on any node. Every violation is
printed with the run's seed: `bench/faults.py --seed S --runs 1 --only KIND` replays its draws.

With --vm the cluster is one of QEMU VMs (omview-cluster up --vm) and one more fault is drawn:
kill-vm (the QEMU process of the source or target VM SIGKILLed mid-migration, booted again before
the checks; a job whose host VM died before the target committed must be reported lost by its home
deputy, never restored twice). The code is in bench/faultlab/ (one concern per module).
Usage: sudo .venv/bin/python bench/faults.py [--vm] [--runs 100] [--seed 1] [--nodes 3] [--only KIND] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time

from faultlab.campaign import Campaign
from faultlab.inject import KINDS, MACHINE_KINDS
from faultlab.nodes import NamespaceNodes, Nodes, VmNodes
from faultlab.report import print_summary, summary

from omview.testbed import Cluster, teardown
from omview.testbed.vm import VmCluster, vm_teardown


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100, help="migrations, each with one fault (default 100)")
    ap.add_argument("--seed", type=int, default=1, help="run i uses seed SEED+i (default 1)")
    ap.add_argument("--only", choices=KINDS + MACHINE_KINDS, help="every run gets this fault (replay a violation)")
    ap.add_argument("--nodes", type=int, default=3, choices=(2, 3, 4), help="cluster size (default 3)")
    ap.add_argument("--job-runs", type=int, default=40, help="runs per job before it is ended and checked")
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between the job's steps")
    ap.add_argument("--kib", type=int, default=1024, help="the job's ballast (KiB)")
    ap.add_argument("--max-seconds", type=float, default=0, help="start no run after this long (0: no limit)")
    ap.add_argument("--state", help="cluster state dir (default: a temporary one)")
    ap.add_argument("--vm", action="store_true", help="a cluster of QEMU VMs (adds the kill-vm fault)")
    ap.add_argument("--stop", action="store_true", help="stop at the first violation")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON (progress to stderr)")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per run")
    ns = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/faults.py needs root (it builds a cluster)", file=sys.stderr)
        return 2
    if ns.only in MACHINE_KINDS and not ns.vm:
        print(f"--only {ns.only} needs --vm", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="omview-faults-")
    os.chmod(work, 0o755)
    state = ns.state or os.path.join(work, "cluster")
    t0 = time.monotonic()
    nodes: Nodes
    if ns.vm:
        vms = VmCluster.up(state, ns.nodes, boot_timeout=300)
        nodes = VmNodes(vms)
    else:
        nodes = NamespaceNodes(Cluster.up(state, ns.nodes, cpus_per_node=1))
    camp: Campaign | None = None
    try:
        camp = Campaign(nodes, work, ns)
        camp.all_up()
        camp.go()
    finally:
        if camp is not None and camp.job is not None:
            with contextlib.suppress(Exception):
                camp.end_job(None)
        if ns.vm:
            vm_teardown(state)
        else:
            teardown(state)
        shutil.rmtree(work, ignore_errors=True)
    assert camp is not None
    s = summary(camp, time.monotonic() - t0)
    if ns.json:
        print(json.dumps(s, indent=2, sort_keys=True))
    else:
        print_summary(s, ns)
    return 1 if s["failed_runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
