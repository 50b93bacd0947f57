"""L5 analyzer: the File > Histories menu both windows share (current history and dated backups)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QMenu

from omview.analyzer.data import list_entries


def fill_histories_menu(menu: QMenu, logdir: str, open_path: Callable[[str], None]) -> None:
    """List the live history of ``logdir`` and its dated backups, newest first, with time ranges.

    Filled when the menu is about to show, so new backups appear without a restart.
    """
    menu.clear()
    entries = list_entries(logdir)
    if not entries:
        menu.addAction(f"no history in {logdir}").setEnabled(False)
    for e in reversed(entries):
        act = menu.addAction(e.describe())
        act.setToolTip(e.path)
        act.setEnabled(not e.error)
        act.triggered.connect(lambda _=False, p=e.path: open_path(p))
