"""Main window + session against fake agents (real sockets, controllable delays and deaths)."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtCore import QPoint, Qt, QTimer

from omview.gui import errors
from omview.gui.links import LinkStatus
from omview.gui.settings import GuiSettings
from omview.openmosixview.node_table import (
    COL_ID,
    COL_LCD,
    COL_SPEED,
    COL_STATE,
    SPEED_MAX,
    LampRole,
    ValueRole,
)
from omview.openmosixview.window import MainWindow
from tests.gui.conftest import SessionFactory
from tests.gui.fake_agent import FakeCluster

A, B, C = "10.77.0.11", "10.77.0.12", "10.77.0.13"


@pytest.fixture
def three(fake_cluster: FakeCluster) -> FakeCluster:
    fake_cluster.add(1, A, util=60)
    fake_cluster.add(2, B, util=20, speed=9000)
    fake_cluster.add(3, C, util=40)
    return fake_cluster


def window(qtbot: Any, session: Any) -> MainWindow:
    w = MainWindow(session, GuiSettings(entry=session.entry), None)
    qtbot.addWidget(w)
    w.show()
    return w


def lamps(w: MainWindow) -> dict[str, str]:
    m = w.model
    return {m.node_at(r).gossip.address: m.data(m.index(r, COL_ID), LampRole) for r in range(m.rowCount())}


def row(w: MainWindow, address: str) -> int:
    r = w.model.row_of(address)
    assert r is not None
    return r


def test_rows_appear_and_disappear_as_nodes_join_and_leave(qtbot: Any, three: FakeCluster, make_session: SessionFactory) -> None:
    session = make_session(three.socket_of, A)
    w = window(qtbot, session)
    session.refresh_now()
    qtbot.waitUntil(lambda: w.model.rowCount() == 3, timeout=5000)
    three.add(25611, "192.168.100.11")
    session.refresh_now()
    qtbot.waitUntil(lambda: w.model.rowCount() == 4, timeout=5000)
    assert [r.gossip.id for r in w.model.rows()] == [1, 2, 3, 25611]
    three.hidden.add(B)
    session.refresh_now()
    qtbot.waitUntil(lambda: w.model.rowCount() == 3, timeout=5000)
    assert B not in lamps(w)
    qtbot.waitUntil(lambda: set(lamps(w).values()) == {"up"}, timeout=5000)
    assert w.header.cpus_label.text() == "6"


def test_dead_agent_turns_its_lamp_red_and_the_window_keeps_working(
    qtbot: Any, three: FakeCluster, make_session: SessionFactory
) -> None:
    session = make_session(three.socket_of, A, poll_interval=0.2)
    w = window(qtbot, session)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    session.start()
    qtbot.waitUntil(lambda: lamps(w) == {A: "up", B: "up", C: "up"}, timeout=5000)
    three.nodes[B].kill()
    before = len(ticks)
    qtbot.waitUntil(lambda: lamps(w).get(B) == "down", timeout=5000)
    assert lamps(w)[A] == "up" and lamps(w)[C] == "up"
    assert w.model.data(w.model.index(row(w, B), COL_STATE)).startswith(("no agent", "unreachable", "down"))
    # the GUI thread kept running its own timer while the node died
    qtbot.waitUntil(lambda: len(ticks) > before + 5, timeout=2000)
    three.nodes[B].revive()
    qtbot.waitUntil(lambda: lamps(w).get(B) == "up", timeout=8000)
    timer.stop()


def test_hanging_node_does_not_block_the_others_or_the_gui(
    qtbot: Any, three: FakeCluster, make_session: SessionFactory
) -> None:
    session = make_session(three.socket_of, A, call_timeout=1.0)
    w = window(qtbot, session)
    session.refresh_now()
    qtbot.waitUntil(lambda: all(r.direct is not None for r in w.model.rows()) and w.model.rowCount() == 3, timeout=5000)
    three.nodes[C].hold()
    three.nodes[A].flags = three.nodes[A].flags.__class__(speed=11111)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    session.refresh_now()
    session.refresh_now()  # C is still busy: this tick must be skipped for C, not queued
    assert session.skipped[(C, "info")] >= 1
    qtbot.waitUntil(lambda: w.model.data(w.model.index(row(w, A), COL_LCD), ValueRole) == 11111, timeout=3000)
    qtbot.waitUntil(lambda: session.link(C).status is LinkStatus.TIMEOUT, timeout=5000)
    assert lamps(w)[C] == "down" and "timeout" in w.model.data(w.model.index(row(w, C), COL_STATE))
    assert len(ticks) > 20  # ~1 s of 20 ms ticks while C hung
    timer.stop()
    three.nodes[C].release()
    session.test_connection(C)
    qtbot.waitUntil(lambda: session.link(C).status is LinkStatus.UP, timeout=5000)


def test_slider_sets_speed_and_lcd_shows_the_value_read_back(
    qtbot: Any, three: FakeCluster, make_session: SessionFactory
) -> None:
    session = make_session(three.socket_of, A)
    w = window(qtbot, session)
    session.refresh_now()
    qtbot.waitUntil(lambda: w.model.rowCount() == 3, timeout=5000)
    r = row(w, B)
    with qtbot.waitSignal(session.sig_speed_set, timeout=5000) as blk:
        w.model.setData(w.model.index(r, COL_SPEED), 7609)
    assert blk.args[1].speed == 7609
    assert three.nodes[B].flags.speed == 7609
    assert three.nodes[B].ops("flags.set") == [{"speed": 7609}]
    assert three.nodes[B].ops("flags.get"), "the value shown must be read back"
    assert w.model.data(w.model.index(r, COL_LCD), ValueRole) == 7609
    assert w.statusBar().currentMessage() == f"set speed to 7609 on {B}"
    # the same through the mouse: press and release at the slider's right end
    rect = w.view.visualRect(w.model.index(r, COL_SPEED))
    with qtbot.waitSignal(session.sig_speed_set, timeout=5000):
        qtbot.mousePress(w.view.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(rect.right() - 2, rect.center().y()))
        qtbot.mouseRelease(w.view.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(rect.right() - 2, rect.center().y()))
    assert three.nodes[B].flags.speed > SPEED_MAX * 0.9
    assert w.model.data(w.model.index(r, COL_LCD), ValueRole) == three.nodes[B].flags.speed


def test_node_button_opens_dialog_preselected_and_apply_sends_only_changes(
    qtbot: Any, three: FakeCluster, make_session: SessionFactory
) -> None:
    from dataclasses import replace

    three.nodes[B].flags = replace(three.nodes[B].flags, lstay=True, block=True)
    session = make_session(three.socket_of, A)
    w = window(qtbot, session)
    session.refresh_now()
    qtbot.waitUntil(lambda: w.model.rowCount() == 3, timeout=5000)
    rect = w.view.visualRect(w.model.index(row(w, B), 1))
    qtbot.mouseClick(w.view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    dlg = w.dialogs[B]
    qtbot.waitUntil(dlg.apply_button.isEnabled, timeout=5000)
    boxes = dlg.boxes
    assert boxes["lstay"].isChecked() and boxes["block"].isChecked()
    assert boxes["stay"].isChecked()  # "auto-migration" is on: stay is off
    assert boxes["quiet"].isChecked()  # "talk to other nodes": quiet is off
    boxes["block"].setChecked(False)
    dlg.expel_box.setChecked(True)
    assert dlg.plan() == {B: {"block": False}}
    with qtbot.waitSignal(session.sig_flags_applied, timeout=5000) as blk:
        dlg.apply_button.click()
    assert blk.args[1].ok
    assert three.nodes[B].ops("flags.set") == [{"block": False}]
    assert len(three.nodes[B].ops("admin.expel")) == 1 and not three.nodes[B].ops("admin.bring")
    assert three.nodes[B].flags.block is False and three.nodes[B].flags.lstay is True
    assert "done: block off, expel guests" == dlg._items[B].text(1)
    # nothing changed now: apply sends nothing
    qtbot.waitUntil(dlg.apply_button.isEnabled, timeout=2000)
    dlg.apply_button.click()
    assert dlg._items[B].text(1) == "nothing to change"
    assert len(three.nodes[B].ops("flags.set")) == 1
    dlg.close()


def test_all_nodes_dialog_reports_per_node(qtbot: Any, three: FakeCluster, make_session: SessionFactory) -> None:
    from dataclasses import replace

    three.nodes[C].flags = replace(three.nodes[C].flags, quiet=True)
    session = make_session(three.socket_of, A)
    w = window(qtbot, session)
    session.refresh_now()
    qtbot.waitUntil(lambda: w.model.rowCount() == 3, timeout=5000)
    three.nodes[A].kill()  # the entry still answered; now A is gone for the dialog
    w.header.all_nodes_button.click()
    dlgs = [d for d in w.children() if d.__class__.__name__ == "NodeConfigDialog"]
    assert len(dlgs) == 1
    dlg = dlgs[0]
    qtbot.waitUntil(dlg.apply_button.isEnabled, timeout=8000)
    assert dlg.boxes["quiet"].checkState() == Qt.CheckState.PartiallyChecked  # nodes disagree
    assert "cannot read state" in dlg._items[A].text(1)
    dlg.boxes["quiet"].setCheckState(Qt.CheckState.Unchecked)  # stop talking: quiet on everywhere
    with qtbot.waitSignals([session.sig_flags_applied] * 2, timeout=8000):
        dlg.apply_button.click()
    assert three.nodes[B].ops("flags.set") == [{"quiet": True}]
    assert three.nodes[C].ops("flags.set") == []  # was quiet already: nothing sent
    assert dlg._items[C].text(1) == "nothing to change"
    qtbot.waitUntil(lambda: "not applied" in dlg._items[A].text(1), timeout=8000)
    dlg.close()


def test_test_connection_explains_the_failure(
    qtbot: Any, three: FakeCluster, make_session: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[tuple[str, str, bool]] = []
    monkeypatch.setattr(errors, "show_report", lambda _p, title, text, ok: shown.append((title, text, ok)))
    session = make_session(three.socket_of, A)
    w = window(qtbot, session)
    session.refresh_now()
    qtbot.waitUntil(lambda: w.model.rowCount() == 3, timeout=5000)
    w.test_connection(B)
    qtbot.waitUntil(lambda: len(shown) == 1, timeout=5000)
    assert shown[0][2] and "[ok  ] agent handshake" in shown[0][1] and "node 2" in shown[0][1]
    three.nodes[C].kill()
    w.test_connection(C)
    qtbot.waitUntil(lambda: len(shown) == 2, timeout=5000)
    title, text, ok = shown[1]
    assert not ok and "[FAIL] connect" in text and "no agent" in text and "What to try: Start the agent" in text


def test_unpatched_message_box_fails_the_test() -> None:
    from PySide6.QtWidgets import QMessageBox

    with pytest.raises(AssertionError, match="patch omview.gui.errors"):
        QMessageBox.question(None, "t", "x")


def test_direct_polling_pauses_above_the_limit_until_the_user_asks(
    qtbot: Any, three: FakeCluster, make_session: SessionFactory
) -> None:
    # one connection and worker per node is what asking every node costs: a cluster larger than
    # direct_limit (64 by default; 2 here) is shown from the entry node's table until the user insists
    session = make_session(three.socket_of, A, direct_limit=2)
    w = window(qtbot, session)
    entry = three.nodes[A]

    def tick() -> None:  # one whole poll round (a tick is skipped while the previous one runs)
        before = len(entry.ops("cluster.nodes"))
        session.refresh_now()
        qtbot.waitUntil(lambda: len(entry.ops("cluster.nodes")) > before, timeout=5000)

    assert w.act_direct.isChecked()
    tick()
    qtbot.waitUntil(lambda: w.model.rowCount() == 3 and not w.act_direct.isChecked(), timeout=5000)
    assert "stopped asking every node directly" in w.statusBar().currentMessage()
    for _ in range(3):
        tick()
    assert three.nodes[B].ops("node.info") == [] and three.nodes[C].ops("node.info") == []
    assert session.direct_poll  # the saved preference is unchanged: small clusters are still asked
    # back at the limit: asked directly again, without anybody touching the menu
    three.hidden.add(C)
    tick()
    qtbot.waitUntil(lambda: w.model.rowCount() == 2 and w.act_direct.isChecked(), timeout=5000)
    tick()
    qtbot.waitUntil(lambda: len(three.nodes[B].ops("node.info")) > 0, timeout=5000)
    # above it again, then the user's choice wins over the limit
    three.hidden.discard(C)
    tick()
    qtbot.waitUntil(lambda: w.model.rowCount() == 3 and not w.act_direct.isChecked(), timeout=5000)
    w.act_direct.setChecked(True)
    assert session.direct_active
    tick()
    qtbot.waitUntil(lambda: all(r.direct is not None for r in w.model.rows()), timeout=5000)
    assert three.nodes[C].ops("node.info")
