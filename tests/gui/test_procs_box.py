"""The process box (openmosixprocs) on the netns cluster over SSH: a mosrun job is one row, turns green
with its n# after it migrated, rows hold still under the pointer, filters; and the model by itself."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from PySide6.QtCore import Qt

from omview.gui.connect import SshConnector, SshSettings
from omview.gui.session import ClusterSession
from omview.model.cluster import ProcessInfo
from omview.procs.model import NODE, PID, PROC_ROLE, ProcModel
from omview.procs.window import ProcBox
from tests.migration.helpers import COUNTER, PY, Deputy, all_up, call
from tests.migration.test_migration_faults import hook


def _proc(pid: int, *, user: str = "root", where: int = 1, cantmove: str = "", cmd: str = "sleep 1") -> ProcessInfo:
    return ProcessInfo(pid=pid, ppid=1, uid=0, user=user, state="S", nice=0, cpu=0.0, rss=4096, threads=1,
                       name=cmd.split()[0], cmdline=tuple(cmd.split()), home=1, where=where,
                       cantmove=cantmove)  # fmt: skip


def test_rows_keep_their_place_and_hold_still(qtbot: Any) -> None:
    model = ProcModel(1)
    model.set_processes([_proc(3), _proc(1), _proc(2)])
    assert [p.pid for p in model.processes()] == [3, 1, 2]
    model.set_processes([_proc(2, cmd="sleep 9"), _proc(3), _proc(4)])  # 1 ended, 4 new, 2 changed
    assert [p.pid for p in model.processes()] == [3, 2, 4]
    assert model.process(2).cmdline == ("sleep", "9")  # type: ignore[union-attr]
    model.set_held(True)
    model.set_processes([_proc(2, cmd="sleep 5"), _proc(5)])
    assert [p.pid for p in model.processes()] == [3, 2, 4]  # held: values change, rows stay
    assert model.process(2).cmdline == ("sleep", "5")  # type: ignore[union-attr]
    model.set_held(False)
    assert [p.pid for p in model.processes()] == [2, 5]


def test_filter_icons_and_tooltips(qtbot: Any) -> None:
    model = ProcModel(1)
    model.set_processes([_proc(1), _proc(2, where=3), _proc(3, user="alice", cantmove="open TCP connection")])
    lock = model.index(2, PID)
    assert model.data(lock, Qt.ItemDataRole.DecorationRole) is not None
    assert "open TCP connection" in model.data(lock, Qt.ItemDataRole.ToolTipRole)
    assert model.data(model.index(1, PID), Qt.ItemDataRole.DecorationRole) is not None  # migrated: green
    assert model.data(model.index(1, NODE)) == "3"
    assert model.data(model.index(0, PID), Qt.ItemDataRole.DecorationRole) is None

    def shown() -> list[int]:
        return sorted(model.data(model.index(r, 0), PROC_ROLE).pid for r in range(model.rowCount()))

    model.set_filter(only_migrated=True)
    assert shown() == [2]
    model.set_filter(only_migrated=False, only_migratable=True)
    assert shown() == [1, 2]
    model.set_filter(only_migratable=False, user="alice")
    assert shown() == [3]
    model.set_filter(user="", command="SLEEP")
    assert shown() == [1, 2, 3]
    model.set_filter(command="nothing like it")
    assert shown() == []
    model.set_processes([_proc(1), _proc(4, cmd="nothing like it here")])  # an update filters too
    assert shown() == [4]
    model.set_filter(command="")
    assert shown() == [1, 4] and len(model.all_processes()) == 2


def open_box(qtbot: Any, session: ClusterSession, pid: int, nodes: int | None = None) -> ProcBox:
    """Node 1's box, started, once it lists PID (and, with NODES, the session knows that many nodes)."""
    box = ProcBox(session, 1)
    qtbot.addWidget(box)
    box.start()
    qtbot.waitUntil(lambda: box.model.process(pid) is not None and (nodes is None or len(session.table) == nodes),
                    timeout=30000)  # fmt: skip
    return box


