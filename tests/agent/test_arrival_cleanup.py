"""A failed or aborted arrival keeps CRIU's logs and its fence markers but no images and no copy of the
job's files (found by bench/faults.py: every refused or rolled-back migration left the job's whole
output behind on the target, as incoming/<id>/<job> or <job>.aborted)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from omview.agent.migration.common import mark
from omview.agent.migration.target import Incoming, abort_incoming
from omview.model.procfs import start_time
from tests.conftest import require_root


def arrival(state: Path, mig: str, *, moved_in: bool) -> Incoming:
    inc = Incoming(str(state), mig)
    Path(inc.images).mkdir(parents=True)
    (Path(inc.images) / "pages-1.img").write_bytes(b"\0" * 4096)
    (Path(inc.images) / "restore.log").write_text("criu restore log\n")
    job = (state / "jobs" / "1-42") if moved_in else Path(inc.dir) / "1-42"
    job.mkdir(parents=True)
    (job / "out").write_text("step 0\n" * 1000)
    if moved_in:
        inc.mark("jobdir", "1-42")
        inc.mark("moved", "1")
    return inc


@pytest.mark.parametrize("moved_in", [False, True])
def test_an_aborted_arrival_leaves_logs_and_markers_only(tmp_path: Path, moved_in: bool) -> None:
    inc = arrival(tmp_path, "1-2-1000-42", moved_in=moved_in)
    assert abort_incoming(str(tmp_path), "1-2-1000-42", str(tmp_path / "jobs")) == "aborted"
    left = sorted(p.name for p in Path(inc.dir).iterdir())
    assert left == sorted(["aborted", "lock", "restore.log"] + (["jobdir"] if moved_in else []))
    assert not (tmp_path / "jobs" / "1-42").exists()
    assert (Path(inc.dir) / "restore.log").read_text() == "criu restore log\n"
    # a second fence finds it aborted and changes nothing
    assert abort_incoming(str(tmp_path), "1-2-1000-42", str(tmp_path / "jobs")) == "aborted"


def test_a_committed_arrival_is_not_touched(tmp_path: Path) -> None:
    inc = arrival(tmp_path, "1-2-1000-43", moved_in=True)
    inc.mark("committed")
    assert abort_incoming(str(tmp_path), "1-2-1000-43", str(tmp_path / "jobs")) == "committed"
    assert (tmp_path / "jobs" / "1-42" / "out").exists()


def test_an_agent_start_aborts_what_a_killed_agent_left(tmp_path: Path) -> None:
    """The target agent killed mid-transfer: its successor aborts the arrival (images, job copy) but
    leaves committed arrivals and already cleaned-up ones alone."""
    from omview.agent.migration.target import recover_arrivals

    half = arrival(tmp_path, "1-2-1000-50", moved_in=False)
    done = arrival(tmp_path, "1-2-1000-51", moved_in=True)
    done.mark("committed")
    assert recover_arrivals(str(tmp_path), str(tmp_path / "jobs")) == ["1-2-1000-50"]
    assert sorted(p.name for p in Path(half.dir).iterdir()) == ["aborted", "lock", "restore.log"]
    assert (tmp_path / "jobs" / "1-42" / "out").exists() and Path(done.images).exists()
    assert recover_arrivals(str(tmp_path), str(tmp_path / "jobs")) == []


def _namespace_init(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A process that is the init of a PID namespace of its own, as a restored job's is."""
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "sleep", "60"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        if kids:
            return proc, int(kids[0])
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("unshare did not start its namespace init")


def test_a_fence_kills_the_copy_criu_restored_when_the_agent_died_before_recording_it(tmp_path: Path) -> None:
    """bench/faults.py, kill-target (seeds 5355, 5445, 5700): the target agent was killed after
    `criu restore -d` had finished but before it copied criu's pidfile to restored.pid; the fence
    (and the restarted agent) found no restored copy, and the source resumed its own: two copies."""
    require_root()  # a PID namespace of its own
    criu_stand_in = subprocess.Popen(["true"])  # criu restore: started first, exited since
    criu_stand_in.wait()
    inc = arrival(tmp_path, "1-2-1000-60", moved_in=True)
    inc.mark("criu.pid", f"{criu_stand_in.pid} {start_time(os.getpid())}")
    holder, init = _namespace_init(tmp_path)
    try:
        inc.mark("restored.pid.criu", f"{init}\n")
        # a PID of this namespace (ours) or a process older than the restore is never taken for it
        other = arrival(tmp_path, "1-2-1000-61", moved_in=False)
        other.mark("criu.pid", f"1 {start_time(init) + 100}")  # type: ignore[operator]
        other.mark("restored.pid.criu", f"{init}\n")
        assert abort_incoming(str(tmp_path), "1-2-1000-61", str(tmp_path / "jobs")) == "aborted"
        assert start_time(init) is not None
        assert abort_incoming(str(tmp_path), "1-2-1000-60", str(tmp_path / "jobs")) == "aborted"
        holder.wait(timeout=10)
        assert start_time(init) is None
    finally:
        holder.kill()
        holder.wait()


def test_a_marker_that_cannot_be_written_leaves_no_tmp_file(tmp_path: Path) -> None:
    """A full image space (a 64 KiB tmpfs filled up) fails the write of a marker: the error comes
    through and no half-written .tmp stays (bench/faults.py, fill-target)."""
    require_root()
    mnt = tmp_path / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "omv-test-full", str(mnt)], check=True)
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={mnt}/filler", "bs=4k"], capture_output=True)
        with pytest.raises(OSError):
            mark(str(mnt / "received.json"), "x" * 100000)
        assert sorted(os.listdir(mnt)) == ["filler"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
