"""openmosixmigmon: the drawing - penguins on a circle, one ring item per node that paints all its
squares, one item for every line home, and squares in flight (QGraphicsScene items, no widgets).

A ring item caches its squares' rectangles by colour and paints each colour with one drawRects call;
the line item draws one line per migrated square, or when there are many (or the view is far out)
one line per pair of nodes whose width grows with the count (level of detail). Flights - a square
moving from one ring to another, dragged, or waiting for the agent's answer after a drop - are
small rectangle items moved by one timer for all of them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from PySide6.QtCore import QLineF, QObject, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPen, QPixmap
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QStyleOptionGraphicsItem,
    QWidget,
)

from omview.gui.assets import asset
from omview.migmon.layout import (
    MAIN_INNER,
    NODE_INNER,
    SQUARE,
    NodePlace,
    SlotRing,
    extent_step,
    node_places,
    ring_radius,
    slot,
)
from omview.migmon.state import Mark
from omview.model.cluster import NodeInfo

BLACK = QColor("#111111")
GREEN = QColor("#23a046")
GREY = QColor("#8a8f96")  # cannot migrate
AMBER = QColor("#e8960c")  # a migration runs
LINE = QColor(35, 160, 70, 150)
#: milliseconds a square takes from one ring to another
FLIGHT_MS = 650
PENGUIN = "migmon-penguin.svg"


class Penguins:
    """The node penguin rendered once per size from resources/migmon-penguin.svg."""

    def __init__(self) -> None:
        path = asset(PENGUIN)
        self._renderer = QSvgRenderer(str(path)) if path is not None else None
        self._cache: dict[tuple[int, int, bool], QPixmap] = {}

    def pixmap(self, w: int, h: int, dim: bool = False) -> QPixmap:
        key = (w, h, dim)
        pix = self._cache.get(key)
        if pix is None:
            pix = QPixmap(w * 2, h * 2)  # twice the size: sharp when zoomed in
            pix.fill(Qt.GlobalColor.transparent)
            painter = QPainter(pix)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            if dim:
                painter.setOpacity(0.3)
            if self._renderer is not None:
                self._renderer.render(painter, QRectF(0, 0, w * 2, h * 2))
            else:  # no resources (a broken install): a dark oval still marks the node
                painter.setBrush(BLACK)
                painter.drawEllipse(QRectF(w * 0.2, 0, w * 1.6, h * 2))
            painter.end()
            self._cache[key] = pix
        return pix


class PenguinItem(QGraphicsItem):
    """One node: its penguin and, under its ring, "node N" and its load."""

    def __init__(self, penguins: Penguins, node: NodeInfo, main: bool) -> None:
        super().__init__()
        self.penguins = penguins
        self.node = node
        self.main = main
        self.extent = MAIN_INNER if main else NODE_INNER
        self.highlight = False
        self.w, self.h = (56, 66) if main else (38, 45)
        self.setZValue(1)
        self._font = QFont()
        self._font.setPointSizeF(11 if main else 9)
        self._font.setBold(main)
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)

    def set_node(self, node: NodeInfo) -> None:
        if node != self.node:
            self.node = node
            self.update()

    def set_extent(self, extent: float) -> None:
        if extent != self.extent:
            self.prepareGeometryChange()
            self.extent = extent

    def label(self) -> str:
        n = self.node
        state = f"load {n.load:.0f}" if n.status == "up" else n.status
        return f"node {n.id}\n{state}"

    def boundingRect(self) -> QRectF:
        r = max(self.extent, self.h / 2) + 40
        return QRectF(-r, -r, 2 * r, 2 * r)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        up = self.node.status == "up"
        target = QRectF(-self.w / 2, -self.h / 2, self.w, self.h)
        if self.highlight:
            painter.setPen(QPen(GREEN, 3))
            painter.setBrush(QColor(35, 160, 70, 40))
            painter.drawEllipse(QPointF(0, 0), self.extent + 6, self.extent + 6)
        if lod < 0.15:  # far out: a dot per node is all the eye can tell apart
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(BLACK if up else GREY)
            painter.drawEllipse(target)
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, lod > 0.6)
        painter.drawPixmap(target, self.penguins.pixmap(self.w, self.h, not up), QRectF(0, 0, self.w * 2, self.h * 2))
        if lod < 0.3:
            return
        painter.setFont(self._font)
        painter.setPen(QColor("#202020") if up else QColor("#b41e14"))
        text = QRectF(-90, self.extent + 2, 180, 36)
        painter.drawText(text, int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop), self.label())


class RingItem(QGraphicsItem):
    """The squares of the processes that run on one node (the ring item sits on the node's centre)."""

    def __init__(self, node: int, inner: float) -> None:
        super().__init__()
        self.node = node
        self.inner = inner
        self.slots = SlotRing()
        self.marks: dict[int, Mark] = {}
        self.hidden: set[int] = set()  # squares drawn elsewhere now (in flight, dragged)
        self.ghosts: set[int] = set()  # dragged away: an outline keeps their place
        self._rects: dict[str, list[QRectF]] | None = None
        self._extent = inner
        self.setZValue(2)
        # painted once per change into a pixmap: a flight repaints its path from the cache
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)

    # -- contents (GUI thread) --
    def set_marks(self, marks: dict[int, Mark]) -> bool:
        """The squares of this node now; True when the ring's size changed."""
        self.marks = marks
        self.slots.update(marks.keys())
        self.hidden &= marks.keys()
        self.ghosts &= marks.keys()
        return self._resized()

    def add(self, key: int, mark: Mark) -> bool:
        """One square more (True when the ring's size changed)."""
        self.marks[key] = mark
        self.slots.add(key)
        return self._resized()

    def remove(self, key: int) -> bool:
        """One square less (True when the ring's size changed)."""
        self.marks.pop(key, None)
        self.hidden.discard(key)
        self.ghosts.discard(key)
        self.slots.remove(key)
        return self._resized()

    def _resized(self) -> bool:
        self._rects = None
        extent = ring_radius(self.slots.span, self.inner)
        changed = extent != self._extent
        if changed:
            self.prepareGeometryChange()
            self._extent = extent
        self.update()
        return changed

    def set_state(self, key: int, *, hidden: bool, ghost: bool) -> None:
        if (key in self.hidden, key in self.ghosts) == (hidden, ghost):
            return
        (self.hidden.add if hidden else self.hidden.discard)(key)
        (self.ghosts.add if ghost else self.ghosts.discard)(key)
        self.refresh()

    def refresh(self) -> None:
        """Colours changed (moving, hidden): rebuild the cached rectangles."""
        self._rects = None
        self.update()

    @property
    def extent(self) -> float:
        return self._extent

    def offset(self, key: int) -> QPointF | None:
        index = self.slots.index(key)
        if index is None:
            return None
        x, y = slot(index, self.inner).offset()
        return QPointF(x, y)

    def key_at(self, local: QPointF) -> int | None:
        """The square under ``local`` (item coordinates), if any."""
        r = math.hypot(local.x(), local.y())
        if r < self.inner - SQUARE or r > self._extent + SQUARE:
            return None
        best, best_d = None, (SQUARE * 0.8) ** 2
        for key, index in self.slots.items():
            if key in self.hidden:
                continue
            x, y = slot(index, self.inner).offset()
            d = (x - local.x()) ** 2 + (y - local.y()) ** 2
            if d < best_d:
                best, best_d = key, d
        return best if isinstance(best, int) else None

    def category(self, key: int) -> str:
        """How ``key``'s square is drawn: black, green, grey, moving, ghost, hidden or "" (not here)."""
        if self._rects is None:
            self._rects = self._build()
        if key in self.ghosts:
            return "ghost"
        if key in self.hidden:
            return "hidden"
        off = self.offset(key)
        if off is None:
            return ""
        half = SQUARE / 2
        rect = QRectF(off.x() - half, off.y() - half, SQUARE, SQUARE)
        return next((name for name, rects in self._rects.items() if rect in rects), "")

    # -- painting --
    def _build(self) -> dict[str, list[QRectF]]:
        out: dict[str, list[QRectF]] = {"black": [], "green": [], "grey": [], "moving": [], "ghost": []}
        half = SQUARE / 2
        for key, index in self.slots.items():
            assert isinstance(key, int)
            x, y = slot(index, self.inner).offset()
            rect = QRectF(x - half, y - half, SQUARE, SQUARE)
            if key in self.ghosts:
                out["ghost"].append(rect)
                continue
            if key in self.hidden:
                continue
            mark = self.marks.get(key)
            if mark is None:
                continue
            if mark.moving_to is not None:
                out["moving"].append(rect)
            elif mark.migrated:
                out["green"].append(rect)
            elif mark.proc.cantmove or mark.proc.lock:
                out["grey"].append(rect)
            else:
                out["black"].append(rect)
        return out

    def boundingRect(self) -> QRectF:
        r = self._extent + SQUARE
        return QRectF(-r, -r, 2 * r, 2 * r)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        if self._rects is None:
            self._rects = self._build()
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        outline = lod > 1.2  # outlines only where a square is more than a few pixels wide
        for name, fill in (("black", BLACK), ("grey", GREY), ("green", GREEN), ("moving", AMBER)):
            rects = self._rects[name]
            if not rects:
                continue
            painter.setBrush(fill)
            painter.setPen(QPen(fill.darker(160), 0) if outline and name != "black" else Qt.PenStyle.NoPen)
            painter.drawRects(rects)
        if self._rects["ghost"]:
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(QColor("#777777"), 0, Qt.PenStyle.DotLine))
            painter.drawRects(self._rects["ghost"])


