"""CLI layer: ``mosrun`` and its run-mode scripts (nomig, runhome, runon, cpujob, iojob, nodecay,
slowdecay, fastdecay). The process stays on the home node as the job's deputy: it prints the job's
output wherever the job runs, forwards signals to it and exits with its status.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

from omview.cli._common import CliError, Parser, connect, parse_node_id, run
from omview.model.client import AgentClient
from omview.model.errors import AgentFault, AgentUnavailable, TransportError

PROG = "mosrun"
USAGE = """\
mosrun [-h | -l | NODE | -j NODE,NODE...] [--nomig | --runhome | --runon NODE | --cpujob |
              --iojob | --nodecay | --slowdecay | --fastdecay] COMMAND [ARGS...]"""
DESCRIPTION = """\
Run COMMAND as a cluster job: the omview agent starts it detached in its own PID namespace (on
this node, on NODE, or on the best of the -j nodes), this process stays here as its deputy, prints
its output, passes on signals (Ctrl-C, kill) and exits with its exit status."""
EPILOG = """\
Options are read up to COMMAND; everything from COMMAND on is passed to it untouched ("--" ends
the options early). A first word that is a node number (3, 0x640b) and has more words after it
is NODE, as in openMosix.

exit codes: the job's exit status (128+N when it died of signal N; 137 also when it was lost
            with the node that ran it, which the deputy says); 2 usage error,
            3 the agent refused to start it, 4 no agent on this node"""
#: signals the deputy passes on to the job wherever it runs
FORWARD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
           signal.SIGWINCH, signal.SIGCONT)  # fmt: skip
RECONNECT_FOR = 120.0  # seconds the deputy keeps trying when its agent restarts
#: job.host: the node running the job went down or came back (agent/jobs/hostwatch.py)
TOPICS = ["job.output", "job.exit", "job.host"]
HINTS = ("cpujob", "iojob", "nodecay", "slowdecay", "fastdecay")


def say(message: str) -> None:
    """A word from the deputy itself (not the job's output) on stderr."""
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


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


class _HelpAction(argparse.Action):
    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, opt: str | None = None
    ) -> None:
        raise _Help(parser.format_help())


class _NodesAction(argparse.Action):
    """-j 2,3 (or -j2,3): the nodes the job may start on."""

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, opt: str | None = None
    ) -> None:
        nodes = [parse_node_id(x) for x in str(values).split(",") if x]
        if not nodes:
            raise CliError("-j needs at least one node")
        ns.nodes = nodes


class _RunonAction(argparse.Action):
    """--runon NODE: start there and stay (locked)."""

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, opt: str | None = None
    ) -> None:
        ns.node = str(parse_node_id(str(values)))
        ns.lock = True


class _MosrunParser(Parser):
    """Parse errors are mosrun's usual one-line CliError (exit 2), not argparse's usage dump."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument -j"):
            raise CliError("-j needs a list of nodes, e.g. -j 2,3")
        if message.startswith("argument --runon"):
            raise CliError("--runon needs a node")
        raise CliError(f"{message} (see 'mosrun --help')")


def build_parser() -> Parser:
    """mosrun's options; -h is run-home as in openMosix, so help is --help only."""
    p = _MosrunParser(prog=PROG, usage=USAGE, description=DESCRIPTION, epilog=EPILOG, add_help=False,
                      allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.set_defaults(node="", nodes=[], lock=False, hints=[])
    p.add_argument("-h", "--runhome", dest="lock", action="store_const", const=True,
                   help="run locked to this (home) node (script: runhome)")  # fmt: skip
    p.add_argument("-l", dest="lock", action="store_const", const=False, help="allow migration (the default)")
    p.add_argument("-j", metavar="NODE,NODE...", action=_NodesAction, help="start on the best of these nodes")
    p.add_argument("--nomig", dest="lock", action="store_const", const=True,
                   help="never migrate it (script: nomig)")  # fmt: skip
    p.add_argument("--runon", metavar="NODE", action=_RunonAction,
                   help="start on NODE and keep it there (script: runon NODE COMMAND...)")  # fmt: skip
    for hint, text in zip(HINTS, ("tell the balancer it is CPU-bound", "tell the balancer it is I/O-bound",
                                  "load-decay hint: none", "load-decay hint: slow", "load-decay hint: fast"),
                          strict=True):  # fmt: skip
        p.add_argument(f"--{hint}", dest="hints", action="append_const", const=hint,
                       help=f"{text}, recorded with the job (script: {hint})")  # fmt: skip
    p.add_argument("--help", action=_HelpAction, nargs=0, help="show this help and exit")
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="[NODE] COMMAND [ARGS...]",
                   help="the node to start on (a number, when more words follow), the command and its arguments")  # fmt: skip
    return p


