"""CLI layer: ``mosctl``, the openMosix main configuration utility, over the local omview agent.

Verbs and their meanings follow the openMosix userland tools; kernel-only verbs (MFS, tune,
yardstick) answer "not applicable" with exit 2 instead of pretending to work.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from omview.cli._common import (
    EXIT_NEGATIVE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Parser,
    connect,
    human_bytes,
    parse_int,
    parse_node_id,
    print_json,
    run,
)
from omview.model.client import AgentClient
from omview.model.cluster import STD_SPEED

PROG = "mosctl"

#: on/off verbs -> (flag name in flags.set, value)
FLAG_VERBS: dict[str, tuple[str, bool]] = {
    "stay": ("stay", True),
    "nostay": ("stay", False),
    "lstay": ("lstay", True),
    "nolstay": ("lstay", False),
    "block": ("block", True),
    "noblock": ("block", False),
    "quiet": ("quiet", True),
    "noquiet": ("quiet", False),
}

#: getter verbs -> NodeInfo field they print
GETTERS: dict[str, str] = {
    "getload": "load",
    "getspeed": "speed",
    "getmem": "mem",
    "getfree": "rmem",
    "getutil": "util",
}

_MFS_WHY = (
    "MFS (the openMosix File System) lived in the openMosix kernel; omview has no kernel part. "
    "Migrated processes need their files at the same paths on every node: mount a shared file "
    "system (e.g. NFS) yourself"
)
_YARD_WHY = (
    f"the yardstick was the kernel's reference CPU; omview's reference speed is fixed at {STD_SPEED}. "
    "Use 'mosctl getspeed' / 'mosctl setspeed N' to read or change this node's relative speed"
)
#: kernel-only verbs -> why they do not apply
NOT_APPLICABLE: dict[str, str] = {
    "mfs": _MFS_WHY,
    "nomfs": _MFS_WHY,
    "gettune": (
        "the overhead parameters tuned the openMosix kernel's migration cost model; omview migrates "
        "with CRIU in user space and has no such kernel tunables"
    ),
    "getyard": _YARD_WHY,
    "setyard": _YARD_WHY,
}

#: (verb syntax, meaning) in the order of the openMosix documentation, for --help
VERB_HELP: list[tuple[str, str]] = [
    ("stay | nostay", "no automatic process migration / automatic migration (default)"),
    ("lstay | nolstay", "local processes should stay / could migrate"),
    ("block | noblock", "block / allow arriving guest processes"),
    ("quiet | noquiet", "stop / resume exchanging load-balancing information"),
    ("expel", "send away guest processes"),
    ("bring", "bring all migrated processes home"),
    ("getdecay", "show the decay parameters"),
    ("setdecay INTERVAL [SLOW FAST]", "set the decay interval (s) and slow/fast decay (per mille)"),
    ("whois [ID|IP|HOSTNAME]", "resolve node IDs, addresses and host names (default: this node)"),
    ("getload [ID]", "the (openMosix) load of this node or node ID"),
    ("getspeed [ID]", "the (openMosix) speed"),
    ("getmem [ID]", "logical free memory (bytes)"),
    ("getfree [ID]", "physical free memory (bytes)"),
    ("getutil [ID]", "utilisation (percent)"),
    ("status [ID]", "current status and configuration"),
    ("isup [ID]", "is the node up? prints up/down, exit 0 when up, 1 when down"),
    ("setspeed N", f"set this node's speed (reference CPU = {STD_SPEED})"),
    ("balancer [N]", "the automatic balancer's last N decisions (default 10): moves and holds, with why"),
    ("mfs | nomfs | gettune | getyard | setyard", "kernel-only openMosix verbs: not applicable"),
]


def _epilog() -> str:
    width = max(len(syntax) for syntax, _ in VERB_HELP)
    lines = ["verbs:"]
    lines += [f"  {syntax:<{width}}  {meaning}" for syntax, meaning in VERB_HELP]
    lines += [
        "",
        "exit codes: 0 ok, 1 negative answer (isup: down), 2 usage error or not applicable,",
        "            3 the agent refused or failed, 4 no agent running on this node",
    ]
    return "\n".join(lines)


def _no_args(verb: str, args: list[str]) -> None:
    if args:
        raise CliError(f"{verb} takes no argument, got {' '.join(args)!r}")


def _optional_node(verb: str, args: list[str]) -> int | None:
    if len(args) > 1:
        raise CliError(f"{verb} takes at most one node ID, got {' '.join(args)!r}")
    return parse_node_id(args[0]) if args else None


# --- data access ------------------------------------------------------------------------


def _node_record(client: AgentClient, node_id: int | None) -> dict[str, Any]:
    """node.info for this node (freshest, includes extras such as CRIU), else the cluster.nodes row."""
    if node_id is None or node_id == client.node_id:
        return dict(client.call("node.info"))
    rows = client.call("cluster.nodes")
    for row in rows:
        if row.get("id") == node_id:
            return dict(row)
    known = ", ".join(str(r.get("id")) for r in rows) or "none"
    raise CliError(f"node {node_id} is not in this cluster (known nodes: {known}); see 'showmap'")


# --- verbs --------------------------------------------------------------------------------


def _do_flag(verb: str, args: list[str], as_json: bool) -> int:
    _no_args(verb, args)
    name, value = FLAG_VERBS[verb]
    with connect(PROG) as client:
        flags = client.call("flags.set", **{name: value})
    if as_json:
        print_json(flags)
    return EXIT_OK


def _do_admin(verb: str, args: list[str], as_json: bool) -> int:
    _no_args(verb, args)
    with connect(PROG) as client:
        result = client.call(f"admin.{verb}")
    if as_json:
        print_json(result)
    else:
        for line in describe(result):
            print(line)
    return EXIT_OK


def describe(result: Any) -> list[str]:
    """Lines for an agent report of unknown detail (expel/bring): message first, then fields."""
    if result is None or result is True:
        return []
    if isinstance(result, str):
        return [result]
    if isinstance(result, list):
        return [_inline(item) for item in result]
    if isinstance(result, dict):
        # free-text explanations first, then the facts (e.g. which PIDs moved)
        prose = [k for k in ("message", "note") if result.get(k)]
        lines = [str(result[k]) for k in prose]
        for key in sorted(k for k in result if k not in prose):
            lines.append(f"{key}: {_inline(result[key])}")
        return lines
    return [str(result)]


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={_inline(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_inline(v) for v in value) if value else "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _do_getter(verb: str, args: list[str], as_json: bool) -> int:
    node_id = _optional_node(verb, args)
    field = GETTERS[verb]
    with connect(PROG) as client:
        rec = _node_record(client, node_id)
    value = rec.get(field)
    if as_json:
        print_json({"node": rec.get("id"), "status": rec.get("status"), field: value})
    else:
        print(value)
    if rec.get("status") != "up":
        print(f"{PROG}: node {rec.get('id')} is down; that is its last known value", file=sys.stderr)
    return EXIT_OK


def _do_isup(verb: str, args: list[str], as_json: bool) -> int:
    node_id = _optional_node(verb, args)
    with connect(PROG) as client:
        rec = _node_record(client, node_id)
    up = rec.get("status") == "up"
    if as_json:
        print_json({"node": rec.get("id"), "status": rec.get("status"), "up": up})
    else:
        print("up" if up else "down")
    return EXIT_OK if up else EXIT_NEGATIVE


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def _criu_text(criu: Any) -> str:
    """The agent's CRIU report, whatever detail it gives (bool, text or a dict)."""
    if isinstance(criu, bool):
        return "available" if criu else "not available"
    if isinstance(criu, dict):
        if criu.get("checked") is False:
            return f"not checked yet ({criu.get('detail') or 'the agent probes it at start'})"
        ok = criu.get("available", criu.get("ok"))
        parts = ["available" if ok else "not available"] if ok is not None else []
        for key in ("path", "version", "detail", "reason", "message"):
            if criu.get(key):
                parts.append(str(criu[key]) if key == "detail" else f"{key} {criu[key]}")
        return ", ".join(parts) or _inline(criu)
    return str(criu)


