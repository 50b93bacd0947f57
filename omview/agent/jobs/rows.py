"""L2 agent: a mosrun job as one row of procs.list, the plumbing that runs it marked as its helpers.

A job started with mosrun is four processes on its home node: the deputy (``mosrun``, whose PID is the
job's home PID), ``unshare`` started by the agent, ``jobinit`` (the init of the job's PID namespace) and
the user's program. Users think of it as one process, as openMosix showed it: the job's row keeps the
deputy's PID (or, on a node hosting a job from elsewhere, the program's PID) and takes the program's
command line, state, CPU and memory. The other three carry ``helper_of`` = that row's PID; procs.list
leaves them out unless asked (``helpers``), mps prints them with ``--helpers``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from omview.agent.jobs.table import Job
from omview.model.cluster import ProcessInfo

#: how jobinit shows in its command line (launch_argv runs it as ``python -I -m omview.agent.jobs.jobinit``)
JOBINIT = "omview.agent.jobs.jobinit"


def is_jobinit(p: ProcessInfo) -> bool:
    return JOBINIT in p.cmdline[:4]


def group_jobs(
    procs: list[ProcessInfo], jobs: Iterable[Job], starters: dict[str, int], me: int, *, helpers: bool,
    away: Callable[[str, int], tuple[dict[str, Any], float] | None] | None = None,
) -> list[ProcessInfo]:
    """PROCS (job fields already set) with every running job folded into one row.

    ``starters`` maps a job id to the PID of the ``unshare`` that launched it here. Helpers are left
    out unless ``helpers``; the order of the rows is kept. ``away(job id, node)``: the stats of a job's
    program running on that other node as its host last reported them and their stats_age
    (AwayStats.shown), or None."""
    by_pid = {p.pid: p for p in procs}
    job_kids: dict[int, list[ProcessInfo]] = {}  # parent PID -> its children that are job tasks
    for p in procs:
        if p.job:
            job_kids.setdefault(p.ppid, []).append(p)
    heads: dict[int, ProcessInfo] = {}
    helper_of: dict[int, int] = {}
    for job in jobs:
        if job.state != "running":
            continue
        deputy = by_pid.get(job.home_pid) if job.home == me and not job.adopted else None
        if deputy is not None and deputy.job != job.id:
            deputy = None  # a reused PID, not our deputy
        root = by_pid.get(job.pid) if job.where == me and job.pid else None
        if root is not None and root.job != job.id:
            root = None
        program = root
        if root is not None and is_jobinit(root):
            kids = [p for p in job_kids.get(root.pid, ()) if p.job == job.id]
            program = min(kids, key=lambda p: p.pid) if kids else None
        head = deputy or program
        if head is None:
            continue
        row = replace(head, job=job.id, helper_of=0)
        if program is not None and program is not head:
            row = replace(row, cmdline=program.cmdline, name=program.name, state=program.state, cpu=program.cpu,
                          rss=program.rss, threads=program.threads, nice=program.nice)  # fmt: skip
        elif program is None:
            # the program runs on another node: its command line from the record, its state, CPU and
            # memory as that node reports them (the deputy's own are not the program's)
            row = replace(row, cmdline=tuple(job.argv), name=(job.argv[0].rsplit("/", 1)[-1][:15] if job.argv else "?"))
            got = away(job.id, job.where) if away is not None and job.where != me else None
            if got is not None:
                st, age = got
                row = replace(row, state=st["state"], cpu=st["cpu"], rss=st["rss"], threads=st["threads"],
                              nice=st["nice"], stats_age=age)  # fmt: skip
            else:  # the deputy's values until the host reports: not the program's, and said so
                row = replace(row, stats_age=-1.0)
        heads[head.pid] = row
        plumbing = [starters.get(job.id, 0), root.pid if root is not None and root is not program else 0,
                    program.pid if program is not None and program is not head else 0]  # fmt: skip
        for pid in plumbing:
            if pid and pid in by_pid and pid != head.pid:
                helper_of[pid] = head.pid
    out: list[ProcessInfo] = []
    for p in procs:
        if p.pid in heads:
            out.append(heads[p.pid])
        elif p.pid in helper_of:
            if helpers:
                out.append(replace(p, helper_of=helper_of[p.pid]))
        else:
            out.append(p)
    return out
