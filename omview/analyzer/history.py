"""L5 entry point: the ``openmosixhistory`` command (the window, or ``--at TIME`` for scripts).

The collector node's process list at any moment of a history.

``--at`` prints the list at the sample nearest to TIME without starting Qt; the window is in
``history_window``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from omview import __version__
from omview.analyzer.data import COLUMNS, format_rows, iso, process_dict, processes_at, time_arg
from omview.model import records
from omview.model.pipes import quiet_pipe


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="openmosixhistory",
        description="Show the process list of the collector's node at any moment of its history.",
    )
    p.add_argument("logdir", nargs="?", default=None,
                   help=f"a history directory or its cluster file (default: {records.default_logdir()})")  # fmt: skip
    p.add_argument("--at", type=time_arg, metavar="TIME",
                   help="print the list at TIME (epoch seconds or ISO-8601) and exit (no window)")
    p.add_argument("--json", action="store_true", help="with --at: print JSON")
    p.add_argument("--screenshot", metavar="DIR", help="save a PNG of the window to DIR and exit (no display needed)")
    p.add_argument("--version", action="version", version=f"openmosixhistory {__version__}")
    return p


def run_at(args: argparse.Namespace) -> int:
    path = args.logdir or records.default_logdir()
    try:
        h = records.History.open(path)
    except (records.HistoryFormatError, OSError) as exc:
        sys.stderr.write(f"openmosixhistory: {exc}\n")
        return 1
    t, procs = processes_at(h, args.at)
    for problem in h.problems:
        sys.stderr.write(f"openmosixhistory: warning: {problem}\n")
    if args.json:
        out = {"at": iso(args.at), "sample": iso(t) if t is not None else None,
               "processes": [process_dict(p) for p in procs]}  # fmt: skip
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
        return 0
    sys.stdout.write(f"sample at {iso(t) if t is not None else '-'} (asked {iso(args.at)})\n")
    widths = [6, 12, 4, 10, 4, 9]
    sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=False)) + "  cmdline\n")
    for row in format_rows(procs):
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + f"  {row[-1]}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.at is not None:
        return quiet_pipe(run_at)(args)
    if args.json:
        build_parser().error("--json goes with --at")
    from omview.analyzer.history_window import run_window  # Qt only when a window is wanted

    return run_window(args.logdir, args.screenshot)


if __name__ == "__main__":
    sys.exit(main())
