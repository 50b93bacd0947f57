"""The main window against real omview agents on loopback (Unix sockets, no SSH, no root)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QTimer

from omview.gui.settings import GuiSettings
from omview.model.client import AgentClient
from omview.openmosixview.node_table import COL_ID, COL_LCD, COL_SPEED, LampRole, ValueRole
from omview.openmosixview.window import MainWindow
from tests.gui.conftest import SessionFactory
from tests.gui.real_agents import RealAgents


@pytest.fixture(scope="module")
def agents() -> Iterator[RealAgents]:
    d = Path(tempfile.mkdtemp(prefix="omvra-", dir="/tmp"))
    real = RealAgents(d, 3)
    try:
        yield real.start()
    finally:
        real.stop()
        shutil.rmtree(d, ignore_errors=True)


def open_window(qtbot: Any, session: Any) -> MainWindow:
    w = MainWindow(session, GuiSettings(entry=session.entry), None)
    qtbot.addWidget(w)
    w.show()
    session.refresh_now()
    qtbot.waitUntil(lambda: w.model.rowCount() >= 2 and all(r.direct is not None for r in w.model.rows()), timeout=10000)
    return w


def lamps(w: MainWindow) -> dict[str, str]:
    m = w.model
    return {m.node_at(r).gossip.address: m.data(m.index(r, COL_ID), LampRole) for r in range(m.rowCount())}


def test_rows_and_speed_round_trip(qtbot: Any, agents: RealAgents, make_session: SessionFactory) -> None:
    session = make_session(agents.socket_of, agents.addresses[0])
    w = open_window(qtbot, session)
    assert sorted(lamps(w)) == agents.addresses
    assert set(lamps(w).values()) == {"up"}
    assert w.header.cpus_label.text() == "6"
    target = agents.addresses[1]
    r = w.model.row_of(target)
    assert r is not None
    with qtbot.waitSignal(session.sig_speed_set, timeout=10000) as blk:
        w.model.setData(w.model.index(r, COL_SPEED), 7600)
    assert blk.args[1].error is None
    with AgentClient.local(agents.socket_of(target)) as c:
        assert c.flags().speed == 7600
    assert w.model.data(w.model.index(r, COL_LCD), ValueRole) == 7600
    assert w.statusBar().currentMessage() == f"set speed to 7600 on {target}"


def test_dialog_preselected_from_real_flags(qtbot: Any, agents: RealAgents, make_session: SessionFactory) -> None:
    target = agents.addresses[2]
    with AgentClient.local(agents.socket_of(target)) as c:
        c.set_flags(lstay=True, block=False, stay=False, quiet=False)
    session = make_session(agents.socket_of, agents.addresses[0])
    w = open_window(qtbot, session)
    dlg = w.open_node_dialog(target)
    qtbot.waitUntil(dlg.apply_button.isEnabled, timeout=10000)
    assert dlg.boxes["lstay"].isChecked() and not dlg.boxes["block"].isChecked()
    dlg.boxes["block"].setChecked(True)
    dlg.boxes["lstay"].setChecked(False)
    assert dlg.plan() == {target: {"lstay": False, "block": True}}
    with qtbot.waitSignal(session.sig_flags_applied, timeout=10000) as blk:
        dlg.apply()
    assert blk.args[1].ok, blk.args[1].summary()
    with AgentClient.local(agents.socket_of(target)) as c:
        flags = c.flags()
        c.set_flags(block=False)
    assert flags.block and not flags.lstay
    dlg.close()


def test_killed_agent_turns_red_while_gui_keeps_ticking(qtbot: Any, make_session: SessionFactory) -> None:
    d = Path(tempfile.mkdtemp(prefix="omvrk-", dir="/tmp"))
    real = RealAgents(d, 2)
    try:
        real.start()
        session = make_session(real.socket_of, real.addresses[0], poll_interval=0.3)
        w = open_window(qtbot, session)
        session.start()
        ticks: list[int] = []
        timer = QTimer()
        timer.timeout.connect(lambda: ticks.append(1))
        timer.start(20)
        dead = real.addresses[1]
        real.kill(dead)  # SIGKILL by PID: a crash
        qtbot.waitUntil(lambda: lamps(w).get(dead) == "down", timeout=10000)
        assert lamps(w)[real.addresses[0]] == "up"
        qtbot.waitUntil(lambda: len(ticks) > 10, timeout=2000)
        # the entry agent's own gossip view marks it down too, a little later
        qtbot.waitUntil(lambda: not w.model.node_at(w.model.row_of(dead) or 0).gossip.up, timeout=15000)
        timer.stop()
    finally:
        real.stop()
        shutil.rmtree(d, ignore_errors=True)
