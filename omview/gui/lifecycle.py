"""L4 GUI layer: a window program's life - its QApplication and log set up one way for every
program of the suite (``application``, ``log_to_stderr``), and ending cleanly on SIGTERM, SIGINT
(Ctrl-C) and SIGHUP.

Python runs signal handlers only when the interpreter runs, and under ``app.exec()`` it may sleep
in Qt's C++ event loop for ever. So ``SignalQuitter`` has the signal module write each signal's
number to a socket (``signal.set_wakeup_fd``) that a ``QSocketNotifier`` watches: the event loop
wakes up and ``sig_quit`` is emitted in the GUI thread, where the window can close as if the user
had closed it. Before the event loop runs (a demo cluster coming up), ``interrupt_on_signals``
makes the same signals raise ``Interrupted`` instead, so that half-done work is undone.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType

from PySide6.QtCore import QEventLoop, QObject, QSocketNotifier, Signal, Slot
from PySide6.QtWidgets import QApplication

from omview import __version__
from omview.gui.assets import app_icon

#: The signals that end a window program (the terminal's Ctrl-C, its hang-up, kill's default).
QUIT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def log_to_stderr(verbose: bool) -> None:
    """Log lines on stderr; paramiko only from WARNING on unless VERBOSE (it logs every login at
    INFO, and the windows show connection states themselves)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    if not verbose:
        logging.getLogger("paramiko").setLevel(logging.WARNING)


def application(name: str, *, organisation: str = "", offscreen: bool = False) -> QApplication:
    """This process's QApplication (made on the first call): offscreen when only screenshots are
    wanted, named NAME (under ORGANISATION: where QSettings keeps the program's settings), with
    the suite's version, style and icon."""
    if offscreen:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QApplication.instance() or QApplication([sys.argv[0]])
    assert isinstance(app, QApplication)
    if organisation:
        app.setOrganizationName(organisation)
    app.setApplicationName(name)
    app.setApplicationVersion(__version__)
    app.setStyle("Fusion")
    app.setWindowIcon(app_icon())
    return app


def freeze_startup_heap() -> None:
    """Call once the program's windows are built, before its event loop: the objects made so far
    (Qt wrappers, modules, classes: ~50,000 in openmosixprocs) are moved out of the garbage
    collector's reach. They never become garbage, yet every full collection walked all of them,
    holding the GIL for 25-45 ms; a lane thread decoding a process list allocates enough to start
    one, and the GUI thread stood still meanwhile (the box's longest stalls, bench/procs.py)."""
    gc.collect()
    gc.freeze()


def wait_until(app: QApplication, condition: Callable[[], bool], timeout: float) -> bool:
    """Run the event loop until CONDITION holds or TIMEOUT seconds pass (for --screenshot only: the
    live windows never wait, they react to signals)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)
    return True


class Interrupted(Exception):
    """A quit signal arrived before the event loop ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def _raise(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


def interrupt_on_signals() -> None:
    """Until the event loop runs: a quit signal raises Interrupted in the main thread."""
    for sig in QUIT_SIGNALS:
        signal.signal(sig, _raise)


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """The byte on the wakeup socket does the work; this handler only keeps the default action away."""


class SignalQuitter(QObject):
    """Emits ``sig_quit(signum)`` in the GUI thread for every quit signal (main thread only)."""

    sig_quit = Signal(int)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        self._old = {sig: signal.signal(sig, _ignore) for sig in QUIT_SIGNALS}
        self._notifier = QSocketNotifier(self._read.fileno(), QSocketNotifier.Type.Read, self)
        self._notifier.activated.connect(self._on_wakeup)

    @Slot()
    def _on_wakeup(self) -> None:
        try:
            data = self._read.recv(64)
        except BlockingIOError:
            return
        for signum in data:  # set_wakeup_fd writes each signal's number as one byte
            if signum in QUIT_SIGNALS:
                self.sig_quit.emit(signum)

    def close(self) -> None:
        """Give the signals back to their previous handlers."""
        self._notifier.setEnabled(False)
        signal.set_wakeup_fd(self._old_fd)
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._read.close()
        self._write.close()
