"""Both programs' --screenshot (as commands, offscreen) and the history window's backups and damage."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from omview.analyzer.data import list_entries
from omview.analyzer.history_window import HistoryWindow
from tests.analyzer.conftest import START, write_history


def _png_size(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", raw[16:24])


def test_screenshot_option_writes_every_window(tmp_path: Path) -> None:
    logdir = write_history(tmp_path / "log", nodes=4, ticks=120)
    shots = tmp_path / "shots"
    for module in ("omview.analyzer.app", "omview.analyzer.history"):
        out = subprocess.run([sys.executable, "-m", module, str(logdir), "--screenshot", str(shots)],
                             capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
        for line in out.stdout.split():
            assert Path(line).parent == shots
    names = sorted(p.name for p in shots.iterdir())
    assert names == ["analyzer-find-out.png", "analyzer-load.png", "analyzer-memory.png", "history.png"]
    assert _png_size(shots / "analyzer-load.png") == (1200, 720)
    assert _png_size(shots / "history.png") == (900, 560)


def test_history_window_opens_a_backup_and_names_damaged_files(qtbot: Any, tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    write_history(logdir, nodes=2, ticks=90, rotate=True)
    write_history(logdir, nodes=2, ticks=30, start=START + 500)
    backup = list_entries(str(logdir))[0]
    win = HistoryWindow(str(logdir))
    qtbot.addWidget(win)
    assert win.history is not None and win.history.directory == str(logdir)
    win.menu_histories.aboutToShow.emit()
    acts = win.menu_histories.actions()
    assert acts[0].text().startswith("current history") and Path(backup.path).name in acts[1].text()
    acts[1].trigger()
    assert win.history is not None and win.history.directory == backup.path
    assert win.slider.maximum() == round(backup.end - backup.start) and win.model.rowCount() > 0
    procs = Path(backup.path) / "procs.xz"
    procs.write_bytes(procs.read_bytes()[:100])  # a compressed process file cut short
    win.open_history(backup.path)
    assert win.lbl_problems.isVisibleTo(win) and f"{procs}: damaged compressed file" in win.lbl_problems.text()
    assert "start:" in win.lbl_start.text()  # the rest of the history is still shown
