"""L2 agent, home side: what becomes of a job whose hosting node dies as a whole.

A job running away from its home node lives and dies with the node that hosts it. When that node
goes down (its gossip goes silent), the home node tells the job's deputy at once (`job.host`, the
deputy prints it); the job may still come back (a partition, a slow node). When the node answers
again but no longer knows the job (it crashed or was rebooted), the job is lost: the home node
records it as such and ends the deputy (`job.exit` with `lost`, status "signal 9", as openMosix
did). Nothing here ever restarts a job: a guess could make two copies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from omview.agent.jobs.table import JobStore
from omview.agent.peers.links import PeerError, PeerLinks
from omview.model.cluster import NodeInfo
from omview.model.errors import AgentFault
from omview.model.protocol import FaultCode

log = logging.getLogger(__name__)

#: the hop count from which a node answers for a job only if it runs it (run.py: "hops > 3")
FORWARD_LIMIT = 4
#: status a lost job ends with (its deputy exits 137, as after SIGKILL)
LOST_STATUS = "signal 9"


class HostWatch:
    """Called every few seconds from the job loop's worker thread with the current node table."""

    def __init__(self, store: JobStore, peers: PeerLinks, node_id: Callable[[], int],
                 publish: Callable[[str, dict[str, Any]], None]) -> None:  # fmt: skip
        self.store, self.peers, self.node_id, self.publish = store, peers, node_id, publish
        #: job id -> (hosting node, wall time it was first seen down)
        self.down: dict[str, tuple[int, float]] = {}
        self.nodes: dict[int, NodeInfo] = {}

    def check(self, nodes: dict[int, NodeInfo], migrating: set[str] | frozenset[str] = frozenset()) -> None:
        me = self.node_id()
        self.nodes = nodes
        for job in self.store.all():
            if job.home != me or job.where == me or job.state != "running" or job.id in migrating:
                self.down.pop(job.id, None)
                continue
            host = nodes.get(job.where)
            if host is None:
                continue
            seen = self.down.get(job.id)
            if not host.up:
                if seen is None or seen[0] != job.where:
                    self.down[job.id] = (job.where, time.time())
                    msg = f"node {job.where}, which runs job {job.id}, is down; the job is lost unless it comes back"
                    log.warning("%s", msg)
                    self.publish("job.host", {"job": job.id, "node": job.where, "up": False, "message": msg})
                continue
            if seen is not None:
                self._back(job.id, job.where, seen[1])

    def _back(self, job_id: str, node: int, since: float) -> None:
        """NODE answers again after being down: does it still run the job?"""
        try:
            self.peers.call(node, "peer.job.output", timeout=30, job=job_id, stream="out", offset=0, max=1, hops=1)
        except PeerError:
            return  # up by gossip, but no link yet: ask again next time
        except AgentFault as exc:
            if exc.code != FaultCode.NO_SUCH_PROCESS.value:
                return
            found = self._runs_elsewhere(job_id, node)
            if found is not None:
                self._moved(job_id, node, found)
                return
            self._lost(job_id, node, f"node {node} went down at {time.strftime('%H:%M:%S', time.localtime(since))} "
                                     f"and came back without job {job_id} (crashed or rebooted): the job is lost")  # fmt: skip
            return
        self.down.pop(job_id, None)
        msg = f"node {node} is back and still runs job {job_id}"
        log.info("%s", msg)
        self.publish("job.host", {"job": job_id, "node": node, "up": True, "message": msg})

    def _runs_elsewhere(self, job_id: str, gone: int) -> int | None:
        """The node that runs the job itself, if any: a target that committed the job's migration
        from GONE just before GONE died (only the source tells the home node of a move)."""
        me = self.node_id()
        for n in sorted(self.nodes):
            if n in (me, gone) or not self.nodes[n].up:
                continue
            try:  # hops at the limit: a node that only forwards (where != itself) refuses instead
                self.peers.call(n, "peer.job.output", timeout=30, job=job_id, stream="out", offset=0, max=1,
                                hops=FORWARD_LIMIT)  # fmt: skip
            except (PeerError, AgentFault):
                continue
            return n
        return None

    def _moved(self, job_id: str, gone: int, where: int) -> None:
        job = self.store.get(job_id)
        self.down.pop(job_id, None)
        if job is None or job.state != "running" or job.where != gone:
            return
        with self.store.lock:
            job.where = where
            self.store.save()
        msg = f"node {gone} went down while job {job_id} moved from it; the job runs on node {where}"
        log.warning("%s", msg)
        self.publish("job.moved", {"job": job_id, "where": where, "nmigs": job.nmigs})
        self.publish("job.host", {"job": job_id, "node": where, "up": True, "message": msg})

    def _lost(self, job_id: str, node: int, why: str) -> None:
        job = self.store.get(job_id)
        self.down.pop(job_id, None)
        if job is None or job.state != "running" or job.where != node:
            return
        with self.store.lock:
            job.state, job.status, job.lost = "lost", LOST_STATUS, why
            self.store.save()
        log.error("%s", why)
        self.publish("job.exit", {"job": job_id, "status": LOST_STATUS, "exit_code": 137, "node": node, "lost": why})
