"""Node table: the documented percentages, the item model's contract and its cell-level updates."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal

from omview.gui.links import LinkState, LinkStatus
from omview.model.cluster import NodeInfo
from omview.openmosixview.node_table import (
    COL_ID,
    COL_LCD,
    COL_LOAD,
    COL_NODE,
    COL_SPEED,
    COL_STATE,
    LampRole,
    NodeTableModel,
    NodeTableView,
    ValueRole,
    efficiency,
    load_percent,
    mem_percent,
    totals,
)


def node(i: int, **kw: Any) -> NodeInfo:
    base: dict[str, Any] = {"status": "up", "cpus": 2, "tmem": 4 << 30, "mem": 3 << 30, "util": 50, "load": 100}
    base.update(kw)
    return NodeInfo(id=i, address=f"10.77.{i // 250}.{i % 250 + 1}", **base)


def test_percentages() -> None:
    assert load_percent(node(1, util=73)) == 73
    assert load_percent(node(1, util=0, load=150)) == 0  # the raw load is not a percentage
    assert load_percent(node(1, util=130)) == 100
    assert mem_percent(node(1, tmem=1000, mem=250)) == 75
    assert mem_percent(node(1, tmem=0, mem=0)) == 0


def test_efficiency_is_100_when_equal_and_falls_with_imbalance() -> None:
    assert efficiency([node(1, util=40), node(2, util=40), node(3, util=40)]) == 100
    assert efficiency([node(1, util=0), node(2, util=80)]) == 50
    assert efficiency([node(1, util=10), node(2, util=90), node(3, util=90)]) < efficiency(
        [node(1, util=80), node(2, util=90), node(3, util=90)]
    )
    assert efficiency([node(1, util=0), node(2, util=0)]) == 100  # idle: nothing to balance
    assert efficiency([node(1, util=90)]) == 100
    # down nodes do not count
    assert efficiency([node(1, util=50), node(2, util=50), node(3, util=0, status="down")]) == 100


def test_totals_sum_over_up_nodes() -> None:
    t = totals([node(1, cpus=2, util=50), node(2, cpus=1, util=80), node(3, cpus=4, status="down")])
    assert (t.nodes, t.up, t.cpus, t.memory) == (3, 2, 3, 8 << 30)
    assert t.load == 60  # (50*2 + 80*1) / 3
    assert t.mem_used == 25


def test_model_contract(qtmodeltester: Any) -> None:
    model = NodeTableModel()
    model.set_table([node(i) for i in range(1, 6)])
    qtmodeltester.check(model)
    assert model.data(model.index(0, COL_NODE)) == "10.77.0.2"
    assert model.data(model.index(0, COL_ID), ValueRole) == 1
    assert model.data(model.index(0, COL_LOAD)) == "50%"
    assert model.flags(model.index(0, COL_SPEED)) & Qt.ItemFlag.ItemIsEditable
    assert not model.flags(model.index(0, COL_LOAD)) & Qt.ItemFlag.ItemIsEditable


def test_rows_appear_and_disappear_in_id_order() -> None:
    model = NodeTableModel()
    model.set_table([node(5), node(2)])
    assert [r.gossip.id for r in model.rows()] == [2, 5]
    model.set_table([node(5), node(2), node(25611)])
    model.set_table([node(5), node(3), node(25611)])
    assert [r.gossip.id for r in model.rows()] == [3, 5, 25611]


def test_only_changed_cells_are_announced(qtbot: Any) -> None:
    model = NodeTableModel()
    model.set_table([node(i) for i in range(1, 4)])
    seen: list[tuple[int, int, int]] = []
    model.dataChanged.connect(lambda a, b, _roles=(): seen.append((a.row(), a.column(), b.column())))
    model.set_table([node(1), node(2, util=90), node(3)])
    assert seen == [(1, COL_LOAD, COL_LOAD)]
    seen.clear()
    model.update_link("10.77.0.4", LinkState(LinkStatus.NO_AGENT, "gone"))
    assert seen and all(r == 2 for r, _a, _b in seen)
    assert model.data(model.index(2, COL_ID), LampRole) == "down"
    assert "no agent" in model.data(model.index(2, COL_STATE))


def test_lamp_colours() -> None:
    model = NodeTableModel()
    model.set_table([node(1), node(2, status="down"), node(3)])
    model.update_link("10.77.0.4", LinkState(LinkStatus.HOST_KEY_UNKNOWN, "unknown", "SHA256:abc"))
    lamps = [model.data(model.index(r, COL_ID), LampRole) for r in range(3)]
    assert lamps == ["up", "down", "warn"]
    assert "SHA256:abc" in model.data(model.index(2, COL_STATE))


def test_speed_edit_emits_request(qtbot: Any) -> None:
    model = NodeTableModel()
    model.set_table([node(1, speed=10000)])
    with qtbot.waitSignal(model.sig_speed_requested) as blk:
        assert model.setData(model.index(0, COL_SPEED), 7609)
    assert blk.args == ["10.77.0.2", 7609]
    assert model.data(model.index(0, COL_SPEED), ValueRole) == 7609  # slider shows the request
    assert model.data(model.index(0, COL_LCD), ValueRole) == 10000  # LCD waits for the read-back


def test_thousand_rows_update_only_what_changed(qtbot: Any) -> None:
    model = NodeTableModel()
    view = NodeTableView()
    qtbot.addWidget(view)
    view.setModel(model)
    view.resize(1000, 600)
    view.show()
    nodes = [node(i) for i in range(1, 1001)]
    t0 = time.perf_counter()
    model.set_table(nodes)
    build = time.perf_counter() - t0
    assert model.rowCount() == 1000
    changes: list[int] = []
    model.dataChanged.connect(lambda a, _b, _roles=(): changes.append(a.row()))
    nodes2 = [replace(n, util=(n.util + 7) % 100) if n.id % 100 == 0 else n for n in nodes]
    t0 = time.perf_counter()
    model.set_table(nodes2)
    update = time.perf_counter() - t0
    assert sorted(changes) == [i - 1 for i in range(100, 1001, 100)]
    # painting a screenful and scrolling to the end stays cheap (no widget per row)
    t0 = time.perf_counter()
    view.grab()
    view.scrollToBottom()
    view.grab()
    paint = time.perf_counter() - t0
    assert build < 5.0 and update < 1.0 and paint < 2.0, (build, update, paint)


def test_pyside_emit_keeps_bool_references() -> None:
    """PySide6 6.12.0's Signal.emit() returned True without a reference (crash after ~1000 emits)."""

    class Probe(QObject):
        sig = Signal(object)

    probe = Probe()
    before = sys.getrefcount(True)
    for _ in range(200):
        probe.sig.emit(None)
    assert sys.getrefcount(True) >= before - 5
