"""The home node's watch over the nodes hosting its jobs (omview.agent.jobs.hostwatch): a real
JobStore on disk; the peer links are a small recorder that answers as the hosting agents would
(the wire is covered end to end by tests/vm/test_vm_kill.py, where a whole VM dies)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omview.agent.jobs.hostwatch import FORWARD_LIMIT, HostWatch
from omview.agent.jobs.table import Job, JobStore
from omview.agent.peers.links import PeerError
from omview.model.cluster import NodeInfo
from omview.model.errors import AgentFault
from omview.model.protocol import FaultCode


class Peers:
    """Answers peer.job.output per node: 'ok', 'unknown' (NO_SUCH_PROCESS) or 'down' (PeerError)."""

    def __init__(self, answers: dict[int, str]) -> None:
        self.answers = answers
        self.asked: list[tuple[int, dict[str, Any]]] = []

    def call(self, node: int, op: str, **args: Any) -> Any:
        assert op == "peer.job.output"
        self.asked.append((node, args))
        how = self.answers.get(node, "down")
        if how == "down":
            raise PeerError(f"node {node}: no link")
        if how == "unknown":
            raise AgentFault(FaultCode.NO_SUCH_PROCESS.value, f"no job {args['job']} known on node {node}")
        return {"data": ""}


def nodes(**status: str) -> dict[int, NodeInfo]:
    return {int(k[1:]): NodeInfo(id=int(k[1:]), address=f"10.0.0.{k[1:]}", status=v) for k, v in status.items()}


def setup(tmp_path: Path, answers: dict[int, str]) -> tuple[JobStore, Peers, HostWatch, list[tuple[str, dict[str, Any]]]]:
    store = JobStore(str(tmp_path))
    store.put(Job(id="1:100", home=1, home_pid=100, argv=["x"], cwd="/", uid=0, gid=0, where=2))
    peers = Peers(answers)
    events: list[tuple[str, dict[str, Any]]] = []
    watch = HostWatch(store, peers, lambda: 1, lambda name, data: events.append((name, data)))  # type: ignore[arg-type]
    return store, peers, watch, events


def test_a_host_that_goes_down_is_told_once_and_one_that_comes_back_without_the_job_loses_it(tmp_path: Path) -> None:
    store, peers, watch, events = setup(tmp_path, {2: "unknown", 3: "unknown"})
    watch.check(nodes(n2="up", n3="up"))
    assert events == [] and peers.asked == [], "a host that never went down is not asked"
    watch.check(nodes(n2="down", n3="up"))
    watch.check(nodes(n2="down", n3="up"))
    assert [(n, d["up"], d["node"]) for n, d in events] == [("job.host", False, 2)]
    assert "node 2, which runs job 1:100, is down" in events[0][1]["message"]
    watch.check(nodes(n2="up", n3="up"))
    job = store.get("1:100")
    assert job is not None and job.state == "lost" and job.status == "signal 9" and "came back without" in job.lost
    assert events[-1][0] == "job.exit" and events[-1][1]["exit_code"] == 137 and events[-1][1]["lost"] == job.lost
    assert [n for n, _a in peers.asked] == [2, 3], "the host first, then every other node that is up"
    assert peers.asked[1][1]["hops"] == FORWARD_LIMIT, "another node answers only if it runs the job itself"


def test_a_host_back_with_the_job_keeps_it_and_a_committed_target_takes_it_over(tmp_path: Path) -> None:
    store, peers, watch, events = setup(tmp_path, {2: "ok"})
    watch.check(nodes(n2="down"))
    peers.answers[2] = "down"  # up by gossip, but no link yet: nothing decided
    watch.check(nodes(n2="up"))
    job = store.get("1:100")
    assert job is not None and job.state == "running" and len(events) == 1
    peers.answers[2] = "ok"
    watch.check(nodes(n2="up"))
    assert job.state == "running" and job.where == 2 and events[-1][1]["up"] is True
    # down again; it comes back without the job, which node 3 (the target of its last move) runs
    peers.answers.update({2: "unknown", 3: "ok"})
    watch.check(nodes(n2="down", n3="up"))
    watch.check(nodes(n2="up", n3="up"))
    assert job.state == "running" and job.where == 3 and ("job.moved", {"job": "1:100", "where": 3, "nmigs": 0}) in events
    assert JobStore(str(tmp_path)).get("1:100").where == 3  # type: ignore[union-attr]  # saved
