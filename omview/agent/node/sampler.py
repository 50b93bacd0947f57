"""L2 agent: measure the node every second from procfs (CPUs, memory, util, openMosix load) over
"this node's processes" (all, or the agent's network namespace); formulas in docs/agent.md.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from omview.model.cluster import STD_SPEED, Flags
from omview.model.procfs import HZ, PAGE_SIZE, ProcStat, read_stat

#: decay sub-steps per decay interval: the per-mille retention applies this often (see docs/agent.md)
DECAY_STEPS = 10


def read_meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    """/proc/meminfo values in bytes."""
    out: dict[str, int] = {}
    with open(path, encoding="ascii") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                out[name] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return out


def netns_key(pid: int | str) -> tuple[int, int] | None:
    """Identity of a process's network namespace, or None when it cannot be read."""
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class Scope:
    """Decides which processes belong to this node."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.own_netns = netns_key("self")
        # what readlink says of a process in it: nsfs is one file system, so its inode number is enough
        self._own_link = f"net:[{self.own_netns[1]}]" if self.own_netns is not None else None

    def pids(self) -> Iterator[int]:
        """PIDs of this node's processes (a snapshot; any may exit at any time). A "netns" node on a
        kernel shared with other nodes looks at every process of the machine, each second for the
        measurement and for every listing: the namespace is compared by readlink, half the system
        time of a stat."""
        for name in os.listdir("/proc"):
            if name.isdigit() and (self.scope == "all" or self._in_own(name)):
                yield int(name)

    def _in_own(self, pid: int | str) -> bool:
        if self._own_link is None:
            return netns_key(pid) == self.own_netns
        try:
            return os.readlink(f"/proc/{pid}/ns/net") == self._own_link
        except OSError:
            return False

    def contains(self, pid: int) -> bool:
        if self.scope == "all":
            return os.path.exists(f"/proc/{pid}")
        return self._in_own(pid)


def _schedstat_ns(path: str) -> int | None:
    """Time on CPU plus time waiting on a run queue (ns): how long the thread wanted a CPU."""
    try:
        with open(path, "rb") as fh:
            parts = fh.read().split()
        return int(parts[0]) + int(parts[1])
    except (OSError, ValueError, IndexError):
        return None


def schedstat_available() -> bool:
    """CONFIG_SCHED_INFO kernels report run and wait times in /proc/PID/schedstat."""
    return _schedstat_ns("/proc/self/schedstat") is not None


@dataclass(frozen=True)
class Sample:
    """One measurement of this node."""

    cpus: int
    tmem: int
    mem: int
    rmem: int
    util: int
    load: int
    #: instantaneous demand in runnable threads (before speed normalisation and smoothing)
    demand: float
    processes: int
    method: str
    duration_ms: float
    #: (pid, start time) -> percent of one CPU over the last interval
    cpu: dict[tuple[int, int], float] = field(default_factory=dict)
    #: (pid, start time) -> percent of one CPU its threads wanted (ran or waited to run) over the last
    #: interval (schedstat only): unlike ``cpu`` not diluted by other work on the same cores
    want: dict[tuple[int, int], float] = field(default_factory=dict)
    live: frozenset[tuple[int, int]] = frozenset()


@dataclass
class _Prev:
    ticks: int
    threads: dict[int, int]


def smooth(old: float, new: float, dt: float, flags: Flags) -> float:
    """One smoothing step of the openMosix-style load (formula documented in docs/agent.md).

    Rising loads use fast_decay, falling loads slow_decay: the per-mille value is the share of
    the old value kept per 1/DECAY_STEPS of decay_interval, so the defaults (926/975, 1 s) give
    time constants of 1.3 s up and 3.9 s down.
    """
    keep = (flags.fast_decay if new > old else flags.slow_decay) / 1000.0
    steps = DECAY_STEPS * dt / flags.decay_interval
    retain = 0.0 if keep <= 0.0 else math.exp(steps * math.log(keep))
    return new + (old - new) * retain


class Sampler:
    """Measures the node; ``sample`` runs in the agent's worker thread, once a second."""

    def __init__(self, scope: Scope, *, cpus: int | None = None, memory: int | None = None) -> None:
        self.scope = scope
        self.cpus_override = cpus
        self.memory = memory
        self.method = "schedstat" if schedstat_available() else "runnable"
        self._prev: dict[tuple[int, int], _Prev] | None = None
        self._prev_time = 0.0
        self._load = 0.0
        self._own_pid = os.getpid()

    def cpu_count(self) -> int:
        if self.cpus_override:
            return self.cpus_override
        try:
            return len(os.sched_getaffinity(0)) or 1
        except OSError:
            return os.cpu_count() or 1

    def _thread_demand(
        self, st: ProcStat, prev: _Prev | None, dt: float, tid_self: int
    ) -> tuple[float, dict[int, int]]:
        """Sum over the process's threads of the share of ``dt`` each spent running or runnable."""
        if st.threads > 1:
            try:
                tids = [int(t) for t in os.listdir(f"/proc/{st.pid}/task")]
            except OSError:
                tids = [st.pid]
        else:
            tids = [st.pid]
        now: dict[int, int] = {}
        demand = 0.0
        for tid in tids:
            if st.pid == self._own_pid and tid == tid_self:
                continue  # the sampling thread itself is always running while it samples
            path = f"/proc/{st.pid}/schedstat" if len(tids) == 1 else f"/proc/{st.pid}/task/{tid}/schedstat"
            value = _schedstat_ns(path)
            if value is None:
                continue
            now[tid] = value
            # a thread not seen last time started since then, so all of its time is recent
            before = prev.threads.get(tid, 0) if prev is not None else 0
            delta = max(0, value - before)
            demand += min(1.0, delta / 1e9 / dt) if dt > 0 else 0.0
        return demand, now

    def _runnable(self, st: ProcStat, tid_self: int) -> int:
        """Fallback without schedstat: threads in state R right now."""
        if st.threads <= 1:
            return 1 if st.state == "R" and not (st.pid == self._own_pid and st.pid == tid_self) else 0
        count = 0
        try:
            tids = os.listdir(f"/proc/{st.pid}/task")
        except OSError:
            return 0
        for t in tids:
            tid = int(t)
            if st.pid == self._own_pid and tid == tid_self:
                continue
            ts = read_stat(st.pid, tid)
            if ts is not None and ts.state == "R":
                count += 1
        return count

    def sample(self, flags: Flags) -> Sample:
        """Measure now; the first call only sets the baseline (load and util read 0)."""
        t0 = time.perf_counter()
        now = time.monotonic()
        tid_self = threading.get_native_id()
        first = self._prev is None
        prev_all = self._prev or {}
        dt = now - self._prev_time if not first else 0.0
        cur: dict[tuple[int, int], _Prev] = {}
        cpu: dict[tuple[int, int], float] = {}
        want: dict[tuple[int, int], float] = {}
        demand = 0.0
        runnable = 0
        busy_seconds = 0.0
        rss = 0
        count = 0
        for pid in self.scope.pids():
            st = read_stat(pid)
            if st is None:
                continue
            count += 1
            rss += st.rss_pages * PAGE_SIZE
            prev = prev_all.get(st.key)
            ticks = st.utime + st.stime
            if first:
                dticks = 0
            elif prev is not None:
                dticks = max(0, ticks - prev.ticks)
            else:
                # new since the last sample (or unreadable then): its CPU time cannot exceed the interval
                dticks = min(ticks, int(dt * HZ * max(1, st.threads)))
            if not first and dt > 0:
                secs = dticks / HZ
                busy_seconds += secs
                cpu[st.key] = round(100.0 * secs / dt, 1)
            threads: dict[int, int] = {}
            if self.method == "schedstat":
                d, threads = self._thread_demand(st, prev if not first else _Prev(0, {}), dt, tid_self)
                if not first:
                    demand += d
                    want[st.key] = round(100.0 * d, 1)
            elif not first:
                runnable += self._runnable(st, tid_self)
            cur[st.key] = _Prev(ticks, threads)
        cpus = self.cpu_count()
        if self.method != "schedstat" and not first and dt > 0:
            # a snapshot of R states misses partly busy processes; CPU time catches them
            demand = max(float(runnable), busy_seconds / dt)
        self._prev = cur
        self._prev_time = now
        if not first and dt > 0:
            x = 100.0 * demand * STD_SPEED / max(1, flags.speed)
            self._load = smooth(self._load, x, dt, flags)
        util = 0 if first or dt <= 0 else int(round(min(100.0, 100.0 * busy_seconds / dt / cpus)))
        mem = read_meminfo()
        total = mem.get("MemTotal", 0)
        avail = mem.get("MemAvailable", mem.get("MemFree", 0))
        free = mem.get("MemFree", 0)
        if self.memory:
            tmem = self.memory
            avail = max(0, self.memory - rss)
            free = min(avail, free)
        else:
            tmem = total
        return Sample(
            cpus=cpus,
            tmem=tmem,
            mem=avail,
            rmem=free,
            util=util,
            load=int(round(self._load)),
            demand=round(demand, 3),
            processes=count,
            method=self.method,
            duration_ms=round((time.perf_counter() - t0) * 1000, 2),
            cpu=cpu,
            want=want,
            live=frozenset(cur),
        )
