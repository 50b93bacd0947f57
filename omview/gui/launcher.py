"""L4 GUI layer: starting another program of the suite as its own process (never importing it).

The windows are independent programs (tests/test_architecture.py): the main window opens the
analyzer and the history browser by starting ``openmosixanalyzer`` / ``openmosixhistory`` with
the collector's history directory. The installed command is preferred; from a checkout without
it, the same Python runs the program's module (``-m``), which is a process, not an import.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence

from PySide6.QtCore import QProcess

#: Command name -> module with its ``main`` (the pyproject entry point), for the ``-m`` fallback.
PROGRAMS = {
    "openmosixanalyzer": "omview.analyzer.app",
    "openmosixhistory": "omview.analyzer.history",
}

Starter = Callable[[str, list[str]], bool]


def _start_detached(program: str, args: list[str]) -> bool:
    ok, _pid = QProcess.startDetached(program, args)
    return bool(ok)


def program_argv(name: str, args: Sequence[str]) -> list[str]:
    """The argv that starts the suite's program ``name`` with ``args``."""
    found = shutil.which(name)
    if found:
        return [found, *args]
    return [sys.executable, "-m", PROGRAMS[name], *args]


def launch(name: str, args: Sequence[str], start: Starter = _start_detached) -> str:
    """Start ``name`` detached (it outlives this window); returns "" or a message saying what failed."""
    argv = program_argv(name, args)
    if not start(argv[0], argv[1:]):
        return f"could not start {name} ({' '.join(argv)})"
    return ""