@pytest.mark.cluster
def test_box_shows_a_job_once_green_after_it_migrated_guests_and_drop_on_main_window(qtbot: Any, make_cluster: Any) -> None:
    cluster = all_up(make_cluster(2))
    entry = cluster.nodes[0].address
    connector = SshConnector(SshSettings(ssh_config=str(cluster.ssh_config_path), agent_command=cluster.agent_command))
    session = ClusterSession(connector, entry, poll_interval=0.5, direct_poll=False, call_timeout=10.0)
    dep = Deputy(cluster, 1, [PY, COUNTER, "2000", "0.05"])
    try:
        dep.wait_started()
        box = open_box(qtbot, session, dep.pid)
        assert box.windowTitle() == "procs on node1"
        rows = [p for p in box.model.processes() if "counter.py" in " ".join(p.cmdline)]
        assert [p.pid for p in rows] == [dep.pid]  # one row: no deputy, unshare, jobinit, program
        row = box.model.row_of(dep.pid)
        assert box.model.data(box.model.index(row, NODE)) == "0"
        assert box.model.data(box.model.index(row, PID), Qt.ItemDataRole.DecorationRole) is None
        call(cluster, 1, "proc.migrate", pid=dep.pid, target="2")
        qtbot.waitUntil(lambda: box.model.process(dep.pid).where == 2, timeout=30000)  # type: ignore[union-attr]
        row = box.model.row_of(dep.pid)
        assert box.model.data(box.model.index(row, NODE)) == "2"
        assert box.model.data(box.model.index(row, PID), Qt.ItemDataRole.DecorationRole) is not None
        assert "runs on node 2" in box.model.data(box.model.index(row, PID), Qt.ItemDataRole.ToolTipRole)
        # the guests window of node 2 lists it with its home node 1, its stats, and sends it home
        box2 = ProcBox(session, 2)
        qtbot.addWidget(box2)
        box2.start()
        qtbot.waitUntil(lambda: box2.address is not None and box2.updates > 0, timeout=30000)
        guests = box2.open_guests()
        assert guests is not None and guests.windowTitle() == "guests on node2"
        qtbot.waitUntil(lambda: [g.home for g in guests.guests()] == [1], timeout=20000)
        assert guests.guests()[0].cmdline == (PY, COUNTER, "2000", "0.05")
        guests.select(guests.guests()[0].pid)
        qtbot.waitUntil(lambda: guests.details is not None, timeout=20000)
        assert "home: node 1 (" + entry + ")" == guests.home_label.text()
        text = guests.details_pane.toPlainText()
        assert "utime" in text and "cutime" in text and "vsize" in text and "threads" in text
        guests.home_button.click()
        qtbot.waitUntil(lambda: any("migrated to node 1" in t for t in guests.results), timeout=60000)
        qtbot.waitUntil(lambda: box.model.process(dep.pid).where == 1, timeout=30000)  # type: ignore[union-attr]
        qtbot.waitUntil(lambda: guests.guests() == [], timeout=20000)
        guests.close()
        box2.close()
        # the row dragged from the box and dropped on node 2's row of the main window goes there
        from PySide6.QtCore import QPointF
        from PySide6.QtGui import QDropEvent

        from omview.gui.settings import GuiSettings
        from omview.openmosixview.window import MainWindow

        w = MainWindow(session, GuiSettings(entry=entry), None)
        qtbot.addWidget(w)
        session.refresh_now()
        qtbot.waitUntil(lambda: w.model.rowCount() == 2, timeout=20000)
        mime = box.model.mimeData([box.model.index(box.model.row_of(dep.pid), 0)])
        r1 = w.model.row_of(cluster.nodes[1].address)
        assert r1 is not None
        pos = QPointF(w.view.visualRect(w.model.index(r1, 0)).center())
        w.view.dropEvent(QDropEvent(pos, Qt.DropAction.MoveAction, mime, Qt.MouseButton.LeftButton,
                                    Qt.KeyboardModifier.NoModifier))  # fmt: skip
        qtbot.waitUntil(lambda: any("migrated to node 2" in t for t in w.migrations), timeout=60000)
        qtbot.waitUntil(lambda: box.model.process(dep.pid).where == 2, timeout=30000)  # type: ignore[union-attr]
        w.close()
        box.close()
    finally:
        session.stop()
        dep.proc.kill()
        dep.proc.wait(10)


