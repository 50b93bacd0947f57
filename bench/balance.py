"""Benchmark: the balancer's decisions in a discrete-event simulated cluster (Amir et al. 2000's model).

Clusters of 8, 16 and 32 nodes of mixed speed, CPUs and memory. Jobs arrive as a Poisson stream,
each on a random node (where its user started it), with heavy-tailed CPU work and memory (bounded
Pareto). A node's CPUs are shared equally among its jobs (each runs at speed * min(1, cpus / jobs));
while the memory of its jobs exceeds the node's, all of them run 10x slower (thrashing). A job's
slowdown = (completion - arrival) / (its work on an idle node of the fastest speed).

Strategies, on the very same jobs and nodes per seed:
  round-robin     each job to the next node in turn (PVM), never moved
  random          each job to a random node, never moved
  least-loaded    each job to the node where it would run fastest now (speed, CPUs, jobs), never moved
  opp-cost        each job to the node of least marginal opportunity cost (E-PVM: cost per node =
                  a^cpu_utilisation + a^memory_utilisation, a = 2n; Amir et al.), never moved
  omview          each job starts on its arrival node; every node runs omview.agent.migration.decide
                  (the agent's own decision code, imported) every BALANCE_EVERY seconds on a window of
                  peers (as the gossip's), with the agent's settings, cooldown and arrival memory;
                  a move freezes the job for 0.1 s + its memory at 100 MB/s

Printed: the average slowdown per strategy and cluster size (mean over seeds of each run's mean),
each baseline's slowdown divided by omview's with a 95 % confidence interval over the per-seed
ratios, and omview's migrations per job. Targets: round-robin / omview >= 1.40, opp-cost / omview
>= 1.05, migrations per job < 1.

Usage: .venv/bin/python bench/balance.py [--seeds 1000] [--sizes 8,16,32] [--jobs-per-node 12]
       [--procs 2] [--work 10,3600,1.2] [--smoke]    (--smoke: 10 seeds, for CI)
"""

from __future__ import annotations

import argparse
import heapq
import math
import multiprocessing
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from omview.agent.migration import decide
from omview.model.cluster import STD_SPEED

MiB = 1 << 20
THRASH = 10.0  # a node whose memory is over-committed runs its jobs this many times slower
SPEEDS = (5000, 10000, 15000, 20000)
CPUS = (1, 1, 2)
MEMORY = (512 * MiB, 1024 * MiB, 2048 * MiB)
WINDOW = 8  # peers a node knows the load of at a decision (MOSIX's gossip window)
UTILISATION = 0.8  # offered CPU work / cluster capacity
#: bounded Pareto (low, high, alpha) of CPU work in seconds of a reference CPU: cluster jobs of 10 s to
#: an hour. Harchol-Balter & Downey (1997) measured P(lifetime > t | > 1 s) ~ 1/t for all UNIX
#: processes; with such short jobs (--work 1,3600,1.0) placing each job at its start beats starting it
#: where it arrives and moving it later (see docs/migration.md)
WORK = (10.0, 3600.0, 1.2)
MEM = (16 * MiB, 1536 * MiB, 1.5)  # bounded Pareto (low, high, alpha): bytes
MOVE_FIXED = 0.1  # seconds a migration freezes a job, plus its memory at MOVE_BW
MOVE_BW = 100 * MiB
#: the agent's own settings (stab factor, hold-off, memory low mark, move cost), unchanged
SETTINGS = decide.Settings()
STRATEGIES = ("round-robin", "random", "least-loaded", "opp-cost", "omview")


def bounded_pareto(rng: random.Random, low: float, high: float, alpha: float) -> float:
    u = rng.random()
    ha, la = high**alpha, low**alpha
    return float((-(u * ha - u * la - ha) / (ha * la)) ** (-1.0 / alpha))


def bp_mean(low: float, high: float, alpha: float) -> float:
    """Mean of the bounded Pareto distribution."""
    if alpha == 1.0:
        return low * high / (high - low) * math.log(high / low)
    return (alpha * low**alpha / (1 - (low / high) ** alpha)) * (high ** (1 - alpha) - low ** (1 - alpha)) / (1 - alpha)


@dataclass(frozen=True)
class Machine:
    id: int
    speed: int
    cpus: int
    memory: int


@dataclass(frozen=True)
class JobSpec:
    id: int
    arrival: float
    work: float  # reference-CPU seconds
    mem: int
    home: int


