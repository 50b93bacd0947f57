"""GUI test fixtures: offscreen Qt, prompts that fail when not patched, no worker left running."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports PySide6

import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QMessageBox

from omview.gui.connect import UnixConnector
from omview.gui.session import ClusterSession
from tests.conftest import require_root
from tests.gui.fake_agent import FakeCluster


@pytest.fixture(autouse=True)
def _no_unpatched_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A modal box would hang a headless run: every prompt must go through a patched gui.errors."""

    def fail(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a QMessageBox was opened; patch omview.gui.errors in this test")

    for name in ("exec", "critical", "question", "warning", "information"):
        monkeypatch.setattr(QMessageBox, name, fail)


@pytest.fixture(autouse=True)
def _no_dangling_workers() -> Iterator[None]:
    """Fail a test that leaves a session worker thread running (cf. napari's _dangling_qthreads)."""
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and t.name.startswith("omview-") and t.is_alive()]
    for t in left:
        t.join(5.0)
    left = [t.name for t in left if t.is_alive()]
    assert not left, f"worker threads still running after the test: {left}"


@pytest.fixture
def short_tmp() -> Iterator[str]:
    """A short directory for Unix sockets (sun_path is limited to 108 bytes)."""
    d = tempfile.mkdtemp(prefix="omvgui-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fake_cluster(short_tmp: str) -> Iterator[FakeCluster]:
    cluster = FakeCluster(short_tmp)
    yield cluster
    cluster.close()


SessionFactory = Callable[..., ClusterSession]


@pytest.fixture
def make_session(qtbot: Any) -> Iterator[SessionFactory]:
    """make_session(sockets_or_lookup, entry, **kw): a ClusterSession stopped after the test."""
    made: list[ClusterSession] = []

    def factory(sockets: Any, entry: str, **kw: Any) -> ClusterSession:
        kw.setdefault("poll_interval", 0)
        kw.setdefault("call_timeout", 2.0)
        kw.setdefault("backoff", (0.2, 1.0))
        session = ClusterSession(UnixConnector(sockets, connect_timeout=2.0), entry, **kw)
        made.append(session)
        return session

    yield factory
    for s in made:
        s.stop(timeout=10.0)


@pytest.fixture
def xvfb() -> Iterator[str]:
    """A display of our own (the first free :N from 90), stopped by its PID afterwards."""
    require_root()
    n = next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists()
             and not Path(f"/tmp/.X{n}-lock").exists())  # fmt: skip
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not Path(f"/tmp/.X11-unix/X{n}").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.05)
        yield f":{n}"
    finally:
        proc.terminate()
        proc.wait(10)
