"""L4 GUI layer: the one place that finds the suite's assets (icons) on disk.

A checkout (or an editable install) has them in the repository's ``resources/``; an installed
system has them where scripts/setup.sh puts them (the hicolor icon theme). Every window asks
``asset`` or ``app_icon``, never a path of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtGui import QIcon

#: Where assets are looked for, in order: the source tree, then the installed icon theme.
SEARCH = (
    Path(__file__).resolve().parents[2] / "resources",
    Path(sys.prefix) / "share" / "icons" / "hicolor" / "scalable" / "apps",
    Path("/usr/share/icons/hicolor/scalable/apps"),
)


def asset(name: str) -> Path | None:
    """The file ``name`` (e.g. "openmosixview.svg") from the first place that has it."""
    for directory in SEARCH:
        path = directory / name
        if path.is_file():
            return path
    return None


def app_icon(name: str = "openmosixview") -> QIcon:
    """The application icon: the theme's when one is installed, else the SVG found by ``asset``
    (an empty icon when neither exists; Qt then shows its default)."""
    path = asset(f"{name}.svg")
    fallback = QIcon(str(path)) if path is not None else QIcon()
    return QIcon.fromTheme(name, fallback)
