"""Post-copy (`criu dump --lazy-pages`) on the namespace cluster: a job of ~96 MiB moves with its
pages served from the frozen source through the SSH master while it already runs on the target, and a
fault in the page phase (the serving criu killed after the target resumed) ends with exactly one live
copy - the source's, resumed - and the output still in order."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from omview.testbed import Cluster
from tests.migration.helpers import COUNTER, PY, Deputy, all_up, call, counts, wait
from tests.migration.test_migration_faults import copies, hook, incoming, state

pytestmark = pytest.mark.cluster

PIPE_MAX = Path("/proc/sys/fs/pipe-max-size")


def serving_dumps() -> list[int]:
    """criu processes serving pages of a post-copy (`criu dump ... --lazy-pages`)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmd = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"dump" in cmd and b"--lazy-pages" in cmd and b"--ps-socket" in cmd:
                out.append(int(name))
    return out


def test_postcopy_moves_a_96_mib_job_and_back(make_cluster: Callable[..., Cluster]) -> None:
    cluster = all_up(make_cluster(2))
    limit_before = PIPE_MAX.read_text()
    n = 100
    dep = Deputy(cluster, 1, [PY, COUNTER, str(n), "0.05", "96"])
    dep.wait_started()
    for node in (1, 2):
        hook(cluster, node, "method", "lazy")
    for src, dst in ((1, 2), (2, 1)):
        r = cluster.exec(1, ["migrate", str(dep.pid), str(dst)], capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
        rec = call(cluster, src, "migration.history")["migrations"][-1]
        assert rec["result"] == "ok" and rec["method"] == "lazy", rec
        assert rec["rss"] > 90 << 20 and rec["bytes"] < 16 << 20  # only metadata went as image files
        assert 0 < rec["frozen_s"] <= rec["resumed_s"] <= rec["total_s"]
        assert rec["pages_s"] > 0
        assert PIPE_MAX.read_text() == limit_before, "fs.pipe-max-size must be put back after the post-copy"
        assert not list((state(cluster, src) / "mig").glob("*/images"))
        assert not list(Path("/dev/shm").glob(f"omview-*-{rec['id']}"))
    assert dep.finish(120) == 7, dep.err
    nums, hosts = counts(dep.out)
    assert nums == list(range(n)) and hosts == {"node1", "node2"}


def test_fault_in_the_page_phase_leaves_one_copy(make_cluster: Callable[..., Cluster]) -> None:
    cluster = all_up(make_cluster(2))
    limit_before = PIPE_MAX.read_text()
    n = 160
    dep = Deputy(cluster, 1, [PY, COUNTER, str(n), "0.05", "400"])  # big enough for a page phase of ~1 s
    dep.wait_started(timeout=60)
    hook(cluster, 1, "method", "lazy")
    mig = cluster.popen(1, ["migrate", str(dep.pid), "2"], stdout=-1, stderr=-1, text=True)

    def resumed_on_target() -> bool:
        if mig.poll() is not None:
            raise AssertionError(f"migrate ended before the page phase: {mig.communicate()}")
        return bool(incoming(cluster, 2, "restored.pid"))

    wait(resumed_on_target, 60, "the job to resume on node 2", every=0.005)
    dumps = serving_dumps()
    assert dumps, "no criu serving pages: the page phase was over before the fault"
    for pid in dumps:
        os.kill(pid, 9)  # the source's page server dies with pages still in flight
    out, err = mig.communicate(timeout=120)
    assert mig.returncode == 3 and "post-copy failed after the job resumed" in err, (out, err)
    wait(lambda: len(copies(dep.job)) == 1, 20, "exactly one copy of the job")
    st = call(cluster, 1, "job.status", job=dep.job)
    assert st["where"] == 1 and st["state"] == "running"
    time.sleep(0.5)
    assert len(copies(dep.job)) == 1
    assert PIPE_MAX.read_text() == limit_before
    assert dep.finish(120) == 7, dep.err
    nums, _ = counts(dep.out)
    assert nums == list(range(n)), f"output not in order: {nums[:5]}... ({len(nums)} lines)"
    assert not copies(dep.job)
