"""A mosrun job is one row of procs.list and mps (issue 9), at home and after it migrated."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from omview.testbed import Cluster
from tests.conftest import ClusterFactory
from tests.migration.helpers import COUNTER, PY, Deputy, all_up, call, wait


def _rows(cluster: Cluster, node: int, job: str, **args: Any) -> list[dict[str, Any]]:
    """The rows of JOB on NODE: its own row (job set) and its helpers."""
    rows = call(cluster, node, "procs.list", **args)
    heads = {r["pid"] for r in rows if r["job"] == job and not r["helper_of"]}
    return [r for r in rows if r["pid"] in heads or r["helper_of"] in heads]


def test_a_job_is_one_row_with_the_programs_command_wherever_it_runs(make_cluster: ClusterFactory) -> None:
    cluster = all_up(make_cluster(2))
    dep = Deputy(cluster, 1, [PY, COUNTER, "2000", "0.05"])
    try:
        dep.wait_started()
        argv = [PY, COUNTER, "2000", "0.05"]
        rows = _rows(cluster, 1, dep.job)
        assert len(rows) == 1, rows
        row = rows[0]
        assert row["pid"] == dep.pid and row["cmdline"] == argv and row["where"] == 1 and row["helper_of"] == 0
        assert row["name"] == "python3"
        # asked for, the plumbing: unshare, jobinit and the program, each marked with the job's row
        helpers = [r for r in _rows(cluster, 1, dep.job, helpers=True) if r["helper_of"]]
        assert {r["helper_of"] for r in helpers} == {dep.pid}
        names = sorted(r["cmdline"][0].rsplit("/", 1)[-1] for r in helpers)
        assert len(helpers) == 3 and "unshare" in names and any(r["cmdline"] == argv for r in helpers), helpers
        # mps: one line by default, the helpers indented under it with -H
        out = cluster.exec(1, ["mps", "-a"], capture_output=True, text=True, check=True).stdout
        assert [line for line in out.splitlines() if "counter.py" in line] == [
            line for line in out.splitlines() if line.split()[0] == str(dep.pid)
        ]
        out = cluster.exec(1, ["mps", "-a", "-H"], capture_output=True, text=True, check=True).stdout
        lines = out.splitlines()
        at = next(i for i, line in enumerate(lines) if line.split()[0] == str(dep.pid))
        assert all("\\_ " in line for line in lines[at + 1 : at + 4]), lines[at : at + 4]

        call(cluster, 1, "proc.migrate", pid=dep.pid, target="2")
        wait(lambda: _rows(cluster, 1, dep.job)[0]["where"] == 2, 20, "the job's row to say node 2")
        home = _rows(cluster, 1, dep.job, helpers=True)
        assert len(home) == 1 and home[0]["pid"] == dep.pid and home[0]["cmdline"] == argv
        assert home[0]["nmigs"] == 1
        # the node hosting it shows it once too, as its program, home node 1
        guest = _rows(cluster, 2, dep.job)
        assert len(guest) == 1 and guest[0]["cmdline"] == argv and guest[0]["home"] == 1, guest
        assert len([r for r in _rows(cluster, 2, dep.job, helpers=True) if r["helper_of"]]) == 1  # jobinit
    finally:
        dep.proc.kill()
        dep.proc.wait(10)


def test_signal_renice_status_reach_a_migrated_job(make_cluster: ClusterFactory) -> None:
    cluster = all_up(make_cluster(2))
    dep = Deputy(cluster, 1, [PY, COUNTER, "2000", "0.05"])
    try:
        dep.wait_started()
        call(cluster, 1, "proc.migrate", pid=dep.pid, target="2")
        wait(lambda: _rows(cluster, 2, dep.job), 20, "the job on node 2")

        def guest() -> dict[str, Any]:
            return _rows(cluster, 2, dep.job)[0]

        got = call(cluster, 1, "proc.status", pid=dep.pid)  # asked at home, answered where it runs
        assert got["node"] == 2 and got["job"] == dep.job and got["status"]["Name"] == "python3"
        call(cluster, 1, "proc.signal", pid=dep.pid, signal=19)  # SIGSTOP: no init passes it on
        wait(lambda: guest()["state"] == "T", 10, "the program stopped on node 2")
        call(cluster, 1, "proc.signal", pid=dep.pid, signal=18)
        wait(lambda: guest()["state"] in "SR", 10, "the program running again")
        assert call(cluster, 1, "proc.renice", pid=dep.pid, nice=6)["node"] == 2
        wait(lambda: guest()["nice"] == 6, 10, "nice 6 on node 2")
        call(cluster, 1, "proc.signal", pid=dep.pid, signal=9)
        wait(lambda: dep.status()["state"] != "running", 20, "the job to end")
    finally:
        dep.proc.kill()
        dep.proc.wait(10)


BURNER = [PY, "-c", "print('burning', flush=True)\nwhile True: pass"]


def test_home_node_shows_the_programs_state_and_cpu_from_where_it_runs(make_cluster: ClusterFactory) -> None:
    """A CPU-bound job migrated to node 2: node 1's procs.list and `mps --json` show the program's
    state (R) and CPU as node 2 reports them (jobs/awaystats.py), not its deputy's (S, no CPU)."""
    cluster = all_up(make_cluster(2))
    dep = Deputy(cluster, 1, BURNER)
    try:
        dep.wait_started()
        call(cluster, 1, "proc.migrate", pid=dep.pid, target="2")
        wait(lambda: _rows(cluster, 1, dep.job)[0]["where"] == 2, 20, "the job's row to say node 2")
        deputy = next(p for p in call(cluster, 1, "procs.list", pid=dep.pid, helpers=True) if p["pid"] == dep.pid)
        assert deputy["where"] == 2

        def home_row() -> dict[str, Any]:
            out = cluster.exec(1, ["mps", "--json", str(dep.pid)], capture_output=True, text=True, check=True).stdout
            rows = [r for r in json.loads(out) if r["pid"] == dep.pid]
            assert len(rows) == 1, out
            return rows[0]

        row = wait(lambda: (r := home_row())["state"] == "R" and r["cpu"] > 0 and r, 20,
                   "node 1 to show the program's state and CPU")  # fmt: skip
        assert row["where"] == 2 and row["rss"] > 0 and row["cmdline"] == BURNER
        guest = _rows(cluster, 2, dep.job)[0]
        assert guest["state"] == "R" and abs(guest["rss"] - row["rss"]) < 8 << 20
        listed = _rows(cluster, 1, dep.job)[0]  # procs.list of the whole node says the same
        assert listed["state"] == "R" and listed["cpu"] > 0
        # stopped there: node 1 says T within a few seconds
        call(cluster, 1, "proc.signal", pid=dep.pid, signal=signal.SIGSTOP)
        wait(lambda: _rows(cluster, 1, dep.job)[0]["state"] == "T", 20, "node 1 to show the stopped program")
        call(cluster, 1, "proc.signal", pid=dep.pid, signal=signal.SIGCONT)
    finally:
        dep.proc.kill()
        dep.proc.wait(10)