def _is_node_word(word: str) -> bool:
    return word.isdigit() or word.lower().startswith("0x")


def parse(argv: list[str]) -> Request:
    """mosrun's options up to the command; everything from COMMAND on is passed untouched.

    argparse reads the options and stops at the first other word (REMAINDER); a NODE word there
    is taken and the rest parsed again, since options may follow NODE (``mosrun 3 --cpujob cmd``).
    """
    parser = build_parser()
    ns = argparse.Namespace()
    words = list(argv)
    while True:
        ns, extra = parser.parse_known_args(words, ns)
        if extra:
            raise CliError(f"unknown option {extra[0]!r} (see 'mosrun --help')")
        words = list(ns.words)
        if words[:1] == ["--"]:
            words = words[1:]
            break
        if words and words[0].startswith("-"):
            # argparse takes "-" and negative numbers for words; mosrun never did
            raise CliError(f"unknown option {words[0]!r} (see 'mosrun --help')")
        if len(words) > 1 and _is_node_word(words[0]) and not ns.node:
            ns.node = str(parse_node_id(words[0]))
            words = words[1:]
            continue
        break
    if not words:
        raise CliError("no command given (see 'mosrun --help')")
    return Request(argv=words, node=ns.node, nodes=list(ns.nodes), lock=bool(ns.lock), hints=list(ns.hints))


def build_script_parser(script: str) -> Parser:
    """The parser of a mode command (nomig, runon, ...): documents it and prints its --help."""
    opts, takes_node = SCRIPTS[script]
    words = f"{'NODE ' if takes_node else ''}COMMAND [ARGS...]"
    p = Parser(
        prog=script,
        usage=f"{script} [--help] {words}",
        add_help=False,
        description=f"Run COMMAND as a cluster job, as 'mosrun {' '.join(opts)} {words}' does: the deputy stays"
        " here, prints the job's output and exits with its status; see mosrun(1).",
    )
    p.add_argument(
        "--help", action=_HelpAction, nargs=0, help="show this help and exit (only as the first word)"
    )
    if takes_node:
        p.add_argument("node", metavar="NODE", help="the node to start on and keep the job on")
    p.add_argument(
        "words", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS...]", help="the command and its arguments"
    )
    return p


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
                self.client.call("events.subscribe", topics=TOPICS)
                return
            except (AgentUnavailable, TransportError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def run(self, req: Request) -> int:
        for sig in FORWARD:
            signal.signal(sig, self._on_signal)
        self.client.call("events.subscribe", topics=TOPICS)
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
                    pending = self.pending.pop(0)
                    try:
                        self.client.call("job.signal", job=self.job, signal=int(pending))
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
                elif name == "job.host" and data.get("job") == self.job:
                    say(data.get("message", ""))  # the node running the job went down, or is back
                elif time.monotonic() - last_check > 2.0:
                    # a missed exit (agent restarted meanwhile) shows in the record
                    last_check = time.monotonic()
                    rec = self.client.call("job.status", job=self.job)
                    if rec["state"] != "running":
                        self.status = {"status": rec["status"], "exit_code": rec["exit_code"],
                                       "lost": rec.get("lost") or None}  # fmt: skip
            except (TransportError, AgentUnavailable):
                self.reconnect()
        if self.status.get("lost"):
            # its node died with it: what it wrote there and had not relayed is gone too
            say(str(self.status["lost"]))
            code = self.status.get("exit_code")
            return int(code) if isinstance(code, int) else 137
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
                # only a first --help: everything else is the command's, even options
                raise _Help(build_script_parser(script).format_help())
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
