"""L4 GUI layer: the one place that finds the suite's assets (icons, documentation) on disk.

A checkout (or an editable install) has them in the repository's ``resources/`` and ``docs/``; an
installed system has them where scripts/setup.sh or ``pip install`` puts them (the hicolor icon
theme; ``PREFIX/share/doc/omview``, pyproject's data-files). Every window asks ``asset``,
``app_icon``, ``doc`` or ``docs``, never a path of its own.
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
    Path(sys.prefix) / "share" / "omview",  # pictures that are no icons (migmon's penguin)
)


def asset(name: str) -> Path | None:
    """The file ``name`` (e.g. "openmosixview.svg") from the first place that has it."""
    for directory in SEARCH:
        path = directory / name
        if path.is_file():
            return path
    return None


#: Where the documentation (docs/*.md, README.md) is looked for, in order.
DOC_SEARCH = (
    Path(__file__).resolve().parents[2] / "docs",
    Path(sys.prefix) / "share" / "doc" / "omview",
    Path("/usr/local/share/doc/omview"),
)


def docs() -> list[Path]:
    """Every manual page (docs/*.md) from the first place that has them, by name."""
    for directory in DOC_SEARCH:
        found = sorted(directory.glob("*.md"))
        if any(p.name != "README.md" for p in found):
            return [p for p in found if p.name != "README.md"]
    return []


def doc(name: str) -> Path | None:
    """One document by file name ("cli.md"; "README.md" is the repository's front page)."""
    for directory in DOC_SEARCH:
        path = directory.parent / name if name == "README.md" and directory.name == "docs" else directory / name
        if path.is_file():
            return path
    return None


def app_icon(name: str = "openmosixview") -> QIcon:
    """The application icon: the theme's when one is installed, else the SVG found by ``asset``
    (an empty icon when neither exists; Qt then shows its default)."""
    path = asset(f"{name}.svg")
    fallback = QIcon(str(path)) if path is not None else QIcon()
    return QIcon.fromTheme(name, fallback)