_MODES = {
    "map": "from a map file or setpe",
    "discovery": "autodiscovery",
    "off": "switched off by setpe -off",
}


def status_lines(rec: dict[str, Any], flags: dict[str, Any] | None) -> list[str]:
    """Human status of a node: identity, up/down, flags, load and resources."""
    host = f", host {rec['hostname']}" if rec.get("hostname") else ""
    lines = [
        f"This is omview node #{rec.get('id')} ({rec.get('address')}{host})",
        f"status:      {rec.get('status')}",
    ]
    if rec.get("mode"):
        lines.append(f"membership:  {rec['mode']} ({_MODES.get(str(rec['mode']), 'as the agent reports')})")
    if flags is not None:
        lines += [
            f"stay:        {_yes(flags.get('stay'))}",
            f"lstay:       {_yes(flags.get('lstay'))}",
            f"block:       {_yes(flags.get('block'))}",
            f"quiet:       {_yes(flags.get('quiet'))}",
            f"speed:       {flags.get('speed')}",
            f"decay:       interval {flags.get('decay_interval')} s, slow {flags.get('slow_decay')}, "
            f"fast {flags.get('fast_decay')} (per mille)",
        ]
    else:
        # another node: the cluster view only carries the flags other nodes gossip
        lines += [
            f"stay:        {_yes(rec.get('stay'))}",
            f"block:       {_yes(rec.get('block'))}",
            f"quiet:       {_yes(rec.get('quiet'))}",
            f"speed:       {rec.get('speed')}",
        ]
    lines += [
        f"load:        {rec.get('load')}",
        f"cpus:        {rec.get('cpus')}",
        f"utilisation: {rec.get('util')}%",
        f"memory:      {human_bytes(int(rec.get('tmem') or 0))} total, "
        f"{human_bytes(int(rec.get('mem') or 0))} available, {human_bytes(int(rec.get('rmem') or 0))} free",
    ]
    if "criu" in rec:
        lines.append(f"criu:        {_criu_text(rec['criu'])}")
    if rec.get("version"):
        lines.append(f"agent:       omview {rec['version']} (protocol {rec.get('protocol')})")
    if rec.get("status") != "up" and rec.get("age") is not None:
        age = float(rec["age"])
        # a negative age is how the agent says it never heard from the node
        lines.append(f"last news:   {age:.0f} s ago" if age >= 0 else "last news:   never heard from it")
    return lines