class _Recorder:
    """A launcher that records what it would start."""

    def __init__(self) -> None:
        self.opened: list[int | None] = []

    def open_procs(self, node: int | None = None) -> bool:
        self.opened.append(node)
        return True


def test_main_window_opens_the_box_as_its_own_program(qtbot: Any, tmp_path: Any) -> None:
    from omview.gui.connect import UnixConnector
    from omview.gui.launch import ProgramLauncher
    from omview.gui.settings import GuiSettings
    from omview.openmosixview.window import MainWindow

    settings = GuiSettings(entry="10.0.0.1", user="admin", identity="/k", ssh_config="/c")
    argv = ProgramLauncher(settings, "/run/a.sock").argv("openmosixprocs", ["--node", "2"])
    assert (argv[0].endswith("/openmosixprocs") or argv[1:3] == ["-m", "omview.procs.app"]) and \
        argv[-2:] == ["--node", "2"]
    for opt, value in (("--entry", "10.0.0.1"), ("--user", "admin"), ("--identity", "/k"),
                       ("--ssh-config", "/c"), ("--local-socket", "/run/a.sock")):  # fmt: skip
        assert argv[argv.index(opt) + 1] == value
    session = ClusterSession(UnixConnector({"10.0.0.1": str(tmp_path / "none.sock")}), "10.0.0.1", poll_interval=0)
    try:
        w = MainWindow(session, settings, None)
        qtbot.addWidget(w)
        assert not w.tools["procs"].isEnabled()
        rec = _Recorder()
        w.set_launcher(rec)  # type: ignore[arg-type]
        assert w.tools["procs"].isEnabled()
        w.tools["procs"].trigger()
        dlg = w.open_node_dialog("10.0.0.1")
        assert dlg.procbox_button.isEnabled()
        dlg.procbox_button.click()
        assert rec.opened == [None, None]  # the node is not in the (empty) table yet: the entry's box
        dlg.close()
    finally:
        session.stop()


