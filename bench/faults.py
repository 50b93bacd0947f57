"""Randomized fault campaign (issue 15): repeated migrations of a checksumming mosrun job between the
nodes of a cluster, each under a fault drawn at random, and after each run the invariants checked.

Faults (--only KIND): none (control); the agent's own fault points (stall, pause, restore-script,
corrupt-image, flip-byte); kill-target / kill-source (the agent, by PID, at a random moment);
cut-ssh (the target's sshd sessions or the source's ssh clients, by PID); partition (the node's link
down for a moment); fill-target (its image space and incoming dir on small tmpfs mounts, filled up
before or during the copy); block-target (switched on at a random moment); concurrent (two clients
migrate the same job at once).

Invariants after every run: exactly one live copy of the job on exactly one node (its namespace init
and its program, not stopped); the job's own state continuous (bench/faultjob.py: every step's line
chains the one before, so nothing was lost, repeated or restored wrong); the deputy's view (job.status
on the home node, and on the node it runs on) matching where the copy is; no leftover images, tmpfs
directories, job-directory copies, temporary files or criu processes on any node. Every violation is
printed with the run's seed: `bench/faults.py --seed S --runs 1 --only KIND` replays its draws.

The campaign talks to the cluster only through `Nodes` (namespace cluster today: NamespaceNodes);
a VM cluster plugs in by implementing the same methods over its own exec/agent verbs.
Usage: sudo .venv/bin/python bench/faults.py [--runs 100] [--seed 1] [--nodes 3] [--only KIND] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from faultjob import ballast, step

from omview.model.channel import UnixChannel
from omview.model.client import AgentClient
from omview.model.errors import AgentFault, OmviewError
from omview.model.procfs import read_stat
from omview.model.protocol import fault_name
from omview.testbed import Cluster, teardown

PY = "/usr/bin/python3"
JOB = str(Path(__file__).with_name("faultjob.py"))
STATE = "var/lib/omview"  # the agent's state dir, relative to a node's root
KINDS = ("none", "stall", "pause", "restore-script", "corrupt-image", "flip-byte", "kill-target", "kill-source",
         "cut-ssh", "partition", "fill-target", "block-target", "concurrent")  # fmt: skip
#: hook files a run may leave on; `method` is set per run
HOOKS = ("stall-transfer", "pause-before-restore", "pause-after-restore", "pause-before-restore-call",
         "restore-action-script", "corrupt-image", "flip-image-byte")  # fmt: skip
CRIU_ACTIONS = ("pre-restore", "post-setup-namespaces", "post-restore", "pre-resume", "post-resume")
MIGRATE_TIMEOUT = 400.0  # proc.migrate: restore (120 s) + fence window (30 s) + transfer, with room
SETTLE = 90.0  # after a run, how long the job may take to be running once, visibly, everywhere


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str
    cmdline: bytes


class Nodes(Protocol):
    """What the campaign needs from a cluster (namespace nodes now, VMs later)."""

    ids: list[int]

    def call(self, node: int, op: str, timeout: float = 60.0, **args: Any) -> Any: ...
    def processes(self) -> dict[int, list[Proc]]: ...
    def path(self, node: int, rel: str) -> Path: ...
    def run(self, node: int, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]: ...
    def popen(self, node: int, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]: ...
    def agent_kill(self, node: int) -> None: ...
    def agent_alive(self, node: int) -> bool: ...
    def agent_start(self, node: int) -> None: ...
    def sshd_pid(self, node: int) -> int | None: ...
    def link(self, node: int, up: bool) -> None: ...
    def describe(self) -> str: ...


class NamespaceNodes:
    """A namespace cluster (omview.testbed) seen from the host: one /proc for all nodes (processes
    are told apart by network namespace), node files through the holder's root, agents by PID."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.ids = [n.id for n in cluster.nodes]

    def describe(self) -> str:
        return f"namespace cluster, {len(self.ids)} nodes"

    def call(self, node: int, op: str, timeout: float = 60.0, **args: Any) -> Any:
        with AgentClient(UnixChannel(self.cluster.agent_socket(node)), client_name="faults", timeout=timeout) as c:
            return c.call(op, timeout=timeout, **args)

    def _netns(self, pid: int) -> int | None:
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            return None

    def processes(self) -> dict[int, list[Proc]]:
        """Every live process of every node (zombies left out)."""
        owner = {self._netns(n.holder_pid or 0): n.id for n in self.cluster.nodes}
        owner.pop(None, None)
        out: dict[int, list[Proc]] = {n: [] for n in self.ids}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            node = owner.get(self._netns(int(name)))
            if node is None:
                continue
            st = read_stat(int(name))
            try:
                cmd = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if st is not None and not st.ended:
                out[node].append(Proc(st.pid, st.ppid, st.state, cmd))
        return out

    def path(self, node: int, rel: str) -> Path:
        return Path(f"/proc/{self.cluster.node(node).holder_pid}/root") / rel

    def run(self, node: int, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return self.cluster.exec(node, argv, capture_output=True, text=True, timeout=timeout)

    def popen(self, node: int, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        return self.cluster.popen(node, argv, **kw)

    def agent_kill(self, node: int) -> None:
        self.cluster.agent_kill(node)

    def agent_alive(self, node: int) -> bool:
        return Cluster.load(self.cluster.state_dir).node(node).agent_alive()

    def agent_start(self, node: int) -> None:
        self.cluster.agent_start(node, timeout=60)

    def sshd_pid(self, node: int) -> int | None:
        return self.cluster.node(node).sshd_pid

    def link(self, node: int, up: bool) -> None:
        """The node's cable: the host side of its veth, so the node keeps its address and routes."""
        subprocess.run(["ip", "link", "set", self.cluster.node(node).veth, "up" if up else "down"], check=True,
                       timeout=30)  # fmt: skip


# ---------------------------------------------------------------------------------------------- the job
class Chain:
    """Replays bench/faultjob.py's steps and checks the deputy's output against them, line by line."""

    def __init__(self, kib: int) -> None:
        self.buf = ballast(kib)
        self.h = "0" * 16
        self.next = 0
        self.ended = False
        self.partial = b""

    def feed(self, data: bytes) -> list[str]:
        """Check the complete lines in DATA (a partial last line waits); returns the problems."""
        problems: list[str] = []
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            parts = raw.decode(errors="replace").split()
            if self.ended:
                problems.append(f"output after the end line: {raw[:80]!r}")
            elif len(parts) == 4 and parts[0] == "step" and parts[1].isdigit():
                i = int(parts[1])
                if i != self.next:
                    what = "repeated" if i < self.next else "lost"
                    problems.append(f"step {i} after step {self.next - 1}: steps {what}")
                    return problems  # the replay cannot go on from a broken chain
                crc, self.h = step(i, self.h, self.buf)
                if parts[2] != f"{crc:08x}" or parts[3] != self.h:
                    problems.append(f"step {i}: state differs (crc {parts[2]} hash {parts[3]}, expected "
                                    f"{crc:08x} {self.h}): memory restored wrong")  # fmt: skip
                    return problems
                self.next += 1
            elif len(parts) == 3 and parts[0] == "end" and parts[1].isdigit():
                if int(parts[1]) != self.next or parts[2] != self.h:
                    problems.append(f"end line {raw!r} does not close the chain at step {self.next}")
                self.ended = True
            else:
                problems.append(f"unexpected output line {raw[:80]!r}")
        return problems


class Job:
    """One campaign job: `mosrun python3 faultjob.py` started on HOME; its deputy's output is checked."""

    def __init__(self, nodes: Nodes, home: int, work: str, number: int, *, interval: float, kib: int) -> None:
        self.nodes = nodes
        self.home = home
        self.out_path = os.path.join(work, f"job{number}.out")
        self.err_path = os.path.join(work, f"job{number}.err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.deputy = nodes.popen(home, ["--wd=/tmp", "mosrun", PY, JOB, str(interval), str(kib)], stdout=out,
                                      stderr=err, stdin=subprocess.DEVNULL)  # fmt: skip
        self.id = f"{home}:{self.deputy.pid}"
        self.dirname = f"{home}-{self.deputy.pid}"
        self.chain = Chain(kib)
        self.offset = 0
        self.problems: list[str] = []

    def marker(self) -> bytes:
        return f"/{STATE}/jobs/{self.dirname}/out".encode()

    def check_output(self) -> int:
        """Feed the new output to the chain; returns the steps seen so far."""
        with open(self.out_path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        self.problems += self.chain.feed(data)
        return self.chain.next

    def copies(self, procs: dict[int, list[Proc]]) -> dict[int, list[Proc]]:
        """The job's namespace inits per node (a live copy each), with the program under it."""
        found: dict[int, list[Proc]] = {}
        mark = self.marker()
        for node, plist in procs.items():
            for p in plist:
                if b"omview.agent.jobs.jobinit" in p.cmdline and mark in p.cmdline and not p.cmdline.startswith(
                        b"unshare\0"):  # fmt: skip
                    found.setdefault(node, []).append(p)
        return found

    def programs(self, procs: dict[int, list[Proc]], inits: dict[int, list[Proc]]) -> dict[int, list[Proc]]:
        pids = {p.pid for ps in inits.values() for p in ps}
        return {n: [p for p in plist if p.ppid in pids and JOB.encode() in p.cmdline]
                for n, plist in procs.items() if any(p.ppid in pids for p in plist)}  # fmt: skip


# ---------------------------------------------------------------------------------------------- a run
@dataclass
class Call:
    """One proc.migrate request in its own thread."""

    node: int
    target: int
    result: dict[str, Any] | None = None
    error: str = ""
    code: str = ""
    thread: threading.Thread | None = None

    def start(self, nodes: Nodes, job: Job) -> Call:
        def go() -> None:
            try:
                self.result = nodes.call(self.node, "proc.migrate", timeout=MIGRATE_TIMEOUT, job=job.id,
                                         target=str(self.target))  # fmt: skip
            except AgentFault as exc:
                self.code, self.error = fault_name(exc.code), exc.message
            except (OmviewError, OSError) as exc:
                self.code, self.error = "LOST", f"{type(exc).__name__}: {exc}"

        self.thread = threading.Thread(target=go, daemon=True)
        self.thread.start()
        return self

    def wait(self, timeout: float) -> bool:
        assert self.thread is not None
        self.thread.join(timeout)
        return not self.thread.is_alive()


@dataclass
class Run:
    index: int
    seed: int
    kind: str
    method: str = ""
    source: int = 0
    target: int = 0
    detail: str = ""
    outcome: str = ""
    violations: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


class Campaign:
    def __init__(self, nodes: Nodes, work: str, ns: argparse.Namespace) -> None:
        self.nodes = nodes
        self.work = work
        self.ns = ns
        self.runs: list[Run] = []
        self.job: Job | None = None
        self.jobs = 0
        self.home_pids: set[int] = set()
        self.steps = 0  # steps checked in jobs that ended or were replaced
        self.job_runs = 0
        self.reported: set[str] = set()
        self.log = print if not ns.json else (lambda *a, **k: print(*a, **k, file=sys.stderr))

    # ------------------------------------------------------------------ helpers
    def hook(self, node: int, name: str, value: str | None) -> None:
        d = self.nodes.path(node, f"{STATE}/faults")
        d.mkdir(exist_ok=True)
        if value is None:
            (d / name).unlink(missing_ok=True)
        else:
            (d / name).write_text(value)

    def all_up(self, timeout: float = 90.0) -> None:
        """Every agent answers, sees every node up and has finished its criu check."""
        ids = set(self.nodes.ids)
        deadline = time.monotonic() + timeout
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
        self.home_pids.add(job.deputy.pid)
        deadline = time.monotonic() + 60
        while job.check_output() < 3:
            if job.deputy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"job {job.id} did not start: {Path(job.err_path).read_text()[-500:]}")
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
        kind = rng.choice(KINDS)
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
        try:
            calls = self.inject(run, rng, job, client, killed, cleanup)
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
            if restarted:
                self.all_up()
        run.detail += "".join(f"; {c.node}->{c.target}: {c.code or 'ok'}" for c in calls)
        self.check(run, job, calls, t0)
        run.seconds = round(time.monotonic() - t0, 2)
        self.job_runs += 1
        return run

    def inject(self, run: Run, rng: random.Random, job: Job, client: int, killed: list[int],
               cleanup: list[Callable[[], None]]) -> list[Call]:  # fmt: skip
        """Set up RUN's fault, start the migration(s) and fire the fault; returns the calls."""
        nodes, src, tgt, kind = self.nodes, run.source, run.target, run.kind
        moment = rng.uniform(0.0, 1.2)  # seconds after the request: anywhere from pre-flight to commit

        def start() -> list[Call]:
            return [Call(client, tgt).start(nodes, job)]

        def widen() -> None:
            """Half the time, hold the migration in one phase so the fault lands inside it."""
            if rng.random() < 0.5:
                name, node = rng.choice([("stall-transfer", src), ("pause-before-restore", tgt),
                                         ("pause-after-restore", tgt), ("pause-before-restore-call", src)])  # fmt: skip
                secs = round(rng.uniform(0.5, 2.0), 2)
                self.hook(node, name, str(secs))
                run.detail += f"{name}={secs} on {node}; "

        if kind == "none":
            return start()
        if kind == "stall":
            secs = round(rng.uniform(0.2, 2.0), 2)
            self.hook(src, "stall-transfer", str(secs))
            run.detail = f"stall-transfer={secs}"
            return start()
        if kind == "pause":
            name, node = rng.choice([("pause-before-restore", tgt), ("pause-after-restore", tgt),
                                     ("pause-before-restore-call", src)])  # fmt: skip
            secs = round(rng.uniform(0.2, 2.0), 2)
            self.hook(node, name, str(secs))
            run.detail = f"{name}={secs} on {node}"
            return start()
        if kind == "restore-script":
            action = rng.choice(CRIU_ACTIONS)
            script = os.path.join(self.work, f"fail-{action}.sh")
            with open(script, "w") as fh:
                fh.write(f'#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = {action} ] && exit 1\nexit 0\n')
            os.chmod(script, 0o755)
            self.hook(tgt, "restore-action-script", script)
            run.detail = f"criu action script fails at {action}"
            return start()
        if kind == "corrupt-image":
            self.hook(tgt, "corrupt-image", "")
            run.detail = "largest image cut in half on arrival"
            return start()
        if kind == "flip-byte":
            at = rng.randrange(1 << 30)
            self.hook(tgt, "flip-image-byte", str(at))
            run.detail = f"flip-image-byte={at}"
            return start()
        if kind in ("kill-target", "kill-source"):
            victim = tgt if kind == "kill-target" else src
            widen()
            calls = start()
            time.sleep(moment)
            nodes.agent_kill(victim)
            killed.append(victim)
            run.detail += f"agent {victim} killed at {moment:.2f} s"
            return calls
        if kind == "cut-ssh":
            widen()
            side = rng.choice(("target sshd sessions", "source ssh clients"))
            calls = start()
            time.sleep(moment)
            procs = nodes.processes()
            if side == "target sshd sessions":
                victims = [p.pid for p in procs[tgt] if p.cmdline.startswith(b"sshd: ") and p.pid != nodes.sshd_pid(tgt)]
            else:
                victims = [p.pid for p in procs[src] if p.cmdline.split(b"\0")[0] in (b"ssh", b"/usr/bin/ssh")]
            for pid in victims:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            run.detail += f"{side} killed at {moment:.2f} s ({len(victims)} processes)"
            return calls
        if kind == "partition":
            widen()
            victim = rng.choice((src, tgt))
            secs = round(rng.uniform(0.5, 5.0), 2)
            calls = start()
            time.sleep(moment)
            nodes.link(victim, False)
            cleanup.append(lambda: nodes.link(victim, True))
            time.sleep(secs)
            nodes.link(victim, True)
            run.detail += f"node {victim} cut off at {moment:.2f} s for {secs} s"
            return calls
        if kind == "fill-target":
            return self.fill_target(run, rng, job, client, cleanup, moment)
        if kind == "block-target":
            widen()
            calls = start()
            time.sleep(moment)
            nodes.call(tgt, "flags.set", block=True)
            cleanup.append(lambda: nodes.call(tgt, "flags.set", block=False))
            run.detail += f"target blocked at {moment:.2f} s"
            return calls
        if kind == "concurrent":
            other = rng.choice([n for n in (job.home, src) if n != client] or [client])
            second = rng.choice([n for n in nodes.ids if n != src])
            gap = rng.uniform(0.0, 0.3)
            calls = start()
            time.sleep(gap)
            calls.append(Call(other, second).start(nodes, job))
            run.detail = f"second client on node {other} -> {second} after {gap:.2f} s"
            return calls
        raise ValueError(f"unknown fault kind {kind}")

    def fill_target(self, run: Run, rng: random.Random, job: Job, client: int, cleanup: list[Callable[[], None]],
                    moment: float) -> list[Call]:  # fmt: skip
        """The target's image space (its /dev/shm and incoming dir) on small tmpfs mounts of its own,
        filled up before the migration (a refusal) or while the images arrive (a write error)."""
        nodes, tgt = self.nodes, run.target
        mounts = ["/dev/shm", f"/{STATE}/incoming"]
        for m in mounts:
            r = nodes.run(tgt, ["mount", "-t", "tmpfs", "-o", "size=48m", "omv-faults-full", m])
            if r.returncode != 0:
                raise RuntimeError(f"mount on node {tgt} failed: {r.stderr}")
            cleanup.append(functools.partial(self._umount, run, tgt, m))
        # cleanup runs in reverse: leftovers inside the mounts are looked for first (the unmount would hide
        # them), then the filler goes, then the mounts
        def unfill() -> None:
            for m in mounts:
                nodes.run(tgt, ["rm", "-f", f"{m}/omv-faults-filler"])

        cleanup.append(unfill)
        cleanup.append(lambda: self.leftovers(run, self.job, None, nodes_=[tgt], jobs=False))

        def fill() -> None:
            for m in mounts:
                nodes.run(tgt, ["dd", "if=/dev/zero", f"of={m}/omv-faults-filler", "bs=1M"], timeout=60)

        if rng.random() < 0.3:
            fill()
            run.detail = "image space full before the migration"
            return [Call(client, tgt).start(nodes, job)]
        self.hook(run.source, "stall-transfer", str(round(rng.uniform(1.0, 2.0), 2)))
        calls = [Call(client, tgt).start(nodes, job)]
        time.sleep(moment)
        fill()
        run.detail = f"image space filled at {moment:.2f} s"
        return calls

    def _umount(self, run: Run, node: int, mount: str) -> None:
        r = self.nodes.run(node, ["umount", mount])
        if r.returncode != 0:
            # something still holds a file there: that is a leftover; detach it so the campaign goes on
            run.violations.append(("leftover", f"node {node}: umount {mount}: {r.stderr.strip()}"))
            self.nodes.run(node, ["umount", "-l", mount])

    # ------------------------------------------------------------------ the invariants
    def check(self, run: Run, job: Job, calls: list[Call], t0: float) -> None:
        """Wait (bounded) for the job to settle, then check every invariant; record the outcome."""
        deadline = time.monotonic() + SETTLE
        seen_before = job.check_output()
        last: dict[str, Any] = {}
        while True:
            procs = self.nodes.processes()
            inits = job.copies(procs)
            n_copies = sum(len(v) for v in inits.values())
            stopped = [p.pid for ps in inits.values() for p in ps if p.state in "Tt"]
            progs = job.programs(procs, inits)
            stopped += [p.pid for ps in progs.values() for p in ps if p.state in "Tt"]
            status = self._status(job)
            steps = job.check_output()
            last = {"inits": {n: [p.pid for p in ps] for n, ps in inits.items()},
                    "programs": {n: [p.pid for p in ps] for n, ps in progs.items()}, "stopped": stopped,
                    "status": status, "steps": steps}  # fmt: skip
            ok = (n_copies == 1 and not stopped and sum(len(v) for v in progs.values()) == 1
                  and set(progs) == set(inits) and status.get("where") in inits and status.get("state") == "running"
                  and steps > seen_before)  # fmt: skip
            if ok and self._hosting_agrees(job, next(iter(inits)), inits):
                break
            if job.problems or job.deputy.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        n_copies = sum(len(v) for v in last["inits"].values())
        if job.problems:
            run.violations.append(("chain", "; ".join(job.problems[:3])))
        if job.deputy.poll() is not None:
            run.violations.append(("deputy", f"the deputy exited {job.deputy.returncode}: "
                                             f"{Path(job.err_path).read_text()[-300:]}"))  # fmt: skip
        if n_copies == 0:
            run.violations.append(("lost", f"no live copy of {job.id} on any node ({last})"))
        elif n_copies > 1:
            run.violations.append(("duplicated", f"{n_copies} live copies of {job.id}: {last['inits']}"))
        elif last["stopped"]:
            run.violations.append(("stopped", f"the copy is stopped: {last}"))
        elif last["steps"] <= seen_before:
            run.violations.append(("stalled", f"no new step within {SETTLE:g} s: {last}"))
        elif last["status"].get("where") not in last["inits"] or last["status"].get("state") != "running":
            run.violations.append(("view", f"home node says {last['status']}, the copy is on "
                                           f"{list(last['inits'])}"))  # fmt: skip
        elif not self._hosting_agrees(job, next(iter(last["inits"])), None):
            run.violations.append(("view", f"the hosting node's record does not match its copy: {last}"))
        where = next(iter(last["inits"])) if n_copies == 1 else None
        if not run.violations:
            self.leftovers(run, job, where)
        run.outcome = self.outcome(run, job.id, calls, where, t0)

    def _status(self, job: Job) -> dict[str, Any]:
        try:
            return dict(self.nodes.call(job.home, "job.status", timeout=20, job=job.id))
        except (OmviewError, OSError) as exc:
            return {"error": str(exc)}

    def _hosting_agrees(self, job: Job, node: int, inits: dict[int, list[Proc]] | None) -> bool:
        """The node the copy is on has the job running there, with that init's PID."""
        if inits is None:
            inits = job.copies(self.nodes.processes())
        try:
            st = self.nodes.call(node, "job.status", timeout=20, job=job.id)
        except (OmviewError, OSError):
            return False
        return bool(st.get("where") == node and st.get("state") == "running"
                    and st.get("pid") in [p.pid for p in inits.get(node, [])])  # fmt: skip

    def leftovers(self, run: Run, job: Job | None, where: int | None, wait: float = 15.0,
                  nodes_: list[int] | None = None, jobs: bool = True) -> None:
        """Images, tmpfs image directories, job-directory copies, temporary files and criu processes
        that outlived the migrations (logs and fence markers are kept on purpose: docs/migration.md)."""
        deadline = time.monotonic() + wait
        while True:
            found = self._find_leftovers(job if jobs else None, where, nodes_ or self.nodes.ids)
            if not found or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        for what in found:
            if what not in self.reported:  # a leftover is one violation, in the run that made it
                self.reported.add(what)
                run.violations.append(("leftover", what))

    def _find_leftovers(self, job: Job | None, where: int | None, ids: list[int]) -> list[str]:
        found: list[str] = []
        ours = tuple(f"-{pid}" for pid in self.home_pids)
        shm: set[str] = set()
        for n in ids:
            with contextlib.suppress(OSError):
                shm |= {e for e in os.listdir(self.nodes.path(n, "dev/shm"))
                        if e.startswith(("omview-in-", "omview-out-")) and e.endswith(ours)}  # fmt: skip
            var = self.nodes.path(n, STATE)
            for sub in ("mig", "incoming"):
                with contextlib.suppress(OSError):
                    for entry in os.scandir(var / sub):
                        for inner in os.listdir(entry.path):
                            p = os.path.join(entry.path, inner)
                            if inner == "images" or (os.path.isdir(p) and not os.path.islink(p)):
                                found.append(f"node {n}: {sub}/{entry.name}/{inner}")
                            elif inner.endswith(".tmp"):
                                found.append(f"node {n}: {sub}/{entry.name}/{inner}")
            with contextlib.suppress(OSError):
                for name in os.listdir(var / "jobs"):
                    if ".stale-" in name or name.endswith(".tmp"):
                        found.append(f"node {n}: jobs/{name}")
                    elif job is not None and name == job.dirname and n != where:
                        found.append(f"node {n}: jobs/{name} of a job that does not run there")
            with contextlib.suppress(OSError):
                found += [f"node {n}: {e}" for e in os.listdir(var) if e.endswith(".tmp")]
        found += [f"/dev/shm/{e}" for e in sorted(shm)]
        for n, plist in self.nodes.processes().items():
            if n in ids:
                found += [f"node {n}: criu process {p.pid} ({p.cmdline[:60]!r})" for p in plist
                          if os.path.basename(p.cmdline.split(b"\0")[0]) == b"criu"]  # fmt: skip
        return found

    def outcome(self, run: Run, job_id: str, calls: list[Call], where: int | None, t0: float) -> str:
        if where is None:
            return "violation"
        if where != run.source:
            return "moved"
        if any(c.code == "LOST" for c in calls):
            return "client lost, stayed"
        if any(c.result for c in calls):
            return "moved back"  # concurrent: one moved it away, the other brought it back?
        dumped = False
        since = time.time() - (time.monotonic() - t0) - 1
        with contextlib.suppress(OmviewError, OSError):
            hist = self.nodes.call(run.source, "migration.history", timeout=20, limit=10)["migrations"]
            dumped = any(rec.get("job") == job_id and rec.get("started", 0) >= since
                         and "CRIU logs kept" in str(rec.get("error")) for rec in hist)  # fmt: skip
        return "rolled back" if dumped else "refused"

    # ------------------------------------------------------------------ job turnover
    def end_job(self, run: Run | None) -> None:
        """SIGTERM through the deputy: the job ends its chain with `end`, exit 7, nothing left behind."""
        job = self.job
        if job is None:
            return
        self.job = None
        last = self.where(job)  # an ended job's directory stays where it ended (job.output reads it)
        if job.deputy.poll() is None:
            os.kill(job.deputy.pid, signal.SIGTERM)
        try:
            rc = job.deputy.wait(90)
        except subprocess.TimeoutExpired:
            rc = None
        job.check_output()
        if job.chain.partial:
            job.problems += job.chain.feed(b"\n")
        problems = list(job.problems)
        if run is not None and rc != 7 and not run.violations:
            problems.append(f"the deputy exited {rc}, not 7: {Path(job.err_path).read_text()[-300:]}")
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
                self.leftovers(run, job, last)

    def _kill_copies(self, job: Job) -> None:
        """Every copy of the job still alive anywhere (after a violation, or a deputy that did not end)."""
        deadline = time.monotonic() + 20
        while True:
            inits = job.copies(self.nodes.processes())
            if not inits:
                return
            if time.monotonic() > deadline:
                for ps in inits.values():
                    for p in ps:
                        with contextlib.suppress(OSError):
                            os.kill(p.pid, signal.SIGKILL)
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
                self.log(f"  replay: bench/faults.py --seed {run.seed} --runs 1 --only {run.kind}"
                         f"   (node {run.source} -> {run.target}, {run.method}; {run.detail})")  # fmt: skip
                self.replace_job(run)
                if self.ns.stop:
                    break
            elif self.job_runs >= self.ns.job_runs or i == self.ns.runs - 1:
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

    def summary(self, seconds: float) -> dict[str, Any]:
        by_kind: dict[str, Counter[str]] = defaultdict(Counter)
        viol: Counter[str] = Counter()
        for r in self.runs:
            by_kind[r.kind][r.outcome] += 1
            for what, _ in r.violations:
                viol[what] += 1
        return {
            "cluster": self.nodes.describe(), "seed": self.ns.seed, "runs": len(self.runs), "jobs": self.jobs,
            "seconds": round(seconds, 1), "steps_checked": self.steps,
            "faults": {k: sum(c.values()) for k, c in sorted(by_kind.items())},
            "outcomes": {k: dict(c) for k, c in sorted(by_kind.items())},
            "violations": dict(viol), "lost": viol["lost"], "duplicated": viol["duplicated"],
            "failed_runs": [{"run": r.index, "seed": r.seed, "kind": r.kind, "source": r.source, "target": r.target,
                             "method": r.method, "detail": r.detail, "violations": r.violations}
                            for r in self.runs if r.violations],
        }  # fmt: skip


def print_summary(s: dict[str, Any], ns: argparse.Namespace) -> None:
    print(f"omview fault campaign: {s['cluster']}, seed {s['seed']}, {s['runs']} runs, {s['jobs']} jobs, "
          f"{s['seconds']:.0f} s ({s['steps_checked']} job steps checked)")  # fmt: skip
    outcomes = sorted({o for c in s["outcomes"].values() for o in c})
    print(f"{'fault':<15}{'runs':>5}  " + "  ".join(f"{o:>12}" for o in outcomes))
    for kind, c in s["outcomes"].items():
        print(f"{kind:<15}{s['faults'][kind]:>5}  " + "  ".join(f"{c.get(o, 0):>12}" for o in outcomes))
    total = Counter[str]()
    for c in s["outcomes"].values():
        total.update(c)
    print(f"{'all':<15}{s['runs']:>5}  " + "  ".join(f"{total.get(o, 0):>12}" for o in outcomes))
    v = s["violations"]
    others = ", ".join(f"{n} {k}" for k, n in sorted(v.items()) if k not in ("lost", "duplicated"))
    print(f"violations: {s['lost']} lost, {s['duplicated']} duplicated, {others or 'no other'}")
    for r in s["failed_runs"]:
        print(f"  run {r['run']} seed {r['seed']} {r['kind']}: {r['violations']}")
        print(f"    replay: bench/faults.py --seed {r['seed']} --runs 1 --only {r['kind']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100, help="migrations, each with one fault (default 100)")
    ap.add_argument("--seed", type=int, default=1, help="run i uses seed SEED+i (default 1)")
    ap.add_argument("--only", choices=KINDS, help="every run gets this fault (replay a violation)")
    ap.add_argument("--nodes", type=int, default=3, choices=(2, 3, 4), help="cluster size (default 3)")
    ap.add_argument("--job-runs", type=int, default=40, help="runs per job before it is ended and checked")
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between the job's steps")
    ap.add_argument("--kib", type=int, default=1024, help="the job's ballast (KiB)")
    ap.add_argument("--max-seconds", type=float, default=0, help="start no run after this long (0: no limit)")
    ap.add_argument("--state", help="cluster state dir (default: a temporary one)")
    ap.add_argument("--stop", action="store_true", help="stop at the first violation")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON (progress to stderr)")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per run")
    ns = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/faults.py needs root (it builds a namespace cluster)", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="omview-faults-")
    os.chmod(work, 0o755)
    state = ns.state or os.path.join(work, "cluster")
    t0 = time.monotonic()
    cluster = Cluster.up(state, ns.nodes, cpus_per_node=1)
    camp: Campaign | None = None
    try:
        camp = Campaign(NamespaceNodes(cluster), work, ns)
        camp.all_up()
        camp.go()
    finally:
        if camp is not None and camp.job is not None:
            with contextlib.suppress(Exception):
                camp.end_job(None)
        teardown(state)
        shutil.rmtree(work, ignore_errors=True)
    s = camp.summary(time.monotonic() - t0)
    if ns.json:
        print(json.dumps(s, indent=2, sort_keys=True))
    else:
        print_summary(s, ns)
    return 1 if s["failed_runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
