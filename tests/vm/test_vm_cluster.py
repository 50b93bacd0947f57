"""Issue 15 on a 2-VM cluster (`omview-cluster up --vm`): separate kernels, root file systems and
PID spaces, so a migration here is what it would be between two machines.

The cluster is the package's (tests/vm/conftest.py); each test leaves it as it found it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from omview.testbed.vm import VmCluster
from tests.migration.helpers import COUNTER, PY, wait
from tests.vm.helpers import BC_PROGRAM, HOLDFILE, XZ_LINE, Job, job_tasks, run

pytestmark = pytest.mark.cluster


def test_two_vms_are_two_machines_whose_agents_see_each_other(vms: VmCluster) -> None:
    cli = subprocess.run([sys.executable, "-m", "omview.testbed", "status", "--json", "--state", str(vms.state_dir)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    st = json.loads(cli.stdout)
    assert st["kind"] == "vm" and [n["name"] for n in st["nodes"]] == ["node1", "node2"]
    assert st["accel"] in ("kvm", "tcg") and st["accel_reason"]
    assert all(n["qemu_alive"] and n["sshd_alive"] and n["agent_alive"] for n in st["nodes"]), st
    boot_ids = {Path("/proc/sys/kernel/random/boot_id").read_text().strip()}
    for n in (1, 2):
        cp = run(vms, n, ["sh", "-c", "hostname; cat /proc/sys/kernel/random/boot_id"])
        assert cp.returncode == 0, cp.stderr
        name, boot = cp.stdout.split()
        assert name == f"node{n}"
        boot_ids.add(boot)
    assert len(boot_ids) == 3, "each VM must run a kernel of its own, apart from the host's"

    def both_up() -> bool:
        return all(run(vms, a, ["mosctl", "isup", str(b)]).returncode == 0 for a, b in ((1, 2), (2, 1)))

    wait(both_up, 120, "each agent to see the other node up", every=2)
    for n in (1, 2):

        def criu_checked(n: int = n) -> dict[str, Any] | None:
            info: dict[str, Any] = json.loads(run(vms, n, ["mosctl", "--json", "status"]).stdout)
            return info if info["criu"]["checked"] else None

        info = wait(criu_checked, 120, f"the CRIU check on node{n}", every=2)
        assert info["id"] == n and info["hostname"] == f"node{n}" and info["scope"] == "all"
        assert info["criu"]["ok"], info["criu"]  # `criu check` passes in the VM's own kernel


def test_a_counter_moves_vm1_vm2_home_with_continuous_output_and_one_copy(vms: VmCluster) -> None:
    job = Job(vms, 1, [PY, COUNTER, "100000", "0.1"])
    home_job = f"1:{job.pid}"
    wait(lambda: job_tasks(vms, 1, home_job), 60, "the job to run on node1", every=1)
    to2 = job.migrate(2)
    assert (to2["source"], to2["target"]) == (1, 2) and 0 < to2["frozen_s"] <= to2["total_s"]
    assert job.where() == 2
    assert job_tasks(vms, 2, home_job), "the job must run on node2 now"
    assert not job_tasks(vms, 1, home_job), "and nowhere else: one live copy"
    home = job.migrate("home")
    assert (home["source"], home["target"]) == (2, 1)
    assert job_tasks(vms, 1, home_job) and not job_tasks(vms, 2, home_job)
    time.sleep(2)  # a few more counts at home
    assert run(vms, 1, ["kill", str(job.pid)]).returncode == 0  # SIGTERM to the deputy reaches the job
    job.finish(120)
    counts = [ln.split() for ln in job.out.decode().splitlines() if ln.startswith("count ")]
    assert [int(c[1]) for c in counts] == list(range(len(counts))), "no gap, no repeat, no restart"
    hosts = [c[2] for c in counts]
    assert set(hosts) == {"node1", "node2"}
    # the order of hosts: node1, then node2, then node1 again
    runs = [h for i, h in enumerate(hosts) if i == 0 or hosts[i - 1] != h]
    assert runs == ["node1", "node2", "node1"], runs


def same_version(vms: VmCluster, program: str) -> None:
    """The host computes the reference output: its PROGRAM must be the guests' (Debian 12 both)."""
    versions = {run(vms, 1, [program, "--version"]).stdout.splitlines()[0],
                subprocess.run([program, "--version"], capture_output=True, text=True).stdout.splitlines()[0]}  # fmt: skip
    assert len(versions) == 1, f"the host's {program} is not the guests' ({versions}): no reference"


