"""Advanced execution: run modes -> mosrun options, the host and parallel choosers over sparse node
IDs, and real jobs started from the dialog - locally through a loopback agent, and over SSH on the
netns cluster (root): "run on" lands on the chosen node, parallel starts one job per node, argv
arrives intact, exit status and output reach the jobs view, the window stays responsive."""

from __future__ import annotations

import ast
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QTimer

from omview.gui import errors
from omview.gui.connect import SshConnector, SshSettings, UnixConnector
from omview.gui.links import Links
from omview.gui.session import ClusterSession
from omview.gui.settings import GuiSettings
from omview.model import procfs
from omview.model.channel import UnixChannel
from omview.model.client import AgentClient
from omview.model.cluster import NodeInfo
from omview.openmosixview.jobs import (
    COL_EXIT,
    COL_STATE,
    COL_WHERE,
    JobControl,
    JobRecord,
    JobState,
    Mode,
    mosrun_options,
)
from omview.openmosixview.jobs import parallel_nodes as choose
from omview.openmosixview.run_dialog import NodeDial, NodeIdSpinBox, RunDialog
from omview.openmosixview.window import MainWindow
from tests.gui.real_agents import RealAgents

PY = "/usr/bin/python3"
#: prints its host name, its argv and something on stderr, then exits 3
PROBE = ("import socket, sys; print(socket.gethostname()); print(repr(sys.argv[1:])); "
         "print('to stderr', file=sys.stderr); sys.exit(3)")  # fmt: skip


def nodes(*ids: int) -> list[NodeInfo]:
    return [NodeInfo(id=i, address=f"10.9.{i // 256}.{i % 256}", status="up") for i in ids]


# ---- no agents needed -------------------------------------------------------------------------


def test_each_run_mode_maps_to_its_mosrun_options() -> None:
    assert mosrun_options(Mode.NOMIG, None) == ["--nomig"]
    assert mosrun_options(Mode.RUNHOME, None) == ["-h"]
    assert mosrun_options(Mode.RUNON, 3) == ["--runon", "3"]
    assert mosrun_options(Mode.CPUJOB, 25611) == ["25611", "--cpujob"]
    assert mosrun_options(Mode.IOJOB, 2) == ["2", "--iojob"]
    assert mosrun_options(Mode.NODECAY, 2) == ["2", "--nodecay"]
    assert mosrun_options(Mode.SLOWDECAY, 2) == ["2", "--slowdecay"]
    assert mosrun_options(Mode.FASTDECAY, 2) == ["2", "--fastdecay"]
    assert mosrun_options(Mode.PARALLEL, 7) == ["7"]
    with pytest.raises(ValueError, match="needs a node"):
        mosrun_options(Mode.RUNON, None)
    assert len(Mode) == 9


def test_parallel_chooser_counts_sparse_ids_and_inverse_reverses() -> None:
    ids = [25611, 1, 7, 300]
    assert choose(ids, 1, 25611, False) == [1, 7, 300, 25611]
    assert choose(ids, 2, 400, False) == [7, 300]
    assert choose(ids, 400, 2, False) == [7, 300]  # either order
    assert choose(ids, 1, 25611, True) == [25611, 300, 7, 1]
    assert choose(ids, 8, 299, False) == []


def test_host_chooser_dial_offers_only_known_sparse_ids(qtbot: Any) -> None:
    chooser = NodeDial()
    qtbot.addWidget(chooser)
    assert chooser.node() is None and not chooser.dial.isEnabled()
    chooser.set_node_ids([25611, 1, 7])
    assert (chooser.dial.minimum(), chooser.dial.maximum()) == (0, 2)  # three positions, not 25611
    seen = []
    for pos in range(chooser.dial.minimum(), chooser.dial.maximum() + 1):
        chooser.dial.setValue(pos)
        seen.append((chooser.node(), int(chooser.lcd.value())))
    assert seen == [(1, 1), (7, 7), (25611, 25611)]  # the LCD shows the node ID, five digits fit
    assert chooser.lcd.checkOverflow(65535) is False
    with pytest.raises(ValueError, match="not known"):
        chooser.set_node(2)
    # a node that stays known stays chosen when the table changes; a vanished one falls back
    chooser.set_node(7)
    chooser.set_node_ids([1, 7, 9])
    assert chooser.node() == 7
    chooser.set_node_ids([1, 9])
    assert chooser.node() == 1


