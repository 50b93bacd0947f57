"""openmosixmigmon: what the monitor knows (no Qt) - the entry node's processes, where each runs, and
the moves to animate, from two sources: the agents' migration events (first) and the process list
polled once a second (the fallback, and what fills in everything else).

A poll that left before an event about a process arrived says nothing new about where that process
is: it must not move the square back (``apply_list`` takes the time the poll was sent).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from omview.model.cluster import ProcessInfo


class Scope(StrEnum):
    """Which processes are drawn."""

    MINE = "mine"
    MIGRATABLE = "all migratable"
    ALL = "all"


def shown(p: ProcessInfo, scope: Scope, uid: int, entry: int) -> bool:
    """Whether ``p`` (a row of the entry node's procs.list) is drawn under ``scope``."""
    if p.helper_of:
        return False  # a job's plumbing: the job is one square
    if scope is Scope.ALL:
        return True
    away = p.where not in (0, entry) or p.home not in (0, entry)
    if scope is Scope.MINE:
        return p.uid == uid
    return away or not (p.cantmove or p.lock)


@dataclass
class Mark:
    """One square: a process of the entry node's list and where it runs now."""

    key: int  # the PID the entry node lists it under (a job of the entry: its home PID)
    proc: ProcessInfo
    where: int  # node ID it runs on
    home: int
    frozen_s: float | None = None  # the last move's frozen time
    moving_to: int | None = None  # a migration started and has not ended yet
    changed_at: float = 0.0  # when an event last said where it is (monotonic)

    @property
    def migrated(self) -> bool:
        return self.where != self.home

    def tooltip(self) -> str:
        p = self.proc
        cmd = " ".join(p.cmdline) or f"[{p.name}]"
        lines = [f"PID {p.pid}" + (f"  (job {p.job})" if p.job else ""), cmd[:200],
                 f"home node: {self.home}", f"runs on node {self.where}"]  # fmt: skip
        if self.moving_to is not None:
            lines.append(f"migrating to node {self.moving_to}…")
        if self.migrated and self.frozen_s is not None:
            lines.append(f"last move: frozen {self.frozen_s * 1000:.0f} ms")
        if p.cantmove or p.lock:
            lines.append(f"cannot migrate: {p.cantmove or 'locked'}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Move:
    """A square to animate from one node's ring to another's; ``cause`` is "event" or "poll"."""

    key: int
    source: int
    target: int
    cause: str


@dataclass
class MigState:
    """The squares of the entry node ``entry`` (its node ID, 0 until the first list)."""

    entry: int = 0
    scope: Scope = Scope.MIGRATABLE
    uid: int = 0  # whose processes are "mine": the user the agents know us as
    marks: dict[int, Mark] = field(default_factory=dict)
    #: job id -> (source, target, when) of recent finished migrations, for squares that appear
    #: after their move (a guest arriving at the entry node)
    recent: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    #: job id -> the last move's frozen time (from migration.history and events)
    frozen: dict[str, float] = field(default_factory=dict)
    #: squares whose colour changed in the last apply_list (cantmove, lock, home)
    restyled: set[int] = field(default_factory=set)
    _listed: tuple[ProcessInfo, ...] = ()

    def _where(self, p: ProcessInfo) -> int:
        return self.entry if p.where in (0, self.entry) else p.where

    def _home(self, p: ProcessInfo) -> int:
        return self.entry if p.home in (0, self.entry) else p.home

    def apply_list(self, entry: int, procs: tuple[ProcessInfo, ...], sent_at: float) -> tuple[list[Move], list[int], list[int]]:  # fmt: skip
        """The entry node's process list (asked at ``sent_at``): (moves, appeared keys, gone keys)."""
        self.entry = entry
        self._listed = procs
        now = time.monotonic()
        moves: list[Move] = []
        appeared: list[int] = []
        wanted = {p.pid: p for p in procs if shown(p, self.scope, self.uid, entry)}
        self.restyled = set()
        gone = [k for k in self.marks if k not in wanted]
        for k in gone:
            del self.marks[k]
        for pid, p in wanted.items():
            where, home = self._where(p), self._home(p)
            mark = self.marks.get(pid)
            if mark is None:
                mark = self.marks[pid] = Mark(pid, p, where, home, self.frozen.get(p.job))
                appeared.append(pid)
                came = self.recent.get(p.job) if p.job else None
                if came is not None and came[1] == where and now - came[2] < 10.0 and came[0] != where:
                    moves.append(Move(pid, came[0], where, "event"))
                continue
            old = mark.proc
            if (old.cantmove, old.lock) != (p.cantmove, p.lock) or mark.home != home:
                self.restyled.add(pid)
            mark.proc, mark.home = p, home
            if mark.frozen_s is None and p.job in self.frozen:
                mark.frozen_s = self.frozen[p.job]
            if mark.changed_at > sent_at:
                continue  # an event after this poll left knows better where it is
            if where != mark.where:
                moves.append(Move(pid, mark.where, where, "poll"))
                mark.where = where
                mark.moving_to = None
                self.restyled.add(pid)
        return moves, appeared, gone

    def set_scope(self, scope: Scope) -> tuple[list[int], list[int]]:
        """Draw another choice of processes (from the last list): (appeared, gone)."""
        self.scope = scope
        _moves, appeared, gone = self.apply_list(self.entry, self._listed, time.monotonic())
        return appeared, gone

    def find(self, data: dict[str, Any]) -> Mark | None:
        """The square a migration record is about (by job id, else by home node and home PID)."""
        job = str(data.get("job") or "")
        for mark in self.marks.values():
            if job and mark.proc.job == job:
                return mark
        try:
            home = int(job.split(":")[0]) if job else int(data.get("source", 0))
            pid = int(data.get("pid", 0))
        except ValueError:
            return None
        found = self.marks.get(pid)
        return found if found is not None and found.home == home else None

    def apply_event(self, name: str, data: Any) -> tuple[Mark | None, Move | None]:
        """One agent event: the square it is about (None: not drawn) and the move it makes."""
        if not isinstance(data, dict) or not name.startswith("migration."):
            return None, None
        try:
            source, target = int(data["source"]), int(data["target"])
        except (KeyError, TypeError, ValueError):
            return None, None
        job = str(data.get("job") or "")
        now = time.monotonic()
        mark = self.find(data)
        if name == "migration.started":
            if mark is not None:
                mark.moving_to = target
            return mark, None
        if name == "migration.failed":
            if mark is not None:
                mark.moving_to = None
                mark.changed_at = now
            return mark, None
        if name != "migration.done":
            return mark, None  # events of newer agents (phases): nothing to draw yet
        frozen = data.get("frozen_s")
        if job and isinstance(frozen, (int, float)):
            self.frozen[job] = float(frozen)
        if job:
            self.recent[job] = (source, target, now)
            if len(self.recent) > 4096:
                for old in sorted(self.recent, key=lambda j: self.recent[j][2])[:1024]:
                    del self.recent[old]
        if mark is None:
            return None, None
        mark.moving_to = None
        mark.changed_at = now
        if isinstance(frozen, (int, float)):
            mark.frozen_s = float(frozen)
        if mark.where == target:
            return mark, None
        move = Move(mark.key, mark.where, target, "event")
        mark.where = target
        return mark, move

    def apply_history(self, records: Any) -> None:
        """migration.history of a node: the last move's frozen time of each job, oldest first."""
        if not isinstance(records, dict):
            return
        for rec in records.get("migrations", []):
            if isinstance(rec, dict) and rec.get("result") == "ok" and rec.get("job"):
                frozen = rec.get("frozen_s")
                if isinstance(frozen, (int, float)):
                    self.frozen[str(rec["job"])] = float(frozen)
        for mark in self.marks.values():
            if mark.proc.job in self.frozen:
                mark.frozen_s = self.frozen[mark.proc.job]

    def nodes_in_use(self) -> set[int]:
        """Nodes some square runs on (their agents' events matter)."""
        return {m.where for m in self.marks.values()}
