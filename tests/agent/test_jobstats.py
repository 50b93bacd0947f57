"""The balancer's per-job CPU statistic (omview.agent.jobs.stats) and how the mosrun decay hints change
the balancer's decisions: exact estimator numbers, /proc accounting of real processes, and a real
Agent object (not run) whose Balancer measures real processes recorded in its real job store."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from omview.agent.config import AgentConfig
from omview.agent.core import Agent
from omview.agent.jobs.stats import JobStats, Usage, decay_mode, measure, mode_flags
from omview.agent.jobs.table import Job
from omview.agent.node.sampler import Sample
from omview.agent.node.state import StateStore
from omview.agent.peers.gossip import genkey
from omview.model.cluster import Flags, NodeInfo
from omview.model.procfs import HZ, read_stat

DEFAULT = Flags()  # interval 1 s, slow 975, fast 926 per mille
#: numbers that come out exact: the per-mille value applies 10 times per decay interval
ROUND = Flags(decay_interval=2, slow_decay=900, fast_decay=500)
K = ("1:100", 100, 5000)


def busy(share: float, cpu: float = 0.0, age: float = 0.0) -> Usage:
    return Usage(share=share, cpu_seconds=cpu, age=age)


# ----------------------------------------------------------------------------------- estimator


def test_decay_mode_is_the_last_decay_hint() -> None:
    assert decay_mode([]) == "default"
    assert decay_mode(["cpujob", "iojob"]) == "default"
    assert decay_mode(["cpujob", "slowdecay"]) == "slowdecay"
    assert decay_mode(["nodecay", "fastdecay"]) == "fastdecay"
    assert decay_mode(["fastdecay", "nodecay"]) == "nodecay"
    assert mode_flags("slowdecay", ROUND) == replace(ROUND, fast_decay=900)
    assert mode_flags("fastdecay", ROUND) == replace(ROUND, slow_decay=500)
    assert mode_flags("default", ROUND) == ROUND


@pytest.mark.parametrize(
    ("hints", "rise_1s", "rise_2s"),
    [
        # default rises with fast_decay: 100 * (1 - 0.5 ** 5) after 1 s, 100 * (1 - 0.5 ** 10) after 2 s
        ([], 96.875, 99.90234375),
        (["fastdecay"], 96.875, 99.90234375),
        # slowdecay rises with slow_decay: 100 * (1 - 0.9 ** 5), 100 * (1 - 0.9 ** 10)
        (["slowdecay"], 40.951, 65.13215599),
    ],
)
def test_rising_share_per_hint(hints: list[str], rise_1s: float, rise_2s: float) -> None:
    s = JobStats()
    # a fresh statistic starts at 0 when the job started or arrived: the first update decays over its age
    assert s.update(K, hints, busy(100.0, age=0.0), 10.0, ROUND) == 0.0
    assert s.update(K, hints, busy(100.0), 11.0, ROUND) == pytest.approx(rise_1s, abs=1e-6)
    s2 = JobStats()
    assert s2.update(K, hints, busy(100.0, age=2.0), 10.0, ROUND) == pytest.approx(rise_2s, abs=1e-6)
    assert s2.get(K) == pytest.approx(rise_2s, abs=1e-6)


@pytest.mark.parametrize(
    ("hints", "fall_1s", "fall_3s"),
    [
        # default falls with slow_decay: 80 * 0.9 ** 5, 80 * 0.9 ** 15
        ([], 47.2392, 16.47129056),
        (["slowdecay"], 47.2392, 16.47129056),
        # fastdecay falls with fast_decay: 80 * 0.5 ** 5, 80 * 0.5 ** 15
        (["fastdecay"], 2.5, 0.00244140625),
    ],
)
def test_falling_share_per_hint(hints: list[str], fall_1s: float, fall_3s: float) -> None:
    s = JobStats()
    s.update(K, hints, busy(80.0, age=1e6), 0.0, ROUND)  # long enough at 80 %: the statistic is 80
    assert s.get(K) == pytest.approx(80.0, abs=1e-9)
    assert s.update(K, hints, busy(0.0), 1.0, ROUND) == pytest.approx(fall_1s, abs=1e-6)
    assert s.update(K, hints, busy(0.0), 3.0, ROUND) == pytest.approx(fall_3s, abs=1e-6)


def test_default_flags_time_constants() -> None:
    """With the openMosix defaults (1 s, 975, 926): a 3 s pause after a long busy spell."""
    for hints, expected in (
        ([], 100 * 0.975**30),
        (["slowdecay"], 100 * 0.975**30),
        (["fastdecay"], 100 * 0.926**30),
    ):
        s = JobStats()
        s.update(K, hints, busy(100.0, age=1e6), 0.0, DEFAULT)
        assert s.update(K, hints, busy(0.0), 3.0, DEFAULT) == pytest.approx(expected, rel=1e-9)
    assert round(100 * 0.975**30, 2) == 46.79
    assert round(100 * 0.926**30, 2) == 9.96


def test_nodecay_is_the_lifetime_average() -> None:
    s = JobStats()
    h = ["nodecay"]
    assert s.update(K, h, busy(0.0, cpu=30.0, age=40.0), 0.0, ROUND) == 75.0
    # a one-second burst at full speed barely moves it, and the instantaneous share is ignored
    assert s.update(K, h, busy(100.0, cpu=31.0, age=41.0), 1.0, ROUND) == pytest.approx(100 * 31 / 41)
    # nor does a pause: 20 s stopped
    assert s.update(K, h, busy(0.0, cpu=31.0, age=61.0), 21.0, ROUND) == pytest.approx(100 * 31 / 61)
    assert s.update(K, h, busy(0.0, cpu=0.0, age=0.0), 21.0, ROUND) == 0.0  # no age yet: no usage


def test_forgets_jobs_that_ended_or_left() -> None:
    s = JobStats()
    for i in range(5):
        s.update((f"1:{i + 1}", 100 + i, 1), [], busy(50.0, age=1.0), 0.0, DEFAULT)
    assert len(s) == 5
    assert s.keep_only([("1:1", 100, 1), ("1:2", 101, 1)]) == 3
    assert len(s) == 2 and s.get(("1:3", 102, 1)) is None
    assert s.keep_only([]) == 2 and len(s) == 0


# ----------------------------------------------------------------------------- /proc accounting

BURN_CHILD_THEN_SELF = """
import os, sys, time
pid = os.fork()
if pid == 0:
    while time.process_time() < 0.3:
        pass
    os._exit(0)