@pytest.mark.cluster
def test_migrator_moves_signals_renices_and_kills_a_job(qtbot: Any, make_cluster: Any) -> None:
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QDropEvent

    cluster = all_up(make_cluster(2))
    entry = cluster.nodes[0].address
    connector = SshConnector(SshSettings(ssh_config=str(cluster.ssh_config_path), agent_command=cluster.agent_command))
    session = ClusterSession(connector, entry, poll_interval=0.5, direct_poll=False, call_timeout=10.0)
    dep = Deputy(cluster, 1, [PY, COUNTER, "4000", "0.05"])
    try:
        dep.wait_started()
        box = open_box(qtbot, session, dep.pid, nodes=2)

        def proc() -> ProcessInfo:
            p = box.model.process(dep.pid)
            assert p is not None
            return p

        dlg = box.open_migrator(proc())
        assert dlg is not None
        qtbot.waitUntil(lambda: dlg.status is not None and dlg.nodes.rowCount() == 2, timeout=20000)
        assert dict(dlg.status.fields)["Name"] == "python3" and "running on node 1" in dlg.where.text()
        # double-click node 2; while it runs the migrator shows its phases (the copy held 1.5 s by a
        # test hook, so that "copying" lasts), after it the frozen and total time and the bytes moved
        hooks = [hook(cluster, 1, "method", "images"), hook(cluster, 1, "stall-transfer", "1.5")]
        row2 = next(r for r in range(2) if dlg.nodes.node_at_row(r) == 2)
        dlg.nodes.cellDoubleClicked.emit(row2, 0)
        qtbot.waitUntil(lambda: "copying" in dlg.phases, timeout=60000)
        assert dlg.phase_label.text().startswith("migration: copying ") and " MB (" in dlg.phase_label.text()
        qtbot.waitUntil(lambda: any("migrated to node 2" in t for t in dlg.results), timeout=60000)
        assert "frozen" in dlg.results[-1] and "MB moved" in dlg.results[-1]
        qtbot.waitUntil(lambda: dlg.phases[-1:] == ["done"], timeout=20000)
        assert [p for i, p in enumerate(dlg.phases) if i == 0 or dlg.phases[i - 1] != p] == \
            ["started", "checking", "dumping", "copying", "restoring", "done"], dlg.phases
        assert dlg.phase_label.text().startswith("migration: done: frozen ") and "MB moved" in dlg.phase_label.text()
        for h in hooks:
            h.unlink()
        qtbot.waitUntil(lambda: proc().where == 2, timeout=20000)
        qtbot.waitUntil(lambda: "running on node 2" in dlg.where.text(), timeout=20000)
        # SIGSTOP / SIGCONT change its state where it runs (the status pane reads it there)
        def state() -> str:
            return dict(dlg.status.fields)["State"][:1] if dlg.status is not None else "?"

        def guest_row() -> dict[str, Any]:
            return next(r for r in call(cluster, 2, "procs.list") if r["job"] == dep.job)

        dlg.stop_button.click()
        qtbot.waitUntil(lambda: state() == "T" and guest_row()["state"] == "T", timeout=20000)
        # the home node's box shows the program's state, read where it runs
        qtbot.waitUntil(lambda: proc().state == "T", timeout=20000)
        dlg.cont_button.click()
        qtbot.waitUntil(lambda: state() in "SR", timeout=20000)
        # renice: the slider's value on release
        dlg.nice_slider.setValue(4)
        dlg.nice_slider.sliderReleased.emit()
        qtbot.waitUntil(lambda: guest_row()["nice"] == 4 and proc().nice == 4, timeout=20000)
        # home, then best (two nodes, nothing else runs: node 2 is the best, or the agent says why not)
        dlg.home_button.click()
        qtbot.waitUntil(lambda: any("migrated to node 1" in t for t in dlg.results), timeout=60000)
        qtbot.waitUntil(lambda: proc().where == 1, timeout=20000)
        n = len(dlg.results)
        dlg.best_button.click()
        qtbot.waitUntil(lambda: len(dlg.results) >= n + 2, timeout=60000)
        assert "migrated to node" in dlg.results[-1] or "not migrated to best" in dlg.results[-1], dlg.results
        # a row dragged from the box and dropped on node 2 in the migrator migrates it there
        qtbot.waitUntil(lambda: box.model.process(dep.pid) is not None, timeout=20000)
        where_before = proc().where
        target = 1 if where_before == 2 else 2
        mime = box.model.mimeData([box.model.index(box.model.row_of(dep.pid), 0)])
        row = next(r for r in range(2) if dlg.nodes.node_at_row(r) == target)
        pos = QPointF(dlg.nodes.visualItemRect(dlg.nodes.item(row, 0)).center())
        drop = QDropEvent(pos, Qt.DropAction.MoveAction, mime, Qt.MouseButton.LeftButton,
                          Qt.KeyboardModifier.NoModifier)  # fmt: skip
        dlg.nodes.dropEvent(drop)
        qtbot.waitUntil(lambda: proc().where == target, timeout=60000)
        # kill removes it
        dlg.kill_button.click()
        qtbot.waitUntil(lambda: box.model.process(dep.pid) is None, timeout=30000)
        dlg.close()
        box.close()
    finally:
        session.stop()
        dep.proc.kill()
        dep.proc.wait(10)


