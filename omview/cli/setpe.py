"""CLI layer: ``setpe``, load, read back or switch off the cluster map of this node's agent.

The map file is parsed and checked here first (errors name file:line), so a broken map never
reaches the agent; the agent still validates what it receives.
"""

from __future__ import annotations

import argparse
import os
import sys

from omview.cli._common import EXIT_OK, EXIT_USAGE, CliError, Parser, connect, fetch_map, print_json, run
from omview.model import mapfile

PROG = "setpe"


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Manual node configuration: give this node's omview agent its cluster map.",
        epilog=(
            "usage as in openMosix:\n"
            "  setpe -w -f [MAP]     load the map from MAP (default: the first of "
            + ", ".join(mapfile.MAP_PATHS)
            + ")\n"
            "  setpe -r [-f [MAP]]   print the current map in map-file format, or write it to MAP\n"
            "  setpe -off            turn the map off (the agent falls back to autodiscovery)\n\n"
            "exit codes: 0 ok, 2 usage error or bad map file, 3 the agent refused or failed,\n"
            "            4 no agent running on this node"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-w", dest="mode", action="store_const", const="write", help="load the map from a file")
    mode.add_argument("-r", dest="mode", action="store_const", const="read", help="read the current map")
    mode.add_argument(
        "-off", "--off", dest="mode", action="store_const", const="off", help="turn the map off"
    )
    # -f with no value means "the default map file", as in the openMosix syntax "-f [hpc_map]"
    parser.add_argument("-f", dest="file", nargs="?", const="", default=None, metavar="MAP", help="map file")
    parser.add_argument("--json", action="store_true", help="with -r: print the map as JSON")
    return parser


def default_map_path(*, must_exist: bool) -> str:
    """The first existing file of mapfile.MAP_PATHS (openMosix lookup order)."""
    for path in mapfile.MAP_PATHS:
        if os.path.exists(path):
            return path
    if must_exist:
        raise CliError(f"no map file found (looked for {', '.join(mapfile.MAP_PATHS)}); name one with -f MAP")
    return mapfile.MAP_PATHS[0]


def _write(path_arg: str | None) -> int:
    path = path_arg or default_map_path(must_exist=True)
    # ConfigError -> "setpe: FILE: cannot read the map file: why" or "setpe: FILE:LINE: reason", exit 2
    entries = mapfile.parse(mapfile.read(path), path=path)
    if not entries:
        raise CliError(f"{path}: the map defines no nodes; add lines 'ID ADDRESS COUNT'")
    addresses = {addr for addrs in mapfile.expand(entries).values() for addr in addrs}
    with connect(PROG) as client:
        me = client.call("node.info")
        my_address = str(me.get("address", ""))
        if my_address and my_address not in addresses:
            # the classic setpe complaint, with the fix spelled out
            raise CliError(
                f"the supplied table is well-formatted, but my IP address ({my_address}) is not there! "
                f"Add this node to {path}, or set 'address' in the agent config if it picked the wrong one",
                EXIT_USAGE,
            )
        client.call("map.set", entries=[e.to_dict() for e in entries], source=os.path.abspath(path))
    return EXIT_OK


def _read(path_arg: str | None, as_json: bool) -> int:
    with connect(PROG) as client:
        my_id, entries, reply = fetch_map(client)
    if path_arg is None:
        if as_json:
            reply["entries"] = [e.to_dict() for e in entries]
            print_json(reply)
        else:
            sys.stdout.write(mapfile.format_map(entries))
        return EXIT_OK
    path = path_arg or default_map_path(must_exist=False)
    tmp = f"{path}.setpe-{os.getpid()}"
    try:
        # write beside the target and rename, so a crash never leaves a half-written map
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(mapfile.format_map(entries))
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise CliError(f"cannot write the map to {path}: {exc.strerror or exc}") from None
    return EXIT_OK


def _off() -> int:
    with connect(PROG) as client:
        client.call("map.off")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.mode is None:
        parser.error("one of -w, -r or -off is required")
    if ns.mode == "off" and ns.file is not None:
        parser.error("-off takes no map file")
    if ns.json and ns.mode != "read":
        parser.error("--json only applies to -r")
    if ns.mode == "write":
        return run(PROG, lambda: _write(ns.file))
    if ns.mode == "read":
        return run(PROG, lambda: _read(ns.file, ns.json))
    return run(PROG, _off)


if __name__ == "__main__":
    sys.exit(main())
