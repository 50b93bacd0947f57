"""Job directories set aside for a reused job id (`<id>.old-<seconds>`) are removed once nothing uses
them - at the agent's start and whenever a job ends - instead of piling up (issue 13 follow-up)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from omview.agent.jobs.table import OLD_MARK, prune_set_aside, set_aside
from tests.agent.test_agent_hardening import _events_until_exit
from tests.support.agents import Cluster, RawConn


def _leftover(jobs: Path, name: str, status: bool) -> Path:
    d = jobs / name
    d.mkdir()
    (d / "out").write_bytes(b"earlier output\n")
    if status:
        (d / "status").write_text("exit 0\n")  # what jobinit writes when the job ends
    return d


def test_prune_removes_leftovers_nothing_uses(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    current = _leftover(jobs, "1-100", status=False)
    ended = _leftover(jobs, "1-100.old-1700000000", status=True)
    killed = _leftover(jobs, "1-100.old-1700000001", status=False)  # init killed: no status
    busy = _leftover(jobs, "1-100.old-1700000002", status=False)
    # an orphan of that job still writes there (killed, not yet gone)
    orphan = subprocess.Popen(["sleep", "60"], cwd=busy, stdin=subprocess.DEVNULL,
                              stdout=open(busy / "out", "ab"), stderr=subprocess.DEVNULL)  # noqa: SIM115  # fmt: skip
    try:
        assert prune_set_aside(str(jobs)) == 2
        assert sorted(p.name for p in jobs.iterdir()) == [current.name, busy.name]
        assert not ended.exists() and not killed.exists()
    finally:
        orphan.kill()
        orphan.wait()
    assert prune_set_aside(str(jobs)) == 1
    assert [p.name for p in jobs.iterdir()] == [current.name]  # the current job's directory is never touched


def test_set_aside_then_prune(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for _ in range(3):  # three jobs of one id within a second
        _leftover(jobs, "2-7", status=True)
        set_aside(str(jobs / "2-7"))
    assert len([n for n in os.listdir(jobs) if OLD_MARK in n]) == 3
    assert prune_set_aside(str(jobs)) == 3 and os.listdir(jobs) == []


def test_an_agent_keeps_no_leftovers_of_jobs_with_one_id(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    agent = cl.agents[0]
    jobs = Path(agent.state_dir) / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    _leftover(jobs, "1-99.old-1700000000", status=True)  # left by an earlier agent run
    a = agent.start()
    assert not (jobs / "1-99.old-1700000000").exists()  # removed at start
    conn = RawConn(a.socket)
    try:
        conn.hello()
        conn.request(1, "events.subscribe", topics=["job.exit"])
        for i in range(4):  # one connection: the same job id every time
            r = conn.request(10 + i, "job.start", argv=["true"])
            assert "result" in r, r
            _events_until_exit(conn, r["result"]["id"])
            # before: one more <id>.old-<seconds> per job, never removed
            assert [n for n in os.listdir(jobs) if OLD_MARK in n] == []
        assert len(os.listdir(jobs)) == 1  # the last job's own directory (its output stays readable)
    finally:
        conn.close()
    assert "removed 1 job directory" in a.log()
