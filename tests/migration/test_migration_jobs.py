"""Issue 3 acceptance on a real namespace cluster: mosrun deputies, CRIU migration A->B->C->home,
signals from the home node, threads and a pipe pair, refusals."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable

import pytest

from omview.model.errors import AgentFault
from omview.model.protocol import FaultCode
from omview.testbed import Cluster
from tests.migration.helpers import (
    COUNTER,
    FAMILY,
    PY,
    Deputy,
    alive,
    all_up,
    call,
    client,
    counts,
    migrate,
    wait,
)

pytestmark = pytest.mark.cluster


def test_counter_job_migrates_a_b_c_and_home(make_cluster: Callable[..., Cluster]) -> None:
    cluster = all_up(make_cluster(3))
    with client(cluster, 1) as events:
        events.call("events.subscribe", topics=["migration", "job.moved"])
        dep = Deputy(cluster, 1, [PY, COUNTER, "80", "0.1"])
        dep.wait_started()
        r = migrate(cluster, 1, dep.pid, 2)
        assert r.returncode == 0, r.stderr
        assert "node 1 -> 2" in r.stdout
        assert dep.status()["where"] == 2
        # asked on the home node, routed to node 2 where the job runs
        r = migrate(cluster, 1, dep.pid, 3, "--json")
        assert r.returncode == 0, r.stderr
        rec = json.loads(r.stdout)  # the documented shape (docs/migration.md)
        keys = {"id", "job", "source", "target", "bytes", "frozen_s", "total_s", "result", "reason"}
        assert keys <= set(rec)
        assert (rec["job"], rec["source"], rec["target"], rec["result"]) == (dep.job, 2, 3, "ok")
        wait(lambda: dep.status()["where"] == 3, 10, "the home record to say node 3")
        mps = cluster.exec(1, ["mps", str(dep.pid)], capture_output=True, text=True, timeout=30)
        row = mps.stdout.splitlines()[1].split()
        assert row[0] == str(dep.pid) and row[2] == "3", mps.stdout  # N# = the node it runs on
        on3 = [p for p in call(cluster, 3, "procs.list") if p["job"] == dep.job]
        assert on3 and all(p["home"] == 1 and p["where"] == 3 and p["nmigs"] == 2 for p in on3)
        r = migrate(cluster, 1, dep.pid, "home")
        assert r.returncode == 0, r.stderr
        code = dep.finish()
        names = []
        while True:
            try:
                names.append(events.next_event(1)[0])
            except TimeoutError:
                break
    assert code == 7, dep.err
    nums, hosts = counts(dep.out)
    assert nums == list(range(80)), "the count must go on without restart, gap or repeat"
    assert hosts == {"node1", "node2", "node3"}
    assert dep.err.decode().strip() == "done"
    st = call(cluster, 1, "job.status", job=dep.job)
    assert st["state"] == "exited" and st["status"] == "exit 7" and st["nmigs"] == 3
    hist = st["history"]
    assert [(h["source"], h["target"], h["result"]) for h in hist] == [
        (1, 2, "ok"),
        (2, 3, "ok"),
        (3, 1, "ok"),
    ]
    for h in hist:
        assert h["bytes"] > 1_000_000 and 0 < h["frozen_s"] <= h["total_s"]
        assert {"dump_s", "transfer_s", "restore_s"} <= set(h)
    # node 1 was the source of the first migration: it announced it
    assert "migration.started" in names and "migration.done" in names and "job.moved" in names
    assert call(cluster, 1, "migration.history")["nmigs"] == 1


def test_kill_and_ctrl_c_on_the_home_node_reach_the_job_elsewhere(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = all_up(make_cluster(3))
    dep = Deputy(cluster, 1, [PY, COUNTER, "100000", "0.05"])
    dep.wait_started()
    assert migrate(cluster, 1, dep.pid, 3).returncode == 0
    init = wait(
        lambda: [p["pid"] for p in call(cluster, 3, "procs.list") if p["job"] == dep.job], 10, "tasks on 3"
    )
    cluster.exec(1, ["kill", str(dep.pid)], check=True, timeout=30)  # SIGTERM to the deputy on the home node
    assert dep.finish(30) == 128 + signal.SIGTERM
    st = call(cluster, 1, "job.status", job=dep.job)
    assert st["state"] == "exited" and st["status"] == f"signal {int(signal.SIGTERM)}" and st["where"] == 3
    wait(lambda: not any(alive(p) for p in init), 10, "the job's tasks on node 3 to end")
    nums, hosts = counts(dep.out)
    assert nums == list(range(len(nums))) and hosts == {"node1", "node3"}

    # Ctrl-C: SIGINT to the deputy reaches the job (here, on node 2)
    dep2 = Deputy(cluster, 1, [PY, COUNTER, "100000", "0.05"])
    dep2.wait_started()
    assert migrate(cluster, 1, dep2.pid, 2).returncode == 0
    dep2.proc.send_signal(signal.SIGINT)
    assert dep2.finish(30) == 128 + signal.SIGINT  # Python re-raises SIGINT after a KeyboardInterrupt
    assert b"KeyboardInterrupt" in dep2.err

    # a deputy killed outright takes its job with it (openMosix semantics)
    dep3 = Deputy(cluster, 1, [PY, COUNTER, "100000", "0.05"])
    dep3.wait_started()
    assert migrate(cluster, 1, dep3.pid, 2).returncode == 0
    dep3.kill()
    wait(
        lambda: call(cluster, 2, "job.status", job=dep3.job)["state"] == "exited",
        15,
        "job 3 to end on node 2",
    )


def test_threads_and_a_pipe_pair_migrate_together(make_cluster: Callable[..., Cluster]) -> None:
    cluster = all_up(make_cluster(2))
    dep = Deputy(cluster, 1, [PY, FAMILY, "40"])
    dep.wait_started()
    # every task of the job, its plumbing included (procs.list shows a job as one row unless asked)
    procs = wait(lambda: [p for p in call(cluster, 1, "procs.list", helpers=True)
                          if p["job"] == dep.job and p["pid"] != dep.pid], 10, "the job's tasks")  # fmt: skip
    assert any(p["threads"] >= 3 for p in procs), procs  # main + 2 threads in the parent
    assert len(procs) >= 3  # jobinit, parent, child
    r = migrate(cluster, 1, dep.pid, 2)
    assert r.returncode == 0, r.stderr
    on2 = [p for p in call(cluster, 2, "procs.list", helpers=True) if p["job"] == dep.job]
    assert len(on2) == len(procs) and any(p["threads"] >= 3 for p in on2)
    assert migrate(cluster, 1, dep.pid, "home").returncode == 0
    assert dep.finish() == 0, dep.err
    lines = dep.out.decode().splitlines()
    parents = [line for line in lines if line.startswith("parent")]
    children = [line for line in lines if line.startswith("child")]
    assert [int(p.split()[1]) for p in parents] == list(range(40))
    assert [int(c.split()[1]) for c in children] == list(range(40))
    spins = [int(p.split("=")[1].split(",")[0]) for p in parents]
    assert spins == sorted(spins) and spins[-1] > spins[0], "the threads kept running across the moves"


def test_refusals_are_clear(make_cluster: Callable[..., Cluster]) -> None:
    cluster = all_up(make_cluster(3))
    dep = Deputy(cluster, 1, [PY, COUNTER, "100000", "0.05"], opts=["-h"])  # locked to home
    try:
        dep.wait_started()
        r = migrate(cluster, 1, dep.pid, 2)
        assert r.returncode == 3 and "locked" in r.stderr and "CANT_MOVE" in r.stderr
        assert migrate(cluster, 1, 4_000_000, 2).stderr.count("no process 4000000") == 1
        r = migrate(cluster, 1, dep.pid, 9)
        assert r.returncode == 3 and "no node 9" in r.stderr
        r = migrate(cluster, 1, dep.pid, 1)
        assert r.returncode == 3 and "already runs on node 1" in r.stderr
        r = migrate(cluster, 1, dep.pid, "nowhere")
        assert r.returncode == 2
        # unlock it (proc.lock on the deputy's PID), then ask as another user
        call(cluster, 1, "proc.lock", pid=dep.pid, lock=False)
        r = cluster.exec(1, ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "migrate", str(dep.pid), "2"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 3 and "PERMISSION_DENIED" in r.stderr and "uid 65534" in r.stderr
        cluster.agent_stop(3)
        wait(
            lambda: not {n["id"]: n for n in call(cluster, 1, "cluster.nodes")}[3]["status"] == "up",
            15,
            "3 down",
        )
        r = migrate(cluster, 1, dep.pid, 3)
        assert r.returncode == 3 and "node 3 is down" in r.stderr
        # a process that was not started with mosrun, in the session of its caller (more in test_migration_plain)
        plain = cluster.popen(1, ["sleep", "60"], stdin=subprocess.DEVNULL)
        try:
            # nsenter joins the node's namespaces, then execs sleep: until then it is not node 1's process
            wait(lambda: open(f"/proc/{plain.pid}/comm").read().strip() == "sleep", 10, "sleep to start in node 1")
            with client(cluster, 1) as c, pytest.raises(AgentFault) as e:
                c.call("proc.migrate", pid=plain.pid, target="2")
            assert e.value.code == FaultCode.CANT_MOVE and "session leader" in e.value.message
        finally:
            plain.kill()
            plain.wait(10)
        assert dep.status()["where"] == 1 and dep.proc.poll() is None
    finally:
        dep.kill()


def test_another_users_job_says_why_it_cannot_move(make_cluster: Callable[..., Cluster]) -> None:
    """Issue 13: without CAP_SYS_RESOURCE (this sandbox) CRIU cannot dump another user's process
    ("Can't get rlimit 0"), yet mps -c showed the job movable: now the true reason, up front."""
    from omview.agent.node import movable

    if movable._agent_has_cap(movable.CAP_SYS_RESOURCE):
        pytest.skip("the agent has CAP_SYS_RESOURCE here: CRIU can dump other users' processes")
    cluster = all_up(make_cluster(2))
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    proc = cluster.popen(1, [*nobody, "mosrun", "sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        job = f"1:{proc.pid}"

        def running() -> bool:
            try:
                return call(cluster, 1, "job.status", job=job)["state"] == "running"
            except AgentFault:
                return False  # mosrun has not registered it yet

        wait(running, 20, "the job to run")
        rows = [p for p in call(cluster, 1, "procs.list") if p["job"] == job and p["where"] == 1]
        assert rows and all("CAP_SYS_RESOURCE" in p["cantmove"] for p in rows), rows
        r = migrate(cluster, 1, proc.pid, 2)
        assert r.returncode == 3 and "CANT_MOVE" in r.stderr and "uid 65534" in r.stderr, r.stderr
        assert call(cluster, 1, "job.status", job=job)["where"] == 1
    finally:
        proc.kill()
        proc.communicate(timeout=30)
