"""L4 GUI layer: what the window programs share to reach a cluster - the connection options, the
settings and connector made from them - and starting another program of the suite.

Windows never import each other (README, Architecture): openmosixview opens the process box by
starting ``openmosixprocs`` as a process of its own with the same connection arguments
(``ProgramLauncher``), and the analyzer and history browser with the collector's history
directory (``launch``), so each program keeps its own event loop, links and SSH connections. The
installed command is preferred; from a checkout without it, the same Python runs the program's
module (``-m``), which is a process, not an import.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Sequence

from PySide6.QtCore import QProcess, QSettings

from omview.gui.connect import Connector, SshConnector, UnixConnector
from omview.gui.settings import GuiSettings
from omview.gui.settings import load as load_settings
from omview.model.channel import Channel

#: Command name -> module with its ``main`` (the pyproject entry point), for the ``-m`` fallback.
PROGRAMS = {
    "openmosixprocs": "omview.procs.app",
    "openmosixmigmon": "omview.migmon.app",
    "openmosixanalyzer": "omview.analyzer.app",
    "openmosixhistory": "omview.analyzer.history",
}

Starter = Callable[[str, list[str]], bool]


def _start_detached(program: str, args: list[str]) -> bool:
    ok, _pid = QProcess.startDetached(program, args)
    return bool(ok)


def program_argv(name: str, args: Sequence[str]) -> list[str]:
    """The argv that starts the suite's program ``name`` with ``args``."""
    found = shutil.which(name)
    if found:
        return [found, *args]
    return [sys.executable, "-m", PROGRAMS[name], *args]


def launch(name: str, args: Sequence[str], start: Starter = _start_detached) -> str:
    """Start ``name`` detached (it outlives this window); returns "" or a message saying what failed."""
    argv = program_argv(name, args)
    if not start(argv[0], argv[1:]):
        return f"could not start {name} ({' '.join(argv)})"
    return ""


def add_connection_args(p: argparse.ArgumentParser) -> None:
    """The options every window program takes to reach the cluster (openmosixview's)."""
    p.add_argument("--entry", help="node whose agent lists the cluster (default: saved setting, else localhost)")
    p.add_argument("--user", help="SSH user (default: ssh config User, else root)")
    p.add_argument("--identity", help="SSH private key file (default: ssh-agent and the usual keys)")
    p.add_argument("--known-hosts", help="known_hosts file (default: ssh config, else ~/.ssh/known_hosts)")
    p.add_argument("--ssh-config", help="OpenSSH client config to honour (default: ~/.ssh/config)")
    p.add_argument("--agent-command", help="how to run the agent on a node (default: omview-agent)")
    p.add_argument("--interval", type=float, help="seconds between refreshes (default: 1)")
    p.add_argument(
        "--local-socket",
        metavar="PATH",
        help="reach the entry node's agent through this Unix socket instead of SSH (single-host use)",
    )
    p.add_argument("--settings", metavar="FILE", help="use this settings file instead of the user's QSettings")


class EntryViaSocket:
    """The entry node through a local Unix socket; every other node over SSH."""

    def __init__(self, entry: str, socket: str, ssh: SshConnector) -> None:
        self._entry = entry
        self._local = UnixConnector({entry: socket})
        self._ssh = ssh

    def connector_for(self, address: str) -> Connector:
        """The connector that reaches ``address`` (links.py asks it for each node's endpoint)."""
        return self._local if address == self._entry else self._ssh

    def open(self, address: str) -> Channel:
        return self.connector_for(address).open(address)

    def describe(self, address: str) -> str:
        return self.connector_for(address).describe(address)


def make_settings(args: argparse.Namespace, store: QSettings) -> GuiSettings:
    """The saved settings with the command line's connection options over them."""
    base = load_settings(store)
    return base.with_overrides(
        entry=args.entry,
        user=args.user,
        identity=args.identity,
        known_hosts=args.known_hosts,
        ssh_config=args.ssh_config,
        agent_command=args.agent_command,
        poll_interval=args.interval,
        direct_poll=False if getattr(args, "no_direct", False) else None,
    )


def make_connector(settings: GuiSettings, local_socket: str | None = None) -> Connector:
    ssh = SshConnector(settings.ssh())
    if local_socket:
        return EntryViaSocket(settings.entry, local_socket, ssh)
    return ssh


def connection_argv(settings: GuiSettings, local_socket: str | None = None) -> list[str]:
    """Options that make a sibling program reach the cluster as this one does."""
    argv = ["--entry", settings.entry]
    for opt, value in (("--user", settings.user), ("--identity", settings.identity),
                       ("--known-hosts", settings.known_hosts), ("--ssh-config", settings.ssh_config),
                       ("--agent-command", settings.agent_command)):  # fmt: skip
        if value:
            argv += [opt, str(value)]
    if local_socket:
        argv += ["--local-socket", local_socket]
    return argv


class ProgramLauncher:
    """Starts a sibling window program (``openmosixprocs ...``) detached, with our connection."""

    def __init__(self, settings: GuiSettings, local_socket: str | None = None) -> None:
        self.settings = settings
        self.local_socket = local_socket

    def argv(self, name: str, extra: Sequence[str] = ()) -> list[str]:
        return program_argv(name, [*connection_argv(self.settings, self.local_socket), *extra])

    def start(self, name: str, extra: Sequence[str] = ()) -> bool:
        """Start it; False when it could not be started (the caller says so in the window)."""
        return launch(name, [*connection_argv(self.settings, self.local_socket), *extra]) == ""

    def open_procs(self, node: int | None = None) -> bool:
        """The process box of node ``node`` (None: the entry node)."""
        return self.start("openmosixprocs", [] if node is None else ["--node", str(node)])

    def open_migmon(self) -> bool:
        """The migration monitor, its main penguin the entry node."""
        return self.start("openmosixmigmon")
