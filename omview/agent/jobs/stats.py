"""L2 agent: per-job CPU-usage statistics of the balancer - openMosix's per-process load-balancing
statistics with the mosrun decay hints (default, slowdecay, fastdecay, nodecay); docs/migration.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from omview.agent.node.sampler import smooth
from omview.model.cluster import Flags
from omview.model.procfs import HZ, read_stat

#: statistic modes; a job without a decay hint uses "default"
MODES = ("default", "slowdecay", "fastdecay", "nodecay")
#: (job id, PID of its root on this node, that root's start time): a job that leaves and comes
#: back (or a PID reused by another job) never continues an old statistic
StatKey = tuple[str, int, int]


def decay_mode(hints: Iterable[str]) -> str:
    """The job's statistic mode: its last decay hint (like the last of several mosrun options), else default."""
    mode = "default"
    for h in hints:
        if h in MODES:
            mode = h
    return mode


def mode_flags(mode: str, flags: Flags) -> Flags:
    """The node's decay flags as one mode applies them to sampler.smooth (fast_decay is used for a
    rising share, slow_decay for a falling one): slowdecay keeps slow_decay both ways, fastdecay
    fast_decay both ways, default (and nodecay, which does not decay) the node's own pair."""
    if mode == "slowdecay":
        return replace(flags, fast_decay=flags.slow_decay)
    if mode == "fastdecay":
        return replace(flags, slow_decay=flags.fast_decay)
    return flags


@dataclass(frozen=True)
class Usage:
    """What the node measured of one job (all its tasks on this node)."""

    share: float  # percent of one CPU over the last sample interval
    cpu_seconds: float  # CPU time used on this node so far, reaped children included
    age: float  # seconds since the job started or arrived on this node


@dataclass
class _Stat:
    value: float
    last: float  # monotonic time of the last update


class JobStats:
    """The statistic of every job running here; updated from the sampler's thread pool, read by the
    balancer's look, so every access takes the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[StatKey, _Stat] = {}

    def update(self, key: StatKey, hints: Iterable[str], usage: Usage, now: float, flags: Flags) -> float:
        """Fold one measurement into the job's statistic and return it (percent of one CPU).

        Decaying modes start from 0 at the job's start or arrival here: the first update decays
        over the job's age, later ones over the time since the previous update. nodecay is the
        lifetime average 100 * cpu_seconds / age, which samples and pauses do not refresh.
        """
        mode = decay_mode(hints)
        with self._lock:
            st = self._stats.get(key)
            if mode == "nodecay":
                value = 100.0 * usage.cpu_seconds / usage.age if usage.age > 0 else 0.0
            else:
                old, dt = (0.0, max(0.0, usage.age)) if st is None else (st.value, max(0.0, now - st.last))
                value = smooth(old, usage.share, dt, mode_flags(mode, flags))
            self._stats[key] = _Stat(value, now)
            return value

    def get(self, key: StatKey) -> float | None:
        with self._lock:
            st = self._stats.get(key)
            return None if st is None else st.value

    def keep_only(self, keys: Iterable[StatKey]) -> int:
        """Forget every job not in KEYS (it ended or left); returns how many were forgotten."""
        keep = set(keys)
        with self._lock:
            gone = [k for k in self._stats if k not in keep]
            for k in gone:
                del self._stats[k]
            return len(gone)

    def __len__(self) -> int:
        with self._lock:
            return len(self._stats)


def _times(pid: int) -> tuple[tuple[int, int], int, int] | None:
    """(stat key, utime+stime+cutime+cstime in ticks, start time in ticks) of PID, None when gone."""
    st = read_stat(pid)
    if st is None:
        return None
    return st.key, st.utime + st.stime + st.cutime + st.cstime, st.starttime


def measure(root: int, tasks: Iterable[int], cpu: dict[tuple[int, int], float]) -> Usage | None:
    """The usage of the job whose root task is ROOT, from /proc and the last sample's CPU shares (CPU).

    cpu_seconds sums utime+stime+cutime+cstime over the live tasks: a task that ended was reaped by
    one of them (at the latest the root, the job's namespace init) and its time moved into that
    reaper's cutime/cstime, so nothing is lost or counted twice. age is measured from the root's
    start, which on a node the job migrated to is the moment CRIU restored it. None when the root is gone.
    """
    head = _times(root)
    if head is None:
        return None
    share = 0.0
    ticks = 0
    for pid in {root, *tasks}:
        t = head if pid == root else _times(pid)
        if t is None:
            continue  # ended since the task list was read
        share += cpu.get(t[0], 0.0)
        ticks += t[1]
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - head[2] / HZ
    return Usage(share=share, cpu_seconds=ticks / HZ, age=max(0.0, age))
