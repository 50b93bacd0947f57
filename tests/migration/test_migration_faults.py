"""Fault injection on the namespace cluster: every case must end with exactly one live copy of the
job, still counting, and its output intact (no gap, no repeat). Fault hooks are files in a node's
state dir (docs/migration.md); the faults themselves are real (killed agents and SSH sessions, a
full disk, a truncated image, a block switched on mid-migration)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from omview.agent.criu import descendants
from omview.testbed import Cluster
from tests.migration.helpers import COUNTER, PY, Deputy, alive, all_up, call, counts, wait

pytestmark = pytest.mark.cluster

N = 120  # lines the counter prints (0.05 s apart): long enough to outlive every fault below


def state(cluster: Cluster, node: int) -> Path:
    """The node's /var/lib/omview as its own mount namespace sees it (a test may mount over parts)."""
    return Path(f"/proc/{cluster.node(node).holder_pid}/root/var/lib/omview")


def hook(cluster: Cluster, node: int, name: str, value: str = "") -> Path:
    d = state(cluster, node) / "faults"
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_text(value)
    return p


def copies(job: str) -> list[int]:
    """Live, running inits of the job on any node (all nodes share this kernel)."""
    marker = f"/var/lib/omview/jobs/{job.replace(':', '-')}/out".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if (
            b"omview.agent.jobs.jobinit" in cmd
            and marker in cmd
            and not cmd.startswith(b"unshare\0")
            and alive(int(name))
        ):
            found.append(int(name))
    return found


