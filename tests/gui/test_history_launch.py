"""The main window's Analyzer menu starts openmosixanalyzer / openmosixhistory as processes."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from omview.gui import launch as launcher
from omview.gui.settings import GuiSettings
from omview.openmosixview.window import MainWindow
from tests.gui.fake_agent import FakeCluster


def test_program_argv_falls_back_to_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher.shutil, "which", lambda _name: None)
    argv = launcher.program_argv("openmosixhistory", ["/var/log/x"])
    assert argv == [sys.executable, "-m", "omview.analyzer.history", "/var/log/x"]
    # the fallback really starts the program (its --version needs no display)
    out = subprocess.run([*argv[:-1], "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.startswith("openmosixhistory")


def test_analyzer_menu_starts_the_programs(
    qtbot: Any, make_session: Any, fake_cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    fake_cluster.add(1, "10.77.0.11")
    session = make_session(fake_cluster.sockets(), "10.77.0.11")
    started: list[list[str]] = []

    def start(program: str, args: list[str]) -> bool:
        started.append([program, *args])
        return True

    monkeypatch.setattr(launcher.launch, "__defaults__", (start,))
    monkeypatch.setenv("OMVIEW_COLLECTOR_DIR", str(tmp_path / "hist"))
    w = MainWindow(session, GuiSettings(entry=session.entry), None)
    qtbot.addWidget(w)
    for key, name in (("analyzer", "openmosixanalyzer"), ("history", "openmosixhistory")):
        assert w.tools[key].isEnabled()
        w.tools[key].trigger()
        assert started[-1][-1] == str(tmp_path / "hist")
        assert started[-1][0].endswith(name) or started[-1][2] == launcher.PROGRAMS[name]
        assert f"started {name}" in w.statusBar().currentMessage()