os.waitpid(pid, 0)            # the child's 0.3 s move into our cutime
while time.process_time() < 0.2:
    pass
sys.stdout.write("ready\\n"); sys.stdout.flush()
time.sleep(60)
"""


def stat_key(pid: int) -> tuple[int, int]:
    st = read_stat(pid)
    assert st is not None
    return st.key


def test_measure_counts_reaped_children_and_age_from_start() -> None:
    t0 = time.clock_gettime(time.CLOCK_BOOTTIME)
    p = subprocess.Popen([sys.executable, "-c", BURN_CHILD_THEN_SELF], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        key = stat_key(p.pid)
        u = measure(p.pid, [p.pid], {key: 42.5, (p.pid, key[1] + 1): 99.0})
        t1 = time.clock_gettime(time.CLOCK_BOOTTIME)
        assert u is not None
        assert u.share == 42.5  # only the live task's own key counts
        # 0.3 s of the reaped child + 0.2 s of its own (the kernel truncates each of the 4 fields to
        # whole ticks), plus interpreter start-up
        assert 0.5 - 4 / HZ <= u.cpu_seconds < 1.0, u
        assert 0.0 < u.age <= t1 - t0 + 0.02, (u, t1 - t0)
    finally:
        p.kill()
        p.wait()
    assert measure(p.pid, [p.pid], {}) is None  # gone: no measurement


# ----------------------------------------------------------------- the Balancer on a real Agent


@dataclass
class Rig:
    agent: Agent
    procs: list[subprocess.Popen[bytes]]

    def job(self, hints: list[str]) -> Job:
        """A real sleeping process recorded as a mosrun job running here (node 1)."""
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        self.procs.append(p)
        _, start = stat_key(p.pid)
        job = Job(id=f"1:{p.pid}", home=2, home_pid=p.pid, argv=["sleep"], cwd="/", uid=0, gid=0,
                  where=1, pid=p.pid, pid_start=start, hints=hints)  # fmt: skip
        self.agent.jobstore.put(job)
        return job


def sample(shares: dict[tuple[int, int], float], demand: float) -> Sample:
    return Sample(cpus=2, tmem=1 << 31, mem=1 << 30, rmem=1 << 30, util=50, load=int(100 * demand),
                  demand=demand, processes=10, method="schedstat", duration_ms=1.0, cpu=shares)  # fmt: skip


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    key = tmp_path / "cluster.key"
    genkey(str(key))
    (tmp_path / "map").write_text("1 127.0.0.1 1\n2 127.0.0.2 1\n")
    state = tmp_path / "state"
    StateStore(str(state)).save_flags(Flags())
    cfg = AgentConfig(path=str(tmp_path / "agent.toml"), node_id=1, address="127.0.0.1", key_file=str(key),
                      socket=str(tmp_path / "agent.sock"), state_dir=str(state), map_file=str(tmp_path / "map"),
                      cpus=2)  # fmt: skip
    agent = Agent(cfg)
    # node 2 idle with 2 CPUs; node 1's own load comes from the sample's demand (Balancer.view)
    agent.nodes_snapshot = {
        1: NodeInfo(id=1, address="127.0.0.1", status="up", cpus=2, mem=1 << 30),
        2: NodeInfo(id=2, address="127.0.0.2", status="up", cpus=2, mem=1 << 30),
    }
    r = Rig(agent, [])
    try:
        yield r
    finally:
        for p in r.procs:
            p.kill()
            p.wait()
        agent.job_pool.shutdown(wait=True)
        agent.worker.shutdown(wait=True)
        agent.watch_pool.shutdown(wait=True)
        agent.peers.close()


def busy_then_paused(rig: Rig, job: Job, *, busy_s: int = 20, pause_s: int = 3) -> None:
    """The job ran flat out beside 3 locked burners (demand 4 on 2 CPUs), then stopped (demand 3)."""
    key = (job.pid, job.pid_start)
    b = rig.agent.balancer
    for t in range(busy_s):
        rig.agent.sample = sample({key: 100.0}, demand=4.0)
        b.observe(rig.agent.sample, now=1000.0 + t)
    for t in range(busy_s, busy_s + pause_s):
        rig.agent.sample = sample({key: 0.0}, demand=3.0)
        b.observe(rig.agent.sample, now=1000.0 + t)


@pytest.mark.parametrize(
    ("hints", "moves"),
    [([], True), (["slowdecay"], True), (["fastdecay"], False)],
)
def test_decay_hint_decides_whether_a_paused_job_moves(rig: Rig, hints: list[str], moves: bool) -> None:
    """3 s after pausing, a slowdecay (or default) job is still CPU-bound to the balancer and moves to
    the idle node; a fastdecay job has already been forgotten as CPU-bound and stays."""
    job = rig.job(hints)
    busy_then_paused(rig, job)
    b = rig.agent.balancer
    stat = b.stats.get(b.key(job))
    assert stat is not None
    fair = 100.0 * 2 / 3  # 2 CPUs, demand 3: threshold MIN_SHARE 30 % of it = 20
    assert (stat >= 0.3 * fair) is moves, stat
    picked = b.pick()
    if moves:
        assert picked is not None and picked[0].id == job.id and picked[1] == 2
    else:
        assert picked is None
        # the instantaneous rule would not have moved it either, but a busy spell right now would:
        rig.agent.sample = sample({(job.pid, job.pid_start): 100.0}, demand=4.0)
        for t in range(3):
            b.observe(rig.agent.sample, now=1100.0 + t)
        assert b.pick() is not None


def test_nodecay_uses_the_lifetime_average_not_the_samples(rig: Rig) -> None:
    """A job that really slept all along but whose last samples say 100 %: fastdecay believes the
    samples and moves it; nodecay looks at its real CPU time since it started (about 0) and does not."""
    fast = rig.job(["fastdecay"])
    steady = rig.job(["nodecay"])
    shares = {(j.pid, j.pid_start): 100.0 for j in (fast, steady)}
    b = rig.agent.balancer

    def grown_up() -> bool:  # interpreter start-up (some 0.05 s of CPU) spread over a second
        u = measure(steady.pid, [steady.pid], {})
        return u is not None and u.age >= 1.0

    deadline = time.monotonic() + 20
    while not grown_up() and time.monotonic() < deadline:
        time.sleep(0.1)
    for t in range(5):
        rig.agent.sample = sample(shares, demand=4.0)
        b.observe(rig.agent.sample, now=2000.0 + t)
    assert b.stats.get(b.key(fast)) > 95.0  # 100 * (1 - 0.926 ** (10 * (4 s + its age)))
    u = measure(steady.pid, [steady.pid], {})
    assert u is not None
    assert b.stats.get(b.key(steady)) == pytest.approx(100 * u.cpu_seconds / u.age, abs=2.0)
    assert b.stats.get(b.key(steady)) < 10.0  # threshold here: 30 % of fair (2 CPUs / demand 4) = 15
    assert [j.id for _, j in b.candidates()] == [fast.id]


def test_candidates_rank_by_the_statistic(rig: Rig) -> None:
    """A long-busy job that dropped to 50 % for a second outranks one that was idle and hit 100 % for
    a second: the statistic (88.8 vs 53.7), not the last sample (50 vs 100), orders them."""
    steady, spiky = rig.job([]), rig.job([])
    ks, kp = (steady.pid, steady.pid_start), (spiky.pid, spiky.pid_start)
    b = rig.agent.balancer
    for t in range(20):
        rig.agent.sample = sample({ks: 100.0, kp: 0.0}, demand=4.0)
        b.observe(rig.agent.sample, now=3000.0 + t)
    rig.agent.sample = sample({ks: 50.0, kp: 100.0}, demand=4.0)
    b.observe(rig.agent.sample, now=3020.0)
    ranked = b.candidates()
    assert [j.id for _, j in ranked] == [steady.id, spiky.id]
    assert ranked[0][0] == pytest.approx(50 + 50 * 0.975**10, abs=0.1)
    assert ranked[1][0] == pytest.approx(100 * (1 - 0.926**10), abs=0.1)
    picked = b.pick()
    assert picked is not None and picked[0].id == steady.id


def test_statistics_forgotten_when_a_job_ends_or_leaves_and_fresh_on_arrival(rig: Rig) -> None:
    a, b_job, c = rig.job([]), rig.job([]), rig.job(["slowdecay"])
    b = rig.agent.balancer
    shares = {(j.pid, j.pid_start): 100.0 for j in (a, b_job, c)}
    for t in range(10):
        b.observe(sample(shares, demand=3.0), now=4000.0 + t)
    assert len(b.stats) == 3
    store = rig.agent.jobstore
    store.put(replace(a, state="exited", status="exit 0"))  # ended
    store.put(replace(b_job, where=2))  # left for node 2
    b.observe(sample(shares, demand=1.0), now=4010.0)
    assert len(b.stats) == 1 and b.stats.get(b.key(a)) is None and b.stats.get(b.key(b_job)) is None
    store.remove(c.id)  # record gone altogether
    b.observe(sample(shares, demand=0.0), now=4011.0)
    assert len(b.stats) == 0
    # it comes back (a restore gives it a new root task): the statistic starts again from 0
    back = rig.job([])
    store.remove(back.id)
    back = replace(back, id=b_job.id)
    store.put(back)
    b.observe(sample({(back.pid, back.pid_start): 100.0}, demand=1.0), now=4012.0)
    value = b.stats.get(b.key(back))
    u = measure(back.pid, [back.pid], {})
    assert value is not None and u is not None
    # from 0 towards 100 over no more than its age (with fast_decay, rising), not the ~100 it had
    assert value <= 100 * (1 - 0.926 ** (10 * u.age)) + 1e-9


def test_tick_updates_statistics_each_sample_once_even_under_stay(rig: Rig) -> None:
    job = rig.job([])
    agent = rig.agent
    agent.flags = replace(agent.flags, stay=True)  # no looks, but the statistics stay current
    b = agent.balancer
    agent.sample = sample({(job.pid, job.pid_start): 100.0}, demand=1.0)

    def settle() -> None:
        deadline = time.monotonic() + 10
        while b.observing and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not b.observing

    b.tick()
    settle()
    first = b.stats.get(b.key(job))
    assert first is not None
    time.sleep(0.05)
    b.tick()  # the same sample again (sampling failed): not folded in twice
    settle()
    assert b.stats.get(b.key(job)) == first
    agent.sample = sample({(job.pid, job.pid_start): 100.0}, demand=1.0)
    time.sleep(0.05)
    b.tick()
    settle()
    assert b.stats.get(b.key(job)) > first
    assert not b.busy and b.moves == 0


def test_job_status_shows_the_statistic_where_the_job_runs(rig: Rig) -> None:
    """job.status / job.list carry the balancer's statistic (why a job moves or stays) on the node the
    job runs on; None before its first sample and for a job that runs elsewhere."""
    ops = rig.agent.job_ops
    here, away = rig.job(["slowdecay"]), rig.job([])
    rig.agent.jobstore.put(replace(away, where=2))
    assert ops._shown(here)["balance_cpu"] is None  # not sampled yet
    busy_then_paused(rig, here)
    stat = rig.agent.balancer.stats.get(rig.agent.balancer.key(here))
    assert stat is not None and stat > 40.0
    shown = ops._shown(rig.agent.jobstore.get(here.id))
    assert shown["balance_cpu"] == round(stat, 1) and shown["id"] == here.id and shown["hints"] == ["slowdecay"]
    assert ops._shown(rig.agent.jobstore.get(away.id))["balance_cpu"] is None


def test_decisions_are_kept_with_reasons_and_repeated_holds_count_up(rig: Rig) -> None:
    """balancer.decisions' log: a hold that repeats the last one counts up, a new reason is a new entry."""
    job = rig.job([])
    agent = rig.agent
    b = agent.balancer
    key = (job.pid, job.pid_start)
    for t in range(5):
        agent.sample = sample({key: 100.0}, demand=1.0)
        b.observe(agent.sample, now=4000.0 + t)
    agent.flags = replace(agent.flags, stay=True)
    b.consider()
    b.consider()
    log = b.decisions()
    assert [(d["action"], d["reason"], d["repeat"]) for d in log] == [("hold", "stay", 2)]
    agent.flags = replace(agent.flags, stay=False)
    b.consider()  # one CPU-bound job on 2 CPUs, node 2 idle: no gain worth a move
    log = b.decisions()
    assert [(d["action"], d["reason"]) for d in log] == [("hold", "stay"), ("hold", "balanced")]
    assert log[-1]["job"] == job.id and log[-1]["target"] == 2 and log[-1]["gain"] == 1.0
    assert b.decisions(1) == log[-1:]
