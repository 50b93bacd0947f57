"""Shared fixtures for the classic CLI tests: run a tool as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

Runner = Callable[..., subprocess.CompletedProcess[str]]


def run_tool(
    tool: str, *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m omview.cli.<tool> args`` and capture text output (exit codes are real)."""
    return subprocess.run(
        [sys.executable, "-m", f"omview.cli.{tool}", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def no_agent_env(tmp_path: Path) -> dict[str, str]:
    """Environment whose agent socket path does not exist."""
    env = dict(os.environ)
    env["OMVIEW_SOCKET"] = str(tmp_path / "no-agent.sock")
    env["OMVIEW_CONFIG_DIR"] = str(tmp_path / "etc")
    env["OMVIEW_STATE_DIR"] = str(tmp_path / "state")
    return env


@pytest.fixture
def cli(no_agent_env: dict[str, str]) -> Runner:
    """A runner bound to the no-agent environment (tests override env= when they need one)."""

    def runner(
        tool: str, *args: str, env: dict[str, str] | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return run_tool(tool, *args, env=env if env is not None else no_agent_env, timeout=timeout)

    return runner
