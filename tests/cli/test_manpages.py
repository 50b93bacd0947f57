"""The man pages: scripts/build-manpages.py makes one per entry point and each renders cleanly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.manbuild import build, commands


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("man", tmp_path_factory.mktemp("man1"))


def test_one_page_per_command(pages: Path) -> None:
    names = {p.name.removesuffix(".1") for p in pages.glob("*.1")}
    assert names == commands()
    assert {"mosctl", "migrate", "mosrun", "runon", "fastdecay", "openmosixview", "omview-agent"} <= names


@pytest.mark.parametrize("command", sorted(commands()))
def test_each_page_renders_without_warnings(pages: Path, command: str) -> None:
    page = pages / f"{command}.1"
    groff = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)], capture_output=True, text=True,
                           timeout=60, check=False)  # fmt: skip
    assert (groff.returncode, groff.stderr) == (0, "")
    env = {k: v for k, v in os.environ.items() if k != "MAN_KEEP_FORMATTING"} | {"MANWIDTH": "80"}
    man = subprocess.run(["man", "--warnings=w", "-l", str(page)], capture_output=True, text=True, env=env,
                         timeout=60, check=False)  # fmt: skip
    assert (man.returncode, man.stderr) == (0, "")
    text = man.stdout
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "FILES", "EXAMPLES", "SEE ALSO"):
        assert f"\n{heading}\n" in text, (command, heading)
    assert f"{command} - " in text  # the NAME line that apropos and whatis read


def test_pages_carry_the_parsers_options(pages: Path) -> None:
    def render(name: str) -> str:
        return subprocess.run(["man", "-l", str(pages / f"{name}.1")], capture_output=True, text=True,
                              env={**os.environ, "MANWIDTH": "200"}, timeout=60, check=True).stdout  # fmt: skip

    assert "--metrics-listen" in render("openmosixcollector")
    mosrun = render("mosrun")
    assert "-h, --runhome" in mosrun and "--runon NODE" in mosrun
    assert "4 no agent on this node" in mosrun  # the epilog, line by line
    assert "omview-agent bridge" in render("omview-agent")
    assert "--local-socket" in render("openmosixview")