def test_home_row_goes_stale_while_the_host_does_not_report(make_cluster: ClusterFactory) -> None:
    """Node 2 (hosting node 1's job) stops reporting (its agent SIGSTOPped, by PID): node 1's row keeps
    the last numbers with their age (stats_age > 5 s: the box dims it), and is current again once
    node 2 reports."""
    cluster = all_up(make_cluster(2))
    dep = Deputy(cluster, 1, BURNER)
    host = cluster.node(2).agent_pid
    assert host is not None
    stopped = False
    try:
        dep.wait_started()
        call(cluster, 1, "proc.migrate", pid=dep.pid, target="2")
        row = wait(lambda: (r := _rows(cluster, 1, dep.job)[0])["where"] == 2 and r["state"] == "R"
                   and r["cpu"] > 0 and r, 20, "node 1 to show the program's stats from node 2")  # fmt: skip
        assert row["stats_age"] == 0.0
        os.kill(host, signal.SIGSTOP)
        stopped = True
        t0 = time.monotonic()
        row = wait(lambda: (r := _rows(cluster, 1, dep.job)[0])["stats_age"] > 0 and r, 30, "a stale row on node 1")
        # not before the reports are overdue (FRESH_FOR = 5 s; one was sent at most ~1 s before the stop)
        assert time.monotonic() - t0 > 3.5 and row["stats_age"] >= 5.0
        # the last numbers node 2 sent, with their age, not the deputy's own (S, no CPU)
        assert row["state"] == "R" and row["cpu"] > 0 and row["where"] == 2
        later = wait(lambda: (r := _rows(cluster, 1, dep.job)[0])["stats_age"] >= row["stats_age"] + 2 and r, 10,
                     "the age to grow")  # fmt: skip
        assert later["cpu"] == row["cpu"]  # nothing new came
        os.kill(host, signal.SIGCONT)
        stopped = False
        wait(lambda: (r := _rows(cluster, 1, dep.job)[0])["stats_age"] == 0.0 and r["state"] == "R", 30,
             "node 1's row to be current again")  # fmt: skip
    finally:
        if stopped:
            os.kill(host, signal.SIGCONT)
        dep.proc.kill()
        dep.proc.wait(10)
