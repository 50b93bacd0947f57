"""Node table fast paths (bench/gui.py): change detection, coalesced dataChanged, grouped inserts, cell cache."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from PySide6.QtCore import QModelIndex
from PySide6.QtGui import QColor, QPalette

from omview.gui.links import LinkState, LinkStatus
from omview.model.cluster import NodeInfo
from omview.openmosixview.node_table import (
    COL_ID,
    COL_LCD,
    COL_LOAD,
    COL_SPEED,
    COL_STATE,
    HEADERS,
    NodeRow,
    NodeTableModel,
    NodeTableView,
)


def node(i: int, **kw: Any) -> NodeInfo:
    base: dict[str, Any] = {"status": "up", "cpus": 2, "tmem": 4 << 30, "mem": 2 << 30, "util": 20, "load": 40}
    base.update(kw)
    return NodeInfo(id=i, address=f"10.77.{i // 256}.{i % 256}", **base)


def old_rule(model: NodeTableModel, old: NodeRow, new: NodeRow) -> list[int]:
    """The per-column comparison the table used before rows cached their cells."""
    return [
        c
        for c in range(len(HEADERS))
        if model._value(old, c) != model._value(new, c)
        or model._text(old, c) != model._text(new, c)
        or (c == COL_ID and old.lamp != new.lamp)
        or (c == COL_STATE and old.link != new.link)
    ]


def test_cells_find_exactly_the_changed_columns(qtbot: Any) -> None:
    model = NodeTableModel()
    rng = random.Random(7)
    links = [LinkState(s) for s in LinkStatus] + [LinkState(LinkStatus.TIMEOUT, "x", retry_in=4.0)]

    def random_row() -> NodeRow:
        info = node(rng.choice((1, 2)), status=rng.choice(("up", "up", "down")), util=rng.choice((0, 50, 100)),
                    mem=rng.choice((1 << 30, 1536 << 20, 1537 << 20)), speed=rng.choice((9000, 10000)),
                    cpus=rng.choice((1, 2)))  # fmt: skip
        direct = rng.choice((None, replace(info, speed=12000, util=5)))
        return NodeRow(info, direct, rng.choice(links), rng.choice((None, 5000)), rng.choice((None, 8000)))

    for _ in range(3000):
        a, b = random_row(), random_row()
        changed = [c for c in range(len(HEADERS)) if a.cells[c] != b.cells[c]]
        assert changed == old_rule(model, a, b), (a, b)
    row = random_row()
    assert row.with_gossip(node(3)) == replace(row, gossip=node(3))


def test_adjacent_changed_rows_are_announced_together(qtbot: Any) -> None:
    model = NodeTableModel()
    nodes = [node(i) for i in range(1, 11)]
    model.set_table(nodes)
    seen: list[tuple[int, int, int, int]] = []
    model.dataChanged.connect(lambda a, b, _r=(): seen.append((a.row(), b.row(), a.column(), b.column())))
    changed = list(nodes)
    for i in (2, 3, 4):
        changed[i] = replace(changed[i], util=60)
    changed[7] = replace(changed[7], speed=5000)
    changed[9] = replace(changed[9], age=3.0)  # not shown anywhere: no repaint
    model.set_table(changed)
    assert seen == [(2, 4, COL_LOAD, COL_LOAD), (7, 7, COL_SPEED, COL_LCD)]
    assert [model.data(model.index(r, COL_LOAD)) for r in (1, 2, 4, 5)] == ["20%", "60%", "60%", "20%"]


def test_joining_and_leaving_nodes_keep_id_order(qtbot: Any) -> None:
    model = NodeTableModel()
    model.set_table([node(i) for i in (1, 5, 9)])
    inserted: list[tuple[int, int]] = []
    removed: list[tuple[int, int]] = []
    model.rowsInserted.connect(lambda _p, a, b: inserted.append((a, b)))
    model.rowsRemoved.connect(lambda _p, a, b: removed.append((a, b)))
    model.set_table([node(i) for i in (11, 3, 2, 9, 7, 1)])  # 5 left; 2, 3, 7 and 11 joined
    ids = [model.node_at(r).gossip.id for r in range(model.rowCount())]
    assert ids == [1, 2, 3, 7, 9, 11]
    assert removed == [(1, 1)]
    assert inserted == [(1, 3), (5, 5)]  # 2, 3 and 7 all land between 1 and 9: one insert
    assert all(model.row_of(model.node_at(r).gossip.address) == r for r in range(model.rowCount()))
    model.set_table([node(i) for i in range(1, 1001)])
    assert model.rowCount() == 1000 and model.row_of(node(1000).address) == 999


def test_cell_pictures_follow_the_data_and_the_palette(qtbot: Any) -> None:
    model = NodeTableModel()
    view = NodeTableView()
    qtbot.addWidget(view)
    view.setModel(model)
    view.resize(1000, 300)
    view.show()
    nodes = [node(i, util=10) for i in range(1, 51)]
    model.set_table(nodes)
    cache = view._delegate.cache
    before = view.viewport().grab().toImage()
    assert 0 < len(cache) and 0 < cache.used <= cache.budget
    rect = view.visualRect(model.index(1, COL_LOAD))
    model.set_table([replace(n, util=90) if n.id == 2 else n for n in nodes])
    after = view.viewport().grab().toImage()
    assert before.copy(rect) != after.copy(rect)  # the changed bar is repainted with its new value
    other = view.visualRect(model.index(2, COL_LOAD))
    assert before.copy(other) == after.copy(other)
    palette = view.palette()
    palette.setColor(QPalette.ColorRole.Base, QColor(250, 240, 200))
    view.setPalette(palette)
    assert len(cache) == 0  # pictures painted with the old palette are dropped
    cache.budget = 10 * 116 * 30 * 4  # ten bars' worth
    view.viewport().grab()
    assert 0 < cache.used <= cache.budget and len(cache) <= 10
    assert model.rowCount(QModelIndex()) == 50
