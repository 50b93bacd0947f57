"""The layering rules of omview, checked on the source with ast (see README, Architecture)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "omview"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
QT = {"PySide6", "pyqtgraph", "shiboken6"}
#: Modules (dotted, prefix match) allowed to import Qt.
QT_ALLOWED = (
    "omview.gui",
    "omview.analyzer.window",
    "omview.analyzer.history",
    "omview.migmon.window",
    "omview.main_window",
    "omview.app",
)
INDEPENDENT = ("omview.collector", "omview.analyzer", "omview.migmon")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute dotted names this file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            # "from omview.model import protocol" imports the submodule too
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def _sources() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PKG.rglob("*.py"))}


SOURCES = _sources()


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_sources_found() -> None:
    assert "omview.model.protocol" in SOURCES


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_layering(module: str) -> None:
    imports = SOURCES[module]
    problems: list[str] = []
    for name in imports:
        top = _top(name)
        if top in QT and not any(_within(module, p) for p in QT_ALLOWED):
            problems.append(f"Qt import {name} outside the GUI modules")
        if top == "paramiko" and module != "omview.transport.ssh":
            problems.append("paramiko may only be imported by omview.transport.ssh")
    if _within(module, "omview.model"):
        bad = [n for n in imports if _top(n) not in STDLIB and not _within(n, "omview.model")
               and n not in ("omview", "omview.__version__")]
        problems += [f"model is stdlib-only, imports {n}" for n in bad]
    if _within(module, "omview.agent"):
        own = ("omview.model", "omview.agent")
        bad = [n for n in imports if _top(n) not in STDLIB and not any(_within(n, o) for o in own) and n not in ("omview", "omview.__version__")]
        problems += [f"agent may import only stdlib and omview.model, imports {n}" for n in bad]
    for pkg in INDEPENDENT:
        if _within(module, pkg):
            for other in INDEPENDENT:
                if other != pkg:
                    problems += [f"{pkg} must not import {n}" for n in imports if _within(n, other)]
    if _within(module, "omview.gui"):
        for banned in ("omview.analyzer", "omview.migmon", "omview.main_window", "omview.app"):
            problems += [f"gui must not import {n}" for n in imports if _within(n, banned)]
    assert not problems, f"{module}: " + "; ".join(sorted(set(problems)))


def test_rules_catch_a_violation(tmp_path: Path) -> None:
    """The checker itself must notice a forbidden import (guards against a vacuous test)."""
    bad = PKG / "agent" / "_arch_probe_tmp.py"
    bad.write_text("import paramiko\nfrom PySide6 import QtCore\n")
    try:
        name = _module_name(bad)
        SOURCES[name] = _imports(bad)
        with pytest.raises(AssertionError, match="paramiko"):
            test_layering(name)
    finally:
        bad.unlink()
        SOURCES.pop(_module_name(bad), None)
