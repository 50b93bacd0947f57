"""Unix manners of every command: quiet exit (141, nothing on stderr) when stdout's reader has gone,
and NO_COLOR. Real pipes: either closed before the command writes, or closed by ``head``."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omview.collector.daemon import Collector
from omview.collector.synthetic import SyntheticSource
from omview.collector.writer import HistoryWriter
from omview.model.pipes import EXIT_CLOSED_PIPE, quiet_pipe
from tests.collector.conftest import FakeClock, run_ticks
from tests.support.agents import Cluster, make_base

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


@pytest.fixture(scope="module")
def agent_env() -> Iterator[dict[str, str]]:
    cluster = Cluster(make_base(), 1)
    try:
        cluster.start()
        yield cluster.agents[0].env
    finally:
        cluster.stop()
        shutil.rmtree(cluster.base, ignore_errors=True)


def into_closed_pipe(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run argv with stdout on a pipe whose read end is already closed: every write fails."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run(argv, stdout=w, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              env=env, cwd=REPO, text=True, timeout=60, check=False)  # fmt: skip
    finally:
        os.close(w)


def _script(name: str) -> list[str]:
    # the mode commands' entry points (nomig, runon, ...) as the console scripts call them
    return [PY, "-c", f"import sys; from omview.cli.mosrun import {name}; sys.exit({name}())"]


COMMANDS = [
    ["-m", "omview.cli.mps"],
    ["-m", "omview.cli.mps", "--json"],
    ["-m", "omview.cli.showmap"],
    ["-m", "omview.cli.showmap", "--json"],
    ["-m", "omview.cli.mosctl", "status"],
    ["-m", "omview.cli.mosctl", "--json", "status"],
    ["-m", "omview.cli.mosctl", "--help"],
    ["-m", "omview.cli.mosmon", "--once"],
    ["-m", "omview.cli.mosmon", "--once", "--json"],
    ["-m", "omview.cli.setpe", "-r"],
    ["-m", "omview.cli.migrate", "--help"],
    ["-m", "omview.cli.mosrun", "--help"],
    ["-m", "omview.collector"],
    ["-m", "omview.collector", "--help"],
    ["-m", "omview.testbed", "--help"],
    ["-m", "omview.agent", "--help"],
    ["-m", "omview.agent", "status"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[1:]))
def test_a_closed_pipe_ends_a_command_quietly(args: list[str], agent_env: dict[str, str]) -> None:
    res = into_closed_pipe([PY, *args], agent_env)
    assert (res.returncode, res.stderr) == (EXIT_CLOSED_PIPE, "")


@pytest.mark.parametrize("name", ["nomig", "runon", "fastdecay"])
def test_the_mode_commands_help_into_a_closed_pipe(name: str, agent_env: dict[str, str]) -> None:
    res = into_closed_pipe([*_script(name), "--help"], agent_env)
    assert (res.returncode, res.stderr) == (EXIT_CLOSED_PIPE, "")


def test_export_csv_into_head(tmp_path: Path) -> None:
    """`openmosixcollector --export csv | head`: head leaves after two of ~4000 rows."""
    clock = FakeClock()
    col = Collector(
        SyntheticSource(40, seed=2, churn=0), HistoryWriter(str(tmp_path / "log"), interval=1.0), clock=clock
    )
    col.start()
    run_ticks(col, clock, 100)
    col.close()
    cmd = f"'{PY}' -m omview.collector --export csv --history '{tmp_path / 'log'}' | head -n 2"
    res = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, cwd=REPO,
                         timeout=60, check=False)  # fmt: skip
    assert res.stdout.splitlines()[0].startswith("time,epoch,node,")
    assert len(res.stdout.splitlines()) == 2
    assert (res.returncode, res.stderr) == (EXIT_CLOSED_PIPE, "")
    # the documented failure code is unchanged
    res = subprocess.run([PY, "-m", "omview.collector", "--export", "csv", "--history", str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO, timeout=60, check=False)  # fmt: skip
    assert res.returncode == 1 and res.stderr.startswith("openmosixcollector: ")


def test_cluster_status_into_a_closed_pipe() -> None:
    """omview-cluster status's real main and printing, with the cluster itself stubbed (no netns here)."""
    status = {"state_dir": "/x", "bridge": "omvbr0", "subnet": "10.0.0.0/24", "nodes": [
        {"name": f"node{i}", "address": f"10.0.0.{i}", "netns": f"omv{i}", "holder_pid": i, "holder_alive": True,
         "sshd_pid": i, "sshd_alive": True, "agent_pid": i, "agent_alive": True} for i in range(1, 4)
    ]}  # fmt: skip
    code = (
        "import sys, omview.testbed.__main__ as m\n"
        f"class Fake:\n    def status(self): return {status!r}\n"
        "m.Cluster.load = staticmethod(lambda state: Fake())\n"
        "sys.exit(m.main(sys.argv[1:]))\n"
    )
    for extra in ([], ["--json"]):
        res = into_closed_pipe([PY, "-c", code, "status", *extra], dict(os.environ))
        assert (res.returncode, res.stderr) == (EXIT_CLOSED_PIPE, "")


def test_a_broken_socket_is_not_mistaken_for_a_closed_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = os.pipe()  # an open pipe as stdout: its reader is still there
    out = io.TextIOWrapper(io.FileIO(w, "w"))
    monkeypatch.setattr(sys, "stdout", out)

    @quiet_pipe
    def main() -> int:
        raise BrokenPipeError(32, "Broken pipe")  # e.g. the agent's socket

    try:
        with pytest.raises(BrokenPipeError):
            main()
    finally:
        monkeypatch.undo()
        out.close()
        os.close(r)


class _FakeCurses:
    A_BOLD, A_DIM, A_REVERSE, COLOR_GREEN, COLOR_RED = 1, 2, 4, 10, 11
    error = RuntimeError

    def __init__(self) -> None:
        self.started = False

    def has_colors(self) -> bool:
        return True

    def start_color(self) -> None:
        self.started = True

    def use_default_colors(self) -> None:
        pass

    def init_pair(self, *_: Any) -> None:
        pass

    def color_pair(self, n: int) -> int:
        return 256 * n


@pytest.mark.parametrize(("no_color", "coloured"), [(None, True), ("", True), ("1", False)])
def test_mosmon_honours_no_color(
    monkeypatch: pytest.MonkeyPatch, no_color: str | None, coloured: bool
) -> None:
    from omview.cli.mosmon import _curses_styles

    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    curses = _FakeCurses()
    styles = _curses_styles(curses)
    assert curses.started is coloured
    assert (styles["bar"] >= 256) is coloured and styles["bar"] & curses.A_REVERSE
