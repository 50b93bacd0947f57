"""CLI layer: what every classic tool shares (exit codes, agent connection, error reporting).

Expected failures (no agent, agent faults, bad input) become one ``prog: message`` line on
stderr and a documented exit code; only real bugs may still raise a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

from omview.model.channel import PipeChannel
from omview.model.client import AgentClient
from omview.model.cluster import MAX_NODE_ID, MIN_NODE_ID, valid_node_id
from omview.model.errors import AgentFault, AgentUnavailable, ConfigError, ConnectionLost, TransportError
from omview.model.mapfile import MapEntry
from omview.model.pipes import EXIT_CLOSED_PIPE, discard_stdout, stdout_closed

#: Exit codes shared by all tools (documented in docs/cli.md).
EXIT_OK = 0
EXIT_NEGATIVE = 1  # a negative answer: node down, process not found
EXIT_USAGE = 2  # bad arguments or bad input file; also verbs that do not apply to omview
EXIT_FAULT = 3  # the agent refused or failed the request, or broke the connection
EXIT_NO_AGENT = 4  # no agent answers on this node

#: How long a CLI waits for one reply; a local agent answers in milliseconds, so 10 s means it hangs.
CALL_TIMEOUT = 10.0


class CliError(Exception):
    """An expected failure that ends the tool with ``code`` after printing ``message``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def ssh_argv(host: str) -> list[str]:
    """How a workstation reaches HOST's agent: the user's own ssh (~/.ssh/config, keys, known_hosts),
    never a password prompt; ``$OMVIEW_AGENT_COMMAND`` names the agent on the node."""
    agent = os.environ.get("OMVIEW_AGENT_COMMAND", "omview-agent")
    return ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", host, agent, "bridge"]


def connect(prog: str) -> AgentClient:
    """Open the agent: HOST's over ssh when ``$OMVIEW_HOST`` is set (a workstation), else this
    node's (socket from $OMVIEW_SOCKET or /run/omview/agent.sock)."""
    host = os.environ.get("OMVIEW_HOST", "").strip()
    if host:
        try:
            return AgentClient(PipeChannel(ssh_argv(host)), client_name=prog, timeout=CALL_TIMEOUT)
        except FileNotFoundError:
            raise AgentUnavailable("OMVIEW_HOST needs the ssh client (openssh-client)") from None
        except ConnectionLost as exc:  # ssh could not log in, or no agent answers there
            raise AgentUnavailable(f"no omview agent reached on {host} over ssh: {exc}") from None
    return AgentClient.local(client_name=prog, timeout=CALL_TIMEOUT)


def run(prog: str, body: Callable[[], int]) -> int:
    """Run a tool's body and turn every expected error into a message and an exit code."""
    try:
        code = body()
        sys.stdout.flush()  # here, not at interpreter exit, so a closed pipe is handled below
        return code
    except CliError as exc:
        _say(prog, str(exc))
        return exc.code
    except AgentUnavailable as exc:
        _say(prog, str(exc))
        return EXIT_NO_AGENT
    except AgentFault as exc:
        # str(AgentFault) is "<message> [FAULT_NAME]": the name lets scripts and humans grep for it
        _say(prog, str(exc))
        return EXIT_FAULT
    except ConfigError as exc:
        _say(prog, str(exc))
        return EXIT_USAGE
    except TimeoutError:
        _say(
            prog,
            f"the omview agent did not answer within {CALL_TIMEOUT:g} s; check it with 'omview-agent check-config' and its log",
        )
        return EXIT_FAULT
    except TransportError as exc:
        _say(prog, str(exc))
        return EXIT_FAULT
    except BrokenPipeError as exc:
        if not stdout_closed():
            _say(prog, f"lost the connection to the agent: {exc.strerror}")
            return EXIT_FAULT
        # output piped into e.g. `head` that exited early: not an error worth a message;
        # 141 like a C tool killed by SIGPIPE, never 1, which means "a negative answer"
        discard_stdout()
        return EXIT_CLOSED_PIPE
    except KeyboardInterrupt:
        return 130


def _say(prog: str, message: str) -> None:
    print(f"{prog}: {message}", file=sys.stderr)


def print_json(obj: Any) -> None:
    """Machine-readable output: stable key order, one document per call."""
    print(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False))


def parse_node_id(text: str, what: str = "node ID") -> int:
    """A node ID argument (decimal, or 0x.. hex as showmap prints them); CliError when invalid."""
    try:
        value = int(text, 0)
    except ValueError:
        raise CliError(f"{what} {text!r} is not a number (use e.g. 3 or 0x640b)") from None
    if not valid_node_id(value):
        raise CliError(f"{what} {value} is outside {MIN_NODE_ID}..{MAX_NODE_ID}")
    return value


def parse_int(text: str, what: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer argument with optional bounds; CliError saying what was wrong."""
    try:
        value = int(text)
    except ValueError:
        raise CliError(f"{what} must be an integer, not {text!r}") from None
    if minimum is not None and value < minimum:
        raise CliError(f"{what} must be at least {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise CliError(f"{what} must be at most {maximum}, not {value}")
    return value


class _Writable(Protocol):
    """What argparse prints help to (typeshed's SupportsWrite[str], without importing _typeshed)."""

    def write(self, s: str, /) -> object: ...


class Parser(argparse.ArgumentParser):
    """argparse that exits with EXIT_USAGE and a hint to --help on bad arguments."""

    def print_help(self, file: _Writable | None = None) -> None:
        # `tool --help | head`: argparse would end in a BrokenPipeError traceback
        try:
            super().print_help(file)
            flush = getattr(file or sys.stdout, "flush", None)
            if flush is not None:
                flush()
        except BrokenPipeError:
            if not stdout_closed():
                raise
            discard_stdout()
            self.exit(EXIT_CLOSED_PIPE)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def human_bytes(n: int) -> str:
    """Bytes as a short human number (KiB/MiB/GiB), for status screens."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # not reached; keeps type checkers happy


def fetch_map(client: AgentClient) -> tuple[int, list[MapEntry], dict[str, Any]]:
    """cluster.map as (this node's ID, entries, the whole reply for --json).

    The reply is an object with ``entries`` (and ``node``, ``source``, ``discovery`` when the
    agent reports them); a bare list of entries is accepted too.
    """
    reply = client.call("cluster.map")
    if isinstance(reply, list):
        reply = {"entries": reply}
    if not isinstance(reply, dict):
        raise CliError(f"the agent sent a map this tool does not understand: {reply!r}", EXIT_FAULT)
    entries = [MapEntry.from_dict(e) for e in reply.get("entries") or []]
    my_id = reply.get("node")
    if not isinstance(my_id, int) or isinstance(my_id, bool):
        my_id = client.node_id
    return my_id, entries, {**reply, "node": my_id}