def start_migrate(cluster: Cluster, node: int, pid: int, target: int) -> subprocess.Popen[str]:
    return cluster.popen(node, ["migrate", str(pid), str(target)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)  # fmt: skip


def incoming(cluster: Cluster, node: int, name: str = "") -> list[Path]:
    return list((state(cluster, node) / "incoming").glob(f"*/{name}" if name else "*"))


def pids_with_cmdline(prefix: bytes) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if Path(f"/proc/{name}/cmdline").read_bytes().startswith(prefix):
                    out.append(int(name))
            except OSError:
                pass
    return out


def finish_intact(cluster: Cluster, dep: Deputy, where: int) -> None:
    """One running copy, on WHERE, still counting; then the whole output, in order, and status 7."""
    wait(lambda: len(copies(dep.job)) == 1, 20, "exactly one copy of the job")
    st = call(cluster, where, "job.status", job=dep.job)
    assert st["where"] == where and st["state"] == "running"
    time.sleep(0.5)
    assert len(copies(dep.job)) == 1
    assert dep.finish(120) == 7, dep.err
    nums, _ = counts(dep.out)
    assert nums == list(range(N)), f"output not intact: {len(nums)} lines"
    assert not copies(dep.job)


def test_target_agent_killed_mid_restore_and_ssh_cut_mid_transfer(make_cluster: Callable[..., Cluster],
                                                                   tmp_path: Path) -> None:  # fmt: skip
    cluster = all_up(make_cluster(2))
    hook(cluster, 1, "method", "images")  # the copy path; post-copy faults: test_migration_postcopy.py
    # 1. the target's agent dies while criu restore is half way (paused in its pre-resume action)
    script = tmp_path / "pause.sh"
    script.write_text('#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = pre-resume ] && sleep 3\nexit 0\n')
    script.chmod(0o755)
    h = hook(cluster, 2, "restore-action-script", str(script))
    dep = Deputy(cluster, 1, [PY, COUNTER, str(N), "0.05"])
    dep.wait_started()
    mig = start_migrate(cluster, 1, dep.pid, 2)
    wait(lambda: incoming(cluster, 2, "criu.pid"), 30, "the restore to start on node 2")
    time.sleep(1.0)
    cluster.agent_kill(2)
    out, err = mig.communicate(timeout=120)
    assert mig.returncode == 3, (out, err)
    assert "fenced: aborted" in err
    h.unlink()
    cluster.agent_start(2)
    all_up(cluster)
    assert len(copies(dep.job)) == 1

    # 2. the SSH connection carrying the images is cut in the middle of the copy
    hook(cluster, 1, "stall-transfer", "4")
    earlier = set(incoming(cluster, 2))
    mig = start_migrate(cluster, 1, dep.pid, 2)

    def images_arriving() -> bool:
        if mig.poll() is not None:
            raise AssertionError(f"migrate ended early: {mig.communicate()}")
        return any(f.stat().st_size > 0 for d in set(incoming(cluster, 2)) - earlier for f in d.glob("images/*"))

    wait(images_arriving, 30, "the images to start arriving on node 2")
    # every sshd process serving a connection to node 2: the streams, the peer links, the master
    sessions = [p for p in descendants(cluster.node(2).sshd_pid)
                if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sshd: ")]  # fmt: skip
    assert sessions
    for pid in sessions:
        os.kill(pid, 9)
    out, err = mig.communicate(timeout=120)
    assert mig.returncode == 3 and "copying the images to node 2 failed" in err, (out, err)
    (state(cluster, 1) / "faults" / "stall-transfer").unlink()
    assert call(cluster, 1, "job.status", job=dep.job)["where"] == 1
    # the links reconnect: the next migration works
    r = cluster.exec(1, ["migrate", str(dep.pid), "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    finish_intact(cluster, dep, 2)


def test_disk_full_corrupt_image_and_block_before_restore(make_cluster: Callable[..., Cluster]) -> None:
    cluster = all_up(make_cluster(2))
    hook(cluster, 1, "method", "images")  # the copy path; post-copy faults: test_migration_postcopy.py
    dep = Deputy(cluster, 1, [PY, COUNTER, str(N), "0.05", "24"])  # ~24 MiB of random ballast
    dep.wait_started()
    # 1. the target's disk fills up while the images are on their way
    cluster.exec(2, ["mount", "-t", "tmpfs", "-o", "size=64m", "omv-test-full", "/var/lib/omview/incoming"],
                 check=True, timeout=30)  # fmt: skip
    try:
        hook(cluster, 1, "stall-transfer", "3")
        mig = start_migrate(cluster, 1, dep.pid, 2)
        wait(lambda: incoming(cluster, 2), 30, "the migration to reach node 2")
        cluster.exec(2, ["dd", "if=/dev/zero", "of=/var/lib/omview/incoming/filler", "bs=1M"],
                     capture_output=True, timeout=60)  # fmt: skip
        out, err = mig.communicate(timeout=120)
        assert mig.returncode == 3 and "No space left" in err, (out, err)
    finally:
        (state(cluster, 1) / "faults" / "stall-transfer").unlink(missing_ok=True)
        cluster.exec(2, ["umount", "/var/lib/omview/incoming"], timeout=30)
    assert len(copies(dep.job)) == 1

    # 2. an image arrives damaged (truncated: the case that makes criu restore spin forever)
    h = hook(cluster, 2, "corrupt-image")
    r = cluster.exec(1, ["migrate", str(dep.pid), "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and "arrived damaged" in r.stderr and "differs (sha256)" in r.stderr, r.stderr
    h.unlink()
    assert len(copies(dep.job)) == 1

    # 3. the target blocks arrivals after the pre-flight, before the restore
    h = hook(cluster, 2, "pause-before-restore", "3")
    mig = start_migrate(cluster, 1, dep.pid, 2)
    wait(lambda: incoming(cluster, 2, "images"), 30, "the migration to reach node 2")
    cluster.exec(2, ["mosctl", "block"], check=True, timeout=30)
    out, err = mig.communicate(timeout=120)
    assert mig.returncode == 3 and "BLOCKED" in err, (out, err)
    h.unlink()
    cluster.exec(2, ["mosctl", "noblock"], check=True, timeout=30)
    finish_intact(cluster, dep, 1)


def test_source_agent_restarted_during_a_migration(make_cluster: Callable[..., Cluster]) -> None:
    cluster = all_up(make_cluster(2))
    hook(cluster, 1, "method", "images")  # the copy path; post-copy faults: test_migration_postcopy.py
    dep = Deputy(cluster, 1, [PY, COUNTER, str(N), "0.05"])  # node 1 is source, home and the deputy's agent
    dep.wait_started()
    hook(cluster, 1, "stall-transfer", "3")
    mig = start_migrate(cluster, 1, dep.pid, 2)
    wait(lambda: incoming(cluster, 2), 30, "the migration to reach node 2")
    cluster.agent_kill(1)  # crash in the middle: the job is dumped and stopped, images half copied
    mig.communicate(timeout=60)
    (state(cluster, 1) / "faults" / "stall-transfer").unlink()
    cluster.agent_start(1)  # the new agent finds the journal, fences node 2 and resumes the job
    finish_intact(cluster, dep, 1)


def test_a_file_swapped_for_a_symlink_before_the_restore_is_refused(make_cluster: Callable[..., Cluster],
                                                                    tmp_path: Path) -> None:  # fmt: skip
    """Issue 13, defect 3: CRIU reopens files by path as root, follows links and compares only the size.
    The job's file swapped for a same-size link to another file between dump and restore: the target
    refuses with the reason, the job keeps running on the source reading its own file."""
    cluster = all_up(make_cluster(2))
    hook(cluster, 1, "method", "images")
    d = tmp_path / "d3"
    d.mkdir()
    d.chmod(0o755)
    data, secret = d / "data", d / "secret"
    data.write_text("public\n")
    secret.write_text("SECRET\n")  # the same size
    dep = Deputy(cluster, 1, [PY, str(Path(COUNTER).with_name("holdfile.py")), str(data), "100", "0.1"])
    dep.wait_started()
    h = hook(cluster, 2, "pause-before-restore", "3")
    mig = start_migrate(cluster, 1, dep.pid, 2)
    wait(lambda: incoming(cluster, 2, "received.json"), 30, "the images to arrive on node 2")
    data.rename(d / "data.old")  # the job's descriptor still points to it
    data.symlink_to(secret)
    out, err = mig.communicate(timeout=120)
    h.unlink()
    assert mig.returncode == 3 and "symbolic link" in err and str(data) in err, (out, err)
    wait(lambda: len(copies(dep.job)) == 1, 20, "exactly one copy of the job")
    assert call(cluster, 1, "job.status", job=dep.job)["where"] == 1
    assert dep.finish(120) == 7, dep.err
    lines = [ln.split() for ln in dep.out.decode().splitlines() if ln.startswith("count ")]
    assert [int(p[1]) for p in lines] == list(range(100))
    assert {p[3] for p in lines} == {"public"}
