"""openmosixmigmon on the netns cluster over SSH (one cluster and one mosrun job for the module): a
square dragged onto node 2's penguin migrates the job there (mps on the home node says so) and turns
green with a line home, a double-click sends it home, a drop on a blocked node snaps back and says
why, a move made with the migrate command is animated from the agent's event; plus the pure layout
and state rules, and a drag with real X pointer events under Xvfb."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt

from omview.gui.connect import SshConnector, SshSettings
from omview.gui.session import ClusterSession
from omview.migmon.layout import SQUARE, SlotRing, node_places, ring_radius, slot
from omview.migmon.state import MigState, Move, Scope
from omview.migmon.window import MigmonWindow
from omview.model.cluster import ProcessInfo
from omview.testbed import Cluster, teardown
from tests.conftest import _STATE_DIRS, require_root
from tests.migration.helpers import COUNTER, PY, Deputy, all_up, call

HELPER = Path(__file__).parent / "migmon_xdrag.py"


# ---- pure: layout and state ---------------------------------------------------------------------


def _proc(pid: int, *, where: int = 1, home: int = 1, job: str = "", cantmove: str = "", uid: int = 0) -> ProcessInfo:
    return ProcessInfo(pid=pid, ppid=1, uid=uid, user="root" if uid == 0 else "alice", state="S", nice=0, cpu=0.0,
                       rss=4096, threads=1, name="p", cmdline=("p", str(pid)), home=home, where=where,
                       cantmove=cantmove, job=job)  # fmt: skip


def test_slots_stay_put_and_rings_do_not_overlap() -> None:
    ring = SlotRing()
    ring.update([10, 11, 12, 13])
    before = {k: ring.index(k) for k in (10, 11, 12, 13)}
    ring.update([10, 12, 13, 14])  # 11 ended, 14 new: it takes 11's slot, the others stay
    assert ring.index(14) == before[11] and all(ring.index(k) == before[k] for k in (10, 12, 13))
    ring.update([10])
    assert ring.span == 1  # the ring shrinks when its outer squares leave
    # 2,000 squares: no two slots closer than a square, the ring stays compact
    pts = [slot(i, 62.0).offset() for i in range(2000)]
    near = min(math.dist(pts[i], pts[j]) for i in range(0, 2000, 97) for j in range(2000) if i != j)
    assert near >= SQUARE and ring_radius(2000, 62.0) < 300
    places = node_places(list(range(1, 65)), 1, ring_radius(2000, 62.0), 60.0)
    others = [p for n, p in places.items() if n != 1]
    assert places[1].main and (places[1].x, places[1].y) == (0.0, 0.0)
    assert min(math.dist((a.x, a.y), (b.x, b.y)) for a in others for b in others if a is not b) >= 2 * 60.0
    assert min(math.hypot(p.x, p.y) for p in others) >= ring_radius(2000, 62.0) + 60.0


def test_the_penguin_is_our_own_svg_and_renders(qtbot: Any) -> None:
    from omview.gui.assets import SEARCH, asset
    from omview.migmon.scene import PENGUIN, Penguins

    path = asset(PENGUIN)
    assert path is not None and path.parent == SEARCH[0] and "drawn for omview" in path.read_text()
    pix = Penguins().pixmap(38, 45).toImage()
    assert not pix.isNull() and pix.pixelColor(38, 50).alpha() > 0  # the middle of the body is painted


def test_state_events_win_over_older_polls_and_scopes_filter() -> None:
    st = MigState()
    t0 = time.monotonic()
    moves, appeared, _ = st.apply_list(1, (_proc(5, job="1:5"), _proc(6, cantmove="open TCP connection"),
                                           _proc(7, uid=1000)), t0)  # fmt: skip
    assert moves == [] and sorted(appeared) == [5, 7]  # 6 cannot move: not drawn as "all migratable"
    mark, move = st.apply_event("migration.started", {"job": "1:5", "pid": 5, "source": 1, "target": 2})
    assert mark is not None and mark.moving_to == 2 and move is None
    mark, move = st.apply_event("migration.done", {"job": "1:5", "pid": 5, "source": 1, "target": 2, "frozen_s": 0.25})
    assert move == Move(5, 1, 2, "event") and mark is not None and mark.migrated
    assert "frozen 250 ms" in mark.tooltip() and "home node: 1" in mark.tooltip()
    # a poll sent before the event still says node 1: it must not move the square back
    moves, _, _ = st.apply_list(1, (_proc(5, job="1:5"), _proc(7, uid=1000)), t0)
    assert moves == [] and st.marks[5].where == 2
    # a later poll that says node 3 (a move whose event was missed) moves it
    moves, _, _ = st.apply_list(1, (_proc(5, where=3, job="1:5"), _proc(7, uid=1000)), time.monotonic())
    assert moves == [Move(5, 2, 3, "poll")]
    st.uid = 1000
    st.set_scope(Scope.MINE)
    assert list(st.marks) == [7]
    st.set_scope(Scope.ALL)
    assert sorted(st.marks) == [5, 7]  # 6 ended meanwhile (the last list has no 6)


# ---- the window on the netns cluster ------------------------------------------------------------


@pytest.fixture(scope="module")
def migcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Deputy]]:
    """3 nodes and one mosrun job on node 1, for every migmon test (it comes home after each)."""
    require_root()
    state = tmp_path_factory.mktemp("migmon-cluster")
    _STATE_DIRS.append(state)
    dep: Deputy | None = None
    try:
        cluster = all_up(Cluster.up(state, 3))
        dep = Deputy(cluster, 1, [PY, COUNTER, "100000", "0.1"])
        dep.wait_started()
        yield cluster, dep
    finally:
        if dep is not None:
            dep.kill()
        teardown(state)


def _session(cluster: Cluster) -> ClusterSession:
    connector = SshConnector(SshSettings(ssh_config=str(cluster.ssh_config_path), agent_command=cluster.agent_command))
    return ClusterSession(connector, cluster.nodes[0].address, poll_interval=0.5, direct_poll=False, call_timeout=10.0)


def _mps_node(cluster: Cluster, pid: int) -> int:
    """The job's n# in ``mps --json`` on its home node 1 (0: runs there)."""
    out = cluster.exec(1, ["mps", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return next(int(p["node"]) for p in json.loads(out.stdout) if p["pid"] == pid)


@pytest.fixture
def window(qtbot: Any, migcluster: tuple[Cluster, Deputy], request: pytest.FixtureRequest) -> Iterator[MigmonWindow]:
    cluster, dep = migcluster
    session = _session(cluster)
    w = MigmonWindow(session, poll_interval=getattr(request, "param", 0.5))
    qtbot.addWidget(w)
    try:
        w.resize(900, 800)
        w.show()
        qtbot.waitExposed(w)
        w.start()
        qtbot.waitUntil(lambda: dep.pid in w.state.marks and len(w.scene.rings) == 3
                        and w.scene.square_pos(dep.pid) is not None and not w.scene.animating
                        and session.entry in w.subscribed, timeout=30000)  # fmt: skip
        yield w
    finally:
        w.close()
        session.stop()
        if _mps_node(cluster, dep.pid) != 0:  # leave the job at home for the next test
            call(cluster, 1, "proc.migrate", pid=dep.pid, target="home")


def _at(w: MigmonWindow, pos: QPointF) -> QPoint:
    return w.view.mapFromScene(pos)


def _drag(qtbot: Any, w: MigmonWindow, key: int, node: int) -> None:
    """Press on the square, move in steps to the node's penguin, release (the way a hand does)."""
    start = w.scene.square_pos(key)
    assert start is not None
    a, b = _at(w, start), _at(w, w.scene.nodes[node].pos())
    vp = w.view.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=a)
    for i in range(1, 11):
        qtbot.mouseMove(vp, a + (b - a) * (i / 10))
    assert w.view.dragging == key and w.scene.nodes[node].highlight
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=b)


