"""L2 agent: MOSIX-like automatic load balancing of mosrun jobs (agent.toml ``balance``, default on).

Every sample (1 s) it updates each local job's CPU statistic (jobstats: the share of a CPU the job
wanted, decaying per the node's decay flags and the job's mosrun decay hint, or its lifetime average
with nodecay). Every BALANCE_EVERY seconds it gathers this node's view (its runnable processes,
speed, CPUs, memory; its jobs; the loads its peers gossip) and asks decide.decide what to do: move
a job (load or memory ushering) or hold, and why. It keeps the last decisions for
``balancer.decisions`` (docs/migration.md, "Automatic balancing").
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

from omview.agent.jobs.run import JobError, JobManager
from omview.agent.jobs.stats import JobStats, StatKey, measure
from omview.agent.jobs.table import Job, JobStore
from omview.agent.migration import decide
from omview.agent.migration.placement import as_node
from omview.agent.migration.source import SourceSide
from omview.agent.node.sampler import Sample
from omview.agent.node.view import NodeView
from omview.model.procfs import HZ
from omview.model.target import Target

log = logging.getLogger(__name__)

BALANCE_EVERY = decide.BALANCE_EVERY
COOLDOWN = decide.COOLDOWN
STAB_FACTOR = decide.STAB_FACTOR
MIN_SHARE = decide.MIN_SHARE
ARRIVAL_MEMORY = decide.ARRIVAL_MEMORY
#: decisions kept for balancer.decisions (a hold repeating the previous one only updates its count)
DECISIONS_KEPT = 100


class Balancer:
    """Decides on the loop thread when to act; measures jobs, looks and migrates in worker threads."""

    def __init__(self, *, enabled: bool, node: NodeView, store: JobStore, jobs: JobManager, source: SourceSide,
                 pool: Executor) -> None:  # fmt: skip
        """ENABLED is agent.toml's balance; POOL runs the rounds (measuring, looking, migrating)."""
        self.enabled = enabled
        self.node = node
        self.store = store
        self.jobs = jobs
        self.source = source
        self.pool = pool
        self.busy = False  # a look (and maybe a migration) is running
        self.observing = False  # a statistics update is running
        self.next_at = time.monotonic() + 2 * BALANCE_EVERY  # let the first loads settle
        #: node -> (expiry, rss, its runnable processes when we sent it) of the jobs we sent there
        self.sent: dict[int, list[tuple[float, int, float]]] = {}
        self.moves = 0
        self.stats = JobStats()
        self._observed: Sample | None = None  # the sample last folded into the statistics
        self.settings = decide.Settings()
        self._decisions: deque[dict[str, Any]] = deque(maxlen=DECISIONS_KEPT)
        self._dlock = threading.Lock()

    def tick(self) -> None:
        """Called after every sample: update the job statistics, and look when one is due."""
        if not self.enabled or self.observing:
            return
        sample = self.node.sample
        if sample is None:
            return
        # stay/quiet make every look a hold (decide says so, balancer.decisions shows it); the
        # statistics go on, so they are current when the switch is cleared
        look = not self.busy and time.monotonic() >= self.next_at
        if sample is self._observed and not look:
            return  # sampling failed and kept the old measurement: do not count it twice
        self.observing = True
        if look:
            self.busy = True
        self.pool.submit(self._round, sample, look)

    def _round(self, sample: Sample, look: bool) -> None:
        try:
            if sample is not self._observed:
                self._observed = sample
                self.observe(sample)
        except Exception:
            log.exception("balancer: updating the job statistics failed")
        finally:
            self.observing = False  # before the look: a migration must not stall the statistics
        if look:
            try:
                self.consider()
            finally:
                self.busy = False

    @staticmethod
    def key(job: Job) -> StatKey:
        return (job.id, job.pid, job.pid_start)

    def cpu(self, job: Job) -> float | None:
        """The job's statistic (percent of one CPU), None before its first sample here."""
        return self.stats.get(self.key(job))

    def observe(self, sample: Sample, now: float | None = None) -> None:
        """Fold SAMPLE into the statistic of every job running here; forget jobs that ended or left."""
        now = time.monotonic() if now is None else now
        me = self.node.node_id
        flags = self.node.flags
        keep: list[StatKey] = []
        tasks = {job.id: pids for job, pids in self.jobs.tasks_here()}  # one /proc pass, not one per job
        for job in self.store.all():
            if job.where != me or job.state != "running" or job.pid <= 0:
                continue
            k = self.key(job)
            keep.append(k)
            if job.id in self.jobs.migrating:
                continue  # frozen for the dump: not its usage; dropped once it has left
            # what the job wanted (ran or waited to run), not the CPU it got: on a shared machine that is
            # diluted by other work; sample.cpu only without schedstat
            usage = measure(job.pid, tasks.get(job.id, []), sample.want or sample.cpu)
            if usage is not None:
                self.stats.update(k, job.hints, usage, now, flags)
        gone = self.stats.keep_only(keep)
        if gone:
            log.debug("balancer: forgot the statistics of %d job(s) that ended or left", gone)

    def here(self) -> decide.Here | None:
        """This node as the decision sees it: runnable processes = the smaller of the smoothed and
        the instantaneous demand (a load rises with the decay settings but drops at once, as in
        Kerrighed's MOSIX probe, so a node that just sent a job away does not send a second one)."""
        s = self.node.sample
        if s is None:
            return None
        f = self.node.flags
        me = self.node.node_id
        smoothed = decide.Node.runnable_from_load(s.load, f.speed)
        return decide.Here(
            id=me, speed=max(1, f.speed), cpus=max(1, s.cpus), runnable=min(smoothed, s.demand), free=s.mem,
            total=s.tmem, stay=f.stay, lstay=f.lstay, quiet=f.quiet,
        )  # fmt: skip

    def peers(self) -> list[decide.Node]:
        """The peers from the gossiped table. A job we sent counts at the receiver (one more runnable
        process, its memory less free) until the receiver's gossiped load shows it - at most
        ARRIVAL_MEMORY seconds - so it is neither forgotten nor counted twice while gossip lags."""
        me = self.node.node_id
        now = time.monotonic()
        out = []
        for nid, info in sorted(self.node.nodes_snapshot.items()):
            if nid == me:
                continue
            n = as_node(info)
            pending = [p for p in self.sent.get(nid, []) if p[0] > now and n.runnable < p[2] + 0.5]
            self.sent[nid] = pending
            if pending:
                n = replace(n, runnable=n.runnable + len(pending), free=max(0, n.free - sum(p[1] for p in pending)))
            out.append(n)
        return out

    def since_move(self, job: Job) -> float | None:
        """Seconds since JOB arrived here by migration (its root was restored then); None if it never moved."""
        if job.nmigs <= 0 or job.pid_start <= 0:
            return None
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - job.pid_start / HZ)

    def jobs_here(self) -> list[tuple[decide.Candidate, Job]]:
        """Every job running here that is not migrating, as the decision sees it."""
        me = self.node.node_id
        out = []
        for job in self.store.all():
            if job.where != me or job.state != "running" or job.pid <= 0 or job.id in self.jobs.migrating:
                continue
            cpu = self.stats.get(self.key(job))
            out.append((decide.Candidate(
                id=job.id, cpu=0.0 if cpu is None else cpu,  # arrived since the last sample: not measured yet
                rss=self.source.job_rss(job), hints=tuple(job.hints), home=job.home, lock=job.lock,
                since_move=self.since_move(job), moves=job.nmigs, age=time.time() - job.created if job.created > 0 else math.inf,
            ), job))  # fmt: skip
        return out

    def decision(self) -> tuple[decide.Decision, dict[str, Job]] | None:
        """What decide.decide says now, with the jobs it was about; None before the first sample."""
        here = self.here()
        if here is None:
            return None
        pairs = self.jobs_here()
        d = decide.decide(here, self.peers(), [c for c, _ in pairs], self.settings)
        return d, {c.id: j for c, j in pairs}

    def note(self, d: decide.Decision, *, result: str = "", error: str = "") -> None:
        """Keep D for balancer.decisions; a hold that repeats the last one only counts up."""
        rec = {**d.to_dict(), "time": round(time.time(), 3), "result": result, "error": error, "repeat": 1}
        with self._dlock:
            last = self._decisions[-1] if self._decisions else None
            if (last is not None and d.action == "hold" and last["action"] == "hold"
                    and last["reason"] == d.reason and last["job"] == d.job and last["target"] == d.target):  # fmt: skip
                last.update(time=rec["time"], my_load=d.my_load, its_load=d.its_load, gain=d.gain,
                            text=d.text, repeat=last["repeat"] + 1)  # fmt: skip
                return
            self._decisions.append(rec)

    def decisions(self, limit: int = 20) -> list[dict[str, Any]]:
        """The last LIMIT decisions, oldest first (copies)."""
        with self._dlock:
            return [dict(r) for r in list(self._decisions)[-limit:]]

    def consider(self) -> None:
        try:
            self._consider()
        except Exception:
            log.exception("balancer failed")
        finally:
            self.next_at = max(self.next_at, time.monotonic() + BALANCE_EVERY)

    def _consider(self) -> None:
        got = self.decision()
        if got is None:
            return
        d, jobs = got
        if not d.move:
            self.note(d)
            return
        job = jobs[d.job]
        log.info("balancer: %s", d.text)
        rss = int(d.details.get("rss", 0))
        seen = self.node.nodes_snapshot.get(d.target)
        base = as_node(seen).runnable if seen is not None else 0.0  # what its gossip said before the job came
        try:
            self.source.migrate(job.id, Target.to_node(d.target), reason="balance")
            self.moves += 1
            self.sent.setdefault(d.target, []).append((time.monotonic() + ARRIVAL_MEMORY, rss, base))
            self.note(d, result="ok")
        except JobError as exc:
            log.warning("balancer: moving job %s to node %d failed: %s", job.id, d.target, exc.message)
            self.note(d, result="failed", error=exc.message)
        self.next_at = time.monotonic() + COOLDOWN

    def candidates(self) -> list[tuple[float, Job]]:
        """The jobs the load rule may move with their statistic (percent of one CPU), highest first."""
        here = self.here()
        if here is None:
            return []
        pairs = self.jobs_here()
        movable, _ = decide.eligible(here, [c for c, _ in pairs], self.settings)
        jobs = {c.id: j for c, j in pairs}
        return [(c.cpu, jobs[c.id]) for c in decide.cpu_bound(here, movable, self.settings)]

    def pick(self) -> tuple[Job, int, decide.Decision] | None:
        """The job to move now and where (with the decision), or None."""
        got = self.decision()
        if got is None or not got[0].move:
            return None
        d, jobs = got
        return jobs[d.job], d.target, d
