"""openmosixmigmon: the composition root - command line, settings, connector, session, window.

``openmosixmigmon [connection options of openmosixview] [--demo] [--screenshot DIR]`` shows the
entry node as the main penguin with its processes, the other nodes around it; ``--screenshot DIR``
renders the window to DIR/migmon.png without a display and exits.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtWidgets import QApplication

from omview.gui.lifecycle import wait_until
from omview.gui.program import add_program_args, start_program
from omview.migmon.window import MigmonWindow

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="openmosixmigmon",
        description="The migration monitor: nodes as penguins, the entry node's processes as squares that "
        "move when they migrate; drag a square onto a penguin to migrate it, double-click it to send it home.",
    )
    add_program_args(p, "openmosixmigmon", "save a PNG of the window to DIR and exit")
    return p


def render_screenshot(directory: Path, window: MigmonWindow) -> Path:
    """The window once the cluster and the processes are drawn and no square is in flight."""
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    directory.mkdir(parents=True, exist_ok=True)
    window.show()
    window.start()
    wait_until(app, lambda: window.updates >= 2 and bool(window.scene.nodes) and bool(window.session.table), 20.0)
    wait_until(app, lambda: not window.scene.animating, 5.0)
    path = directory / "migmon.png"
    window.grab().save(str(path))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = start_program("openmosixmigmon", args)
    if isinstance(started, int):
        return started
    # the cluster table only (penguins and their load): the processes come from the entry node
    session = started.table_session()
    window = MigmonWindow(session)
    if args.screenshot:
        def clean_up_shot() -> None:
            window.close()
            session.stop(timeout=5.0)

        return started.screenshots(lambda: [render_screenshot(Path(args.screenshot), window)], clean_up_shot)

    def clean_up() -> None:
        window.stop()
        session.stop(timeout=5.0)

    return started.run(window, window.start, lambda _sig: window.close(), clean_up)


if __name__ == "__main__":
    sys.exit(main())