def _landed_on(w: MigmonWindow, key: int, node: int) -> bool:
    return key in w.scene.rings[node].marks and not w.scene.animating and key not in w.scene.held


@pytest.mark.cluster
def test_drag_to_node_2_migrates_turns_green_and_a_double_click_brings_it_home(
        qtbot: Any, window: MigmonWindow, migcluster: tuple[Cluster, Deputy]) -> None:  # fmt: skip
    cluster, dep = migcluster
    w, key = window, dep.pid
    assert w.scene.rings[1].category(key) == "black" and not w.state.marks[key].migrated
    _drag(qtbot, w, key, 2)
    qtbot.waitUntil(lambda: _mps_node(cluster, key) == 2, timeout=60000)
    qtbot.waitUntil(lambda: _landed_on(w, key, 2), timeout=30000)
    assert w.scene.rings[2].category(key) == "green" and w.state.marks[key].migrated
    assert w.scene.lines.count == 1  # the line home
    pos = w.scene.square_pos(key)
    assert pos is not None and math.dist((pos.x(), pos.y()), (w.scene.nodes[2].x(), w.scene.nodes[2].y())) < 80
    qtbot.waitUntil(lambda: any("migrated to node 2" in m for m in w.messages), timeout=30000)
    tip = w.view.tooltip_at(pos)
    assert f"PID {key}" in tip and "counter.py" in tip and "home node: 1" in tip and "frozen" in tip
    # a double-click sends it home
    qtbot.waitUntil(lambda: node_subscribed(w, cluster, 2), timeout=20000)
    qtbot.mouseDClick(w.view.viewport(), Qt.MouseButton.LeftButton, pos=_at(w, pos))
    qtbot.waitUntil(lambda: _mps_node(cluster, key) == 0, timeout=60000)
    qtbot.waitUntil(lambda: _landed_on(w, key, 1), timeout=30000)
    assert w.scene.rings[1].category(key) == "black" and w.scene.lines.count == 0
    # "all" draws the node's other processes too (its sshd, the agent: they cannot move)
    shown = len(w.state.marks)
    w.scope_box.setCurrentIndex(list(Scope).index(Scope.ALL))
    assert len(w.state.marks) > shown and key in w.state.marks
    assert any(w.scene.rings[1].category(k) == "grey" for k in w.state.marks)


