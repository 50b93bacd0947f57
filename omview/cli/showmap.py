"""CLI layer: ``showmap``, the cluster map as this node's agent knows it (file or autodiscovery).

The output is byte for byte the openMosix layout (``My Node-Id: 0x....`` and the
``Base Node-Id Address Count`` table) from ``mapfile.format_showmap``.
"""

from __future__ import annotations

import sys

from omview.cli._common import EXIT_OK, Parser, connect, fetch_map, print_json, run
from omview.model import mapfile

PROG = "showmap"


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Show the cluster map of this node's omview agent, in the openMosix showmap layout "
        "(from the map file, or what autodiscovery found).",
        epilog="exit codes: 0 ok, 2 usage error, 3 the agent refused or failed, 4 no agent running",
    )
    parser.add_argument("--json", action="store_true", help="print the map as JSON")
    return parser


def _show(as_json: bool) -> int:
    with connect(PROG) as client:
        my_id, entries, reply = fetch_map(client)
    if as_json:
        reply["entries"] = [e.to_dict() for e in entries]
        print_json(reply)
    else:
        sys.stdout.write(mapfile.format_showmap(my_id, entries))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    return run(PROG, lambda: _show(ns.json))


if __name__ == "__main__":
    sys.exit(main())
