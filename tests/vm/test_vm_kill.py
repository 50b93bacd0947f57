"""Issue 15: a whole machine dies in the middle of a migration - the QEMU process of a VM is killed
by PID (no agent, kernel or disk of it survives) - once as the target of one migration and, in the
same kill, as the source of another. docs/cluster.md, "A VM killed mid-migration", says what must
become of each job; the VM is booted again afterwards (fresh disk) for the package's other tests.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from omview.testbed.vm import VmCluster
from tests.migration.helpers import COUNTER, PY, wait
from tests.vm.helpers import Job, call, fault, job_tasks, leftovers, log_count, restart

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(480)]

PAUSED = "fault hook pause-before-restore: pausing"
STALLED = "fault hook stall-transfer: holding the stream"


def counts(job: Job) -> list[tuple[int, str]]:
    return [(int(w[1]), w[2]) for w in (ln.split() for ln in job.out.decode().splitlines()) if w[:1] == ["count"]]


def last_record(vms: VmCluster, node: int, job: str) -> dict[str, Any]:
    recs = [r for r in call(vms, node, "migration.history")["migrations"] if r["job"] == job]
    assert recs, f"no migration of {job} recorded on node{node}"
    rec: dict[str, Any] = recs[-1]
    return rec


def test_a_vm_killed_as_target_and_as_source_mid_migration_leaves_each_job_once_or_reported_lost(
    vms: VmCluster,
) -> None:
    # A runs at home on node1 and will move to node2; B (home node1 too) already runs on node2 and
    # will move home. node2 holds A's restore (its images are all there) and stalls B's image stream.
    a = Job(vms, 1, [PY, COUNTER, "100000", "0.1"])
    b = Job(vms, 1, [PY, COUNTER, "100000", "0.1"])
    ja, jb = f"1:{a.pid}", f"1:{b.pid}"
    mig_a: subprocess.Popen[str] | None = None
    mig_b: subprocess.Popen[str] | None = None
    killed = False
    try:
        wait(lambda: job_tasks(vms, 1, ja) and job_tasks(vms, 1, jb), 60, "both jobs to run on node1", every=1)
        b.migrate(2)
        assert b.where() == 2
        fault(vms, 2, "pause-before-restore", "110")
        fault(vms, 2, "stall-transfer", "110")
        paused, stalled = log_count(vms, 2, PAUSED), log_count(vms, 2, STALLED)
        mig_a = a.migrate_bg(2)
        wait(lambda: log_count(vms, 2, PAUSED) > paused, 180, "node2 to hold A's restore", every=0.5)
        mig_b = b.migrate_bg("home")
        wait(lambda: log_count(vms, 2, STALLED) > stalled, 180, "node2 to stall B's images", every=0.5)
        vms.kill_vm(2)  # the power cut: QEMU SIGKILLed by PID
        killed = True

        # A: the source (node1) fences the dead target, cannot reach it, resumes its own copy
        out, err = mig_a.communicate(timeout=300)
        assert mig_a.returncode == 3, (out, err)
        assert "node 2" in err and "stopped answering" in err, err
        assert a.where() == 1
        tasks = job_tasks(vms, 1, ja)
        assert tasks and all(t["state"] != "T" for t in tasks), tasks
        rec = last_record(vms, 1, ja)
        assert (rec["target"], rec["result"]) == (2, "failed") and "node 2" in rec["error"], rec

        # B: its only copy (node2's, stopped for the dump) died with node2; the home deputy says so
        _out, err = mig_b.communicate(timeout=300)
        assert mig_b.returncode != 0, err
        b.wait_err("node 2, which runs job", 120)
        assert not job_tasks(vms, 1, jb), "B must not have been restored at home from half its images"
        restart(vms, 2)
        killed = False
        assert b.finish(240) == 137, b.err  # lost: as if SIGKILLed
        err_b = b.err.decode(errors="replace")
        assert "came back without job" in err_b and "the job is lost" in err_b, err_b
        st = call(vms, 1, "job.status", job=jb)
        assert st["state"] == "lost" and "node 2" in st["lost"] and st["exit_code"] == 137, st
        assert not job_tasks(vms, 1, jb) and not job_tasks(vms, 2, jb), "no copy anywhere"
        # the arrival node1 got from the dead source is gone with its images
        wait(lambda: leftovers(vms, 1) == [], 120, "node1 to drop the dead source's arrival", every=3)

        # A goes on counting at home, untouched by it all
        assert job_tasks(vms, 1, ja) and a.where() == 1
    finally:
        for m in (mig_a, mig_b):
            if m is not None and m.poll() is None:
                m.kill()
                m.communicate(timeout=30)
        if killed or not vms.node(2).qemu_alive():
            restart(vms, 2)
        else:
            fault(vms, 2, "pause-before-restore", None)
            fault(vms, 2, "stall-transfer", None)
        for j in (a, b):
            if j.proc.poll() is None:
                vms.exec(1, ["kill", str(j.pid)], timeout=60, capture_output=True)
                j.finish(120)
    seq = counts(a)
    assert [i for i, _h in seq] == list(range(len(seq))), "A: no gap, no repeat, no restart"
    assert {h for _i, h in seq} == {"node1"}
    seq_b = counts(b)
    assert [i for i, _h in seq_b] == list(range(len(seq_b))), "B: what it printed before it was lost is intact"
