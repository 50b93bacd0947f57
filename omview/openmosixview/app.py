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

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication

from omview import __version__
from omview.gui import errors
from omview.gui.demo import add_demo_args, start_demo
from omview.gui.launch import ProgramLauncher, add_connection_args, make_connector, make_settings
from omview.gui.lifecycle import (
    Interrupted,
    SignalQuitter,
    application,
    interrupt_on_signals,
    log_to_stderr,
    wait_until,
)
from omview.gui.session import ClusterSession
from omview.gui.settings import APPLICATION, ORGANISATION, GuiSettings, import_legacy
from omview.model.errors import OmviewError
from omview.openmosixview.window import MainWindow

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="openmosixview",
        description="Watch and steer an omview cluster: one row per node, speed sliders, node switches.",
    )
    add_connection_args(p)
    p.add_argument("--no-direct", action="store_true", help="do not poll every node's own agent")
    add_demo_args(p)
    p.add_argument("--screenshot", metavar="DIR", help="save PNGs of the window and dialogs to DIR and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("--version", action="version", version=f"openmosixview {__version__}")
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
    log_to_stderr(args.verbose)
    app = application(APPLICATION, organisation=ORGANISATION, offscreen=bool(args.screenshot))
    store = QSettings(args.settings, QSettings.Format.IniFormat) if args.settings else QSettings()

    # until the event loop runs, SIGTERM/SIGINT/SIGHUP raise Interrupted: a demo cluster that is
    # coming up is removed again (Cluster.up undoes a half-built one), the rest is skipped
    interrupt_on_signals()
    demo = None
    demo_started = False
    try:
        if args.demo:
            demo, settings, demo_started = start_demo(args)
        else:
            settings = make_settings(args, store)
    except OmviewError as exc:
        log.error("%s", exc)
        errors.show_error(None, "openmosixview", f"Cannot start: {exc}")
        return 2
    except Interrupted as exc:
        log.info("%s", exc)
        return 128 + exc.signum

    def take_demo_down() -> None:
        if demo is not None and demo_started and not args.keep_demo:
            log.info("taking the demo cluster down (use --keep-demo to keep it)")
            demo.down()  # type: ignore[attr-defined]

    legacy = import_legacy(store)
    if args.screenshot:
        session = ClusterSession(make_connector(settings, args.local_socket), settings.entry, poll_interval=1.0)
        try:
            shots = render_screenshots(Path(args.screenshot), session, settings)
        except Interrupted as exc:
            log.info("%s", exc)
            return 128 + exc.signum
        finally:
            SignalQuitter(app)  # from here on a second signal must not cut the clean-up short
            session.stop(timeout=5.0)
            take_demo_down()
        for shot in shots:
            log.info("wrote %s", shot)
        return 0 if shots else 1

    errors.install_excepthook()
    session = ClusterSession(
        make_connector(settings, args.local_socket),
        settings.entry,
        poll_interval=settings.poll_interval,
        direct_poll=settings.direct_poll,
        call_timeout=settings.call_timeout,
    )
    window = MainWindow(session, settings, store)
    window.set_launcher(ProgramLauncher(settings, args.local_socket))
    # from here on the event loop turns a quit signal into closing the window (no question asked)
    quit_signals: list[int] = []
    quitter = SignalQuitter(app)
    quitter.sig_quit.connect(quit_signals.append)
    quitter.sig_quit.connect(window.quit_on_signal)
    window.show()
    if legacy:
        window.statusBar().showMessage(legacy, 15000)
    # start polling once the window is on screen, so a slow entry node never delays the first paint
    QTimer.singleShot(0, session.start)
    try:
        code = app.exec()
    finally:
        # every node link ends: lanes joined, SSH connections closed; then the demo cluster
        session.stop(timeout=5.0)
        take_demo_down()
    return 128 + quit_signals[0] if quit_signals else code


if __name__ == "__main__":
    sys.exit(main())
