"""Bash completion: scripts/build-manpages.py --completions makes one shtab script per command;
each is valid bash and completes real options, verbs and (from a real agent) node IDs.

A completion is run as bash runs it: the script sourced, COMP_WORDS/COMP_CWORD set, the
function that ``complete -p`` names called, COMPREPLY read back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agents import Cluster, make_base
from tests.support.manbuild import build, commands

REPO = Path(__file__).resolve().parents[2]
# sources the completion file ($1), then completes the last of the remaining words
DRIVER = r"""
file=$1; shift
source "$file"
COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
fn=$(complete -p "${COMP_WORDS[0]}" | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
"$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


@pytest.fixture(scope="module")
def completions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("completions", tmp_path_factory.mktemp("completions"))


def complete(completions: Path, *words: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash offers for the last of ``words`` (a command line being typed)."""
    env = dict(env or os.environ)
    # the node-ID helper runs `mosmon`: the one of this venv
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    res = subprocess.run(["bash", "--norc", "--noprofile", "-c", DRIVER, "driver", str(completions / words[0]),
                          *words], capture_output=True, text=True, env=env, cwd=REPO, timeout=30, check=False)  # fmt: skip
    assert (res.returncode, res.stderr) == (0, "")
    return sorted(line for line in res.stdout.splitlines() if line)


def test_one_valid_script_per_command(completions: Path) -> None:
    assert {p.name for p in completions.iterdir()} == commands()
    for script in completions.iterdir():
        res = subprocess.run(
            ["bash", "-n", str(script)], capture_output=True, text=True, timeout=30, check=False
        )
        assert (res.returncode, res.stderr) == (0, ""), script.name
        assert "complete -o bashdefault -F _shtab_" in script.read_text()


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        (("openmosixcollector", "--metrics-l"), ["--metrics-listen"]),
        (("openmosixcollector", "--export", ""), ["csv"]),
        (("mosctl", "sta"), ["status", "stay"]),
        (("mosctl", "--js"), ["--json"]),
        (("mosrun", "--ru"), ["--runhome", "--runon"]),
        (("mosrun", "-l", "--fast"), ["--fastdecay"]),
        (("mps", "--cant"), ["--cantmove"]),
        (("mosmon", "--mode", "m"), ["memory"]),
        (("omview-agent", "st"), ["start", "status", "stop"]),
        (("omview-agent", "start", "--no-s"), ["--no-systemd"]),
        (("omview-cluster", "agent", "2", "re"), ["restart"]),
        (("openmosixview", "--local-s"), ["--local-socket"]),
        (("runon", "--he"), ["--help"]),
        (("setpe", "-o"), ["-off"]),
    ],
)
def test_options_verbs_and_choices(completions: Path, words: tuple[str, ...], offered: list[str]) -> None:
    assert complete(completions, *words) == offered


def test_a_job_completes_a_command_then_files(completions: Path, tmp_path: Path) -> None:
    assert "bash" in complete(completions, "mosrun", "-l", "bas")
    (tmp_path / "input.txt").write_text("x")
    assert complete(completions, "mosrun", "-l", "cat", str(tmp_path / "inp")) == [
        str(tmp_path / "input.txt")
    ]


@pytest.fixture(scope="module")
def agent_env() -> Iterator[dict[str, str]]:
    cluster = Cluster(make_base(), 2)
    try:
        cluster.start()
        env = cluster.agents[0].env
        probe = [sys.executable, "-m", "omview.cli.mosmon", "--once", "--json"]
        deadline = time.monotonic() + 30
        # node 2 reaches node 1's table by gossip: wait until it is there
        while '"id": 2' not in subprocess.run(probe, env=env, capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, "node 2 never appeared in node 1's table"
            time.sleep(0.2)
        yield env
    finally:
        cluster.stop()
        shutil.rmtree(cluster.base, ignore_errors=True)


def test_node_ids_come_from_the_local_agent(completions: Path, agent_env: dict[str, str]) -> None:
    assert complete(completions, "mosctl", "getload", "", env=agent_env) == ["1", "2"]
    assert complete(completions, "runon", "", env=agent_env) == ["1", "2"]
    assert complete(completions, "mosrun", "--runon", "2", env=agent_env) == ["2"]
    assert complete(completions, "migrate", "4711", "", env=agent_env) == ["1", "2", "best", "home"]


def test_without_an_agent_node_ids_are_empty_and_quick(completions: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMVIEW_SOCKET": str(tmp_path / "none.sock")}
    t0 = time.monotonic()
    assert complete(completions, "mosctl", "getload", "", env=env) == []
    assert time.monotonic() - t0 < 5