def test_sorting_is_the_models_and_waits_for_the_hold(qtbot: Any) -> None:
    from omview.procs.model import CPU

    model = ProcModel(1)
    model.set_processes([replace(_proc(p), cpu=c) for p, c in ((1, 5.0), (2, 50.0), (3, 20.0))])
    model.sort(CPU, Qt.SortOrder.DescendingOrder)  # what a click on the header does

    def order() -> list[int]:
        return [model.data(model.index(r, 0), PROC_ROLE).pid for r in range(model.rowCount())]

    assert order() == [2, 3, 1]
    model.set_held(True)
    model.set_processes([replace(_proc(p), cpu=c) for p, c in ((1, 90.0), (2, 50.0), (3, 20.0))])
    assert order() == [2, 3, 1]  # held: no re-sort under the pointer
    model.set_held(False)
    assert order() == [1, 2, 3]


@pytest.mark.cluster
def test_a_locked_job_shows_the_lock_and_the_migrator_says_why_it_stays(qtbot: Any, make_cluster: Any) -> None:
    cluster = all_up(make_cluster(2))
    entry = cluster.nodes[0].address
    connector = SshConnector(SshSettings(ssh_config=str(cluster.ssh_config_path), agent_command=cluster.agent_command))
    session = ClusterSession(connector, entry, poll_interval=0.5, direct_poll=False, call_timeout=10.0)
    dep = Deputy(cluster, 1, [PY, COUNTER, "4000", "0.05"])
    try:
        dep.wait_started()
        call(cluster, 1, "proc.lock", pid=dep.pid, lock=True)
        box = open_box(qtbot, session, dep.pid, nodes=2)
        row = box.model.row_of(dep.pid)
        assert box.model.data(box.model.index(row, PID), Qt.ItemDataRole.DecorationRole) is not None
        tip = box.model.data(box.model.index(row, PID), Qt.ItemDataRole.ToolTipRole)
        assert "cannot migrate: locked to node 1" == tip
        box.migratable_box.setChecked(True)  # "only migratable" hides it
        assert all(box.model.data(box.model.index(r, 0), PROC_ROLE).pid != dep.pid
                   for r in range(box.model.rowCount()))  # fmt: skip
        box.migratable_box.setChecked(False)
        dlg = box.open_migrator(box.model.process(dep.pid))
        assert dlg is not None
        qtbot.waitUntil(lambda: dlg.nodes.rowCount() == 2, timeout=20000)
        dlg.nodes.cellDoubleClicked.emit(next(r for r in range(2) if dlg.nodes.node_at_row(r) == 2), 0)
        qtbot.waitUntil(lambda: any("not migrated" in t for t in dlg.results), timeout=60000)
        assert "lock" in dlg.results[-1], dlg.results
        assert box.model.process(dep.pid).where == 1  # type: ignore[union-attr]
        dlg.close()
        box.close()
    finally:
        session.stop()
        dep.proc.kill()
        dep.proc.wait(10)


def test_helpers_sit_under_their_job_and_are_never_dragged(qtbot: Any) -> None:
    from omview.gui.procdrag import from_mime

    model = ProcModel(1)
    model.set_processes([_proc(10), replace(_proc(12, cmd="unshare --pid"), helper_of=10), _proc(11)])
    model.sort(PID)
    assert [p.pid for p in model.processes()] == [10, 12, 11]
    helper = model.row_of(12)
    assert not model.flags(model.index(helper, 0)) & Qt.ItemFlag.ItemIsDragEnabled
    assert model.flags(model.index(model.row_of(10), 0)) & Qt.ItemFlag.ItemIsDragEnabled
    assert model.data(model.index(helper, 3)).startswith("  \\_ unshare")
    drag = from_mime(model.mimeData([model.index(r, 0) for r in range(3)]))
    assert drag is not None and drag.pids == (10, 11) and drag.node == 1


