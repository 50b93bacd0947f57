"""QAction and QPushButton construction with the slot connected.

PySide6 accepts a signal keyword (``QAction(..., triggered=slot)``) at run time, but its type stubs
list only the properties, so mypy rejects it; :func:`action` builds the action and connects
``triggered`` afterwards, keeping the one-line style of the menus.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QPushButton


def action(*args: Any, triggered: Callable[[], object], **props: Any) -> QAction:
    """``QAction(*args, **props)`` whose ``triggered`` signal calls ``triggered``."""
    act = QAction(*args, **props)
    act.triggered.connect(triggered)
    return act


def button(*args: Any, clicked: Callable[[], object], **props: Any) -> QPushButton:
    """``QPushButton(*args, **props)`` whose ``clicked`` signal calls ``clicked`` (the same stub gap)."""
    btn = QPushButton(*args, **props)
    btn.clicked.connect(clicked)
    return btn
