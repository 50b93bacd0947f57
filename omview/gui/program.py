"""L4 GUI layer: the start and the end every cluster window program shares (openmosixview,
openmosixprocs, openmosixmigmon) - its common options, its QApplication, settings and connector
(or the demo cluster's), the ``--screenshot`` run and the event loop with a clean ending.

Each program's ``app.py`` keeps only what is its own: its options, its window, what it renders.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication, QWidget

from omview import __version__
from omview.gui import errors
from omview.gui.connect import Connector
from omview.gui.demo import add_demo_args, start_demo
from omview.gui.launch import add_connection_args, make_connector, make_settings
from omview.gui.lifecycle import (
    Interrupted,
    SignalQuitter,
    application,
    freeze_startup_heap,
    interrupt_on_signals,
    log_to_stderr,
)
from omview.gui.session import ClusterSession
from omview.gui.settings import APPLICATION, ORGANISATION, GuiSettings
from omview.model.errors import OmviewError

log = logging.getLogger(__name__)


def add_program_args(p: argparse.ArgumentParser, name: str, screenshot_help: str) -> None:
    """The options every cluster window program takes: connection, demo, screenshot, verbosity."""
    add_connection_args(p)
    add_demo_args(p)
    p.add_argument("--screenshot", metavar="DIR", help=screenshot_help)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("--version", action="version", version=f"{name} {__version__}")


@dataclass
class Started:
    """A program that has its application, settings and connector (and maybe a demo cluster)."""

    name: str
    app: QApplication
    store: QSettings
    settings: GuiSettings
    connector: Connector
    local_socket: str | None
    demo: object | None = None
    demo_started: bool = False
    keep_demo: bool = False
    _quit_signals: list[int] = field(default_factory=list)

    def table_session(self) -> ClusterSession:
        """A session that polls the entry node's cluster table only (no direct polls of every node):
        what a window needs that takes its own data from one node and only the nodes' loads from
        the table (the process box, the migration monitor)."""
        s = self.settings
        return ClusterSession(self.connector, s.entry, poll_interval=s.poll_interval, direct_poll=False,
                              call_timeout=s.call_timeout)  # fmt: skip

    def take_demo_down(self) -> None:
        """Remove the demo cluster if this program brought it up (unless --keep-demo)."""
        if self.demo is not None and self.demo_started and not self.keep_demo:
            log.info("taking the demo cluster down (use --keep-demo to keep it)")
            self.demo.down()  # type: ignore[attr-defined]

    def screenshots(self, render: Callable[[], list[Path]], clean_up: Callable[[], None]) -> int:
        """Run RENDER (it writes the PNGs), then CLEAN_UP and the demo: 0 when something was written."""
        try:
            shots = render()
        except Interrupted as exc:
            log.info("%s", exc)
            return 128 + exc.signum
        finally:
            SignalQuitter(self.app)  # from here on a second signal must not cut the clean-up short
            clean_up()
            self.take_demo_down()
        for shot in shots:
            log.info("wrote %s", shot)
        return 0 if shots else 1

    def run(self, window: QWidget, start: Callable[[], None], on_quit: Callable[[int], object],
            clean_up: Callable[[], None]) -> int:  # fmt: skip
        """Show WINDOW, call START once it is on screen (so a slow entry node never delays the first
        paint), run the event loop; a quit signal calls ON_QUIT in the GUI thread. Afterwards
        CLEAN_UP (links joined, SSH closed) and the demo cluster; 128+signal when a signal ended it."""
        errors.install_excepthook()
        quitter = SignalQuitter(self.app)
        quitter.sig_quit.connect(self._quit_signals.append)
        quitter.sig_quit.connect(on_quit)
        window.show()
        freeze_startup_heap()  # the window is built: keep its objects out of every full collection
        QTimer.singleShot(0, start)
        try:
            code = self.app.exec()
        finally:
            clean_up()
            self.take_demo_down()
        return 128 + self._quit_signals[0] if self._quit_signals else code


def start_program(name: str, args: argparse.Namespace) -> Started | int:
    """Set up logging, the QApplication, settings and connector from ARGS (``add_program_args``);
    an int is the exit code when the program cannot start (the error was shown and logged)."""
    log_to_stderr(args.verbose)
    app = application(APPLICATION, organisation=ORGANISATION, offscreen=bool(args.screenshot))
    store = QSettings(args.settings, QSettings.Format.IniFormat) if args.settings else QSettings()
    # until the event loop runs, SIGTERM/SIGINT/SIGHUP raise Interrupted: a demo cluster that is
    # coming up is removed again (Cluster.up undoes a half-built one), the rest is skipped
    interrupt_on_signals()
    demo: object | None = None
    demo_started = False
    try:
        if args.demo:
            demo, settings, demo_started = start_demo(args)
        else:
            settings = make_settings(args, store)
        connector = make_connector(settings, args.local_socket)
    except OmviewError as exc:
        log.error("%s", exc)
        errors.show_error(None, name, f"Cannot start: {exc}")
        return 2
    except Interrupted as exc:
        log.info("%s", exc)
        return 128 + exc.signum
    return Started(name, app, store, settings, connector, args.local_socket, demo, demo_started, args.keep_demo)
