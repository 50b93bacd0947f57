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

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication

from omview import __version__
from omview.gui import errors
from omview.gui.demo import add_demo_args, start_demo
from omview.gui.launch import add_connection_args, make_connector, make_settings
from omview.gui.lifecycle import (
    Interrupted,
    SignalQuitter,
    application,
    interrupt_on_signals,
    log_to_stderr,
    wait_until,
)
from omview.gui.session import ClusterSession
from omview.gui.settings import APPLICATION, ORGANISATION
from omview.migmon.window import MigmonWindow
from omview.model.errors import OmviewError

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="openmosixmigmon",
        description="The migration monitor: nodes as penguins, the entry node's processes as squares that "
        "move when they migrate; drag a square onto a penguin to migrate it, double-click it to send it home.",
    )
    add_connection_args(p)
    add_demo_args(p)
    p.add_argument("--screenshot", metavar="DIR", help="save a PNG of the window to DIR and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("--version", action="version", version=f"openmosixmigmon {__version__}")
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
    log_to_stderr(args.verbose)
    app = application(APPLICATION, organisation=ORGANISATION, offscreen=bool(args.screenshot))
    store = QSettings(args.settings, QSettings.Format.IniFormat) if args.settings else QSettings()
    interrupt_on_signals()  # a demo cluster coming up is undone by Ctrl-C
    demo = None
    demo_started = False
    try:
        if args.demo:
            demo, settings, demo_started = start_demo(args)
        else:
            settings = make_settings(args, store)
        connector = make_connector(settings, args.local_socket)
    except OmviewError as exc:
        log.error("%s", exc)
        errors.show_error(None, "openmosixmigmon", f"Cannot start: {exc}")
        return 2
    except Interrupted as exc:
        log.info("%s", exc)
        return 128 + exc.signum

    def take_demo_down() -> None:
        if demo is not None and demo_started and not args.keep_demo:
            log.info("taking the demo cluster down (use --keep-demo to keep it)")
            demo.down()  # type: ignore[attr-defined]

    # the cluster table only (penguins and their load): the processes come from the entry node
    session = ClusterSession(connector, settings.entry, poll_interval=settings.poll_interval, direct_poll=False,
                             call_timeout=settings.call_timeout)  # fmt: skip
    window = MigmonWindow(session)
    if args.screenshot:
        try:
            shot = render_screenshot(Path(args.screenshot), window)
        finally:
            SignalQuitter(app)
            window.close()
            session.stop(timeout=5.0)
            take_demo_down()
        log.info("wrote %s", shot)
        return 0
    errors.install_excepthook()
    quit_signals: list[int] = []
    quitter = SignalQuitter(app)
    quitter.sig_quit.connect(quit_signals.append)
    quitter.sig_quit.connect(lambda _sig: window.close())
    window.show()
    QTimer.singleShot(0, window.start)
    try:
        code = app.exec()
    finally:
        window.stop()
        session.stop(timeout=5.0)
        take_demo_down()
    return 128 + quit_signals[0] if quit_signals else code


if __name__ == "__main__":
    sys.exit(main())
