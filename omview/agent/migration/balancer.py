"""L2 agent: MOSIX-like automatic load balancing of mosrun jobs (agent.toml ``balance``, default on).

Every sample (1 s) it updates each local job's CPU-usage statistic (jobstats: decaying per the
node's decay flags and the job's mosrun decay hint, or its lifetime average with nodecay). Every
BALANCE_EVERY seconds a node that is not stay/quiet looks at its migratable jobs whose statistic
says they are CPU-bound and the load its peers gossip; it moves the job with the highest statistic
when another node is expected to run it faster by the stab factor (130%, Kerrighed's MOSIX
balancer), then waits COOLDOWN so loads settle (docs/migration.md, "Automatic balancing").
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor
from dataclasses import replace

from omview.agent.jobs.run import JobError, JobManager
from omview.agent.jobs.stats import JobStats, StatKey, measure
from omview.agent.jobs.table import Job, JobStore
from omview.agent.migration.placement import best_node
from omview.agent.migration.source import SourceSide
from omview.agent.node.sampler import Sample
from omview.agent.node.view import NodeView
from omview.model.cluster import STD_SPEED, NodeInfo
from omview.model.target import Target

log = logging.getLogger(__name__)

BALANCE_EVERY = 2.0
COOLDOWN = 5.0
STAB_FACTOR = 1.3
#: a job's statistic (jobstats) must reach this share (percent) of what one runnable process gets
#: here - one CPU, or cpus/demand on an overloaded node - to count as CPU-bound and be worth a migration
MIN_SHARE = 30.0
#: a node that just received a job from us counts it as running there this long (gossip lags)
ARRIVAL_MEMORY = 8.0


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
        self.sent: dict[int, list[float]] = {}  # node -> expiry times of jobs we sent there
        self.moves = 0
        self.stats = JobStats()
        self._observed: Sample | None = None  # the sample last folded into the statistics

    def tick(self) -> None:
        """Called after every sample: update the job statistics, and look when one is due."""
        if not self.enabled or self.observing:
            return
        sample = self.node.sample
        if sample is None:
            return
        f = self.node.flags
        # stay/quiet stop the looks, not the statistics: they are current when the switch is cleared
        look = not self.busy and time.monotonic() >= self.next_at and not (f.stay or f.quiet)
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
            usage = measure(job.pid, tasks.get(job.id, []), sample.cpu)
            if usage is not None:
                self.stats.update(k, job.hints, usage, now, flags)
        gone = self.stats.keep_only(keep)
        if gone:
            log.debug("balancer: forgot the statistics of %d job(s) that ended or left", gone)

    def view(self) -> dict[int, NodeInfo]:
        """The cluster as the balancer sees it: own load from the instant demand, recent arrivals added."""
        me = self.node.node_id
        nodes = dict(self.node.nodes_snapshot)
        s = self.node.sample
        now = time.monotonic()
        for nid, n in list(nodes.items()):
            if nid == me and s is not None:
                nodes[nid] = replace(n, load=int(round(100.0 * s.demand * STD_SPEED / max(1, n.speed))))
                continue
            if n.quiet:
                nodes[nid] = replace(n, status="down")  # no fresh load information: not a candidate
                continue
            pending = [t for t in self.sent.get(nid, []) if t > now]
            self.sent[nid] = pending
            if pending:
                nodes[nid] = replace(n, load=n.load + int(100 * len(pending) * STD_SPEED / max(1, n.speed)))
        return nodes

    def consider(self) -> None:
        try:
            self._consider()
        except Exception:
            log.exception("balancer failed")
        finally:
            self.next_at = max(self.next_at, time.monotonic() + BALANCE_EVERY)

    def _consider(self) -> None:
        picked = self.pick()
        if picked is None:
            return
        job, target, nodes = picked
        me = self.node.node_id
        log.info("balancer: node %d is loaded (%d), moving job %s (CPU %.0f%%) to node %d (load %d)", me,
                 nodes[me].load, job.id, self.stats.get(self.key(job)) or 0.0, target,
                 nodes[target].load)  # fmt: skip
        try:
            self.source.migrate(job.id, Target.to_node(target), reason="balance")
            self.moves += 1
            self.sent.setdefault(target, []).append(time.monotonic() + ARRIVAL_MEMORY)
        except JobError as exc:
            log.warning("balancer: moving job %s to node %d failed: %s", job.id, target, exc.message)
        self.next_at = time.monotonic() + COOLDOWN

    def candidates(self) -> list[tuple[float, Job]]:
        """The jobs worth moving with their statistic (percent of one CPU), highest first."""
        me = self.node.node_id
        flags = self.node.flags
        sample = self.node.sample
        if sample is None:
            return []
        fair = 100.0 * min(1.0, sample.cpus / max(1.0, sample.demand))  # percent one runnable process gets
        cands = []
        for job in self.store.all():
            if job.where != me or job.state != "running" or job.lock or job.id in self.jobs.migrating:
                continue
            if flags.lstay and job.home == me:
                continue  # lstay: local processes stay
            if "iojob" in job.hints:
                continue  # an I/O-bound job gains nothing from another CPU
            cpu = self.stats.get(self.key(job))
            if cpu is None:
                cpu = 0.0  # arrived since the last sample: not measured here yet
            if cpu >= MIN_SHARE / 100.0 * fair or "cpujob" in job.hints:
                cands.append((cpu, job))
        cands.sort(key=lambda c: -c[0])
        return cands

    def pick(self) -> tuple[Job, int, dict[int, NodeInfo]] | None:
        """The job to move now and where (with the view that decided it), or None."""
        cands = self.candidates()
        if not cands:
            return None
        me = self.node.node_id
        nodes = self.view()
        target = best_node(nodes, me, margin=STAB_FACTOR)
        if target == me:
            return None
        return cands[0][1], target, nodes
