"""The one /proc/PID/stat reader: odd process names, vanished and ended processes, kernel threads."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from omview.model import procfs

# a real line (python3 with a 4-thread worker pool), the name swapped per test
_TAIL = (
    b" S 1201 12345 1200 34816 12345 4194304 52345 0 12 0 1834 421 7 3 20 0 4 0 987654 312459264 24311 "
    b"18446744073709551615 94862163709952 94862166498717 140724510387104 0 0 0 0 16781312 134234626 0 0 0 "
    b"17 1 0 0 0 0 0 94862167244624 94862167716024 94862190247936 140724510392649 140724510392712 "
    b"140724510392712 140724510396377 0\n"
)


def _line(name: bytes) -> bytes:
    return b"12345 (" + name + b")" + _TAIL


@pytest.mark.parametrize(
    "name",
    ["python3", "a) (b", "a b c", ") S 1 2 3", "x\ny z", "((", "))", "", "kworker/u8:2-events_unbound"],
)
def test_parse_takes_the_fields_after_the_last_parenthesis(name: str) -> None:
    st = procfs.parse_stat(12345, _line(name.encode()))
    assert st.name == name
    assert (st.pid, st.state, st.ppid, st.pgrp, st.session, st.tty_nr) == (12345, "S", 1201, 12345, 1200, 34816)
    assert (st.utime, st.stime, st.cutime, st.cstime) == (1834, 421, 7, 3)
    assert (st.nice, st.threads, st.starttime, st.rss_pages) == (0, 4, 987654, 24311)
    assert st.key == (12345, 987654)
    assert not st.kernel_thread and not st.ended


def test_a_name_that_is_not_utf8_is_kept_readable() -> None:
    assert procfs.parse_stat(1, _line(b"caf\xe9")).name == "caf\ufffd"


@pytest.mark.parametrize("raw", [b"", b"garbage", b"1 (x) S 1 2", b"1 (x) S one 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22"])
def test_anything_else_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        procfs.parse_stat(1, raw)


def test_odd_names_read_back_exactly() -> None:
    for name in ("a) (b", "two words", "x\ny z"):
        code = f"open('/proc/self/comm', 'w').write({name!r}); print(flush=True); import time; time.sleep(60)"
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            proc.stdout.readline()
            st = procfs.read_stat(proc.pid)
            assert st is not None and st.name == name
            assert (st.pid, st.ppid) == (proc.pid, os.getpid()) and st.state in ("R", "S")
            assert st.starttime == procfs.start_time(proc.pid)
            assert procfs.alive(proc.pid, st.starttime) and procfs.alive(proc.pid, None)
            assert not procfs.alive(proc.pid, st.starttime + 1)  # the same PID, another process
        finally:
            proc.kill()
            proc.wait()


def test_own_threads_and_children() -> None:
    me = procfs.read_stat(os.getpid())
    assert me is not None and me.state == "R" and me.ppid == os.getppid()
    tid = procfs.read_stat(os.getpid(), os.getpid())
    assert tid is not None and tid.pid == os.getpid()
    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert proc.pid in procfs.children_map().get(os.getpid(), [])
        kids = [k for t in os.listdir(f"/proc/{os.getpid()}/task") for k in procfs.task_children(os.getpid(), int(t))]
        assert proc.pid in kids
    finally:
        proc.kill()
        proc.wait()


def test_a_vanished_process_reads_as_none() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert procfs.read_stat(proc.pid) is None
    assert procfs.start_time(proc.pid) is None and procfs.state(proc.pid) is None
    assert not procfs.alive(proc.pid, None)
    assert procfs.task_children(proc.pid) == []
    assert procfs.read_stat(0) is None and not procfs.alive(0, None) and not procfs.alive(None, None)


def test_a_zombie_has_ended() -> None:
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while procfs.state(proc.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        st = procfs.read_stat(proc.pid)
        assert st is not None and st.ended and st.state == "Z"
        assert procfs.start_time(proc.pid) is None and not procfs.alive(proc.pid, st.starttime)
    finally:
        proc.wait()


def test_kernel_threads() -> None:
    kthreads = [st for st in map(procfs.read_stat, procfs.all_pids()) if st is not None and st.kernel_thread]
    if not kthreads:
        pytest.skip("no kernel thread visible in this PID namespace")
    assert all(st.rss_pages == 0 for st in kthreads)
    assert not procfs.read_stat(os.getpid()).kernel_thread  # type: ignore[union-attr]
