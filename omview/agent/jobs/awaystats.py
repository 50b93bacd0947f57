"""L2 agent: a migrated job's program as its home node lists it. The node hosting a job from elsewhere
sends the program's state, CPU, memory, threads and nice to the job's home node about once a second
(``peer.job.update`` kind ``stats``, over the peer link it already uses for the job's news); the home
node's procs.list and mps show them on the job's row instead of the deputy's (docs/agent.md, "A job
is one row"). No listing waits for another node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from omview.agent.jobs.rows import JOBINIT
from omview.agent.jobs.table import Job, JobStore
from omview.model.procfs import PAGE_SIZE, read_stat, task_children

#: unchanged stats are sent again after this many seconds (so the home node knows they are current)
RESEND_AFTER = 3.0
#: the home node shows stats younger than this as current; older ones (the host stopped sending: down
#: or slow) are shown with their age (ProcessInfo.stats_age: the box dims the row)
FRESH_FOR = 5.0


def program_pid(root: int) -> int | None:
    """The program of a job whose root on this node is ROOT: jobinit's first child, or ROOT itself
    when it is not a jobinit (an adopted process)."""
    try:
        with open(f"/proc/{root}/cmdline", "rb") as fh:
            head = fh.read(4096).split(b"\0")[:4]
    except OSError:
        return None
    if JOBINIT.encode() not in head:
        return root
    kids = task_children(root)
    return min(kids) if kids else None


def program_stats(job: Job, cpu: dict[tuple[int, int], float]) -> dict[str, Any] | None:
    """JOB's program here as peer.job.update "stats" data; None when it has no program (now)."""
    pid = program_pid(job.pid) if job.pid else None
    st = read_stat(pid) if pid else None
    if st is None:
        return None
    return {"state": st.state, "cpu": cpu.get(st.key, 0.0), "rss": st.rss_pages * PAGE_SIZE,
            "threads": st.threads, "nice": st.nice}  # fmt: skip


class StatsReporter:
    """Host side: sends the stats of every guest job's program to its home node (one call per job,
    when they changed or RESEND_AFTER passed); report() runs in a worker thread, one at a time."""

    def __init__(self, store: JobStore, node_id: Callable[[], int],
                 deliver: Callable[[Job, str, dict[str, Any]], bool]) -> None:  # fmt: skip
        self.store = store
        self.node_id = node_id
        self.deliver = deliver
        self._sent: dict[str, tuple[dict[str, Any], float]] = {}
        self._busy = threading.Lock()

    def report(self, cpu: dict[tuple[int, int], float]) -> None:
        if not self._busy.acquire(blocking=False):
            return  # the previous round still waits for a slow home node
        try:
            me = self.node_id()
            now = time.monotonic()
            guests = [j for j in self.store.all() if j.state == "running" and j.where == me and j.home != me]
            for job in guests:
                data = program_stats(job, cpu)
                if data is None:
                    continue
                data["node"] = me
                last = self._sent.get(job.id)
                if last is not None and last[0] == data and now - last[1] < RESEND_AFTER:
                    continue
                if self.deliver(job, "stats", data):
                    self._sent[job.id] = (data, now)
            live = {j.id for j in guests}
            self._sent = {k: v for k, v in self._sent.items() if k in live}
        finally:
            self._busy.release()


class AwayStats:
    """Home side: the last stats each job of ours running elsewhere got from its host."""

    def __init__(self) -> None:
        self._got: dict[str, tuple[dict[str, Any], float, int]] = {}
        self._lock = threading.Lock()

    def put(self, job_id: str, where: int, data: dict[str, Any]) -> None:
        with self._lock:
            self._got[job_id] = (dict(data), time.monotonic(), where)

    def shown(self, job_id: str, where: int) -> tuple[dict[str, Any], float] | None:
        """The last stats of JOB_ID from node WHERE (where it runs now) and how old they are as a row's
        ProcessInfo.stats_age: 0.0 while younger than FRESH_FOR s, else their age; None when WHERE has
        not reported them (yet)."""
        with self._lock:
            got = self._got.get(job_id)
            if got is None or got[2] != where:
                return None
            age = time.monotonic() - got[1]
            return got[0], 0.0 if age <= FRESH_FOR else round(age, 1)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._got.pop(job_id, None)
