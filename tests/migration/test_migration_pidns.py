"""Issue 3 on a cluster whose nodes have PID namespaces of their own (`omview-cluster up --pid-ns`),
as separate machines do: a plain process tree (not started with mosrun, not a namespace init) moves
with its PIDs unchanged where they are free, is refused with the exact reason where one is taken, and
comes home; a mosrun job (a namespace nested in the node's) migrates there too."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from omview.model.errors import AgentFault
from omview.model.protocol import FaultCode
from omview.testbed import Cluster
from tests.migration.helpers import COUNTER, PROGS, PY, all_up, call, counts, migrate, wait

pytestmark = pytest.mark.cluster

PLAIN = str(PROGS / "plaintree.py")


def _spawn_at(cluster: Cluster, node: int, pid: int, script: str) -> int:
    """Run SCRIPT (sh, in the background, detached from us; it must exec its program) in NODE as PID
    there; returns the PID it got. The node's PID counter is set just below PID first (a node's own history decides its PIDs)."""
    for _ in range(5):
        res = cluster.exec(
            node,
            ["sh", "-c", f"echo {pid - 1} > /proc/sys/kernel/ns_last_pid || exit 1; {{ {script} ; }} & echo $!"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        got = int(res.stdout.split()[-1])
        if got == pid:
            return got
        cluster.exec(node, ["kill", "-9", str(got)], check=False, timeout=30)  # raced: another fork won
    raise AssertionError(f"could not start a process as PID {pid} on node {node}")


def _move_counter(cluster: Cluster, node: int, last: int) -> None:
    """Make NODE hand out PIDs after LAST from now on (keeps its later forks off the PIDs under test)."""
    cluster.exec(node, ["sh", "-c", f"echo {last} > /proc/sys/kernel/ns_last_pid"], check=True, timeout=30)


def _numbers(path: Path) -> list[int]:
    try:
        return [int(x) for x in path.read_text().split()]
    except (OSError, ValueError):
        return []


def _contiguous(path: Path) -> bool:
    nums = _numbers(path)
    return bool(nums) and nums == list(range(nums[0], nums[0] + len(nums)))


def _grows(path: Path, timeout: float = 10.0) -> None:
    before = len(_numbers(path))
    wait(lambda: len(_numbers(path)) >= before + 3, timeout, f"{path.name} to keep counting")


def _row(cluster: Cluster, node: int, pid: int) -> dict[str, object]:
    rows = call(cluster, node, "procs.list", pid=pid)
    assert len(rows) == 1, rows
    return dict(rows[0])


def _in_node(cluster: Cluster, node: int, pid: int) -> str:
    """The command line of PID as NODE's own /proc shows it ("" when there is no such process)."""
    res = cluster.exec(node, ["cat", f"/proc/{pid}/cmdline"], capture_output=True, timeout=30, check=False)
    return res.stdout.replace(b"\0", b" ").decode().strip() if res.returncode == 0 else ""