@dataclass(frozen=True)
class Scenario:
    machines: tuple[Machine, ...]
    jobs: tuple[JobSpec, ...]
    seed: int


def scenario(nodes: int, jobs_per_node: int, seed: int) -> Scenario:
    rng = random.Random(seed * 1000 + nodes)
    machines = tuple(Machine(i, rng.choice(SPEEDS), rng.choice(CPUS), rng.choice(MEMORY)) for i in range(1, nodes + 1))
    capacity = sum(m.speed * m.cpus for m in machines) / STD_SPEED  # reference CPUs
    mean_work = bp_mean(*WORK)
    rate = UTILISATION * capacity / mean_work  # jobs per second
    t = 0.0
    jobs = []
    for j in range(nodes * jobs_per_node):
        t += rng.expovariate(rate)
        jobs.append(JobSpec(j, t, bounded_pareto(rng, *WORK), int(bounded_pareto(rng, *MEM)), rng.randint(1, nodes)))
    return Scenario(machines, tuple(jobs), seed)


@dataclass
class Running:
    spec: JobSpec
    left: float  # reference-CPU seconds still to do
    node: int
    arrived_here: float | None = None  # when it last arrived by migration
    moves: int = 0


@dataclass
class Sim:
    sc: Scenario
    now: float = 0.0
    on: dict[int, list[Running]] = field(default_factory=dict)
    used: dict[int, int] = field(default_factory=dict)  # memory of the jobs on each node
    done: list[float] = field(default_factory=list)  # slowdowns
    moves: int = 0

    def __post_init__(self) -> None:
        self.on = {m.id: [] for m in self.sc.machines}
        self.used = {m.id: 0 for m in self.sc.machines}
        self.mach = {m.id: m for m in self.sc.machines}
        self.fastest = max(m.speed for m in self.sc.machines) / STD_SPEED

    def rate(self, nid: int) -> float:
        """Reference-CPU seconds per second each job on NID gets now."""
        jobs = self.on[nid]
        if not jobs:
            return 0.0
        m = self.mach[nid]
        r = m.speed / STD_SPEED * min(1.0, m.cpus / len(jobs))
        return r / THRASH if self.used[nid] > m.memory else r

    def advance(self, t: float) -> None:
        dt = t - self.now
        if dt > 0:
            for nid, jobs in self.on.items():
                if jobs:
                    r = self.rate(nid) * dt
                    for j in jobs:
                        j.left -= r
        self.now = t

    def next_completion(self) -> float:
        best = math.inf
        for nid, jobs in self.on.items():
            if jobs:
                r = self.rate(nid)
                best = min(best, self.now + min(j.left for j in jobs) / r)
        return best

    def finish_due(self) -> None:
        for nid, jobs in self.on.items():
            if any(j.left <= 1e-9 for j in jobs):
                for j in [j for j in jobs if j.left <= 1e-9]:
                    jobs.remove(j)
                    self.used[nid] -= j.spec.mem
                    self.done.append((self.now - j.spec.arrival) / (j.spec.work / self.fastest))

    def place(self, job: Running, nid: int) -> None:
        job.node = nid
        self.on[nid].append(job)
        self.used[nid] += job.spec.mem


Placer = Callable[[Sim, JobSpec, random.Random], int]


def round_robin() -> Placer:
    turn = [0]

    def place(sim: Sim, job: JobSpec, rng: random.Random) -> int:
        turn[0] += 1
        return sim.sc.machines[(turn[0] - 1) % len(sim.sc.machines)].id

    return place


def at_random(sim: Sim, job: JobSpec, rng: random.Random) -> int:
    return rng.choice(sim.sc.machines).id


def least_loaded(sim: Sim, job: JobSpec, rng: random.Random) -> int:
    def r(m: Machine) -> float:
        return m.speed * min(1.0, m.cpus / (len(sim.on[m.id]) + 1))

    return max(sim.sc.machines, key=lambda m: (r(m), -m.id)).id


def opportunity_cost(sim: Sim, job: JobSpec, rng: random.Random) -> int:
    """E-PVM: the node whose cost a^cpu + a^mem grows least by the job (a = 2n, Amir et al. 2000).
    CPU utilisation = jobs per reference CPU of the node over the cluster's most (jobs per CPU of the
    fastest node with 8 jobs a CPU), memory utilisation = used / memory."""
    a = 2.0 * len(sim.sc.machines)
    cap = 8.0  # jobs per fastest CPU taken as full utilisation

    def cost(m: Machine, extra: int, mem: int) -> float:
        cpu = (len(sim.on[m.id]) + extra) / (m.cpus * m.speed / STD_SPEED / sim.fastest) / cap
        return float(a ** min(cpu, 4.0) + a ** min((sim.used[m.id] + mem) / m.memory, 4.0))

    return min(sim.sc.machines, key=lambda m: (cost(m, 1, job.mem) - cost(m, 0, 0), m.id)).id


