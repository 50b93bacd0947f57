#!/usr/bin/env python3
"""Build the suite's man pages and bash completions from the commands' own argparse parsers.

Man pages come from argparse-manpage (options, sub-commands) plus the hand-written
DESCRIPTION/FILES/EXAMPLES sections in resources/man/<command>.man; completions come from shtab,
with node IDs asked from this node's agent (``mosmon --once --json``, at most 1 s). The commands
are the entry points of pyproject.toml, so a new command without a page fails the build. Run it
with the venv's python (it imports every layer, the GUI's too):

    .venv/bin/python scripts/build-manpages.py --man DIR [--completions DIR]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import shtab
from argparse_manpage.manpage import Manpage

REPO = Path(__file__).resolve().parents[1]
MAN_SOURCES = REPO / "resources" / "man"

#: The function that builds a command's parser, in the module of its entry point. The GUI's is
#: named here in one place: its module follows pyproject's entry point when the GUI moves.
GUI_PARSER = "build_parser"
PARSER_FUNCTION = {"omview-agent": "_parser", "openmosixview": GUI_PARSER, "openmosixprocs": GUI_PARSER,
                   "openmosixmigmon": GUI_PARSER}
MODE_COMMANDS = ("nomig", "runhome", "runon", "cpujob", "iojob", "nodecay", "slowdecay", "fastdecay")

#: The NAME line of each page (argparse descriptions are sentences, too long for it).
SUMMARY = {
    "mosctl": "openMosix main configuration utility for the omview agent",
    "migrate": "move a process to another node with CRIU",
    "mosrun": "run a command as a cluster job",
    "mps": "list processes with their openMosix node",
    "mosmon": "terminal monitor of the cluster's load, speed and memory",
    "showmap": "show the cluster map",
    "setpe": "load, show or turn off the cluster map",
    "openmosixcollector": "record the cluster's history; OpenMetrics endpoint",
    "omview-agent": "the omview node agent",
    "omview-cluster": "local network-namespace test cluster",
    "openmosixview": "graphical monitor and control of an omview cluster",
    "openmosixanalyzer": "load and memory history of the cluster",
    "openmosixhistory": "process list of the collector's node in the past",
    "openmosixprocs": "process box of an omview cluster",
    "openmosixmigmon": "migration monitor of an omview cluster",
}


@dataclass
class Command:
    name: str
    parser: Callable[[], argparse.ArgumentParser]
    summary: str
    include: Path


def entry_points() -> dict[str, str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    return {**project.get("scripts", {}), **project.get("gui-scripts", {})}


def commands() -> list[Command]:
    """Every entry point of pyproject.toml, with the parser its module builds."""
    out: list[Command] = []
    for name, target in sorted(entry_points().items()):
        module = importlib.import_module(target.split(":")[0])
        if name in MODE_COMMANDS:
            parser = _mode_parser(module, name)
            opts = " ".join(module.SCRIPTS[name][0])
            summary, include = f"run a command as a cluster job, as mosrun {opts}", "mode-command"
        else:
            function = PARSER_FUNCTION.get(name, "build_parser")
            if not hasattr(module, function) or name not in SUMMARY:
                raise SystemExit(
                    f"build-manpages: {name}: needs {module.__name__}.{function}() and a SUMMARY line here"
                )
            parser = getattr(module, function)
            summary, include = SUMMARY[name], name
        out.append(Command(name, parser, summary, MAN_SOURCES / f"{include}.man"))
    return out


def _mode_parser(module: object, name: str) -> Callable[[], argparse.ArgumentParser]:
    def build() -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = module.build_script_parser(name)  # type: ignore[attr-defined]
        return parser

    return build


def roff_escape(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, no line taken for a request."""
    lines = []
    for line in text.replace("\\", "\\e").replace("-", "\\-").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def build_man(cmds: list[Command], outdir: Path, version: str) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for cmd in cmds:
        if not cmd.include.is_file():
            raise SystemExit(
                f"build-manpages: {cmd.include} is missing: every command needs its sections there"
            )
        page = Manpage(
            cmd.parser(),
            _data={
                "project_name": "omview",
                "version": version,
                "manual_title": "omview manual",
                "manual_section": 1,
                "description": cmd.summary,
                "include": str(cmd.include),
            },
        )
        parser = page.parser
        if parser.epilog:
            # epilogs are laid-out tables (verbs, exit codes): keep their lines as they are
            page.add_section("comments", "=", ".nf\n" + roff_escape(parser.epilog.strip("\n")) + "\n.fi")
        path = outdir / f"{cmd.name}.1"
        path.write_text(str(page))
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------
# bash completion