def test_parallel_spinboxes_step_through_known_ids(qtbot: Any) -> None:
    spin = NodeIdSpinBox()
    qtbot.addWidget(spin)
    spin.set_node_ids([1, 7, 25611], 1)
    spin.stepBy(1)
    assert spin.value() == 7
    spin.stepBy(1)
    assert spin.value() == 25611
    spin.stepBy(5)
    assert spin.value() == 25611
    spin.stepBy(-2)
    assert spin.value() == 1
    assert spin.fixup("300") == "7" and spin.fixup("20000") == "25611"
    state, _, _ = spin.validate("300", 3)  # type: ignore[misc]
    assert state.name == "Intermediate"


def test_dialog_builds_requests_and_reports_bad_input(qtbot: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    control = JobControl(Links(UnixConnector({})))
    started: list[Any] = []
    monkeypatch.setattr(control, "start", lambda req: started.append(req) or [1])
    dlg = RunDialog(control, nodes(1, 7, 25611), "10.9.0.1")
    qtbot.addWidget(dlg)
    assert [b.text() for b in dlg.mode_group.buttons()] == [m.value for m in Mode]
    # no migration: no host chooser
    assert dlg.mode() is Mode.NOMIG and not dlg.host_box.isEnabled() and not dlg.parallel_box.isEnabled()
    assert dlg.execute() == [] and "choose a program" in dlg.problem.text()
    monkeypatch.setattr(RunDialog, "choose_file", staticmethod(lambda _p, _s: "/opt/my job/run"))
    dlg.btn_browse.click()
    assert dlg.program.text() == "/opt/my job/run"
    dlg.arguments.setText("""a "b c" 'd"e' '' $HOME *""")
    dlg.set_mode(Mode.CPUJOB)
    assert dlg.host_box.isEnabled() and dlg.chooser.dial.isEnabled()
    dlg.chooser.set_node(25611)
    dlg.set_home("10.9.0.7")
    assert dlg.execute() == [1] and dlg.problem.text() == ""
    req = started[-1]
    # the program line is one word even with a space; no shell expands $HOME or *
    assert req.argv == ("/opt/my job/run", "a", "b c", 'd"e', "", "$HOME", "*")
    assert (req.home, req.mode, req.node, req.targets()) == ("10.9.0.7", Mode.CPUJOB, 25611, [25611])
    dlg.set_mode(Mode.PARALLEL)
    assert not dlg.host_box.isEnabled() and dlg.parallel_box.isEnabled()
    assert dlg.selected_parallel_nodes() == [1, 7, 25611] and "1, 7, 25611" in dlg.parallel_label.text()
    dlg.first.stepBy(1)
    dlg.inverse.setChecked(True)
    dlg.execute()
    assert started[-1].nodes == (25611, 7)
    dlg.arguments.setText("'unclosed")
    assert dlg.execute() == [] and "quotation" in dlg.problem.text()
    # a new cluster table keeps the choices that still exist
    dlg.set_nodes(nodes(1, 7, 25611, 30000))
    assert dlg.chooser.node() == 25611 and dlg.home.currentData() == "10.9.0.7"
    assert (dlg.first.value(), dlg.last.value()) == (7, 25611)


# ---- helpers for real jobs -----------------------------------------------------------------------


def wait_ended(qtbot: Any, control: JobControl, keys: list[int], timeout: int = 60000) -> list[JobRecord]:
    def ended() -> bool:
        return all(not control.model.record(k).running for k in keys)  # type: ignore[union-attr]

    qtbot.waitUntil(ended, timeout=timeout)
    return [control.model.record(k) for k in keys]  # type: ignore[misc]


def home_status(socket_path: str, job_id: str) -> dict[str, Any]:
    with AgentClient(UnixChannel(socket_path), client_name="tests") as c:
        return dict(c.call("job.status", job=job_id))


def kill_left_over(pids: list[int]) -> None:
    """Stop deputies a failed test left behind, by their PIDs (mosrun only, never by name)."""
    for pid in pids:
        try:
            if b"mosrun" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


def gone(pid: int) -> bool:
    return procfs.state(pid) in (None, "Z", "X")


# ---- locally, through a real loopback agent ------------------------------------------------------


@pytest.fixture
def agent(short_tmp: str) -> Iterator[RealAgents]:
    agents = RealAgents(Path(short_tmp) / "agents", count=1)
    try:
        agents.start()
        yield agents
    finally:
        agents.stop()


def test_run_home_job_through_a_local_agent_socket(qtbot: Any, agent: RealAgents) -> None:
    entry = agent.addresses[0]
    sock = agent.socket_of(entry)
    session = ClusterSession(UnixConnector({entry: sock}), entry, poll_interval=0)
    w = MainWindow(session, GuiSettings(entry=entry), None)
    qtbot.addWidget(w)
    pids: list[int] = []
    try:
        w.show()
        session.refresh_now()
        qtbot.waitUntil(lambda: len(session.table) == 1, timeout=20000)
        assert not w.jobs_dock.isVisible()  # hidden until the first job starts
        dlg = w.open_run_dialog()
        assert dlg.chooser.node_ids() == [1] and dlg.home.currentData() == entry
        dlg.program.setText(PY)
        dlg.arguments.setText(f"-c {PROBE!r} 'one arg' two")
        dlg.set_mode(Mode.RUNHOME)
        keys = dlg.execute()
        assert w.isVisible() and w.jobs_dock.isVisible()  # the first job shows the jobs view
        (rec,) = wait_ended(qtbot, w.jobs, keys)
        pids.append(rec.pid or 0)
        assert rec.state is JobState.EXITED, rec.message
        assert (rec.exit_code, rec.status, rec.where, rec.home_id) == (3, "exit 3", 1, 1)
        st = home_status(sock, rec.job_id)
        assert st["lock"] is True and st["argv"] == [PY, "-c", PROBE, "one arg", "two"]
        w.jobs_view.select(keys[0])
        text = w.jobs_view.output_text()
        assert "['one arg', 'two']" in text and "to stderr" in text
        assert gone(rec.pid or 0)  # the deputy ended with its job
    finally:
        kill_left_over(pids)
        w.jobs.shutdown(timeout=10.0)
        session.stop()


# ---- over SSH on the netns cluster (root) ----------------------------------------------------------


@pytest.mark.cluster
def test_advanced_execution_starts_jobs_where_asked(
    qtbot: Any, make_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = make_cluster(3)
    entry = cluster.nodes[0].address
    connector = SshConnector(SshSettings(ssh_config=str(cluster.ssh_config_path), agent_command=cluster.agent_command))
    session = ClusterSession(connector, entry, poll_interval=0, call_timeout=5.0)
    w = MainWindow(session, GuiSettings(entry=entry), None)
    qtbot.addWidget(w)
    w.show()
    deputies: list[int] = []
    sock1 = cluster.agent_socket(1)
    try:
        assert w.tools["run_prog"].isEnabled()
        def all_up() -> bool:
            if len(session.table) == 3 and all(n.up for n in session.table):
                return True
            session.refresh_now()  # the agents still gossip their way to each other
            return False

        qtbot.waitUntil(all_up, timeout=30000)
        w.tools["run_prog"].trigger()
        dlg = w.run_dialog
        assert dlg is not None and dlg.isVisible()
        assert dlg.chooser.node_ids() == [1, 2, 3] and dlg.home.currentData() == entry

        # "run on" node 3 from home node 1: argv with spaces, quotes and an empty word arrives intact
        dlg.program.setText(PY)
        dlg.arguments.setText(f"""-c {PROBE!r} 'a b' "it's" '' '$HOME'""")
        dlg.set_mode(Mode.RUNON)
        dlg.chooser.set_node(3)
        assert int(dlg.chooser.lcd.value()) == 3
        with qtbot.waitSignal(w.jobs.sig_job_ended, timeout=60000):
            keys = dlg.execute()
        (rec,) = [w.jobs.model.record(k) for k in keys]
        assert rec is not None
        deputies.append(rec.pid or 0)
        assert rec.state is JobState.EXITED, rec.message
        assert (rec.home_id, rec.where, rec.exit_code) == (1, 3, 3)
        row = w.jobs.model.row_of(keys[0])
        assert w.jobs.model.index(row, COL_EXIT).data() == "3"
        assert w.jobs.model.index(row, COL_WHERE).data() == "3"
        assert w.jobs.model.index(row, COL_STATE).data() == "exited"
        st = home_status(sock1, rec.job_id)
        assert st["where"] == 3 and st["lock"] is True and st["home_pid"] == rec.pid
        w.jobs_view.select(keys[0])
        out = w.jobs_view.output_text().splitlines()
        assert out[0] == "node3"  # the job ran in node 3's UTS namespace
        assert ast.literal_eval(out[1]) == ["a b", "it's", "", "$HOME"]
        assert "to stderr" in out
        assert w.jobs_dock.isVisible()
        assert "job 1:" in w.statusBar().currentMessage() and "exit 3" in w.statusBar().currentMessage()

        # parallel over nodes 1..3: one job per node
        dlg.arguments.setText("-c 'import socket; print(socket.gethostname())'")
        dlg.set_mode(Mode.PARALLEL)
        assert dlg.selected_parallel_nodes() == [1, 2, 3]
        keys = dlg.execute()
        assert len(keys) == 3
        recs = wait_ended(qtbot, w.jobs, keys)
        deputies += [r.pid or 0 for r in recs]
        assert [r.state for r in recs] == [JobState.EXITED] * 3, [r.message for r in recs]
        assert [r.where for r in recs] == [1, 2, 3] and all(r.exit_code == 0 for r in recs)
        assert len({r.job_id for r in recs}) == 3
        assert [r.output for r in recs] == [[("out", f"node{i}\n")] for i in (1, 2, 3)]

        # a refusal is mosrun's, not the job's: a blocked node says so
        dlg.arguments.setText("-c pass")
        dlg.set_mode(Mode.IOJOB)
        dlg.chooser.set_node(2)
        with AgentClient(UnixChannel(cluster.agent_socket(2)), client_name="tests") as c:
            c.call("flags.set", block=True)
        try:
            (rec,) = wait_ended(qtbot, w.jobs, dlg.execute())
        finally:
            with AgentClient(UnixChannel(cluster.agent_socket(2)), client_name="tests") as c:
                c.call("flags.set", block=False)
        assert rec.state is JobState.FAILED and "blocks" in rec.message, rec.message
        # the home node learns that node 2 takes jobs again by gossip: until then it refuses them
        with AgentClient(UnixChannel(sock1), client_name="tests") as c:
            qtbot.waitUntil(lambda: not any(n["id"] == 2 and n["block"] for n in c.call("cluster.nodes")),
                            timeout=10000)  # fmt: skip

        # a long job streams its output while the window keeps ticking; "Stop job" ends it
        ticks = []
        timer = QTimer()
        timer.timeout.connect(lambda: ticks.append(time.monotonic()))
        timer.start(20)
        dlg.arguments.setText("-u -c 'import time\nfor i in range(600): print(\"tick\", i, flush=True); time.sleep(0.1)'")
        dlg.set_mode(Mode.CPUJOB)
        dlg.chooser.set_node(2)
        (key,) = dlg.execute()
        w.jobs_view.select(key)
        qtbot.waitUntil(lambda: w.jobs_view.output_text().count("tick") >= 15, timeout=30000)
        rec = w.jobs.model.record(key)
        assert rec is not None and rec.state is JobState.RUNNING and rec.where == 2
        deputies.append(rec.pid or 0)
        job_pid = home_status(cluster.agent_socket(2), rec.job_id)["pid"]  # the hosting node knows it
        assert job_pid > 0 and not gone(job_pid)  # all nodes share this kernel's PIDs
        gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
        assert len(ticks) > 20 and max(gaps) < 0.5, f"the window stalled {max(gaps):.2f} s"
        timer.stop()
        assert w.jobs_view.btn_stop.isEnabled()
        w.jobs_view.btn_stop.click()
        (rec,) = wait_ended(qtbot, w.jobs, [key], timeout=30000)
        assert rec.state is JobState.EXITED and rec.status == "signal 15" and rec.exit_code == 143
        assert w.jobs.model.index(w.jobs.model.row_of(key), COL_EXIT).data() == "signal 15 (143)"
        qtbot.waitUntil(lambda: gone(job_pid) and gone(rec.pid or 0), timeout=10000)

        # closing with a job still running asks; "no" keeps the window open and the job running
        dlg.arguments.setText("-c 'import time; time.sleep(120)'")
        dlg.set_mode(Mode.RUNHOME)
        (key,) = dlg.execute()
        qtbot.waitUntil(lambda: w.jobs.model.record(key).state is JobState.RUNNING, timeout=30000)  # type: ignore[union-attr]
        rec = w.jobs.model.record(key)
        assert rec is not None
        deputies.append(rec.pid or 0)
        asked: list[str] = []
        monkeypatch.setattr(errors, "ask_yes_no", lambda _p, _t, text: asked.append(text) or False)
        w.close()
        assert asked and "1 job(s)" in asked[0] and rec.running and not gone(rec.pid or 0)
        monkeypatch.setattr(errors, "ask_yes_no", lambda _p, _t, text: asked.append(text) or True)
        w.close()
        assert len(asked) == 2
        qtbot.waitUntil(lambda: gone(rec.pid or 0), timeout=15000)
        assert home_status(sock1, rec.job_id)["state"] != "running"
    finally:
        kill_left_over(deputies)
        w.jobs.shutdown(timeout=10.0)
        session.stop()
