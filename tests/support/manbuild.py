"""scripts/build-manpages.py for the man page and completion tests: the command list and one build."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "scripts" / "build-manpages.py"


def commands() -> set[str]:
    """Every command the package installs (console and GUI entry points)."""
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    return set(project["scripts"]) | set(project["gui-scripts"])


def build(kind: str, out: Path) -> Path:
    """Run the build script with ``--man`` or ``--completions`` into OUT; it must succeed."""
    res = subprocess.run([sys.executable, str(BUILD), f"--{kind}", str(out)], capture_output=True, text=True,
                         cwd=REPO, timeout=120, check=False)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return out