def run(sc: Scenario, strategy: str) -> tuple[float, int]:
    """Mean slowdown and migrations of one strategy on one scenario."""
    sim = Sim(sc)
    rng = random.Random(sc.seed)
    placer: Placer | None = {"round-robin": round_robin(), "random": at_random, "least-loaded": least_loaded,
                             "opp-cost": opportunity_cost}.get(strategy)  # fmt: skip
    balancing = strategy == "omview"
    pending = list(sc.jobs)
    nxt = 0
    transit: list[tuple[float, int, Running]] = []  # (arrival, job id, job) of jobs being moved
    inbound: dict[int, list[Running]] = {m.id: [] for m in sc.machines}
    next_tick = decide.BALANCE_EVERY if balancing else math.inf
    quiet_until: dict[int, float] = {}
    order = [m.id for m in sc.machines]
    while nxt < len(pending) or any(sim.on.values()) or transit:
        t_arr = pending[nxt].arrival if nxt < len(pending) else math.inf
        t_tr = transit[0][0] if transit else math.inf
        t_done = sim.next_completion()
        t = min(t_arr, t_tr, t_done, next_tick)
        sim.advance(t)
        sim.finish_due()
        if t == t_arr:
            spec = pending[nxt]
            nxt += 1
            sim.place(Running(spec, spec.work, 0), placer(sim, spec, rng) if placer else spec.home)
        elif t == t_tr:
            _, _, job = heapq.heappop(transit)
            inbound[job.node].remove(job)
            job.arrived_here = sim.now
            sim.place(job, job.node)
        elif t == next_tick:
            # every node decides once a period; in a random order, each seeing the moves before it
            next_tick = t + decide.BALANCE_EVERY
            rng.shuffle(order)
            views = Views(sim, inbound)
            for nid in order:
                if not sim.on[nid] or quiet_until.get(nid, 0.0) > t:
                    continue
                move = consider(sim, nid, views, rng)
                if move is None:
                    continue
                job, target = move
                sim.on[nid].remove(job)
                sim.used[nid] -= job.spec.mem
                job.node = target
                job.moves += 1
                inbound[target].append(job)
                heapq.heappush(transit, (t + MOVE_FIXED + job.spec.mem / MOVE_BW, job.spec.id, job))
                sim.moves += 1
                quiet_until[nid] = t + decide.COOLDOWN
                views.pop(nid, None)
                views.pop(target, None)
        if not (nxt < len(pending) or any(sim.on.values()) or transit):
            break
    return statistics.fmean(sim.done), sim.moves


def view(sim: Sim, nid: int, inbound: dict[int, list[Running]]) -> decide.Node:
    """Node NID as a peer sees it; jobs on their way there count (the agent's arrival memory)."""
    m = sim.mach[nid]
    coming = inbound[nid]
    used = sim.used[nid] + sum(j.spec.mem for j in coming)
    return decide.Node(id=nid, speed=m.speed, cpus=m.cpus, runnable=float(len(sim.on[nid]) + len(coming)),
                       free=max(0, m.memory - used), total=m.memory)  # fmt: skip


class Views(dict[int, decide.Node]):
    """Every node as its peers see it now, computed when first asked for within a round."""

    def __init__(self, sim: Sim, inbound: dict[int, list[Running]]) -> None:
        super().__init__()
        self.sim, self.inbound = sim, inbound

    def __missing__(self, nid: int) -> decide.Node:
        v = self[nid] = view(self.sim, nid, self.inbound)
        return v