class LinesItem(QGraphicsItem):
    """A line from every migrated square to its home node's penguin."""

    #: above this many lines (or far out) one line per pair of nodes, its width by the count
    DETAIL_LIMIT = 400

    def __init__(self) -> None:
        super().__init__()
        self._lines: list[QLineF] = []
        self._pairs: list[tuple[QLineF, int]] = []
        self._count = 0
        self._rect = QRectF()
        self.setZValue(0)
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)

    @staticmethod
    def width(n: int) -> float:
        """A pair line's width for ``n`` squares (in steps: a count that changes a little changes nothing)."""
        return min(8.0, 1.5 + 1.5 * int(math.log2(n)))

    def set_lines(self, lines: list[QLineF], pairs: list[tuple[QLineF, int]], count: int) -> None:
        """Per-square ``lines`` (empty above DETAIL_LIMIT), the per-pair lines, and how many squares."""
        detail = count <= self.DETAIL_LIMIT
        same = (detail == (self._count <= self.DETAIL_LIMIT) and lines == self._lines
                and [(ln, self.width(n)) for ln, n in pairs] == [(ln, self.width(n)) for ln, n in self._pairs])  # fmt: skip
        self._count = count
        if same:
            return  # nothing looks different: keep the cached picture
        self.prepareGeometryChange()
        self._lines, self._pairs = lines, pairs
        rect = QRectF()
        for ln in [*lines, *(p for p, _n in pairs)]:
            rect = rect.united(QRectF(ln.p1(), ln.p2()).normalized())
        self._rect = rect.adjusted(-20, -20, 20, 20)
        self.update()

    def boundingRect(self) -> QRectF:
        return self._rect

    @property
    def count(self) -> int:
        """Migrated squares with a line home (drawn one by one, or folded into their nodes' pair)."""
        return self._count

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        if self._count <= self.DETAIL_LIMIT and lod >= 0.3:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, len(self._lines) < 100)
            painter.setPen(QPen(LINE, 1.2))
            painter.drawLines(self._lines)
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        for ln, n in self._pairs:
            painter.setPen(QPen(LINE, self.width(n)))
            painter.drawLine(ln)


