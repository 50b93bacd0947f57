"""The faults: each run's fault is drawn here, set up, and fired while the migration runs (agent
fault hooks, agents or whole VMs killed by PID, SSH cut, a link down, a full image space, a block,
a second client)."""

from __future__ import annotations

import contextlib
import functools
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from faultlab.job import Job
from faultlab.nodes import Nodes
from faultlab.scan import STATE
from omview.model.errors import AgentFault, OmviewError
from omview.model.protocol import fault_name

#: fault kinds on every cluster; kill-vm only where nodes are machines (--vm)
KINDS = ("none", "stall", "pause", "restore-script", "corrupt-image", "flip-byte", "kill-target", "kill-source",
         "cut-ssh", "partition", "fill-target", "block-target", "concurrent")  # fmt: skip
MACHINE_KINDS = ("kill-vm",)
#: hook files a run may leave on; `method` is set per run
HOOKS = ("stall-transfer", "pause-before-restore", "pause-after-restore", "pause-before-restore-call",
         "restore-action-script", "corrupt-image", "flip-image-byte")  # fmt: skip
CRIU_ACTIONS = ("pre-restore", "post-setup-namespaces", "post-restore", "pre-resume", "post-resume")
MIGRATE_TIMEOUT = 400.0  # proc.migrate: restore (120 s) + fence window (30 s) + transfer, with room


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
    machine: int = 0  # kill-vm: the node whose machine was killed
    detail: str = ""
    outcome: str = ""
    violations: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


class Injector:
    """Sets up and fires the faults; HOOK writes an agent fault hook, LEFTOVERS checks a node's
    leftovers (fill-target looks inside its mounts before they go)."""

    def __init__(self, nodes: Nodes, work: str, hook: Callable[[int, str, str | None], None],
                 leftovers: Callable[[Run, Job | None, int | None, list[int]], None]) -> None:  # fmt: skip
        self.nodes, self.work, self.hook, self.leftovers = nodes, work, hook, leftovers

    def inject(self, run: Run, rng: random.Random, job: Job, client: int, killed: list[int],
               cleanup: list[Callable[[], None]]) -> list[Call]:  # fmt: skip
        """Set up RUN's fault, start the migration(s) and fire the fault; returns the calls."""
        nodes, src, tgt, kind = self.nodes, run.source, run.target, run.kind
        # seconds after the request: anywhere from pre-flight to commit (the same draw on every cluster,
        # so a seed replays the same run; a slower cluster stretches it)
        moment = rng.uniform(0.0, 1.2) * nodes.pace

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
            script = f"/tmp/omview-fail-{action}.sh"  # in the target's own file system (a VM has one)
            nodes.write(tgt, script[1:], f'#!/bin/sh\n[ "$CRTOOLS_SCRIPT_ACTION" = {action} ] && exit 1\nexit 0\n')
            nodes.run(tgt, ["chmod", "755", script])
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
            if side == "target sshd sessions":
                node, victims = tgt, nodes.link_sessions(tgt)
            else:
                procs = nodes.processes()
                node, victims = src, [p.pid for p in procs[src] if p.cmdline.split(b"\0")[0] in (b"ssh", b"/usr/bin/ssh")]
            for pid in victims:
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    nodes.kill(node, pid, signal.SIGKILL)
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
        if kind == "kill-vm":
            # the whole machine of the source or the target, never the home node's (the deputy, the
            # user's end, lives there); booted again (fresh disk) before the checks
            victim = rng.choice([n for n in (src, tgt) if n != job.home])
            widen()
            calls = start()
            time.sleep(moment)
            nodes.kill_machine(victim)
            run.machine = victim
            cleanup.append(lambda: nodes.boot_machine(victim))
            run.detail += f"VM {victim} ({'source' if victim == src else 'target'}) killed at {moment:.2f} s"
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
        cleanup.append(lambda: self.leftovers(run, None, None, [tgt]))

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
