"""openmosixmigmon: where things sit (pure geometry, no Qt) - the node circle with the main penguin in
its middle, and each node's process ring.

A ring keeps every process in the slot it got first (``SlotRing``): a new process takes the lowest
free slot, an ended one frees its own, so squares never shuffle when others come and go. Slots
fill concentric circles from the inside out, each holding as many squares as fit around it, so a
node with 2,000 processes still gets one compact ring.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: side of a process square and the distance between slot centres (scene units)
SQUARE = 7.0
PITCH = 10.0
#: radius of a ring's innermost circle, around the main penguin and around the others
MAIN_INNER = 62.0
NODE_INNER = 40.0
#: room between the main node's outermost squares and the other nodes' rings
GAP = 40.0


@dataclass(frozen=True)
class Slot:
    """Where slot N of a ring sits: the circle it is on and its angle (radians, 0 = east)."""

    circle: int
    radius: float
    angle: float

    def offset(self) -> tuple[float, float]:
        return self.radius * math.cos(self.angle), self.radius * math.sin(self.angle)


def circle_capacity(radius: float) -> int:
    return max(6, int(2 * math.pi * radius / PITCH))


@functools.lru_cache(maxsize=1 << 16)  # every paint and lookup asks: the loop below runs once per slot
def slot(index: int, inner: float) -> Slot:
    """Slot ``index`` of a ring whose first circle has radius ``inner``."""
    circle, radius, first = 0, inner, 0
    while True:
        cap = circle_capacity(radius)
        if index < first + cap:
            k = index - first
            # every circle starts at the top, and odd circles half a slot further on (a brick pattern)
            angle = -math.pi / 2 + 2 * math.pi * (k + (0.5 if circle % 2 else 0.0)) / cap
            return Slot(circle, radius, angle)
        first += cap
        circle += 1
        radius += PITCH


def ring_radius(count: int, inner: float) -> float:
    """Outer radius of a ring holding ``count`` squares (``inner`` when it holds none)."""
    if count <= 0:
        return inner
    return slot(count - 1, inner).radius + SQUARE / 2


class SlotRing:
    """Sticky slots of one node's ring: process key -> slot index."""

    def __init__(self) -> None:
        self._slots: dict[object, int] = {}
        self._free: list[int] = []  # freed slots below the high-water mark, kept sorted
        self._next = 0

    def update(self, keys: Iterable[object]) -> bool:
        """The ring holds exactly ``keys`` now; True when anything changed."""
        wanted = set(keys)
        gone = [k for k in self._slots if k not in wanted]
        for k in gone:
            self._free.append(self._slots.pop(k))
        if gone:
            self._free.sort()
        new = [k for k in wanted if k not in self._slots]
        for k in sorted(new, key=repr):  # a stable order, whatever the keys are
            if self._free:
                self._slots[k] = self._free.pop(0)
            else:
                self._slots[k] = self._next
                self._next += 1
        if not self._slots:
            self._free.clear()
            self._next = 0
        else:
            # trim free slots at the top, so the ring shrinks when its last squares leave
            top = max(self._slots.values()) + 1
            self._free = [s for s in self._free if s < top]
            self._next = top
        return bool(gone or new)

    def add(self, key: object) -> int:
        """Give ``key`` the lowest free slot (its own if it has one)."""
        index = self._slots.get(key)
        if index is None:
            if self._free:
                index = self._free.pop(0)
            else:
                index = self._next
                self._next += 1
            self._slots[key] = index
        return index

    def remove(self, key: object) -> None:
        index = self._slots.pop(key, None)
        if index is None:
            return
        if index == self._next - 1:
            # the top slot: shrink past every free slot below it too
            self._next = max(self._slots.values(), default=-1) + 1
            self._free = [s for s in self._free if s < self._next]
        else:
            self._free.append(index)
            self._free.sort()

    def index(self, key: object) -> int | None:
        return self._slots.get(key)

    def items(self) -> list[tuple[object, int]]:
        return list(self._slots.items())

    @property
    def span(self) -> int:
        """Slots in use up to the highest one (what the ring's size follows)."""
        return self._next

    def __len__(self) -> int:
        return len(self._slots)


@dataclass(frozen=True)
class NodePlace:
    """A node's penguin: its centre, and the inner radius of its process ring."""

    x: float
    y: float
    inner: float
    main: bool


def node_places(ids: Sequence[int], main: int, main_extent: float, other_extent: float) -> dict[int, NodePlace]:
    """The main node in the middle, every other node on a circle around it, in ID order clockwise.

    ``main_extent`` is the main node's ring radius, ``other_extent`` the largest ring (or penguin)
    radius of the others: the circle is wide enough that no two of them overlap."""
    others = [i for i in sorted(ids) if i != main]
    out: dict[int, NodePlace] = {}
    if main in ids:
        out[main] = NodePlace(0.0, 0.0, MAIN_INNER, True)
    if not others:
        return out
    # quantised to 50 units, so the circle does not breathe with every process that comes and goes
    need_main = main_extent + GAP + other_extent
    need_ring = len(others) * (2 * other_extent + GAP / 2) / (2 * math.pi)
    radius = 50.0 * math.ceil(max(need_main, need_ring, 220.0) / 50.0)
    for k, node in enumerate(others):
        # half a step on from the top: two nodes sit left and right of the main one, not in a column
        angle = -math.pi / 2 + 2 * math.pi * (k + 0.5) / len(others)
        out[node] = NodePlace(radius * math.cos(angle), radius * math.sin(angle), NODE_INNER, False)
    return out


def extent_step(radius: float) -> float:
    """A ring radius rounded up to 40 units (layouts change in steps, not with every square)."""
    return 40.0 * math.ceil(radius / 40.0)
