"""QAction construction with its slot connected.

PySide6 accepts a signal keyword (``QAction(..., triggered=slot)``) at run time, but its type stubs
list only the properties, so mypy rejects it; :func:`action` builds the action and connects
``triggered`` afterwards, keeping the one-line style of the menus.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtGui import QAction


def action(*args: Any, triggered: Callable[[], object], **props: Any) -> QAction:
    """``QAction(*args, **props)`` whose ``triggered`` signal calls ``triggered``."""
    act = QAction(*args, **props)
    act.triggered.connect(triggered)
    return act
