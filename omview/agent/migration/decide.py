"""L2 agent: the balancer's decision, pure and deterministic (stdlib only, no I/O, no clock).

One call, ``decide(here, peers, candidates)``, answers what one node should do now: move job X to
node N (with this node's load, N's load and the expected gain) or hold (and why). The agent's
balancer (balancer.py) feeds it what the node measured and what its peers gossiped;
``bench/balance.py`` imports it to drive its simulated nodes, so the simulator tests this very code.
``best_rate`` is also what ``migrate PID best`` and ``expel`` use (placement.best_node).

Loads are runnable processes normalised by speed and CPUs (what a real node sees of its own work),
never per-process CPU shares, which on a test cluster sharing one machine's cores are diluted by
the other "nodes" (docs/migration.md, "Automatic balancing").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from omview.model.cluster import STD_SPEED

#: how often a node decides (seconds; MOSIX: every second), how long it waits after a move (one full
#: sample of its own load without the job), and how long a job it sent counts at the receiver (its
#: gossiped load catches up within a few seconds)
BALANCE_EVERY = 1.0
COOLDOWN = 2.0
ARRIVAL_MEMORY = 8.0
#: a move must make the job run this much faster than here: the stability margin against ping-pong.
#: Kerrighed's MOSIX balancer uses 130 %; bench/balance.py shows that on mixed-speed clusters 1.3
#: costs more than one migration per job (lone jobs hopping to slightly faster idle nodes) for about
#: 1 % of slowdown, so 1.4 (docs/migration.md)
STAB_FACTOR = 1.4
#: a job's CPU statistic (percent of one CPU it wants) must reach this share of what one runnable
#: process gets here to count as CPU-bound
MIN_SHARE = 30.0
#: a job that arrived by migration less than this many seconds ago does not move again (no ping-pong)
HOLD_OFF = 20.0
#: a node is short of memory when its free memory is below this fraction of its total; a move may
#: not leave a target below it either (so an ushered job is not ushered straight on)
MEM_LOW = 0.10
#: what a move costs the job (frozen or slowed): a fixed part plus its memory at a bandwidth
#: (bench/migrate.py: 0.07-0.15 s frozen for 10 MiB; a 1 Gbit/s network carries ~110 MB/s)
MOVE_FIXED = 0.1
MOVE_BANDWIDTH = 100 * 1024 * 1024


@dataclass(frozen=True)
class Node:
    """One node as the deciding node sees it (itself from its own measurement, peers from gossip)."""

    id: int
    speed: int = STD_SPEED
    cpus: int = 1
    #: runnable processes (demand), not normalised; the node's own jobs included
    runnable: float = 0.0
    free: int = 0  # bytes of free memory (none known: no room for a job of known size)
    total: int = 0  # bytes of memory
    up: bool = True
    block: bool = False
    quiet: bool = False

    @property
    def load(self) -> int:
        """The openMosix load: 100 per reference-speed CPU kept busy (what mosctl and gossip show)."""
        return int(round(100.0 * self.runnable * STD_SPEED / max(1, self.speed)))

    @staticmethod
    def runnable_from_load(load: float, speed: int) -> float:
        """Invert ``load``: runnable processes behind an openMosix load gossiped by a node of SPEED."""
        return max(0.0, load * max(1, speed) / (100.0 * STD_SPEED))


@dataclass(frozen=True)
class Here(Node):
    """The deciding node: also its switches."""

    stay: bool = False
    lstay: bool = False


@dataclass(frozen=True)
class Candidate:
    """A job running on the deciding node."""

    id: str
    cpu: float  # its statistic: percent of one CPU it wants (jobs/stats.py, with its decay hint)
    rss: int = 0  # bytes
    hints: tuple[str, ...] = ()
    home: int = 0
    lock: bool = False
    #: seconds since it arrived here by migration; None if it never moved (no hold-off)
    since_move: float | None = None
    #: migrations so far: the hold-off doubles with each (hold_off, 2x, 4x ...), so a job that
    #: keeps finding a better node settles
    moves: int = 0
    #: seconds since it started (on any node): with heavy-tailed run times, the expected remaining
    #: time grows with it; a move must be repaid by the time it saves (Harchol-Balter & Downey 1997)
    age: float = math.inf


@dataclass(frozen=True)
class Settings:
    stab_factor: float = STAB_FACTOR
    min_share: float = MIN_SHARE
    hold_off: float = HOLD_OFF
    mem_low: float = MEM_LOW
    move_fixed: float = MOVE_FIXED
    move_bandwidth: float = MOVE_BANDWIDTH


@dataclass(frozen=True)
class Decision:
    """What to do now. ``action`` is "move" or "hold"; ``reason`` a stable code, ``text`` for humans.

    Move reasons: ``load`` (the job runs faster there), ``memory`` (memory ushering). Hold reasons:
    ``stay``, ``quiet``, ``no-candidate``, ``balanced``, ``young``, ``no-target``, ``no-room``.
    """

    action: str
    reason: str
    text: str
    job: str = ""
    target: int = 0
    my_load: int = 0
    its_load: int = 0
    gain: float = 0.0  # expected speed-up of the job: its rate there / its rate here
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def move(self) -> bool:
        return self.action == "move"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rate(node: Node, *, extra: float) -> float:
    """Speed one CPU-bound process gets on NODE with EXTRA processes added to its runnable ones
    (1 for a newcomer, 0 for a job counted there already): speed * min(1, cpus / processes)."""
    x = node.runnable + extra
    return node.speed * min(1.0, node.cpus / x) if x > 0 else float(node.speed)


def move_cost(rss: int, settings: Settings = Settings()) -> float:
    """Seconds a move of a job of RSS bytes costs it (estimate)."""
    return settings.move_fixed + max(0, rss) / settings.move_bandwidth


def low_mark(node: Node, settings: Settings = Settings()) -> int:
    """Free memory below which NODE is short (0 when its total is unknown)."""
    return int(node.total * settings.mem_low)


def has_room(node: Node, rss: int, settings: Settings = Settings()) -> bool:
    """NODE can take a job of RSS bytes (0 = unknown: any node) without falling short of memory itself."""
    if rss <= 0:
        return True
    return node.free - rss >= low_mark(node, settings)


def best_rate(nodes: Iterable[Node], rss: int = 0, settings: Settings = Settings()) -> tuple[Node, float] | None:
    """The node (up, not blocked, not quiet, with room for RSS) where a newcomer runs fastest, with
    its rate; the lowest ID wins ties. None when no node qualifies."""
    best: tuple[Node, float] | None = None
    for n in sorted(nodes, key=lambda n: n.id):
        if not n.up or n.block or n.quiet or not has_room(n, rss, settings):
            continue
        r = rate(n, extra=1.0)
        if best is None or r > best[1] + 1e-9:
            best = (n, r)
    return best


def _fmt_mib(n: int) -> str:
    return f"{n / 1048576:.0f} MiB"


def hold_off(c: Candidate, settings: Settings = Settings()) -> float:
    """Seconds C must stay after arriving: hold_off, doubled for each earlier migration."""
    return settings.hold_off * 2.0 ** max(0, min(c.moves, 8) - 1)


def eligible(here: Here, cands: Sequence[Candidate], settings: Settings) -> tuple[list[Candidate], dict[str, int]]:
    """The jobs the switches and hold-offs let move, and how many each rule held back."""
    out: list[Candidate] = []
    held = {"lock": 0, "lstay": 0, "hold-off": 0}
    for c in cands:
        if c.lock:
            held["lock"] += 1
        elif here.lstay and c.home == here.id:
            held["lstay"] += 1
        elif c.since_move is not None and c.since_move < hold_off(c, settings):
            held["hold-off"] += 1
        else:
            out.append(c)
    return out, held


def cpu_bound(here: Here, movable: Sequence[Candidate], settings: Settings) -> list[Candidate]:
    """The CPU-bound jobs among MOVABLE, hungriest first: statistic >= min_share % of what one
    runnable process gets here (a CPU, or cpus/runnable on an overloaded node), or hinted cpujob;
    never iojob (an I/O-bound job gains nothing from another CPU)."""
    fair = 100.0 * min(1.0, here.cpus / max(1.0, here.runnable))
    out = [c for c in movable if "iojob" not in c.hints
           and (c.cpu >= settings.min_share / 100.0 * fair or "cpujob" in c.hints)]  # fmt: skip
    return sorted(out, key=lambda c: (-c.cpu, -c.age, c.id))


def _hold(reason: str, text: str, here: Here, **details: Any) -> Decision:
    return Decision("hold", reason, text, my_load=here.load, details=details)


def decide(here: Here, peers: Iterable[Node], cands: Sequence[Candidate], settings: Settings = Settings()) -> Decision:
    """What HERE should do now with its jobs CANDS, given PEERS (documented in docs/migration.md).

    1. ``stay`` or ``quiet``: hold. Locked jobs, local jobs under ``lstay`` and jobs that arrived
       less than ``hold_off`` seconds ago are not moved.
    2. Memory ushering: when HERE's free memory is below ``mem_low`` of its total, move the smallest
       job whose departure ends the shortage (else the biggest) to the fastest node with room for
       it, whatever the loads.
    3. Load: the most CPU-hungry CPU-bound job (statistic >= ``min_share`` % of what one process
       gets here, or hinted ``cpujob``; never ``iojob``) moves to the node where it would run fastest,
       if that rate beats its rate here by ``stab_factor`` and the time it saves - its age as the
       estimate of its remaining time, times 1 - 1/gain - repays the move's cost (``move_cost``);
       else the next hungriest. Targets must have room for its memory.
    """
    if here.stay:
        return _hold("stay", f"node {here.id} has stay set: no automatic migration", here)
    if here.quiet:
        return _hold("quiet", f"node {here.id} is quiet: it does not balance", here)
    targets = [p for p in peers if p.id != here.id and p.up and not p.block and not p.quiet]
    movable, held = eligible(here, cands, settings)
    short = here.total > 0 and here.free < low_mark(here, settings)
    if short and movable:
        need = low_mark(here, settings) - here.free
        by_size = sorted(movable, key=lambda c: (c.rss, c.id))
        enough = [c for c in by_size if c.rss >= need]
        order = enough + [c for c in reversed(by_size) if c not in enough]
        for job in order:
            got = best_rate(targets, job.rss, settings)
            if got is None:
                continue
            node, r = got
            mine = rate(here, extra=0.0)
            return Decision(
                "move", "memory",
                f"node {here.id} is short of memory ({_fmt_mib(here.free)} free of {_fmt_mib(here.total)}): "
                f"job {job.id} ({_fmt_mib(job.rss)}) to node {node.id} ({_fmt_mib(node.free)} free)",
                job=job.id, target=node.id, my_load=here.load, its_load=node.load,
                gain=round(r / mine, 3) if mine > 0 else 0.0,
                details={"free": here.free, "total": here.total, "rss": job.rss, "target_free": node.free},
            )  # fmt: skip
        return _hold("no-room", f"node {here.id} is short of memory ({_fmt_mib(here.free)} free) but no node "
                     "has room for any of its movable jobs", here, held=held)  # fmt: skip
    hungry = cpu_bound(here, movable, settings)
    if not hungry:
        return _hold("no-candidate", f"node {here.id}: no CPU-bound job may move ({len(cands)} job(s) here)",
                     here, held=held, jobs=len(cands))  # fmt: skip
    mine = rate(here, extra=0.0)
    first: Decision | None = None  # the hold to report if no job moves: about the hungriest job
    for job in hungry:
        got = best_rate(targets, job.rss, settings)
        if got is None:
            first = first or _hold("no-target", f"node {here.id}: no node up, open and with room for job {job.id}",
                                   here, held=held)  # fmt: skip
            continue
        node, r = got
        gain = r / mine if mine > 0 else math.inf
        common: dict[str, Any] = {"job": job.id, "target": node.id, "my_load": here.load, "its_load": node.load,
                                  "gain": round(gain, 3) if math.isfinite(gain) else 0.0}  # fmt: skip
        if r <= mine * settings.stab_factor + 1e-9:
            first = first or Decision(
                "hold", "balanced",
                f"node {here.id} (load {here.load}) is balanced: the best node {node.id} (load {node.load}) would "
                f"run job {job.id} {gain:.2f}x as fast, not more than {settings.stab_factor:.2f}x",
                details={"held": held}, **common,
            )  # fmt: skip
            continue
        cost = move_cost(job.rss, settings)
        saved = job.age * (1.0 - 1.0 / gain)  # a job's expected remaining run time grows with its age
        if saved < cost:
            first = first or Decision(
                "hold", "young",
                f"node {here.id}: job {job.id} would run {gain:.2f}x as fast on node {node.id} but is too young "
                f"({job.age:.1f} s) to repay a move of about {cost:.2f} s",
                details={"held": held, "age": round(job.age, 2), "cost": round(cost, 3)}, **common,
            )  # fmt: skip
            continue
        return Decision(
            "move", "load",
            f"node {here.id} (load {here.load}) moves job {job.id} (CPU {job.cpu:.0f}%) to node {node.id} "
            f"(load {node.load}): expected {gain:.2f}x as fast",
            details={"cpu": round(job.cpu, 1), "rss": job.rss}, **common,
        )  # fmt: skip
    assert first is not None
    return first
