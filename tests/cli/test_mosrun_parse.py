"""mosrun's parsing through argparse is the hand-written parser it replaced, word for word.

``_reference`` is the old parser (kept here verbatim as the specification); hypothesis feeds
both the same argument lists built from mosrun's vocabulary and compares the outcome.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omview.cli._common import CliError, parse_node_id
from omview.cli.mosrun import SCRIPTS, Request, _Help, build_parser, build_script_parser, parse

REPO = Path(__file__).resolve().parents[2]


# fmt: off
def _reference(argv: list[str]) -> Request:
    """mosrun's options up to the command; everything from COMMAND on is passed untouched."""
    req = Request(argv=[])
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a == "--help":
            raise _Help("")
        if a == "-h" or a == "--runhome" or a == "--nomig":
            req.lock = True
        elif a == "-l":
            req.lock = False
        elif a == "-j":
            if i + 1 >= len(argv):
                raise CliError("-j needs a list of nodes, e.g. -j 2,3")
            i += 1
            req.nodes = [parse_node_id(x) for x in argv[i].split(",") if x]
            if not req.nodes:
                raise CliError("-j needs at least one node")
        elif a.startswith("-j") and len(a) > 2:
            req.nodes = [parse_node_id(x) for x in a[2:].split(",") if x]
        elif a == "--runon":
            if i + 1 >= len(argv):
                raise CliError("--runon needs a node")
            i += 1
            req.node = str(parse_node_id(argv[i]))
            req.lock = True
        elif a in ("--cpujob", "--iojob", "--nodecay", "--slowdecay", "--fastdecay"):
            req.hints.append(a[2:])
        elif a.startswith("-"):
            raise CliError(f"unknown option {a!r} (see 'mosrun --help')")
        elif (a.isdigit() or a.lower().startswith("0x")) and not req.node and i + 1 < len(argv):
            req.node = str(parse_node_id(a))
        else:
            break
        i += 1
    req.argv = argv[i:]
    if not req.argv:
        raise CliError("no command given (see 'mosrun --help')")
    return req
# fmt: on


WORDS = ["-h", "-l", "-j", "-j2,3", "2,3", "--runon", "3", "0x2", "7", "--nomig", "--runhome", "--cpujob",
         "--iojob", "--nodecay", "--slowdecay", "--fastdecay", "--", "cmd", "arg", "-x", "--bogus", "-5",
         "-", "", "0", "99999999", "0xZZ"]  # fmt: skip
# Not in WORDS: "--help" (argparse acts on it even after an unknown option, which the old parser
# refused first: the one intended difference, besides argparse's "-hl" bundling and "--runon=3")


def _outcome(fn, argv: list[str]) -> object:  # type: ignore[no-untyped-def]
    try:
        return fn(argv)
    except _Help:
        return "help"
    except CliError as exc:
        return ("error", exc.code)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=7))
def test_argparse_parsing_matches_the_old_parser(argv: list[str]) -> None:
    assert _outcome(parse, argv) == _outcome(_reference, argv)


@pytest.mark.parametrize(
    "argv",
    [["cmd"], ["-h", "cmd", "-l"], ["3", "--cpujob", "cmd"], ["-j", "2,3", "-l", "x"], ["-j2,3", "x"],
     ["--runon", "3", "-l", "x"], ["25611", "--fastdecay", "cmd", "--help"], ["--", "-weird", "3"],
     ["3", "--", "4", "cmd"], ["--nomig", "--iojob", "--nodecay", "0x2", "cmd"]],
)  # fmt: skip
def test_typical_command_lines(argv: list[str]) -> None:
    assert parse(argv) == _reference(argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [([], "no command given (see 'mosrun --help')"), (["-j"], "-j needs a list of nodes, e.g. -j 2,3"),
     (["-j", "", "x"], "-j needs at least one node"), (["--runon"], "--runon needs a node"),
     (["--bogus", "x"], "unknown option '--bogus' (see 'mosrun --help')"),
     (["-5", "x"], "unknown option '-5' (see 'mosrun --help')"), (["-l"], "no command given (see 'mosrun --help')")],
)  # fmt: skip
def test_the_old_error_messages(argv: list[str], message: str) -> None:
    with pytest.raises(CliError) as new:
        parse(argv)
    with pytest.raises(CliError) as old:
        _reference(argv)
    assert str(new.value) == str(old.value) == message and new.value.code == 2


@pytest.mark.parametrize(
    ("argv", "helps"),
    [(["--help"], True), (["-l", "--help", "cmd"], True), (["3", "--help", "cmd"], True),
     (["cmd", "--help"], False), (["--", "--help"], False), (["-h", "cmd", "--help"], False)],
)  # fmt: skip
def test_help_only_before_the_command(argv: list[str], helps: bool) -> None:
    assert (_outcome(parse, argv) == "help") is helps
    assert (_outcome(_reference, argv) == "help") is helps


def test_help_is_the_parsers_and_h_is_runhome() -> None:
    text = build_parser().format_help()
    for flag in ("-h, --runhome", "-l", "-j NODE,NODE...", "--runon NODE", "--cpujob", "--help", "exit codes:"):
        assert flag in text
    res = subprocess.run([sys.executable, "-m", "omview.cli.mosrun", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=30, check=False)  # fmt: skip
    assert res.returncode == 0 and res.stdout == text and res.stderr == ""


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_mode_command_help(script: str) -> None:
    code = f"import sys; from omview.cli.mosrun import {script}; sys.exit({script}())"
    res = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, cwd=REPO,
                         timeout=30, check=False)  # fmt: skip
    assert res.returncode == 0 and res.stdout == build_script_parser(script).format_help()
    assert f"mosrun {' '.join(SCRIPTS[script][0])}" in res.stdout
