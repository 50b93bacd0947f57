"""L0 model: the agent wire protocol (stdlib only).

Newline-delimited JSON over a stream (the agent's Unix socket, or an SSH channel running
``omview-agent bridge``). Every line is one JSON object:

    request   {"id": 7, "op": "flags.set", "args": {"block": true}}
    success   {"id": 7, "result": {...}}
    failure   {"id": 7, "error": {"code": 3, "name": "BAD_ARGUMENT", "message": "..."}}
    event     {"event": "node.up", "data": {...}}          (only after events.subscribe)

The first request on a connection must be ``hello`` carrying PROTOCOL_VERSION; anything else
first is answered with HANDSHAKE_REQUIRED. Fault codes are stable numbers: never renumber,
only append.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

PROTOCOL_VERSION = 1
#: what ``hello`` lists in ``features`` (additions within a protocol version that clients may use)
FEATURE_PROCS_TABLE = "procs.table"  # procs.list takes table: true (model/cluster.py proc_table)
FEATURES = (FEATURE_PROCS_TABLE,)
#: Longest request line the agent accepts (bytes, newline excluded).
MAX_LINE = 1 << 20
#: Integers in requests (ids and arguments) are 64-bit signed: what every consumer (kernel
#: interfaces, file offsets, other languages' JSON) can hold; beyond that is BAD_ARGUMENT, not a crash.
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
#: a \uD800-\uDFFF escape: the only way a JSON line can smuggle in a lone surrogate
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class FaultCode(IntEnum):
    """Stable error codes that cross the agent protocol."""

    MALFORMED = 1  # not JSON, not an object, missing/ill-typed id or op
    UNKNOWN_OP = 2
    BAD_ARGUMENT = 3
    NO_SUCH_PROCESS = 4
    PERMISSION_DENIED = 5
    NODE_DOWN = 6
    BUSY = 7
    NO_SUCH_NODE = 8
    VERSION_MISMATCH = 9
    NOT_APPLICABLE = 10  # kernel-only openMosix features (mfs, yardstick, ...)
    HANDSHAKE_REQUIRED = 11
    TIMEOUT = 12
    TOO_LARGE = 13
    CANT_MOVE = 14  # process locked or otherwise not migratable; message says why
    BLOCKED = 15  # target node refuses arrivals
    MIGRATION_FAILED = 16  # migration aborted; the process kept running where it was
    NO_CRIU = 17
    INTERNAL = 18  # a bug in the agent; the message names the log to read


def fault_name(code: int) -> str:
    """Symbolic name of a fault code, tolerant of codes from newer agents."""
    try:
        return FaultCode(code).name
    except ValueError:
        return f"FAULT_{code}"


@dataclass(frozen=True)
class Arg:
    """One argument of an operation: its JSON type(s) and whether it must be present."""

    types: tuple[type, ...]
    required: bool = False


@dataclass(frozen=True)
class OpSpec:
    """What an operation takes, and whether a non-root caller may use it at all."""

    args: dict[str, Arg] = field(default_factory=dict)
    #: "read": anyone; "own": non-root only on their own processes; "root": root only.
    access: str = "read"


_INT = (int,)
_BOOL = (bool,)
_STR = (str,)
_NUM = (int, float)

#: Every operation the agent serves. Unknown ops -> UNKNOWN_OP, unknown args -> BAD_ARGUMENT.
OPS: dict[str, OpSpec] = {
    "hello": OpSpec({"protocol": Arg(_INT, True), "client": Arg(_STR)}),
    "ping": OpSpec(),
    "node.info": OpSpec(),
    "node.stats": OpSpec(),
    "cluster.nodes": OpSpec(),
    "cluster.map": OpSpec(),
    "cluster.whois": OpSpec({"query": Arg(_STR, True)}),
    "map.set": OpSpec({"entries": Arg((list,), True), "source": Arg(_STR)}, access="root"),
    "map.off": OpSpec(access="root"),
    "flags.get": OpSpec(),
    "flags.set": OpSpec(
        {
            "stay": Arg(_BOOL),
            "lstay": Arg(_BOOL),
            "block": Arg(_BOOL),
            "quiet": Arg(_BOOL),
            "speed": Arg(_INT),
            "decay_interval": Arg(_INT),
            "slow_decay": Arg(_INT),
            "fast_decay": Arg(_INT),
        },
        access="root",
    ),
    "admin.expel": OpSpec(access="root"),
    "admin.bring": OpSpec(access="root"),
    "procs.list": OpSpec({"pid": Arg(_INT), "helpers": Arg(_BOOL), "table": Arg(_BOOL)}),
    "proc.lock": OpSpec({"pid": Arg(_INT, True), "lock": Arg(_BOOL, True)}, access="own"),
    "proc.signal": OpSpec({"pid": Arg(_INT), "job": Arg(_STR), "signal": Arg(_INT, True)}, access="own"),
    "proc.renice": OpSpec({"pid": Arg(_INT), "job": Arg(_STR), "nice": Arg(_INT, True)}, access="own"),
    "proc.status": OpSpec({"pid": Arg(_INT), "job": Arg(_STR)}, access="own"),
    "events.subscribe": OpSpec({"topics": Arg((list,))}),
    "events.unsubscribe": OpSpec(),
    # mosrun jobs and migration (docs/migration.md)
    "job.start": OpSpec(
        {
            "argv": Arg((list,), True),
            "cwd": Arg(_STR),
            "env": Arg((dict,)),
            "lock": Arg(_BOOL),
            "hints": Arg((list,)),
            "node": Arg(_STR),
            "nodes": Arg((list,)),
        },
        access="own",
    ),
    "job.list": OpSpec(),
    "job.status": OpSpec({"job": Arg(_STR, True)}),
    "job.signal": OpSpec({"job": Arg(_STR, True), "signal": Arg(_INT, True)}, access="own"),
    "job.output": OpSpec(
        {"job": Arg(_STR, True), "stream": Arg(_STR, True), "offset": Arg(_INT, True), "max": Arg(_INT)}
    ),
    "proc.migrate": OpSpec({"pid": Arg(_INT), "job": Arg(_STR), "target": Arg(_STR, True)}, access="own"),
    "migration.history": OpSpec({"limit": Arg(_INT)}),
    "balancer.decisions": OpSpec({"limit": Arg(_INT)}),
    # agent-to-agent requests over the SSH bridge (root only)
    "peer.job.launch": OpSpec({"job": Arg((dict,), True), "env": Arg((dict,))}, access="root"),
    "peer.job.update": OpSpec(
        {"job": Arg(_STR, True), "kind": Arg(_STR, True), "data": Arg((dict,), True)}, access="root"
    ),
    "peer.job.signal": OpSpec(
        {"job": Arg(_STR, True), "signal": Arg(_INT, True), "hops": Arg(_INT)}, access="root"
    ),
    "peer.job.output": OpSpec(
        {"job": Arg(_STR, True), "stream": Arg(_STR, True), "offset": Arg(_INT, True), "max": Arg(_INT),
         "hops": Arg(_INT)},
        access="root",
    ),  # fmt: skip
    "peer.job.migrate": OpSpec({"job": Arg(_STR, True), "target": Arg(_STR, True)}, access="root"),
    "peer.mig.prepare": OpSpec({"mig": Arg((dict,), True)}, access="root"),
    "peer.mig.restore": OpSpec({"mig": Arg((dict,), True)}, access="root"),
    "peer.mig.abort": OpSpec({"mig": Arg(_STR, True)}, access="root"),
    # target pre-flight for a process not started with mosrun: are these PIDs free, these files here?
    "peer.proc.check": OpSpec(
        {"pids": Arg((list,), True), "files": Arg((list,), True), "source": Arg(_INT)}, access="root"
    ),
}


class ProtocolError(ValueError):
    """A line that is not a valid message; ``code`` is the fault to answer with."""

    def __init__(self, code: FaultCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def encode(obj: dict[str, Any]) -> bytes:
    """One message as a JSON line (compact, UTF-8, newline-terminated).

    A lone surrogate (a file name from /proc decoded with surrogateescape, say) cannot be UTF-8:
    backslashreplace writes it as its JSON escape \\udcXX inside the string, so a reply never fails."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace") + b"\n"


