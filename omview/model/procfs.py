"""L0 model: the one reader of /proc/PID/stat (and the small process facts built on it), stdlib only.

The agent's sampler reads every process through `read_stat` each second, so the parse is kept lean:
bytes split once (only up to the last field used), a NamedTuple built positionally.
Field numbers and meanings: proc(5), "/proc/pid/stat".
"""

from __future__ import annotations

import os
from typing import NamedTuple

HZ = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PF_KTHREAD = 0x00200000  # include/linux/sched.h
#: states of a process that has exited (zombie, dead): it holds a PID but runs no more
ENDED = ("Z", "X")
#: fields split off after the name: rss (field 24) is the last one used; the rest stays unsplit (ProcStat.rest)
_SPLIT = 22


class ProcStat(NamedTuple):
    """The fields of /proc/PID/stat omview uses (times in clock ticks, see HZ)."""

    pid: int
    name: str  # comm: up to 15 bytes (64 for some kernel threads), any bytes but NUL
    state: str  # one letter: R S D T t Z X I...
    ppid: int
    pgrp: int
    session: int
    tty_nr: int  # controlling terminal (major/minor packed), 0 for none
    flags: int  # PF_* flags
    utime: int
    stime: int
    cutime: int  # CPU time of reaped children
    cstime: int
    nice: int
    threads: int
    starttime: int  # clock ticks after boot
    rss_pages: int
    rest: bytes = b""  # the fields after rss, left unsplit (see exec_mark)

    @property
    def key(self) -> tuple[int, int]:
        """(pid, start time): unlike the PID alone, never reused within one boot."""
        return (self.pid, self.starttime)

    @property
    def kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)

    @property
    def exec_mark(self) -> tuple[int, int] | None:
        """(arg_start, arg_end), fields 48-49: where the command line lies in memory. Every exec gives
        the process a new stack (at a random address), so a change means the process ran exec (or
        moved its arguments with prctl(PR_SET_MM)); None when the kernel shows 0 (a reader without
        ptrace rights on it, a kernel thread, Linux < 3.5)."""
        try:
            f = self.rest.split(None, 25)
            mark = (int(f[23]), int(f[24]))
        except (IndexError, ValueError):
            return None
        return mark if mark[0] else None

    @property
    def ended(self) -> bool:
        """A zombie (or dead) process: exited, not yet reaped."""
        return self.state in ENDED


def parse_stat(pid: int, raw: bytes) -> ProcStat:
    """Parse one /proc/PID/stat line; raises ValueError on anything else.

    The name is in parentheses and may itself contain spaces, parentheses and newlines, so the
    fields start after the LAST ')' in the line (the name is cut at the first '(').
    """
    try:
        rpar = raw.rindex(b")")
        f = raw[rpar + 2 :].split(None, _SPLIT)
        return ProcStat(
            pid, raw[raw.index(b"(") + 1 : rpar].decode("utf-8", "replace"), f[0].decode("ascii"),
            int(f[1]), int(f[2]), int(f[3]), int(f[4]), int(f[6]), int(f[11]), int(f[12]), int(f[13]),
            int(f[14]), int(f[16]), int(f[17]), int(f[19]), int(f[21]), f[_SPLIT] if len(f) > _SPLIT else b"",
        )  # fmt: skip
    except (IndexError, UnicodeDecodeError):
        raise ValueError(f"not a /proc/PID/stat line: {raw[:80]!r}") from None


def read_stat(pid: int, tid: int | None = None) -> ProcStat | None:
    """The stat of process PID (or of its thread TID), None when it is gone or unreadable."""
    try:
        # unbuffered: the kernel hands the whole line (a few hundred bytes) to one read
        fd = os.open(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        return parse_stat(pid if tid is None else tid, os.read(fd, 4096))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def start_time(pid: int) -> int | None:
    """Start time of PID in clock ticks after boot; None when it is gone or has ended (zombie)."""
    st = read_stat(pid) if pid > 0 else None
    return None if st is None or st.ended else st.starttime


def alive(pid: int | None, start: int | None) -> bool:
    """PID runs and is still the process that started at START (a reused PID is not it); START None:
    any live process with that PID."""
    if not pid or pid <= 0:
        return False
    now = start_time(pid)
    return now is not None and (start is None or now == start)


def state(pid: int) -> str | None:
    """The state letter of PID, None when it is gone."""
    st = read_stat(pid)
    return None if st is None else st.state


def all_pids() -> list[int]:
    """Every PID in this /proc (a snapshot: any may exit at any time)."""
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def children_map() -> dict[int, list[int]]:
    """PID -> its children (in /proc order), from every process's stat: one pass over /proc."""
    out: dict[int, list[int]] = {}
    for pid in all_pids():
        st = read_stat(pid)
        if st is not None:
            out.setdefault(st.ppid, []).append(pid)
    return out


def task_children(pid: int, tid: int | None = None) -> list[int]:
    """The children forked by thread TID (default: the main thread) of PID, from
    /proc/PID/task/TID/children (empty when gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/task/{pid if tid is None else tid}/children", "rb") as fh:
            return [int(x) for x in fh.read().split()]
    except (OSError, ValueError):
        return []
