"""L5 entry point: the ``openmosixanalyzer`` command (the window, or ``--find-out`` for scripts).

``--find-out`` never starts Qt: it reads the history, prints the statistics and exits. The window
is imported only when it is needed, so the command line stays fast and works without a display.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from omview import __version__
from omview.analyzer.data import HistoryData, find_out, format_find_out, time_arg
from omview.model import records
from omview.model.pipes import quiet_pipe


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="openmosixanalyzer",
        description="Show the cluster's history written by openmosixcollector: load and memory of "
        "every node, checkpoints, statistics.",
    )
    p.add_argument("logdir", nargs="?", default=None,
                   help="a history directory (the live one or a dated backup) or its cluster file "
                        f"(default: {records.default_logdir()})")  # fmt: skip
    p.add_argument("--find-out", action="store_true", help="print the statistics and exit (no window)")
    p.add_argument("--node", type=int, metavar="ID", help="with --find-out: only this node (the cluster block stays)")
    p.add_argument("--from", dest="t_from", type=time_arg, metavar="TIME",
                   help="with --find-out: start of the range (epoch seconds or ISO-8601; default: history start)")
    p.add_argument("--to", dest="t_to", type=time_arg, metavar="TIME",
                   help="with --find-out: end of the range (default: history end)")
    p.add_argument("--json", action="store_true", help="with --find-out: print JSON")
    p.add_argument("--screenshot", metavar="DIR", help="save PNGs of the windows to DIR and exit (no display needed)")
    p.add_argument("--version", action="version", version=f"openmosixanalyzer {__version__}")
    return p


def run_find_out(args: argparse.Namespace) -> int:
    path = args.logdir or records.default_logdir()
    try:
        data = HistoryData(path)
    except (records.HistoryFormatError, OSError) as exc:
        sys.stderr.write(f"openmosixanalyzer: {exc}" + "\n")
        return 1
    if args.node is not None and args.node not in data.node_ids():
        sys.stderr.write(f"openmosixanalyzer: no node {args.node} in {data.directory}" + "\n")
        return 1
    result = find_out(data, args.node, args.t_from, args.t_to)
    for problem in data.problems:
        sys.stderr.write(f"openmosixanalyzer: warning: {problem}" + "\n")
    sys.stdout.write((json.dumps(result, indent=1) if args.json else format_find_out(result)) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.find_out:
        return quiet_pipe(run_find_out)(args)
    if args.node is not None or args.t_from is not None or args.t_to is not None or args.json:
        build_parser().error("--node, --from, --to and --json go with --find-out")
    from omview.analyzer.window import run_window  # Qt only when a window is wanted

    return run_window(args.logdir, args.screenshot)


if __name__ == "__main__":
    sys.exit(main())
