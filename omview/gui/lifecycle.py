"""L4 GUI layer: ending a window program cleanly on SIGTERM, SIGINT (Ctrl-C) and SIGHUP.

Python runs signal handlers only when the interpreter runs, and under ``app.exec()`` it may sleep
in Qt's C++ event loop for ever. So ``SignalQuitter`` has the signal module write each signal's
number to a socket (``signal.set_wakeup_fd``) that a ``QSocketNotifier`` watches: the event loop
wakes up and ``sig_quit`` is emitted in the GUI thread, where the window can close as if the user
had closed it. Before the event loop runs (a demo cluster coming up), ``interrupt_on_signals``
makes the same signals raise ``Interrupted`` instead, so that half-done work is undone.
"""

from __future__ import annotations

import signal
import socket
from types import FrameType

from PySide6.QtCore import QObject, QSocketNotifier, Signal, Slot

#: The signals that end a window program (the terminal's Ctrl-C, its hang-up, kill's default).
QUIT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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
