"""resources/: the application icon and desktop entry, and the one asset resolver that finds them."""

from __future__ import annotations

import configparser
from typing import Any

from omview.gui.assets import SEARCH, app_icon, asset


def test_the_icon_is_found_and_loads(qtbot: Any) -> None:
    path = asset("openmosixview.svg")
    assert path is not None and path.parent == SEARCH[0]  # a checkout uses its own resources/
    icon = app_icon()
    assert not icon.isNull() and not icon.pixmap(64, 64).isNull()
    assert asset("no-such-icon.svg") is None


def test_the_desktop_entry_starts_openmosixview_with_its_icon() -> None:
    path = asset("openmosixview.desktop")
    assert path is not None
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    entry.read(path)
    desktop = entry["Desktop Entry"]
    assert desktop["Type"] == "Application" and desktop["Exec"] == "openmosixview"
    assert desktop["Icon"] == "openmosixview" and desktop["Terminal"] == "false"
    assert desktop["Categories"].endswith(";")