def _do_status(verb: str, args: list[str], as_json: bool) -> int:
    node_id = _optional_node(verb, args)
    with connect(PROG) as client:
        rec = _node_record(client, node_id)
        local = node_id is None or node_id == client.node_id
        flags = dict(client.call("flags.get")) if local else None
    if as_json:
        print_json({**rec, "flags": flags} if flags is not None else rec)
    else:
        for line in status_lines(rec, flags):
            print(line)
    return EXIT_OK


def _do_setspeed(verb: str, args: list[str], as_json: bool) -> int:
    if len(args) != 1:
        raise CliError(f"usage: {PROG} setspeed N  (N > 0; the reference CPU has speed {STD_SPEED})")
    speed = parse_int(args[0], "speed", minimum=1)
    with connect(PROG) as client:
        flags = client.call("flags.set", speed=speed)
    if as_json:
        print_json(flags)
    return EXIT_OK


def _do_setdecay(verb: str, args: list[str], as_json: bool) -> int:
    if len(args) not in (1, 3):
        raise CliError(f"usage: {PROG} setdecay INTERVAL [SLOW FAST]  (seconds; per mille, e.g. 1 975 926)")
    changes = {"decay_interval": parse_int(args[0], "decay interval", minimum=1)}
    if len(args) == 3:
        changes["slow_decay"] = parse_int(args[1], "slow decay", minimum=0, maximum=1000)
        changes["fast_decay"] = parse_int(args[2], "fast decay", minimum=0, maximum=1000)
    with connect(PROG) as client:
        flags = client.call("flags.set", **changes)
    if as_json:
        print_json(flags)
    return EXIT_OK


def _do_getdecay(verb: str, args: list[str], as_json: bool) -> int:
    _no_args(verb, args)
    with connect(PROG) as client:
        flags = client.call("flags.get")
    decay = {k: flags.get(k) for k in ("decay_interval", "slow_decay", "fast_decay")}
    if as_json:
        print_json(decay)
    else:
        print(f"decay interval: {decay['decay_interval']} s")
        print(f"slow decay:     {decay['slow_decay']} (per mille)")
        print(f"fast decay:     {decay['fast_decay']} (per mille)")
    return EXIT_OK