def request(req_id: int | str, op: str, args: dict[str, Any] | None = None) -> bytes:
    """Encode a request line."""
    msg: dict[str, Any] = {"id": req_id, "op": op}
    if args:
        msg["args"] = args
    return encode(msg)


def ok(req_id: int | str | None, result: Any) -> bytes:
    """Encode a success reply."""
    return encode({"id": req_id, "result": result})


def fault(req_id: int | str | None, code: FaultCode, message: str) -> bytes:
    """Encode a failure reply."""
    return encode({"id": req_id, "error": {"code": int(code), "name": code.name, "message": message}})


def event(name: str, data: Any) -> bytes:
    """Encode an unsolicited event line."""
    return encode({"event": name, "data": data})


@dataclass(frozen=True)
class Request:
    """A parsed, validated request."""

    id: int | str
    op: str
    args: dict[str, Any]


def _id_of(msg: Any) -> int | str | None:
    if isinstance(msg, dict):
        rid = msg.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool) and INT_MIN <= rid <= INT_MAX:
            return rid
        if isinstance(rid, str):
            return rid
    return None


def _has_lone_surrogate(msg: Any) -> bool:
    try:
        json.dumps(msg, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_request(line: bytes) -> Request:
    """Parse and validate one request line against OPS.

    Raises ProtocolError with the fault code to answer; its ``req_id`` attribute holds the
    request id when one could be read, so the reply can still be matched.
    """
    req_id: int | str | None = None
    try:
        if len(line) > MAX_LINE:
            raise ProtocolError(FaultCode.TOO_LARGE, f"request of {len(line)} bytes exceeds {MAX_LINE}")
        try:
            msg = json.loads(line)
            # strings must be text that can go anywhere (logs, file names, replies): no lone surrogates
            if _SURROGATE_ESCAPE.search(line) and _has_lone_surrogate(msg):
                raise ProtocolError(
                    FaultCode.MALFORMED, "request contains a lone UTF-16 surrogate (\\ud800-\\udfff)"
                )
        except RecursionError:
            raise ProtocolError(FaultCode.TOO_LARGE, "request is nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, bad UTF-8, an integer of more than 4300 digits
            if isinstance(exc, ProtocolError):
                raise
            raise ProtocolError(FaultCode.MALFORMED, f"request is not valid JSON: {exc}") from None
        req_id = _id_of(msg)
        if not isinstance(msg, dict):
            raise ProtocolError(FaultCode.MALFORMED, "request must be a JSON object")
        if req_id is None:
            raise ProtocolError(
                FaultCode.MALFORMED, "request needs an 'id' (a 64-bit signed integer or a string)"
            )
        op = msg.get("op")
        if not isinstance(op, str):
            raise ProtocolError(FaultCode.MALFORMED, "request needs an 'op' string")
        spec = OPS.get(op)
        if spec is None:
            raise ProtocolError(FaultCode.UNKNOWN_OP, f"unknown operation {op!r}; see the README for the list")
        args = msg.get("args", {})
        if not isinstance(args, dict):
            raise ProtocolError(FaultCode.BAD_ARGUMENT, "'args' must be a JSON object")
        for name, value in args.items():
            arg = spec.args.get(name)
            if arg is None:
                allowed = ", ".join(sorted(spec.args)) or "none"
                raise ProtocolError(
                    FaultCode.BAD_ARGUMENT, f"{op}: unknown argument {name!r} (takes: {allowed})"
                )
            # bool is an int subclass in Python; never let true pass as a number or vice versa
            if isinstance(value, bool) != (bool in arg.types) or not isinstance(value, arg.types):
                want = "/".join(t.__name__ for t in arg.types)
                raise ProtocolError(FaultCode.BAD_ARGUMENT, f"{op}: argument {name!r} must be {want}")
            if isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
                raise ProtocolError(
                    FaultCode.BAD_ARGUMENT, f"{op}: argument {name!r} is out of range (64-bit signed integer)"
                )
        for name, arg in spec.args.items():
            if arg.required and name not in args:
                raise ProtocolError(FaultCode.BAD_ARGUMENT, f"{op}: missing argument {name!r}")
        return Request(req_id, op, args)
    except ProtocolError as exc:
        exc.req_id = req_id  # type: ignore[attr-defined]
        raise


def parse_reply(line: bytes) -> dict[str, Any]:
    """Decode a reply or event line (client side); raises ValueError on garbage."""
    msg = json.loads(line)
    if not isinstance(msg, dict) or not ("id" in msg or "event" in msg):
        raise ValueError(f"not a protocol message: {line[:200]!r}")
    return msg
