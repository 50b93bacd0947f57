"""openmosixview window: the composition root - command line, settings, connector, session, main window.

``openmosixview [--entry HOST] [--user U] [--identity KEY] [--known-hosts F] [--ssh-config F]``
connects over SSH to the entry node's agent for the cluster table and to each node's own agent
for per-node actions. ``--demo`` brings up (or reuses) the local netns demo cluster and connects
to it; ``--screenshot DIR`` renders the window and its dialogs to PNG files and exits.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtWidgets import QApplication

from omview.gui.launch import ProgramLauncher, make_connector, make_settings
from omview.gui.lifecycle import wait_until
from omview.gui.program import add_program_args, start_program
from omview.gui.session import ClusterSession
from omview.gui.settings import GuiSettings, import_legacy
from omview.openmosixview.window import MainWindow

__all__ = ["build_parser", "main", "make_connector", "make_settings", "render_screenshots"]

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="openmosixview",
        description="Watch and steer an omview cluster: one row per node, speed sliders, node switches.",
    )
    p.add_argument("--no-direct", action="store_true", help="do not poll every node's own agent")
    add_program_args(p, "openmosixview", "save PNGs of the window and dialogs to DIR and exit")
    return p


def render_screenshots(directory: Path, session: ClusterSession, settings: GuiSettings) -> list[Path]:
    """Render the main window, a node's configuration dialog and the all-nodes dialog to PNGs."""
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    directory.mkdir(parents=True, exist_ok=True)
    window = MainWindow(session, settings, None)
    window.resize(1120, 420)
    window.show()
    session.start()
    shots: list[Path] = []
    wait_until(app, lambda: bool(window.model.rows()) and all(r.direct is not None or r.link.status.failed
                                                      for r in window.model.rows()), 20.0)
    wait_until(app, lambda: False, 1.5)  # two more refreshes, so bars and the header settle
    path = directory / "main-window.png"
    window.grab().save(str(path))
    shots.append(path)
    rows = window.model.rows()
    if rows:
        dlg = window.open_node_dialog(rows[0].gossip.address)
        wait_until(app, lambda: dlg.apply_button.isEnabled(), 10.0)
        path = directory / "node-dialog.png"
        dlg.grab().save(str(path))
        shots.append(path)
        dlg.close()
        all_dlg = window.open_all_nodes_dialog()
        if all_dlg is not None:
            wait_until(app, lambda: all_dlg.apply_button.isEnabled(), 10.0)
            path = directory / "all-nodes-dialog.png"
            all_dlg.grab().save(str(path))
            shots.append(path)
            all_dlg.close()
    window.close()
    return shots


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = start_program("openmosixview", args)
    if isinstance(started, int):
        return started
    settings, store = started.settings, started.store
    legacy = import_legacy(store)
    if args.screenshot:
        shot_session = ClusterSession(started.connector, settings.entry, poll_interval=1.0)
        return started.screenshots(lambda: render_screenshots(Path(args.screenshot), shot_session, settings),
                                   lambda: shot_session.stop(timeout=5.0))  # fmt: skip

    session = ClusterSession(started.connector, settings.entry, poll_interval=settings.poll_interval,
                             direct_poll=settings.direct_poll, call_timeout=settings.call_timeout)  # fmt: skip
    window = MainWindow(session, settings, store)
    window.set_launcher(ProgramLauncher(settings, args.local_socket))
    if legacy:
        window.statusBar().showMessage(legacy, 15000)
    # every node link ends (lanes joined, SSH connections closed), then the demo cluster
    return started.run(window, session.start, window.quit_on_signal, lambda: session.stop(timeout=5.0))


if __name__ == "__main__":
    sys.exit(main())