@dataclass
class Flight:
    """A square on its way from ``start`` to a ring slot (``key``'s slot on ``node``)."""

    key: int
    node: int
    start: QPointF
    t0: float
    item: QGraphicsRectItem
    ms: float = FLIGHT_MS


def square_item(colour: QColor, dashed: bool = False) -> QGraphicsRectItem:
    item = QGraphicsRectItem(-SQUARE * 0.7, -SQUARE * 0.7, SQUARE * 1.4, SQUARE * 1.4)
    item.setBrush(QBrush(colour))
    item.setPen(QPen(QColor("#ffffff") if not dashed else AMBER, 1.5, Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine))
    item.setZValue(5)
    return item


class MigScene(QGraphicsScene):
    """Nodes, rings, lines and flights; the window tells it what runs where (``place``)."""

    sig_landed = Signal(int, int)
    """(key, node): a flight ended in the node's ring."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.NoIndex)  # ~130 items that all move
        self.penguins = Penguins()
        self.entry = 0
        self.nodes: dict[int, PenguinItem] = {}
        self.rings: dict[int, RingItem] = {}
        self.places: dict[int, NodePlace] = {}
        self.lines = LinesItem()
        self.addItem(self.lines)
        self.marks: dict[int, Mark] = {}
        self.flights: dict[int, Flight] = {}
        self.held: dict[int, QGraphicsRectItem] = {}  # dragged or dropped squares (not in flight)
        self.landed = 0  # flights ended (tests and the benchmark read it)
        self._drawn_on: dict[int, int] = {}  # key -> the ring it is in
        self._dirty_layout = self._dirty_lines = self._flush_due = False
        self._timer = QTimer(self)
        self._timer.setInterval(16)
        self._timer.timeout.connect(self._step)

    # -- what is where (GUI thread) --
    def set_nodes(self, table: tuple[NodeInfo, ...], entry: int) -> None:
        self.entry = entry
        ids = {n.id for n in table}
        before = set(self.nodes)
        for gone in [i for i in self.nodes if i not in ids]:
            self.removeItem(self.nodes.pop(gone))
            self.removeItem(self.rings.pop(gone))
        for n in table:
            item = self.nodes.get(n.id)
            if item is None or item.main != (n.id == entry):
                if item is not None:
                    self.removeItem(item)
                    self.removeItem(self.rings.pop(n.id))
                item = self.nodes[n.id] = PenguinItem(self.penguins, n, n.id == entry)
                self.addItem(item)
                ring = self.rings[n.id] = RingItem(n.id, MAIN_INNER if n.id == entry else NODE_INNER)
                self.addItem(ring)
            item.set_node(n)
        if set(self.nodes) != before or any(i.main != (n == entry) for n, i in self.nodes.items()):
            self.place(self.marks, force=True)

    def place(self, marks: dict[int, Mark], *, force: bool = False, restyled: set[int] | None = None) -> None:
        """Every square into the ring of the node it runs on (a full pass: after a poll, a new choice).

        Rings whose squares are the same as before are left alone (their cached picture stays),
        unless one of ``restyled`` (squares whose colour changed) is in them."""
        self.marks = marks
        per: dict[int, dict[int, Mark]] = {n: {} for n in self.rings}
        for key, m in marks.items():
            if m.where in per:
                per[m.where][key] = m
        resized = force
        self._drawn_on = {}
        for node, ring in self.rings.items():
            mine = per[node]
            if force or mine.keys() != ring.marks.keys():
                resized |= ring.set_marks(mine)
            else:
                ring.marks = mine
                if restyled is None or not restyled.isdisjoint(mine.keys()):
                    ring.refresh()
            for key in mine:
                self._drawn_on[key] = node
            for key in (self.flights.keys() | self.held.keys()) & mine.keys():
                ring.set_state(key, hidden=True, ghost=key in self.held)
        for key in [k for k in self.flights if k not in marks]:
            self._end_flight(key, land=False)
        for key in [k for k in self.held if k not in marks]:
            self.release(key)
        if resized:
            self._relayout()
        self._later(lines=True)

    def sync(self, key: int) -> None:
        """One square changed node or state (a flight, a drag): only its rings change."""
        m = self.marks.get(key)
        node = m.where if m is not None and m.where in self.rings else None
        old = self._drawn_on.get(key)
        resized = False
        if old != node:
            if old is not None and old in self.rings:
                resized |= self.rings[old].remove(key)
            self._drawn_on.pop(key, None)
            if node is not None and m is not None:
                resized |= self.rings[node].add(key, m)
                self._drawn_on[key] = node
        if node is not None:
            self.rings[node].set_state(key, hidden=key in self.flights or key in self.held, ghost=key in self.held)
        self._later(layout=resized, lines=True)

    def _later(self, *, layout: bool = False, lines: bool = False) -> None:
        """Relayout and lines once per event-loop pass, however many squares changed in it."""
        self._dirty_layout |= layout
        self._dirty_lines |= lines
        if not self._flush_due:
            self._flush_due = True
            QTimer.singleShot(0, self.flush)

    def flush(self) -> None:
        self._flush_due = False
        if self._dirty_layout:
            self._dirty_layout = False
            self._relayout()
        if self._dirty_lines:
            self._dirty_lines = False
            self._update_lines()

    def _relayout(self) -> None:
        main_extent = extent_step(self.rings[self.entry].extent) if self.entry in self.rings else MAIN_INNER
        others = [extent_step(r.extent) for n, r in self.rings.items() if n != self.entry]
        places = node_places(list(self.rings), self.entry, main_extent, max([*others, NODE_INNER + 8]) + 30)
        self.places = places
        for node, place in places.items():
            pos = QPointF(place.x, place.y)
            self.rings[node].setPos(pos)
            self.nodes[node].setPos(pos)
            self.nodes[node].set_extent(self.rings[node].extent)
        self.setSceneRect(self.itemsBoundingRect().adjusted(-30, -30, 30, 30))

    def _update_lines(self) -> None:
        pairs: dict[tuple[int, int], int] = {}
        migrated: list[tuple[int, Mark]] = []
        for key, m in self.marks.items():
            if m.where != m.home and m.home in self.nodes and m.where in self.nodes:
                pairs[(m.where, m.home)] = pairs.get((m.where, m.home), 0) + 1
                migrated.append((key, m))
        lines: list[QLineF] = []
        if len(migrated) <= LinesItem.DETAIL_LIMIT:  # else only the pairs are drawn: not worth the work
            for key, m in migrated:
                if key in self.flights or key in self.held:
                    continue
                ring = self.rings[m.where]
                index = ring.slots.index(key)
                if index is None:
                    continue
                x, y = slot(index, ring.inner).offset()
                lines.append(QLineF(ring.pos() + QPointF(x, y), self.nodes[m.home].pos()))
        self.lines.set_lines(lines, [(QLineF(self.nodes[w].pos(), self.nodes[h].pos()), n)
                                     for (w, h), n in pairs.items()], len(migrated))  # fmt: skip

    def refresh(self, keys: set[int] | None = None) -> None:
        """Colours changed (a migration started or ended)."""
        for ring in self.rings.values():
            if keys is None or keys & ring.marks.keys():
                ring.refresh()

    # -- lookups --
    def square_pos(self, key: int) -> QPointF | None:
        """The scene position of ``key``'s square now (in its ring, in flight, or held)."""
        held = self.held.get(key)
        if held is not None:
            return held.pos()
        flight = self.flights.get(key)
        if flight is not None:
            return flight.item.pos()
        m = self.marks.get(key)
        ring = self.rings.get(m.where) if m is not None else None
        if ring is None:
            return None
        off = ring.offset(key)
        return None if off is None else ring.pos() + off

    def slot_pos(self, key: int, node: int) -> QPointF | None:
        ring = self.rings.get(node)
        if ring is None:
            return None
        off = ring.offset(key)
        return None if off is None else ring.pos() + off

    def key_at(self, pos: QPointF) -> int | None:
        for ring in self.rings.values():
            key = ring.key_at(pos - ring.pos())
            if key is not None:
                return key
        return None

    def node_at(self, pos: QPointF) -> int | None:
        """The node whose penguin (or ring) is under ``pos``."""
        best, best_d = None, math.inf
        for node, item in self.nodes.items():
            d = math.hypot(pos.x() - item.x(), pos.y() - item.y())
            if d <= max(36.0, item.extent + SQUARE) and d < best_d:
                best, best_d = node, d
        return best

    def highlight(self, node: int | None) -> None:
        for n, item in self.nodes.items():
            on = n == node
            if item.highlight != on:
                item.highlight = on
                item.update()

    # -- dragging and flights --
    def hold(self, key: int, pos: QPointF, *, dashed: bool = False) -> None:
        """Draw ``key``'s square at ``pos`` (dragged, or dropped and waiting) instead of in its ring."""
        item = self.held.get(key)
        m = self.marks.get(key)
        colour = GREEN if m is not None and m.migrated else BLACK
        if item is None:
            self._end_flight(key, land=False)
            item = self.held[key] = square_item(colour, dashed)
            self.addItem(item)
            self.sync(key)
        elif dashed:
            item.setPen(QPen(AMBER, 1.5, Qt.PenStyle.DashLine))
        item.setPos(pos)

    def release(self, key: int) -> QPointF | None:
        """Stop holding ``key``; returns where its square was."""
        item = self.held.pop(key, None)
        if item is None:
            return None
        pos = item.pos()
        self.removeItem(item)
        self.sync(key)
        return pos

    def fly(self, key: int, source: int, target: int) -> bool:
        """Animate ``key`` from where it is drawn now (or ``source``'s ring) to its slot on ``target``."""
        start = self.release(key)
        if start is None:
            flight = self.flights.get(key)
            start = flight.item.pos() if flight is not None else None
        if start is None:
            start = self.slot_pos(key, source)
            if start is None and source in self.nodes:
                start = self.nodes[source].pos()
        if start is None or target not in self.rings:
            self.sync(key)
            return False
        self._end_flight(key, land=False)
        m = self.marks.get(key)
        item = square_item(GREEN if m is not None and m.migrated else BLACK)
        item.setPos(start)
        self.addItem(item)
        self.flights[key] = Flight(key, target, start, time.monotonic(), item)
        self.sync(key)
        if not self._timer.isActive():
            self._timer.start()
        return True

    def _step(self) -> None:
        now = time.monotonic()
        for key, f in list(self.flights.items()):
            end = self.slot_pos(key, f.node)
            t = min(1.0, (now - f.t0) * 1000 / f.ms)
            if end is None or t >= 1.0:
                self._end_flight(key, land=True)
                continue
            e = 1 - (1 - t) ** 3  # ease out: fast away, gentle landing
            # an arc, not a straight line: a move reads as a hop from one node to another
            dx, dy = end.x() - f.start.x(), end.y() - f.start.y()
            bulge = 0.18 * math.sin(math.pi * e)
            x = f.start.x() + dx * e - dy * bulge
            y = f.start.y() + dy * e + dx * bulge
            f.item.setPos(QPointF(x, y))
        if not self.flights:
            self._timer.stop()

    def _end_flight(self, key: int, *, land: bool) -> None:
        f = self.flights.pop(key, None)
        if f is None:
            return
        self.removeItem(f.item)
        self.sync(key)
        if land:
            self.landed += 1
            self.sig_landed.emit(key, f.node)

    @property
    def animating(self) -> bool:
        return bool(self.flights)