def test_an_update_signals_only_what_changed(qtbot: Any) -> None:
    """5,000 rows a second (bench/procs.py): new values are one dataChanged; the rows are re-ordered
    (layoutChanged) only when the order changed, and never reset."""
    from omview.procs.model import CPU

    model = ProcModel(1)
    model.sort(PID)
    seen: list[str] = []
    for name in ("dataChanged", "layoutChanged", "modelReset", "rowsInserted", "rowsRemoved"):
        getattr(model, name).connect(lambda *_a, n=name: seen.append(n))
    model.set_processes([_proc(p) for p in range(1, 1001)])
    assert seen == ["rowsInserted"] and model.rowCount() == 1000
    seen.clear()
    model.set_processes([replace(_proc(p), cpu=float(p % 7)) for p in range(1, 1001)])  # sorted by pid: same order
    assert seen == ["dataChanged"]
    seen.clear()
    model.set_processes([replace(_proc(p), cpu=float(p % 7)) for p in range(2, 1002)])  # 1 ended, 1001 new
    # 1 moved to the end, removed; then the new values (put in place while ordering)
    assert seen == ["rowsInserted", "layoutChanged", "rowsRemoved", "dataChanged"]
    assert [p.pid for p in model.processes()] == list(range(2, 1002))
    seen.clear()
    model.sort(CPU, Qt.SortOrder.DescendingOrder)
    assert seen == ["layoutChanged"]
    seen.clear()
    model.set_processes([replace(_proc(p), cpu=float(p % 7)) for p in range(2, 1002)])  # same values: same order
    assert seen == ["dataChanged"]


def test_a_stale_home_row_is_dimmed_with_its_age(qtbot: Any) -> None:
    """A job running on node 3 whose reports stopped (stats_age from the agent): dimmed, and the
    tooltip says how old its numbers are; a job node 3 has not reported yet likewise."""
    from PySide6.QtGui import QPalette
    from PySide6.QtWidgets import QStyleOptionViewItem, QTableView

    from omview.procs.model import CPU, ProcDelegate

    model = ProcModel(1)
    model.set_processes([replace(_proc(1, where=3), cpu=97.0, state="R", stats_age=42.4),
                         replace(_proc(2, where=3), stats_age=-1.0), _proc(3, where=3), _proc(4)])  # fmt: skip
    old, never, current, local = (model.index(r, CPU) for r in range(4))
    assert "reported them 42 s ago" in model.data(old, Qt.ItemDataRole.ToolTipRole)
    assert "migrated: home node 1, runs on node 3" in model.data(old, Qt.ItemDataRole.ToolTipRole)
    assert "has not reported this job's state" in model.data(never, Qt.ItemDataRole.ToolTipRole)
    assert "reported" not in model.data(current, Qt.ItemDataRole.ToolTipRole)
    assert model.data(old, Qt.ItemDataRole.DisplayRole) == "97.0"  # the old number, shown as old
    assert model.data(old, Qt.ItemDataRole.ForegroundRole) is not None
    assert model.data(current, Qt.ItemDataRole.ForegroundRole) is None
    assert model.data(local, Qt.ItemDataRole.ForegroundRole) is None
    view = QTableView()
    qtbot.addWidget(view)
    view.setModel(model)
    delegate = ProcDelegate(model, view)

    def text_colour(index: Any) -> str:
        opt = QStyleOptionViewItem()
        opt.palette = view.palette()
        delegate.initStyleOption(opt, index)
        return opt.palette.color(QPalette.ColorRole.Text).name()

    dim = view.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text).name()
    normal = view.palette().color(QPalette.ColorRole.Text).name()
    assert dim != normal
    assert text_colour(old) == dim and text_colour(never) == dim
    assert text_colour(current) == normal and text_colour(local) == normal


