"""The layering rules of omview, checked on the source with ast (see README, Architecture).

Every import counts, wherever it stands: at module level, inside a function, or under
``if TYPE_CHECKING:`` (a cycle that only the type checker sees is still a cycle in the design).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "omview"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
QT = {"PySide6", "pyqtgraph", "shiboken6"}
#: The programs of the suite with windows: each is its own package, they meet only through
#: omview.gui (what they share) and the collector's file format (omview.model.records).
WINDOWS = ("omview.openmosixview", "omview.procs", "omview.analyzer", "omview.history", "omview.migmon")
#: Packages allowed to import Qt: the shared GUI layer and the window programs.
QT_ALLOWED = ("omview.gui", *WINDOWS)
#: Programs that must not import each other (the collector meets the windows through its files).
INDEPENDENT = ("omview.collector", *WINDOWS)
VERSION = ("omview", "omview.__version__")
#: The agent's top, the only modules that may import its core (the rooms below get narrow parts).
AGENT_TOP = ("omview.agent.__main__", "omview.agent.daemon", "omview.agent.core")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute dotted names this file imports anywhere in it (relative imports resolved)."""
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


def _only(imports: set[str], allowed: tuple[str, ...]) -> list[str]:
    """Imports that are neither stdlib nor within one of the allowed omview packages."""
    return sorted(n for n in imports if _top(n) not in STDLIB and n not in VERSION
                  and not any(_within(n, a) for a in allowed))


def test_sources_found() -> None:
    assert "omview.model.protocol" in SOURCES
    assert "omview.openmosixview" in SOURCES, "the main window is a package of its own"


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_layering(module: str) -> None:
    imports = SOURCES[module]
    problems: list[str] = []
    for name in imports:
        top = _top(name)
        if top in QT and not any(_within(module, p) for p in QT_ALLOWED):
            problems.append(f"Qt import {name} outside the GUI packages")
        if top == "paramiko" and module != "omview.transport.ssh":
            problems.append("paramiko may only be imported by omview.transport.ssh")
    if _within(module, "omview.model"):
        problems += [f"model is stdlib-only, imports {n}" for n in _only(imports, ("omview.model",))]
    if _within(module, "omview.agent"):
        problems += [f"agent may import only stdlib and omview.model, imports {n}"
                     for n in _only(imports, ("omview.model", "omview.agent"))]
        if module not in AGENT_TOP:
            problems += [f"only {', '.join(AGENT_TOP)} may import the agent's core, imports {n}"
                         for n in imports if _within(n, "omview.agent.core")]
    if _within(module, "omview.cli"):
        problems += [f"the CLI may import only stdlib and omview.model, imports {n}"
                     for n in _only(imports, ("omview.model", "omview.cli"))]
    if _within(module, "omview.transport"):
        problems += [f"transport may import only stdlib, paramiko and omview.model, imports {n}"
                     for n in _only(imports, ("omview.model", "omview.transport", "paramiko"))]
    for pkg in INDEPENDENT:
        if _within(module, pkg):
            for other in INDEPENDENT:
                if other != pkg:
                    problems += [f"{pkg} must not import {n}" for n in imports if _within(n, other)]
    if any(_within(module, p) for p in QT_ALLOWED):
        for banned in ("omview.agent", "omview.collector"):
            problems += [f"GUI code must not import {n}" for n in imports if _within(n, banned)]
    if _within(module, "omview.gui"):
        for banned in WINDOWS:
            problems += [f"the shared GUI layer must not import a window: {n}" for n in imports if _within(n, banned)]
    assert not problems, f"{module}: " + "; ".join(sorted(set(problems)))


def _graph(sources: dict[str, set[str]]) -> dict[str, set[str]]:
    """Module -> omview modules it imports (each import mapped to the longest known module)."""
    graph: dict[str, set[str]] = {}
    for mod, imports in sources.items():
        edges: set[str] = set()
        for name in imports:
            parts = name.split(".")
            while parts and ".".join(parts) not in sources:
                parts.pop()
            target = ".".join(parts)
            if target and target != mod and target != "omview":
                edges.add(target)
        graph[mod] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph(SOURCES))
    assert not cycles, "import cycles (TYPE_CHECKING and function-level imports count): " + \
        " | ".join(" <-> ".join(c) for c in cycles)


def _room(module: str) -> str:
    """The room a module stands in: a sub-package of the agent (omview.agent.node, ...), a module on
    the agent's top (omview.agent.core), or elsewhere its package (omview.gui, omview.model, ...)."""
    parts = module.split(".")
    if parts[1:2] == ["agent"]:
        return ".".join(parts[:3]) if len(parts) > 3 else module
    return ".".join(parts[:2])


def test_no_cycles_between_rooms() -> None:
    """Packages import each other in one direction only (a newcomer reads the house floor by floor)."""
    rooms: dict[str, set[str]] = {}
    for mod, targets in _graph(SOURCES).items():
        rooms.setdefault(_room(mod), set()).update(_room(t) for t in targets if _room(t) != _room(mod))
    cycles = _cycles(rooms)
    assert not cycles, "rooms importing each other: " + " | ".join(" <-> ".join(c) for c in cycles)


def test_rules_catch_a_violation() -> None:
    """The checker itself must notice forbidden imports and cycles (guards against a vacuous test)."""
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
    probe = {"omview.x.a": {"typing", "omview.x.b.thing"}, "omview.x.b": {"omview.x.a"}, "omview.x.c": {"omview.x.a"}}
    assert _cycles(_graph(probe)) == [["omview.x.a", "omview.x.b"]]
    cli = {"omview.cli.tool": {"omview.agent.core"}}
    SOURCES.update(cli)
    try:
        with pytest.raises(AssertionError, match="the CLI may import only"):
            test_layering("omview.cli.tool")
    finally:
        SOURCES.pop("omview.cli.tool")
