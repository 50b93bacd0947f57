"""The campaign: runs one after another (fault drawn, migration started, fault fired, invariants
checked), killed agents restarted and killed VMs booted again between runs, and job turnover (a job
is ended through its deputy every --job-runs runs and after a violation, its end checked)."""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from faultlab.checks import LOST_WITH_NODE, Checker
from faultlab.inject import HOOKS, KINDS, MACHINE_KINDS, MIGRATE_TIMEOUT, Call, Injector, Run
from faultlab.job import Job
from faultlab.nodes import Nodes
from faultlab.scan import STATE
from omview.model.errors import OmviewError


def replay_command(ns: argparse.Namespace, seed: int, kind: str) -> str:
    """The command line that draws a run again: same cluster kind and size, same seed, same fault."""
    cluster = f"--vm --nodes {ns.nodes} " if ns.vm else f"--nodes {ns.nodes} "
    return f"bench/faults.py {cluster}--seed {seed} --runs 1 --only {kind}"


class Campaign:
    def __init__(self, nodes: Nodes, work: str, ns: argparse.Namespace) -> None:
        self.nodes = nodes
        self.work = work
        self.ns = ns
        self.kinds = KINDS + (MACHINE_KINDS if nodes.machines else ())
        self.runs: list[Run] = []
        self.job: Job | None = None
        self.jobs = 0
        self.steps = 0  # steps checked in jobs that ended or were replaced
        self.job_runs = 0
        self.checker = Checker(nodes)
        self.injector = Injector(nodes, work, self.hook, self.checker.leftovers)
        self.log: Callable[..., None] = print if not ns.json else (lambda *a, **k: print(*a, **k, file=sys.stderr))

    # ------------------------------------------------------------------ helpers
    def hook(self, node: int, name: str, value: str | None) -> None:
        self.nodes.write(node, f"{STATE}/faults/{name}", value)

    def all_up(self, timeout: float = 90.0) -> None:
        """Every agent answers, sees every node up and has finished its criu check."""
        ids = set(self.nodes.ids)
        deadline = time.monotonic() + timeout * (3 if self.nodes.machines else 1)
        while True:
            try:
                if all({x["id"] for x in self.nodes.call(n, "cluster.nodes", timeout=20) if x["status"] == "up"} == ids
                       and self.nodes.call(n, "node.info", timeout=20)["criu"]["checked"] for n in ids):  # fmt: skip
                    return
            except (OmviewError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster's agents did not all come up within {timeout:g} s")
            time.sleep(0.2)

    def restart_dead_agents(self) -> list[int]:
        dead = [n for n in self.nodes.ids if not self.nodes.agent_alive(n)]
        for n in dead:
            self.nodes.agent_start(n)
        return dead

    def new_job(self) -> Job:
        self.jobs += 1
        job = Job(self.nodes, self.nodes.ids[0], self.work, self.jobs, interval=self.ns.interval, kib=self.ns.kib)
        self.checker.home_pids.add(job.home_pid)
        deadline = time.monotonic() + 60 * (3 if self.nodes.machines else 1)
        while job.check_output() < 3:
            if job.deputy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"job {job.id} did not start: {job.err_text(500)}")
            time.sleep(0.1)
        self.job, self.job_runs = job, 0
        return job

    def where(self, job: Job) -> int | None:
        """The node of the job's single running copy, or None."""
        inits = job.copies(self.nodes.processes())
        if len(inits) == 1 and len(next(iter(inits.values()))) == 1:
            return next(iter(inits))
        return None

    # ------------------------------------------------------------------ one run
    def run_one(self, index: int, seed: int) -> Run:
        rng = random.Random(seed)
        kind = rng.choice(self.kinds)
        if self.ns.only:
            kind = self.ns.only
        run = Run(index, seed, kind)
        job = self.job or self.new_job()
        t0 = time.monotonic()
        src = self.where(job)
        if src is None:
            raise RuntimeError(f"job {job.id} has no single copy before run {index}")
        others = [n for n in self.nodes.ids if n != src]
        run.source, run.target = src, rng.choice(others)
        run.method = rng.choice(("images", "lazy"))
        for n in self.nodes.ids:
            self.hook(n, "method", run.method)
        client = rng.choice((job.home, src))
        killed: list[int] = []
        cleanup: list[Callable[[], None]] = []
        calls: list[Call] = []
        try:
            calls = self.injector.inject(run, rng, job, client, killed, cleanup)
            for c in calls:
                if not c.wait(MIGRATE_TIMEOUT + 30):
                    run.violations.append(("stuck", f"proc.migrate on node {c.node} did not return in "
                                                    f"{MIGRATE_TIMEOUT + 30:g} s"))  # fmt: skip
        finally:
            for undo in reversed(cleanup):
                try:
                    undo()
                except Exception as exc:  # keep undoing the rest; the run reports it
                    run.violations.append(("cleanup", f"{type(exc).__name__}: {exc}"))
            for n in self.nodes.ids:
                for name in HOOKS:
                    self.hook(n, name, None)
            restarted = self.restart_dead_agents()
            if restarted or run.machine:
                self.all_up()
        run.detail += "".join(f"; {c.node}->{c.target}: {c.code or 'ok'}" for c in calls)
        self.checker.check(run, job, calls, t0)
        run.seconds = round(time.monotonic() - t0, 2)
        self.job_runs += 1
        return run

    # ------------------------------------------------------------------ job turnover
    def end_job(self, run: Run | None) -> None:
        """SIGTERM through the deputy: the job ends its chain with `end`, exit 7, nothing left behind."""
        job = self.job
        if job is None:
            return
        self.job = None
        if run is not None and run.outcome == LOST_WITH_NODE:
            self.steps += job.chain.next  # ended with its machine, checked by the run already
            return
        last = self.where(job)  # an ended job's directory stays where it ended (job.output reads it)
        if job.deputy.poll() is None:
            self.nodes.kill(job.home, job.home_pid, signal.SIGTERM)
        try:
            rc = job.deputy.wait(90)
        except subprocess.TimeoutExpired:
            rc = None
        job.check_output()
        if job.chain.partial:
            job.problems += job.chain.feed(b"\n")
        problems = list(job.problems)
        if run is not None and rc != 7 and not run.violations:
            problems.append(f"the deputy exited {rc}, not 7: {job.err_text()}")
        if run is not None and not job.chain.ended and not run.violations:
            problems.append("the output has no end line")
        self._kill_copies(job)
        if job.deputy.poll() is None:
            job.deputy.kill()
            job.deputy.wait(30)
        self.steps += job.chain.next
        if run is not None:
            run.violations += [("end", p) for p in problems]
            if not run.violations:
                self.checker.leftovers(run, job, last)

    def _kill_copies(self, job: Job) -> None:
        """Every copy of the job still alive anywhere (after a violation, or a deputy that did not end)."""
        deadline = time.monotonic() + 20
        while True:
            inits = job.copies(self.nodes.processes())
            if not inits:
                return
            if time.monotonic() > deadline:
                for node, ps in inits.items():
                    for p in ps:
                        try:
                            self.nodes.kill(node, p.pid, signal.SIGKILL)
                        except (OSError, subprocess.SubprocessError):
                            pass
            time.sleep(0.2)

    # ------------------------------------------------------------------ the campaign
    def go(self) -> None:
        started = time.monotonic()
        for i in range(self.ns.runs):
            if self.ns.max_seconds and time.monotonic() - started > self.ns.max_seconds:
                self.log(f"stopping after {i} runs: --max-seconds {self.ns.max_seconds:g} reached")
                break
            run = self.run_one(i, self.ns.seed + i)
            self.runs.append(run)
            if run.violations:
                self.log(f"VIOLATION run {i} kind {run.kind} seed {run.seed}: {run.violations}")
                self.log(f"  replay: {replay_command(self.ns, run.seed, run.kind)}"
                         f"   (node {run.source} -> {run.target}, {run.method}; {run.detail})")  # fmt: skip
                self.replace_job(run)
                if self.ns.stop:
                    break
            elif run.outcome == LOST_WITH_NODE or self.job_runs >= self.ns.job_runs or i == self.ns.runs - 1:
                self.replace_job(run)
            if self.ns.verbose:
                self.log(f"run {i:4d} seed {run.seed} {run.kind:<14} {run.source}->{run.target} {run.method:<6} "
                         f"{run.outcome:<12} {run.seconds:5.1f} s  {run.detail}")  # fmt: skip

    def replace_job(self, run: Run) -> None:
        before = len(run.violations)
        self.end_job(run)
        if len(run.violations) > before:
            self.log(f"VIOLATION at the end of job (run {run.index}, seed {run.seed}): {run.violations[before:]}")
        restarted = self.restart_dead_agents()
        if restarted:
            self.all_up()
        for n in self.nodes.ids:
            self.nodes.call(n, "flags.set", block=False)


