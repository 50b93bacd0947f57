"""L4 GUI layer: every message box and prompt of openmosixview lives here (tests patch this module).

Callers use ``errors.show_error(...)`` etc. through the module, so a test can replace one function
with ``monkeypatch.setattr(errors, "ask_accept_host_key", ...)`` and no modal dialog ever blocks a
headless run. Unexpected exceptions go to the log and to ``show_exception``.
"""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType

from PySide6.QtWidgets import QInputDialog, QMessageBox, QWidget

log = logging.getLogger(__name__)


def show_error(parent: QWidget | None, title: str, text: str, details: str = "") -> None:
    """An expected failure: what failed, on which node, what to try."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, parent)
    if details:
        box.setDetailedText(details)
    box.exec()


def show_info(parent: QWidget | None, title: str, text: str, details: str = "") -> None:
    box = QMessageBox(QMessageBox.Icon.Information, title, text, QMessageBox.StandardButton.Ok, parent)
    if details:
        box.setDetailedText(details)
    box.exec()


def show_report(parent: QWidget | None, title: str, text: str, ok: bool) -> None:
    """A multi-line report (connection test) in a fixed-width, copyable message box."""
    icon = QMessageBox.Icon.Information if ok else QMessageBox.Icon.Warning
    box = QMessageBox(icon, title, text.split("\n", 1)[0], QMessageBox.StandardButton.Ok, parent)
    box.setInformativeText(text.split("\n", 1)[1].strip() if "\n" in text else "")
    box.setDetailedText(text)
    box.exec()


def ask_accept_host_key(parent: QWidget | None, address: str, key_type: str, fingerprint: str) -> bool:
    """Ask before adding an unknown host key to known_hosts; the default answer is No."""
    box = QMessageBox(
        QMessageBox.Icon.Question,
        "Unknown host key",
        f"{address} is not in known_hosts.",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        parent,
    )
    box.setInformativeText(
        f"It offers this {key_type} key:\n\n{fingerprint}\n\n"
        "Accept it only if it matches the node's own key (on the node: "
        "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub). Add it to known_hosts?"
    )
    box.setDefaultButton(QMessageBox.StandardButton.No)
    return box.exec() == QMessageBox.StandardButton.Yes


def ask_yes_no(parent: QWidget | None, title: str, text: str) -> bool:
    answer = QMessageBox.question(parent, title, text, defaultButton=QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def ask_text(parent: QWidget | None, title: str, label: str, text: str = "") -> str | None:
    """A one-line text prompt; None when the admin cancels."""
    value, ok = QInputDialog.getText(parent, title, label, text=text)
    return value if ok else None


def show_exception(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """A bug: logged with its traceback, shown with copyable details."""
    details = "".join(traceback.format_exception(exc_type, exc, tb))
    log.error("unexpected error in openmosixview:\n%s", details)
    show_error(
        None,
        "openmosixview: unexpected error",
        f"Something went wrong that openmosixview did not expect: {exc}",
        details + "\nPlease report this with the details above.",
    )


def install_excepthook() -> None:
    """Route uncaught exceptions in Qt slots to ``show_exception`` instead of a silent stderr line."""

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        show_exception(exc_type, exc, tb)

    sys.excepthook = hook