def test_bc_moved_twice_prints_exactly_what_an_unmoved_run_prints(vms: VmCluster) -> None:
    line = f"echo {shlex.quote(BC_PROGRAM)} | bc -l"
    same_version(vms, "bc")
    reference = subprocess.run(["sh", "-c", line], capture_output=True, timeout=300, check=True).stdout
    job = Job(vms, 1, ["sh", "-c", line])
    home_job = f"1:{job.pid}"
    wait(lambda: job_tasks(vms, 1, home_job), 60, "bc to run on node1", every=1)
    job.migrate(2)
    job.migrate("home")
    assert job.finish(600) == 0, job.err
    assert job.out == reference, "bc's digits after two migrations differ from an unmoved run"


def test_xz_with_two_threads_moved_twice_writes_exactly_what_an_unmoved_run_writes(vms: VmCluster) -> None:
    """A pipe (seq -> xz) and a multi-threaded compressor in one job: the whole tree moves, both
    worker threads with it, and the compressed stream is byte for byte an unmoved run's."""
    same_version(vms, "xz")
    reference = subprocess.run(["sh", "-c", XZ_LINE], capture_output=True, timeout=300, check=True).stdout
    job = Job(vms, 1, ["sh", "-c", XZ_LINE])
    wait(lambda: job_tasks(vms, 1, f"1:{job.pid}"), 60, "the job to run on node1", every=1)
    threads = "for p in $(pgrep -x xz); do grep Threads: /proc/$p/status; done"
    wait(lambda: "Threads:\t3" in run(vms, 1, ["sh", "-c", threads]).stdout, 120, "xz's two worker threads", every=1)
    job.migrate(2)
    job.migrate("home")
    assert job.finish(600) == 0, job.err
    assert len(job.out) == len(reference) and job.out == reference, "xz's stream after two migrations differs"


def test_a_job_holding_a_file_missing_or_different_on_the_target_is_refused_naming_it(vms: VmCluster) -> None:
    path = "/root/omview-held-file"  # on node1's own root file system only
    assert run(vms, 1, ["sh", "-c", f"echo held >{path}"]).returncode == 0
    assert run(vms, 2, ["test", "-e", path]).returncode != 0
    job = Job(vms, 1, [PY, HOLDFILE, path, "100000", "0.1"])
    home_job = f"1:{job.pid}"
    try:
        wait(lambda: job_tasks(vms, 1, home_job), 60, "the job to run on node1", every=1)
        cp = run(vms, 1, ["migrate", str(job.pid), "2"], timeout=300)
        assert cp.returncode == 3, (cp.stdout, cp.stderr)
        assert path in cp.stderr and "does not exist on node 2" in cp.stderr, cp.stderr
        # the same path on node 2 with other contents (another size): refused too, naming both sizes
        assert run(vms, 2, ["sh", "-c", f"echo different >{path}"]).returncode == 0
        cp = run(vms, 1, ["migrate", str(job.pid), "2"], timeout=300)
        assert cp.returncode == 3, (cp.stdout, cp.stderr)
        assert f"{path} has 10 bytes on node 2, 5 on node 1" in cp.stderr, cp.stderr
        assert job_tasks(vms, 1, home_job) and not job_tasks(vms, 2, home_job), "it keeps running at home"
    finally:
        run(vms, 1, ["kill", str(job.pid)])
        job.finish(120)
        run(vms, 1, ["rm", "-f", path])
        run(vms, 2, ["rm", "-f", path])
    counts = [int(ln.split()[1]) for ln in job.out.decode().splitlines() if ln.startswith("count ")]
    assert counts == list(range(len(counts))) and counts
