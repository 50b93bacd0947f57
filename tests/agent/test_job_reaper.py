"""The job watcher's reaper (omview/agent/jobs/run.py): it scans the agent's children for zombies only
when one system call (waitid WNOWAIT) says there is one, and then still collects every orphan it does
not track and leaves the tracked ones to Popen. Run in a fresh interpreter whose children are known."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPT = r"""
import os, subprocess, sys, time
from omview.agent.jobs import run
from omview.agent.jobs.table import JobStore
from omview.agent.peers.links import PeerLinks
from omview.model import procfs

tmp = sys.argv[1]
jm = run.JobManager(store=JobStore(tmp), peers=PeerLinks(lambda n: None, tmp), node_id=lambda: 1,
                    publish=lambda name, data: None, log_dir=os.path.join(tmp, "logs"))
assert not run._any_zombie_child()  # no children at all
assert not jm.has_work()  # no job, nothing to reap: the loop does not call tick()
sleeper = subprocess.Popen(["sleep", "60"])
assert not run._any_zombie_child()  # a child, but running
jm.tick()
assert sleeper.poll() is None and not jm.reaped

def wait_zombie(pid):
    deadline = time.monotonic() + 10
    while procfs.state(pid) != "Z":
        assert time.monotonic() < deadline, f"{pid} did not end"
        time.sleep(0.01)

orphan = os.fork()
if orphan == 0:
    os._exit(7)
wait_zombie(orphan)
assert run._any_zombie_child() and jm.has_work()
assert run._any_zombie_child()  # looking did not reap it
jm.tick()
assert os.WEXITSTATUS(jm.reaped[orphan]) == 7, jm.reaped
assert procfs.state(orphan) is None or procfs.state(orphan) != "Z"
assert not run._any_zombie_child() and not jm.has_work()

tracked = subprocess.Popen(["sh", "-c", "exit 3"])
jm.procs["job-1"] = tracked
wait_zombie(tracked.pid)
jm.tick()  # a zombie, but tracked: left to Popen
assert tracked.pid not in jm.reaped and tracked.wait(10) == 3
sleeper.kill()
sleeper.wait(10)
print("ok")
"""


def test_reaper_collects_untracked_zombies_only_when_there_are_some() -> None:
    with tempfile.TemporaryDirectory(prefix="omview-test-reaper-") as tmp:
        res = subprocess.run([sys.executable, "-c", SCRIPT, tmp], capture_output=True, text=True, timeout=60,
                             cwd=str(Path(__file__).resolve().parents[2]))  # fmt: skip
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout + res.stderr
