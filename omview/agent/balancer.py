"""L2 agent: MOSIX-like automatic load balancing of mosrun jobs (agent.toml ``balance``, default on).

Every BALANCE_EVERY seconds a node that is not stay/quiet looks at its CPU-bound migratable jobs and
the load its peers gossip; it moves one job when another node is expected to run it faster by the
stab factor (130%, Kerrighed's MOSIX balancer), then waits COOLDOWN so loads settle (docs/migration.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from omview.agent import criu as criumod
from omview.agent.jobrun import JobError
from omview.agent.migrate import best_node
from omview.agent.sampler import read_stat
from omview.model.cluster import STD_SPEED, NodeInfo

if TYPE_CHECKING:
    from omview.agent.core import Agent

log = logging.getLogger(__name__)

BALANCE_EVERY = 2.0
COOLDOWN = 5.0
STAB_FACTOR = 1.3
#: a job must use at least this share (percent) of what one runnable process gets here - one CPU, or
#: cpus/demand on an overloaded node - to count as CPU-bound and be worth a migration
MIN_SHARE = 30.0
#: a node that just received a job from us counts it as running there this long (gossip lags)
ARRIVAL_MEMORY = 8.0


class Balancer:
    """Decides on the loop thread when to look; looks and migrates in a worker thread."""

    def __init__(self, agent: Agent) -> None:
        self.a = agent
        self.busy = False
        self.next_at = time.monotonic() + 2 * BALANCE_EVERY  # let the first loads settle
        self.sent: dict[int, list[float]] = {}  # node -> expiry times of jobs we sent there
        self.moves = 0

    def tick(self) -> None:
        if not self.a.cfg.balance or self.busy or time.monotonic() < self.next_at:
            return
        f = self.a.flags
        if f.stay or f.quiet or self.a.sample is None:
            return
        self.busy = True
        fut = self.a.job_pool.submit(self.consider)
        fut.add_done_callback(lambda _f: self._done())

    def _done(self) -> None:
        self.busy = False

    def view(self) -> dict[int, NodeInfo]:
        """The cluster as the balancer sees it: own load from the instant demand, recent arrivals added."""
        me = self.a.membership.node_id
        nodes = dict(self.a.nodes_snapshot)
        s = self.a.sample
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
        me = self.a.membership.node_id
        flags = self.a.flags
        sample = self.a.sample
        if sample is None:
            return
        fair = 100.0 * min(1.0, sample.cpus / max(1.0, sample.demand))  # percent one runnable process gets
        cands = []
        for job in self.a.jobstore.all():
            if job.where != me or job.state != "running" or job.lock or job.id in self.a.jobs.migrating:
                continue
            if flags.lstay and job.home == me:
                continue  # lstay: local processes stay
            if "iojob" in job.hints:
                continue  # an I/O-bound job gains nothing from another CPU
            cpu = 0.0
            for pid in criumod.job_tasks(job.pid):
                st = read_stat(pid)
                if st is not None:
                    cpu += sample.cpu.get(st.key, 0.0)
            if cpu >= MIN_SHARE / 100.0 * fair or "cpujob" in job.hints:
                cands.append((cpu, job))
        if not cands:
            return
        nodes = self.view()
        target = best_node(nodes, me, margin=STAB_FACTOR)
        if target == me:
            return
        cands.sort(key=lambda c: -c[0])
        job = cands[0][1]
        log.info("balancer: node %d is loaded (%d), moving job %s to node %d (load %d)", me,
                 nodes[me].load, job.id, target, nodes[target].load)  # fmt: skip
        try:
            self.a.migrator.migrate(job.id, str(target), reason="balance")
            self.moves += 1
            self.sent.setdefault(target, []).append(time.monotonic() + ARRIVAL_MEMORY)
        except JobError as exc:
            log.warning("balancer: moving job %s to node %d failed: %s", job.id, target, exc.message)
        self.next_at = time.monotonic() + COOLDOWN
