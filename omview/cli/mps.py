"""CLI layer: ``mps``, a ps with the openMosix N# column, from this node's agent (procs.list).

N# is 0 for a process running here, as openMosix mps showed, else the node ID it runs on.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys

from omview.cli._common import EXIT_NEGATIVE, EXIT_OK, CliError, Parser, connect, print_json, run
from omview.model.client import AgentClient
from omview.model.cluster import ProcessInfo
from omview.model.errors import AgentFault
from omview.model.protocol import FaultCode

PROG = "mps"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="List this node's processes like ps, with the openMosix N# column "
        "(0 = runs here, otherwise the ID of the node it runs on).",
        epilog=(
            "columns: PID USER N# STAT NI %CPU RSS(KiB) LOCK NMIGS [CANTMOVE] COMMAND\n\n"
            "exit codes: 0 ok, 1 a PID asked for does not exist, 2 usage error,\n"
            "            3 the agent refused or failed, 4 no agent running on this node"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-a", "--all", action="store_true", help="processes of all users (default: only yours)"
    )
    parser.add_argument("-c", "--cantmove", action="store_true", help="show why a process cannot migrate")
    parser.add_argument(
        "-H", "--helpers", action="store_true",
        help="also the processes that run a mosrun job (unshare, jobinit, the program under its deputy), "
        "each under its job's row; by default a job is one line, as openMosix's ps showed it",
    )
    parser.add_argument("--json", action="store_true", help="print the processes as JSON")
    parser.add_argument("pids", nargs="*", metavar="PID", help="only these processes (any user)")
    return parser


def node_column(proc: ProcessInfo, my_id: int) -> int:
    """openMosix N#: 0 when the process runs on this node, else the node it runs on."""
    return 0 if proc.where in (0, my_id) else proc.where


def format_table(procs: list[ProcessInfo], my_id: int, *, cantmove: bool, width: int | None) -> list[str]:
    """The ps-like table; COMMAND is cut to ``width`` when printing to a terminal."""
    header = f"{'PID':>7} {'USER':<10} {'N#':>5} {'STAT':<4} {'NI':>3} {'%CPU':>5} {'RSS':>9} {'LOCK':<4} {'NMIGS':>5}"
    reasons = [p.cantmove or "-" for p in procs]
    reason_w = max([len("CANTMOVE"), *map(len, reasons)]) if cantmove else 0
    if cantmove:
        header += f" {'CANTMOVE':<{reason_w}}"
    lines = [header + " COMMAND"]
    for proc, reason in zip(procs, reasons, strict=True):
        row = (
            f"{proc.pid:>7} {proc.user[:10]:<10} {node_column(proc, my_id):>5} {stat_text(proc):<4} {proc.nice:>3} "
            f"{proc.cpu:>5.1f} {proc.rss // 1024:>9} {'yes' if proc.lock else 'no':<4} {proc.nmigs:>5}"
        )
        if cantmove:
            row += f" {reason:<{reason_w}}"
        lines.append(row + " " + ("  \\_ " if proc.helper_of else "") + command_text(proc))
    if width is not None:
        lines = [line[:width] for line in lines]
    return lines


def stat_text(proc: ProcessInfo) -> str:
    """STAT, with ``~`` when the numbers are the hosting node's last report, not a current one
    (that node is down or slow; ``--json`` gives the age as stats_age)."""
    return f"{proc.state}~" if proc.stats_age != 0 else proc.state


def command_text(proc: ProcessInfo) -> str:
    """Full command line, or [name] for processes without one (kernel threads, zombies).

    Control characters (an argument like ``sh -c 'a\nb'``) are shown as ``?``, as ps does,
    so one process is always one row and scripts can split the table by lines.
    """
    text = " ".join(proc.cmdline) if proc.cmdline else f"[{proc.name}]"
    return _CONTROL.sub("?", text)


def _fetch(
    client: AgentClient, pids: list[int], all_users: bool, helpers: bool
) -> tuple[list[ProcessInfo], list[int]]:
    if not pids:
        procs = client.processes(helpers=helpers)
        if not all_users:
            uid = os.getuid()
            procs = [p for p in procs if p.uid == uid]
        return procs, []
    found: list[ProcessInfo] = []
    missing: list[int] = []
    for pid in dict.fromkeys(pids):
        try:
            rows = client.processes(pid)
        except AgentFault as exc:
            if exc.code != FaultCode.NO_SUCH_PROCESS:
                raise
            rows = []
        if rows:
            found.extend(rows)
        else:
            missing.append(pid)
    return found, missing


def _list(ns: argparse.Namespace) -> int:
    pids: list[int] = []
    for text in ns.pids:
        if not text.isdigit() or int(text) == 0:
            raise CliError(f"PID {text!r} is not a positive number")
        pids.append(int(text))
    with connect(PROG) as client:
        procs, missing = _fetch(client, pids, ns.all, ns.helpers)
        my_id = client.node_id
    # by PID, a job's helpers right under its row
    procs.sort(key=lambda p: (p.helper_of or p.pid, p.helper_of != 0, p.pid))
    if ns.json:
        print_json([{**p.to_dict(), "node": node_column(p, my_id)} for p in procs])
    else:
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        for line in format_table(procs, my_id, cantmove=ns.cantmove, width=width):
            print(line)
    for pid in missing:
        print(f"{PROG}: no process {pid} on this node", file=sys.stderr)
    return EXIT_NEGATIVE if missing else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_intermixed_args(argv)
    return run(PROG, lambda: _list(ns))


if __name__ == "__main__":
    sys.exit(main())