def node_subscribed(w: MigmonWindow, cluster: Cluster, node: int) -> bool:
    return cluster.nodes[node - 1].address in w.subscribed


@pytest.mark.cluster
def test_a_drop_on_a_blocked_node_snaps_back_and_says_why(
        qtbot: Any, window: MigmonWindow, migcluster: tuple[Cluster, Deputy]) -> None:  # fmt: skip
    cluster, dep = migcluster
    w, key = window, dep.pid
    home = w.scene.square_pos(key)
    call(cluster, 3, "flags.set", block=True)
    try:
        _drag(qtbot, w, key, 3)
        qtbot.waitUntil(lambda: any("not migrated to 3" in m for m in w.messages), timeout=60000)
        qtbot.waitUntil(lambda: _landed_on(w, key, 1), timeout=10000)
        reason = next(m for m in w.messages if "not migrated to 3" in m)
        assert "block" in reason.lower() or "refuse" in reason.lower(), reason
        assert w.statusBar().currentMessage() == reason
        assert w.scene.square_pos(key) == home and w.scene.rings[1].category(key) == "black"
        assert _mps_node(cluster, key) == 0
    finally:
        call(cluster, 3, "flags.set", block=False)


@pytest.mark.cluster
@pytest.mark.parametrize("window", [3600.0], indirect=True)  # no process poll during the test: events only
def test_a_move_made_with_the_migrate_command_is_animated(
        qtbot: Any, window: MigmonWindow, migcluster: tuple[Cluster, Deputy]) -> None:  # fmt: skip
    cluster, dep = migcluster
    w, key = window, dep.pid
    polls = w.updates
    out = cluster.exec(1, ["migrate", str(key), "2"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    qtbot.waitUntil(lambda: Move(key, 1, 2, "event") in w.animations, timeout=20000)
    qtbot.waitUntil(lambda: _landed_on(w, key, 2), timeout=10000)
    assert w.scene.rings[2].category(key) == "green" and w.scene.lines.count == 1
    assert w.updates == polls  # the agent's event moved it, not a poll
    qtbot.waitUntil(lambda: node_subscribed(w, cluster, 2), timeout=20000)
    out = cluster.exec(1, ["migrate", str(key), "home"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    qtbot.waitUntil(lambda: Move(key, 2, 1, "event") in w.animations, timeout=20000)
    qtbot.waitUntil(lambda: _landed_on(w, key, 1), timeout=10000)
    assert w.updates == polls


@pytest.mark.cluster
def test_a_real_pointer_drag_under_xvfb(migcluster: tuple[Cluster, Deputy], xvfb: str) -> None:
    """The same drag with real X pointer events (XTEST) on a real X server, in a process of its own."""
    cluster, dep = migcluster
    env = dict(os.environ, DISPLAY=xvfb, QT_QPA_PLATFORM="xcb")
    out = subprocess.run([sys.executable, str(HELPER), str(cluster.ssh_config_path), cluster.agent_command,
                          cluster.nodes[0].address, str(dep.pid), "2"], env=env, capture_output=True, text=True,
                         timeout=240)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["dropped_on"] == 2 and result["landed"] == 2 and result["platform"] == "xcb", result
    assert _mps_node(cluster, dep.pid) == 2
    call(cluster, 1, "proc.migrate", pid=dep.pid, target="home")


class _Recorder:
    """A launcher that records what it would start."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def open_procs(self, node: int | None = None) -> bool:
        self.started.append("openmosixprocs")
        return True

    def open_migmon(self) -> bool:
        self.started.append("openmosixmigmon")
        return True


def test_the_main_windows_view_menu_starts_migmon_as_its_own_program(qtbot: Any, tmp_path: Path) -> None:
    from omview.gui.connect import UnixConnector
    from omview.gui.launch import ProgramLauncher
    from omview.gui.settings import GuiSettings
    from omview.openmosixview.window import MainWindow

    settings = GuiSettings(entry="10.0.0.1", user="admin", ssh_config="/c")
    argv = ProgramLauncher(settings, "/run/a.sock").argv("openmosixmigmon")
    assert argv[0].endswith("/openmosixmigmon") or argv[1:3] == ["-m", "omview.migmon.app"]
    assert argv[argv.index("--entry") + 1] == "10.0.0.1" and argv[argv.index("--local-socket") + 1] == "/run/a.sock"
    session = ClusterSession(UnixConnector({"10.0.0.1": str(tmp_path / "none.sock")}), "10.0.0.1", poll_interval=0)
    try:
        w = MainWindow(session, settings, None)
        qtbot.addWidget(w)
        act = w.tools["migmon"]
        assert not act.isEnabled() and act in w.menus["View"].actions()
        rec = _Recorder()
        w.set_launcher(rec)  # type: ignore[arg-type]
        assert act.isEnabled()
        act.trigger()
        assert rec.started == ["openmosixmigmon"]
        assert w.statusBar().currentMessage() == "migration monitor started"
    finally:
        session.stop()