#: Shell functions the completions call; shtab passes the word being completed as $1.
BASH_HELPERS = r"""
# node IDs of the cluster table of this node's agent; nothing (and no wait) without an agent
_omview_node_ids() {
  local ids
  ids=$(timeout 1 mosmon --once --json 2>/dev/null | sed -n 's/^ *"id": \([0-9][0-9]*\),\{0,1\}$/\1/p')
  compgen -W "$ids" -- "$1"
}
_omview_migrate_targets() {
  _omview_node_ids "$1"
  compgen -W "home best" -- "$1"
}
_omview_pids() {
  compgen -W "$(ps -e -o pid= 2>/dev/null)" -- "$1"
}
# a job's words: its first word is a command, the rest files (shtab's current_action_args_start_index
# is where the COMMAND [ARGS...] positional began)
_omview_command_words() {
  if [[ ${current_action_args_start_index:-0} -eq ${COMP_CWORD:-0} ]]; then
    compgen -c -- "$1"
  else
    compgen -f -- "$1"
  fi
}
"""
#: First line of every completion file: setup.sh replaces only files that carry it.
COMPLETION_MARK = "# omview bash completion (scripts/build-manpages.py, shtab) for"
NODE_IDS = {"bash": "_omview_node_ids"}
COMMAND_WORDS = {"bash": "_omview_command_words"}
#: What a destination completes to, in any command (sub-commands included) ...
BY_DEST: dict[str, dict[str, str]] = {
    **dict.fromkeys(("config", "log", "pidfile", "output", "path", "file", "identity", "known_hosts",
                     "ssh_config", "settings", "socket", "local_socket"), shtab.FILE),
    **dict.fromkeys(("logdir", "history", "state", "global_state", "demo_state", "screenshot"), shtab.DIRECTORY),
    "words": COMMAND_WORDS,
}  # fmt: skip
#: ... and in one command.
BY_COMMAND: dict[str, dict[str, dict[str, str]]] = {
    "mosctl": {"args": NODE_IDS},
    "migrate": {"target": {"bash": "_omview_migrate_targets"}, "pid": {"bash": "_omview_pids"}},
    "mosrun": {"runon": NODE_IDS, "j": NODE_IDS},
    "runon": {"node": NODE_IDS},
    "mps": {"pids": {"bash": "_omview_pids"}},
}


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out += _actions(sub)
        else:
            out.append(action)
    return out


def completion_parser(cmd: Command) -> argparse.ArgumentParser:
    """The command's parser, marked up for shtab (a fresh copy: the command never sees this)."""
    parser = cmd.parser()
    special = BY_COMMAND.get(cmd.name, {})
    for action in _actions(parser):
        how = special.get(action.dest) or BY_DEST.get(action.dest)
        if how is not None:
            action.complete = how  # type: ignore[attr-defined]
    if cmd.name == "mosctl":
        from omview.cli.mosctl import HANDLERS

        for action in _actions(parser):
            if action.dest == "verb":
                # shtab never moves on from an optional (?) positional: completing takes one VERB
                action.nargs, action.choices = None, sorted(HANDLERS)
    return parser


def build_completions(cmds: list[Command], outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for cmd in cmds:
        path = outdir / cmd.name
        script = shtab.complete(completion_parser(cmd), shell="bash", preamble=BASH_HELPERS)
        path.write_text(f"{COMPLETION_MARK} {cmd.name}\n{script}")
        written.append(path)
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--man", type=Path, metavar="DIR", help="write <command>.1 pages here")
    ap.add_argument("--completions", type=Path, metavar="DIR", help="write bash completions (<command>) here")
    a = ap.parse_args()
    if a.man is None and a.completions is None:
        ap.error("nothing to do: give --man DIR and/or --completions DIR")
    sys.path.insert(0, str(REPO))
    from omview import __version__

    cmds = commands()
    if a.man is not None:
        pages = build_man(cmds, a.man, __version__)
        sys.stdout.write(f"build-manpages: {len(pages)} man pages in {a.man}\n")
    if a.completions is not None:
        files = build_completions(cmds, a.completions)
        sys.stdout.write(f"build-manpages: {len(files)} bash completions in {a.completions}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
