"""CLI layer: ``mosrun`` and its run-mode scripts (nomig, runhome, runon, cpujob, iojob, nodecay,
slowdecay, fastdecay). The process stays on the home node as the job's deputy: it prints the job's
output wherever the job runs, forwards signals to it and exits with its status.
"""

from __future__ import annotations

import base64
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from omview.cli._common import CliError, connect, parse_node_id, run
from omview.model.client import AgentClient
from omview.model.errors import AgentFault, AgentUnavailable, TransportError

PROG = "mosrun"
USAGE = """\
usage: mosrun [-h | -l | NODE | -j NODE,NODE...] [--nomig | --runhome | --runon NODE | --cpujob |
              --iojob | --nodecay | --slowdecay | --fastdecay] COMMAND [ARGS...]

Run COMMAND as a cluster job: the omview agent starts it detached in its own PID namespace (on
this node, on NODE, or on the best of the -j nodes), this process stays here as its deputy, prints
its output, passes on signals (Ctrl-C, kill) and exits with its exit status.

  -h             run locked to this (home) node            (script: runhome)
  -l             allow migration (the default)
  NODE           start on node NODE                        (-j: the best of these nodes)
  --nomig        never migrate it                          (script: nomig)
  --runon NODE   start on NODE and keep it there           (script: runon NODE COMMAND...)
  --cpujob/--iojob            tell the balancer it is CPU- or I/O-bound
  --nodecay/--slowdecay/--fastdecay   load-decay hint, recorded with the job
  --help         this text

exit codes: the job's exit status (128+N when it died of signal N); 2 usage error,
            3 the agent refused to start it, 4 no agent on this node
"""
#: signals the deputy passes on to the job wherever it runs
FORWARD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
           signal.SIGWINCH, signal.SIGCONT)  # fmt: skip
RECONNECT_FOR = 120.0  # seconds the deputy keeps trying when its agent restarts


class _Help(Exception):
    """--help was asked for: print the text on stdout and exit 0."""


@dataclass
class Request:
    argv: list[str]
    node: str = ""
    nodes: list[int] = field(default_factory=list)
    lock: bool = False
    hints: list[str] = field(default_factory=list)


SCRIPTS = {
    "nomig": (["--nomig"], False),
    "runhome": (["-h"], False),
    "runon": (["--runon"], True),
    "cpujob": (["--cpujob"], False),
    "iojob": (["--iojob"], False),
    "nodecay": (["--nodecay"], False),
    "slowdecay": (["--slowdecay"], False),
    "fastdecay": (["--fastdecay"], False),
}


def parse(argv: list[str]) -> Request:
    """mosrun's options up to the command; everything from COMMAND on is passed untouched."""
    req = Request(argv=[])
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a == "--help":
            raise _Help(USAGE)
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


class Deputy:
    """Stays on the home node for the job's whole life."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self.job = ""
        self.pos = {"out": 0, "err": 0}
        self.pending: list[int] = []
        self.status: dict[str, Any] | None = None

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.pending.append(signum)  # sent from the main loop: never call the agent inside a handler

    def write(self, stream: str, offset: int, data: bytes) -> None:
        pos = self.pos[stream]
        if offset > pos:
            self.fetch(stream, offset)  # a gap (events dropped): read it from the job's file
            pos = self.pos[stream]
        if offset + len(data) <= pos:
            return  # already printed
        chunk = data[pos - offset :]
        out = sys.stdout.buffer if stream == "out" else sys.stderr.buffer
        out.write(chunk)
        out.flush()
        self.pos[stream] = pos + len(chunk)

    def fetch(self, stream: str, upto: int) -> None:
        """Read the job's output file from where we are up to UPTO (wherever the job is)."""
        for _ in range(100000):
            if self.pos[stream] >= upto:
                return
            r = self.client.call(
                "job.output", job=self.job, stream=stream, offset=self.pos[stream], timeout=30
            )
            data = base64.b64decode(r["data"])
            if not data:
                return
            self.write(stream, self.pos[stream], data)

    def reconnect(self) -> None:
        deadline = time.monotonic() + RECONNECT_FOR
        while True:
            try:
                self.client.close()
            except OSError:
                pass
            try:
                self.client = connect(PROG)
                self.client.call("events.subscribe", topics=["job.output", "job.exit"])
                return
            except (AgentUnavailable, TransportError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def run(self, req: Request) -> int:
        for sig in FORWARD:
            signal.signal(sig, self._on_signal)
        self.client.call("events.subscribe", topics=["job.output", "job.exit"])
        args: dict[str, Any] = {"argv": req.argv, "cwd": os.getcwd(), "env": dict(os.environ), "lock": req.lock,
                                "hints": req.hints}  # fmt: skip
        if req.node:
            args["node"] = req.node
        if req.nodes:
            args["nodes"] = req.nodes
        job = self.client.call("job.start", timeout=60, **args)
        self.job = job["id"]
        last_check = time.monotonic()
        while self.status is None:
            try:
                while self.pending:
                    sig = self.pending.pop(0)
                    try:
                        self.client.call("job.signal", job=self.job, signal=int(sig))
                    except AgentFault:
                        pass  # it ended meanwhile; the exit event follows
                try:
                    name, data = self.client.next_event(0.5)
                except TimeoutError:
                    name, data = "", None
                if name == "job.output" and data.get("job") == self.job:
                    self.write(data["stream"], int(data["offset"]), base64.b64decode(data["data"]))
                elif name == "job.exit" and data.get("job") == self.job:
                    self.status = data
                elif time.monotonic() - last_check > 2.0:
                    # a missed exit (agent restarted meanwhile) shows in the record
                    last_check = time.monotonic()
                    rec = self.client.call("job.status", job=self.job)
                    if rec["state"] != "running":
                        self.status = {"status": rec["status"], "exit_code": rec["exit_code"]}
            except (TransportError, AgentUnavailable):
                self.reconnect()
        # all output the job wrote, even what the events did not carry
        for stream in ("out", "err"):
            size = self.status.get(f"{stream}_size")
            self.fetch(stream, int(size) if size is not None else 1 << 62)
        code = self.status.get("exit_code")
        return int(code) if isinstance(code, int) else 255


def main(argv: list[str] | None = None, *, script: str | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    prog = script or PROG

    def body() -> int:
        if script is not None:
            opts, takes_node = SCRIPTS[script]
            if args and args[0] == "--help":
                raise _Help(
                    f"usage: {script} {'NODE ' if takes_node else ''}COMMAND [ARGS...]  (= mosrun {' '.join(opts)})\n"
                )
            if takes_node:
                if not args:
                    raise CliError(f"usage: {script} NODE COMMAND [ARGS...]")
                req = parse([*opts, args[0], "--", *args[1:]])
            else:
                req = parse([*opts, "--", *args])
        else:
            req = parse(args)
        client = connect(prog)
        deputy = Deputy(client)
        try:
            return deputy.run(req)
        finally:
            deputy.client.close()

    def guarded() -> int:
        try:
            return body()
        except _Help as h:
            sys.stdout.write(str(h))
            return 0

    return run(prog, guarded)


def _script(name: str) -> int:
    return main(script=name)


def nomig() -> int:
    return _script("nomig")


def runhome() -> int:
    return _script("runhome")


def runon() -> int:
    return _script("runon")


def cpujob() -> int:
    return _script("cpujob")


def iojob() -> int:
    return _script("iojob")


def nodecay() -> int:
    return _script("nodecay")


def slowdecay() -> int:
    return _script("slowdecay")


def fastdecay() -> int:
    return _script("fastdecay")


if __name__ == "__main__":
    sys.exit(main())