def test_nodes_have_their_own_pids_and_reap_orphans(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(2, pid_ns=True)
    for n in (1, 2):
        ps = cluster.exec(n, ["ps", "-eo", "pid=,comm="], capture_output=True, text=True, timeout=30, check=True)
        pids = {int(line.split()[0]): line.split()[1] for line in ps.stdout.splitlines()}
        assert pids[1] == "python3"  # the node's init (the holder's reaper)
        assert sorted(pids)[-1] < 1000 and "omview-agent" in " ".join(
            _in_node(cluster, n, p) for p in pids
        ), pids  # a fresh PID space holding only this node's processes
    # an orphan of the node is reparented to its init and reaped (no zombie piles up)
    orphan = _spawn_at(cluster, 1, 3000, "exec sleep 0.2")
    time.sleep(1.0)
    assert _in_node(cluster, 1, orphan) == ""
    state = cluster.exec(1, ["ps", "-eo", "stat="], capture_output=True, text=True, timeout=30, check=True)
    assert "Z" not in state.stdout


def test_plain_tree_moves_with_its_pids_and_comes_home(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = all_up(make_cluster(2, pid_ns=True))
    d = tmp_path / "plain"
    d.mkdir()
    parent_file, child_file = d / "parent", d / "child"
    pid = _spawn_at(cluster, 1, 5000, f"cd {d} && exec setsid {PY} {PLAIN} {d} </dev/null >/dev/null 2>&1")
    wait(lambda: (d / "pids").exists(), 10, "the plain tree to start")
    parent, child = (int(x) for x in (d / "pids").read_text().split())
    assert parent == pid and child > pid  # node-local PIDs: the node's counter was set
    _move_counter(cluster, 1, 20000)  # and the way home stays free of node 1's own later processes
    _grows(child_file)

    # node 2 happens to use PID 5000: the exact reason, and a refusal that leaves the tree running
    sleeper = _spawn_at(cluster, 2, pid, "exec sleep 300 </dev/null >/dev/null 2>&1")
    # node 2's next processes (the SSH session node 1's agent opens to ask it) would take 5001
    _move_counter(cluster, 2, 20000)
    reason = f"pid {pid} in use on node 2"
    wait(lambda: _row(cluster, 1, pid)["cantmove"] == reason, 30, reason)
    res = migrate(cluster, 1, pid, 2)
    assert res.returncode != 0 and reason in res.stderr, res
    _grows(parent_file)
    assert _in_node(cluster, 1, pid).endswith(f"plaintree.py {d}")

    # PID 5000 (and 5001) free on node 2: the tree moves with its PIDs unchanged and keeps counting
    cluster.exec(2, ["kill", "-9", str(sleeper)], check=True, timeout=30)
    wait(lambda: _in_node(cluster, 2, sleeper) == "", 10, "the sleeper on node 2 to end")
    res = migrate(cluster, 1, pid, 2)
    assert res.returncode == 0, res.stderr
    assert f"1:{pid}: node 1 -> 2" in res.stdout
    assert _in_node(cluster, 2, pid).endswith(f"plaintree.py {d}")
    assert _in_node(cluster, 2, child).endswith(f"plaintree.py {d}")
    assert _in_node(cluster, 1, pid) == "" and _in_node(cluster, 1, child) == ""
    _grows(parent_file)
    _grows(child_file)
    here = _row(cluster, 2, pid)
    assert here["job"] == f"1:{pid}" and here["nmigs"] == 1
    away = _row(cluster, 1, pid)  # its home still names it by its PID, N# = where it runs
    assert away["where"] == 2 and away["job"] == f"1:{pid}"

    # home again, same PIDs; then `kill PID` on the home node ends it and its status is recorded
    res = migrate(cluster, 1, pid, "home")
    assert res.returncode == 0, res.stderr
    assert _in_node(cluster, 1, pid).endswith(f"plaintree.py {d}") and _in_node(cluster, 2, pid) == ""
    _grows(parent_file)
    _grows(child_file)
    assert _contiguous(parent_file) and _numbers(parent_file)[0] == 0  # never restarted, nothing lost
    assert _contiguous(child_file) and _numbers(child_file)[0] == 0
    cluster.exec(1, ["kill", str(pid)], check=True, timeout=30)
    st = wait(lambda: (s := call(cluster, 1, "job.status", job=f"1:{pid}"))["state"] != "running" and s, 15,
              "the job to end")  # fmt: skip
    assert st["status"] == "signal 15" and st["nmigs"] == 2 and st["adopted"] is True
    wait(lambda: _in_node(cluster, 1, child) == "", 10, "the child to end with its parent")


def test_mosrun_job_migrates_between_nodes_with_own_pids(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = all_up(make_cluster(2, pid_ns=True))
    pidfile = tmp_path / "deputy.pid"
    proc = cluster.popen(
        1, ["sh", "-c", f'echo $$ > {pidfile} && cd /tmp && exec mosrun {PY} {COUNTER} 40 0.1'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "the deputy to start")
        home_pid = int(pidfile.read_text())
        job = f"1:{home_pid}"

        def printed() -> bool:
            try:
                return call(cluster, 1, "job.status", job=job)["out_sent"] > 0
            except AgentFault as exc:  # the shell is up, but mosrun has not asked for the job yet
                if exc.code != FaultCode.NO_SUCH_PROCESS:
                    raise
                return False

        wait(printed, 20, "the job to print")
        res = migrate(cluster, 1, home_pid, 2)
        assert res.returncode == 0, res.stderr
        assert call(cluster, 1, "job.status", job=job)["where"] == 2
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    nums, hosts = counts(out)
    assert proc.returncode == 7 and nums == list(range(40)), (out, err)
    assert hosts == {"node1", "node2"} and b"done" in err
