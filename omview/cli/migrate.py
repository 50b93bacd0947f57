"""CLI layer: ``migrate PID NODE|home|best`` - ask this node's agent to move a process (a mosrun job,
by its deputy PID on the home node, any PID of the job where it runs, or its HOME:PID job id).
"""

from __future__ import annotations

import argparse
import sys

from omview.cli._common import EXIT_OK, CliError, Parser, connect, print_json, run
from omview.model.target import TargetError, parse_target

PROG = "migrate"


def build_parser() -> Parser:
    p = Parser(
        prog=PROG,
        description="Migrate a process to another node, back to its home node, or to the node where it is "
        "expected to run fastest.",
        epilog="exit codes: 0 migrated, 2 usage error, 3 refused or failed (the process kept running where it "
        "was), 4 no agent on this node",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pid", metavar="PID", help="process ID (or a job id HOME:PID)")
    p.add_argument("target", metavar="NODE|home|best")
    p.add_argument("--json", action="store_true", help="print the migration record as JSON")
    return p


def _migrate(ns: argparse.Namespace) -> int:
    try:
        target = parse_target(ns.target)
    except TargetError as exc:
        raise CliError(str(exc)) from None
    args: dict[str, object] = {"target": str(target)}
    if ":" in ns.pid:
        args["job"] = ns.pid
    elif ns.pid.isdigit() and int(ns.pid) > 0:
        args["pid"] = int(ns.pid)
    else:
        raise CliError(f"PID {ns.pid!r} is not a positive number")
    with connect(PROG) as client:
        rec = client.call("proc.migrate", timeout=600, **args)
    if ns.json:
        print_json(rec)
    else:
        print(
            f"{rec['job']}: node {rec['source']} -> {rec['target']} in {rec['total_s']:.3f} s "
            f"(frozen {rec['frozen_s']:.3f} s, {rec['bytes'] / 1e6:.1f} MB: dump {rec['dump_s']:.3f} s, "
            f"copy {rec['transfer_s']:.3f} s, restore {rec['restore_s']:.3f} s)"
        )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    return run(PROG, lambda: _migrate(ns))


if __name__ == "__main__":
    sys.exit(main())
