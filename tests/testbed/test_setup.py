"""scripts/setup.sh outcome: wrappers for every entry point, scripts syntactically valid, CI entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scripts_parse_and_ci_entry_point_is_executable() -> None:
    for script in ("scripts/setup.sh", "scripts/test.sh", ".ci/run"):
        cp = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
        assert cp.returncode == 0, f"{script}: {cp.stderr}"
    ci = ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    text = ci.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text and "scripts/test.sh" in text


def test_every_entry_point_has_a_wrapper_into_the_venv() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [*project.get("scripts", {}), *project.get("gui-scripts", {})]
    assert "omview-cluster" in names
    venv_bin = Path(sys.prefix) / "bin"
    for name in names:
        wrapper = Path("/usr/local/bin") / name
        assert wrapper.is_file() and os.access(wrapper, os.X_OK), f"{wrapper} missing: run scripts/setup.sh"
        assert f"exec {venv_bin}/{name} " in wrapper.read_text(), f"{wrapper} does not exec the venv's {name}"
    cp = subprocess.run(["/usr/local/bin/omview-cluster", "--help"], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0 and "usage: omview-cluster" in cp.stdout
