"""A non-root user's process box (uid 65534 on the agent's socket) lists root's processes but cannot
act on them: the migrator shows the agent's refusal, and root's process is unchanged."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from omview.gui.session import ClusterSession
from omview.model.channel import LineBuffer, UnixChannel
from omview.model.procfs import read_stat
from omview.procs.window import ProcBox
from tests.support.agents import Cluster, make_base

NOBODY = 65534


def _nobody_socket(path: str) -> socket.socket:
    """A connection to the agent made by a child running as uid 65534 (SO_PEERCRED is taken at
    connect time), handed back over a socket pair."""
    here, there = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            socket.send_fds(there, [b"x"], [s.fileno()])
        finally:
            os._exit(0)
    there.close()
    _msg, fds, _flags, _addr = socket.recv_fds(here, 1, 1)
    os.waitpid(pid, 0)
    here.close()
    return socket.socket(fileno=fds[0])


class NobodyConnector:
    """Channels to one local agent, each opened as uid 65534."""

    def __init__(self, path: str) -> None:
        self.path = path

    def open(self, address: str) -> UnixChannel:
        ch = UnixChannel.__new__(UnixChannel)  # the channel over a socket connected elsewhere
        ch.path = self.path
        ch._sock = _nobody_socket(self.path)
        ch._buf = LineBuffer()
        return ch

    def describe(self, address: str) -> str:
        return f"{self.path} as uid {NOBODY}"


@pytest.fixture
def agent() -> Iterator[Any]:
    cl = Cluster(make_base(), 1)
    try:
        yield cl.agents[0].start()
    finally:
        cl.stop()
        shutil.rmtree(cl.base, ignore_errors=True)


def test_non_root_box_cannot_act_on_roots_process(qtbot: Any, agent: Any) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    session = ClusterSession(NobodyConnector(agent.socket), "127.0.0.2", poll_interval=0.5, direct_poll=False)
    try:
        box = ProcBox(session, None)
        qtbot.addWidget(box)
        box.start()
        qtbot.waitUntil(lambda: box.model.process(sleeper.pid) is not None, timeout=20000)
        dlg = box.open_migrator(box.model.process(sleeper.pid))
        assert dlg is not None
        qtbot.waitUntil(lambda: "belongs to uid 0" in dlg.status_pane.toPlainText(), timeout=20000)
        dlg.stop_button.click()
        qtbot.waitUntil(lambda: any("belongs to uid 0" in t for t in dlg.results), timeout=20000)
        dlg.nice_slider.setValue(5)
        dlg.nice_slider.sliderReleased.emit()
        dlg.migrate("best")
        qtbot.waitUntil(lambda: len(dlg.results) >= 4, timeout=30000)
        assert all("uid 0" in t for t in dlg.results if not t.startswith("migrating")), dlg.results
        st = read_stat(sleeper.pid)
        assert st is not None and st.state == "S" and st.nice == 0
        dlg.close()
        box.close()
    finally:
        session.stop()
        sleeper.kill()
        sleeper.wait()