@pytest.mark.cluster
def test_migrator_says_blocked_and_down_and_sends_to_the_best_node(qtbot: Any, make_cluster: Any) -> None:
    """Three nodes: node 2 blocks arrivals, then its agent stops (down); the migrator says each
    reason and the job stays; "send to the best node" takes it to node 3, the only candidate left
    that is faster than node 1 (speeds set: node 1 slow, node 3 fast)."""
    cluster = all_up(make_cluster(3))
    entry = cluster.nodes[0].address
    connector = SshConnector(SshSettings(ssh_config=str(cluster.ssh_config_path), agent_command=cluster.agent_command))
    session = ClusterSession(connector, entry, poll_interval=0.5, direct_poll=False, call_timeout=10.0)
    dep = Deputy(cluster, 1, [PY, COUNTER, "4000", "0.05"])

    def seen_by(node: int) -> dict[int, dict[str, Any]]:
        return {n["id"]: n for n in call(cluster, node, "cluster.nodes")}

    try:
        call(cluster, 1, "flags.set", speed=2000)
        call(cluster, 3, "flags.set", speed=50000)
        call(cluster, 2, "flags.set", block=True)
        qtbot.waitUntil(lambda: (s := seen_by(1))[2]["block"] and s[3]["speed"] == 50000, timeout=20000)
        dep.wait_started()
        box = open_box(qtbot, session, dep.pid, nodes=3)

        def where() -> int:
            p = box.model.process(dep.pid)
            assert p is not None
            return p.where

        dlg = box.open_migrator(box.model.process(dep.pid))
        assert dlg is not None
        qtbot.waitUntil(lambda: dlg.status is not None and dlg.nodes.rowCount() == 3, timeout=20000)
        row2 = next(r for r in range(3) if dlg.nodes.node_at_row(r) == 2)

        # a blocked target
        dlg.nodes.cellDoubleClicked.emit(row2, 0)
        qtbot.waitUntil(lambda: any("not migrated" in t for t in dlg.results), timeout=60000)
        assert dlg.results[-1] == f"process {dep.pid} not migrated to 2: node 2 blocks arriving processes [BLOCKED]"
        assert dlg.outcome.text() == dlg.results[-1]
        assert where() == 1 and call(cluster, 1, "job.status", job=dep.job)["where"] == 1

        # a node that is down (its agent stopped; node 1 marks it down after down_after)
        cluster.agent_stop(2)
        qtbot.waitUntil(lambda: seen_by(1)[2]["status"] == "down", timeout=30000)
        qtbot.waitUntil(lambda: dlg.nodes.item(row2, 4) is not None and dlg.nodes.item(row2, 4).text() == "down",
                        timeout=20000)  # fmt: skip
        n = len(dlg.results)
        dlg.nodes.cellDoubleClicked.emit(row2, 0)
        qtbot.waitUntil(lambda: len(dlg.results) >= n + 2, timeout=60000)  # "migrating…", then the outcome
        assert dlg.results[-1] == f"process {dep.pid} not migrated to 2: node 2 is down [NODE_DOWN]"
        assert where() == 1 and call(cluster, 1, "job.status", job=dep.job)["where"] == 1

        # the best node: node 3 (node 2 is down and blocked, node 1 is slow)
        n = len(dlg.results)
        dlg.best_button.click()
        qtbot.waitUntil(lambda: len(dlg.results) >= n + 2, timeout=60000)
        assert dlg.results[-1].startswith(f"process {dep.pid} migrated to node 3: frozen "), dlg.results
        assert call(cluster, 1, "job.status", job=dep.job)["where"] == 3
        qtbot.waitUntil(lambda: where() == 3, timeout=20000)
        qtbot.waitUntil(lambda: "running on node 3" in dlg.where.text(), timeout=20000)
        dlg.close()
        box.close()
    finally:
        session.stop()
        dep.proc.kill()
        dep.proc.wait(10)