def consider(sim: Sim, nid: int, views: dict[int, decide.Node], rng: random.Random) -> tuple[Running, int] | None:
    """One decision of node NID by the agent's code: which job to move where, or None. VIEWS: every
    node as its peers see it now."""
    m = sim.mach[nid]
    here = decide.Here(id=nid, speed=m.speed, cpus=m.cpus, runnable=float(len(sim.on[nid])), free=views[nid].free,
                       total=m.memory)  # fmt: skip
    others = [x.id for x in sim.sc.machines if x.id != nid]
    window = rng.sample(others, min(WINDOW, len(others)))
    peers = [views[p] for p in window]
    jobs = {str(j.spec.id): j for j in sim.on[nid]}
    cands = [decide.Candidate(id=k, cpu=100.0, rss=j.spec.mem, home=j.spec.home,
                              since_move=None if j.arrived_here is None else sim.now - j.arrived_here,
                              age=sim.now - j.spec.arrival, moves=j.moves)
             for k, j in jobs.items()]  # fmt: skip
    d = decide.decide(here, peers, cands, SETTINGS)
    return (jobs[d.job], d.target) if d.move else None


def one_seed(args: tuple[int, int, int]) -> tuple[int, int, dict[str, tuple[float, int]], int]:
    nodes, jobs_per_node, seed = args
    sc = scenario(nodes, jobs_per_node, seed)
    return nodes, seed, {s: run(sc, s) for s in STRATEGIES}, len(sc.jobs)


def ci95(values: Sequence[float]) -> tuple[float, float, float]:
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, mean - half, mean + half


def main(argv: list[str] | None = None) -> int:
    global WORK
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seeds", type=int, default=1000, help="scenarios per cluster size (default 1000)")
    ap.add_argument("--sizes", default="8,16,32", help="cluster sizes (default 8,16,32)")
    ap.add_argument("--jobs-per-node", type=int, default=12, help="jobs per run = this * nodes (default 12)")
    ap.add_argument("--procs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--work", default=",".join(str(x) for x in WORK),
                    help="CPU work, bounded Pareto LOW,HIGH,ALPHA in reference-CPU seconds (default %(default)s)")
    ap.add_argument("--smoke", action="store_true", help="10 seeds: a quick run for CI")
    a = ap.parse_args(argv)
    lo, hi, alpha = (float(x) for x in a.work.split(","))
    WORK = (lo, hi, alpha)
    seeds = 10 if a.smoke else a.seeds
    if seeds < 2:
        ap.error("--seeds must be at least 2 (confidence intervals)")
    sizes = [int(x) for x in a.sizes.split(",") if x]
    work = [(n, a.jobs_per_node, s) for n in sizes for s in range(seeds)]
    t0 = time.perf_counter()
    if a.procs > 1:
        with multiprocessing.Pool(a.procs) as pool:
            results = pool.map(one_seed, work, chunksize=max(1, len(work) // (a.procs * 8)))
    else:
        results = [one_seed(w) for w in work]
    took = time.perf_counter() - t0
    print(f"omview balancer simulation: {seeds} seeds per size, {a.jobs_per_node} jobs per node, work {WORK}, "
          f"utilisation {UTILISATION:.0%}, thrashing x{THRASH:.0f}, speeds {SPEEDS}, CPUs {CPUS}, memory "
          f"{tuple(m // MiB for m in MEMORY)} MiB; {took:.1f} s on {a.procs} process(es)")  # fmt: skip
    ok = True
    for n in sizes:
        rows = [r for r in results if r[0] == n]
        print(f"\n{n} nodes ({len(rows)} seeds, {rows[0][3]} jobs each): average slowdown, and baseline / omview")
        ours = [r[2]["omview"][0] for r in rows]
        for s in STRATEGIES:
            vals = [r[2][s][0] for r in rows]
            line = f"  {s:13s} {statistics.fmean(vals):8.2f}"
            if s != "omview":
                mean, lo, hi = ci95([v / o for v, o in zip(vals, ours, strict=True)])
                line += f"   ratio {mean:5.2f}  (95% CI {lo:5.2f} .. {hi:5.2f})"
            else:
                mig = sum(r[2][s][1] for r in rows) / sum(r[3] for r in rows)
                line += f"   migrations per job {mig:.3f}"
            print(line)
        rr = ci95([r[2]["round-robin"][0] / r[2]["omview"][0] for r in rows])
        oc = ci95([r[2]["opp-cost"][0] / r[2]["omview"][0] for r in rows])
        mig = sum(r[2]["omview"][1] for r in rows) / sum(r[3] for r in rows)
        for name, got, want in (("round-robin / omview", rr[0], 1.40), ("opp-cost / omview", oc[0], 1.05)):
            print(f"  target {name} >= {want:.2f}: {got:.2f}  {'PASS' if got >= want else 'MISS'}")
            ok = ok and got >= want
        print(f"  target migrations per job < 1: {mig:.3f}  {'PASS' if mig < 1 else 'MISS'}")
        ok = ok and mig < 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