def whois_lines(query: str | None, result: Any) -> list[str]:
    """Resolve like openMosix: an ID answers with its address(es), an address or name with its ID."""
    rows = result if isinstance(result, list) else [result]
    asked_id = query is not None and query.strip().lower().removeprefix("0x").isdigit()
    lines = []
    for row in rows:
        if not isinstance(row, dict):
            lines.append(str(row))
            continue
        node = row.get("id", row.get("node"))
        if query is not None and not asked_id:
            lines.append(str(node))
            continue
        address = row.get("address", "")
        extra = [a for a in row.get("addresses", row.get("aliases", [])) or [] if a != address]
        text = str(address)
        if row.get("hostname"):
            text += f" ({row['hostname']})"
        if extra:
            text += " alias " + ", ".join(map(str, extra))
        lines.append(text if query is not None else f"{node} {text}")
    return lines


def _do_whois(verb: str, args: list[str], as_json: bool) -> int:
    if len(args) > 1:
        raise CliError(f"usage: {PROG} whois [ID|IP|HOSTNAME]")
    query = args[0] if args else None
    if query is not None and query.lower().startswith("0x"):
        query = str(parse_node_id(query))  # showmap prints hex IDs; accept them back
    with connect(PROG) as client:
        result = client.call("cluster.whois", query=query if query is not None else str(client.node_id))
    if as_json:
        print_json(result)
    else:
        for line in whois_lines(query, result):
            print(line)
    return EXIT_OK


def decision_lines(result: dict[str, Any]) -> list[str]:
    """One line per balancer decision, oldest first: time, what, and why (the agent's own text)."""
    state = "on" if result.get("enabled") else "off (agent.toml balance = false)"
    lines = [f"node {result.get('node')}: automatic balancing {state}, {result.get('moves', 0)} move(s) so far"]
    for d in result.get("decisions", []):
        when = time.strftime("%H:%M:%S", time.localtime(float(d.get("time", 0))))
        what = f"{d.get('action')} ({d.get('reason')})"
        if d.get("result"):
            what += f" {d['result']}"
        repeat = f" [x{d['repeat']}]" if int(d.get("repeat", 1)) > 1 else ""
        lines.append(f"{when}  {what:<22} {d.get('text', '')}{repeat}")
        if d.get("error"):
            lines.append(f"{'':10}{'':<22} error: {d['error']}")
    if not result.get("decisions"):
        lines.append("no decision yet (the balancer looks every second once the node has been measured)")
    return lines


def _do_balancer(verb: str, args: list[str], as_json: bool) -> int:
    if len(args) > 1:
        raise CliError(f"usage: {PROG} balancer [N]  (the last N decisions, 1..100)")
    limit = parse_int(args[0], "N", minimum=1, maximum=100) if args else 10
    with connect(PROG) as client:
        result = dict(client.call("balancer.decisions", limit=limit))
    if as_json:
        print_json(result)
    else:
        for line in decision_lines(result):
            print(line)
    return EXIT_OK


def _not_applicable(verb: str) -> Callable[[str, list[str], bool], int]:
    def handler(_verb: str, _args: list[str], _as_json: bool) -> int:
        raise CliError(f"{verb}: not applicable on omview: {NOT_APPLICABLE[verb]}", EXIT_USAGE)

    return handler


HANDLERS: dict[str, Callable[[str, list[str], bool], int]] = {
    **{verb: _do_flag for verb in FLAG_VERBS},
    **{verb: _do_getter for verb in GETTERS},
    **{verb: _not_applicable(verb) for verb in NOT_APPLICABLE},
    "expel": _do_admin,
    "bring": _do_admin,
    "isup": _do_isup,
    "status": _do_status,
    "setspeed": _do_setspeed,
    "setdecay": _do_setdecay,
    "getdecay": _do_getdecay,
    "whois": _do_whois,
    "balancer": _do_balancer,
}


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="openMosix main configuration utility, for the omview agent on this node.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print data as JSON (verbs that print data)")
    parser.add_argument("verb", nargs="?", metavar="VERB", help="what to do (see the list below)")
    parser.add_argument("args", nargs="*", metavar="ARG", help="arguments of the verb")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_intermixed_args(argv)
    if ns.verb is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: a verb is required (see '{PROG} --help')", file=sys.stderr)
        return EXIT_USAGE
    handler = HANDLERS.get(ns.verb)
    if handler is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: unknown verb {ns.verb!r}; one of: {', '.join(sorted(HANDLERS))}", file=sys.stderr)
        return EXIT_USAGE
    return run(PROG, lambda: handler(ns.verb, list(ns.args), ns.json))


if __name__ == "__main__":
    sys.exit(main())
