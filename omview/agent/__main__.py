"""L2 agent entry point: ``omview-agent run|start|stop|status|bridge|genkey|calibrate|check-config``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from omview import __version__
from omview.model import paths
from omview.model.errors import AgentUnavailable, ConfigError
from omview.model.pidfile import PidFileError
from omview.model.pipes import quiet_pipe

if TYPE_CHECKING:
    from omview.agent import daemon

log = logging.getLogger("omview.agent")


def _out(text: object) -> None:
    sys.stdout.write(f"{text}\n")


def _err(text: str) -> None:
    sys.stderr.write(f"{text}\n")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s omview-agent[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _parser() -> argparse.ArgumentParser:
    from omview.agent import daemon

    p = argparse.ArgumentParser(prog="omview-agent", description="omview node agent")
    p.add_argument("--version", action="version", version=f"omview-agent {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the agent in the foreground (logs to stderr)")
    run.add_argument(
        "--config", help="config file (default: $OMVIEW_CONFIG_DIR/agent.toml or /etc/omview/agent.toml)"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    st = sub.add_parser(
        "start",
        help="start the agent in the background (systemctl when systemd manages it) and wait until it answers",
    )
    st.add_argument("--config", help="config file (given: never systemd, which uses /etc/omview/agent.toml)")
    st.add_argument("--log", help="log file of a self-started agent (default: STATE_DIR/agent.log)")
    st.add_argument(
        "--timeout", type=float, default=daemon.START_TIMEOUT, help="seconds to wait for the socket"
    )
    st.add_argument(
        "--socket", help="fail unless the config's socket is this one (the GUI passes the socket it uses)"
    )
    st.add_argument("--no-systemd", action="store_true", help="daemonize even when systemd manages the agent")
    sp = sub.add_parser("stop", help="stop the running agent (it sends its guest jobs home first) and wait")
    sp.add_argument("--config")
    sp.add_argument("--socket", help="the agent socket (default: the config's)")
    sp.add_argument(
        "--timeout", type=float, default=daemon.STOP_TIMEOUT, help="seconds to wait for the agent to exit"
    )
    sp.add_argument("--no-systemd", action="store_true", help="signal the agent even when systemd runs it")
    ss = sub.add_parser("status", help="say whether an agent runs and answers, with its PID")
    ss.add_argument("--config")
    ss.add_argument("--socket", help="the agent socket (default: the config's)")
    ss.add_argument("--json", action="store_true", help="print one JSON object (docs/agent.md)")
    # listed for --help; main() parses `bridge` itself (_bridge_parser)
    _bridge_args(sub.add_parser("bridge", help="join stdin/stdout to the agent socket (for ssh)"))
    gk = sub.add_parser("genkey", help="create a new cluster key file (mode 0600)")
    gk.add_argument("path")
    sub.add_parser("calibrate", help="measure and print this node's speed")
    cc = sub.add_parser(
        "check-config", help="validate the config, map and key, then print what the agent would use"
    )
    cc.add_argument("--config")
    ab = sub.add_parser(
        "mig-abort", help="fence an arriving migration without the agent (used by the source over ssh)"
    )
    ab.add_argument("--config")
    ab.add_argument("mig")
    return p


def _run(config_path: str | None, verbose: bool) -> int:
    _setup_logging(verbose)
    import asyncio

    from omview.agent import config, daemon
    from omview.agent.core import Agent

    pidfile: daemon.PidFile | None = None
    try:
        cfg = config.load(config_path)
        agent = Agent(cfg)
        # every agent keeps a PID file, however it was started: `omview-agent stop|status` find it
        pidfile = daemon.PidFile(daemon.pid_file_for(cfg.socket), cfg.socket)
        pidfile.acquire()
        if pidfile.replaced:
            log.warning("replaced the stale PID file %s (%s)", pidfile.path, pidfile.replaced)
        asyncio.run(agent.run())
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    finally:
        if pidfile is not None:
            pidfile.release()
    return 0


def _socket_of(config_path: str | None, socket: str | None) -> str:
    """The socket start/stop/status mean: --socket, else the config's (raises ConfigError)."""
    if socket:
        return os.path.abspath(socket)
    from omview.agent import config

    return config.load(config_path).socket


def _control(args: argparse.Namespace) -> int:
    """start / stop / status; exit codes in omview.agent.daemon (0 done, 1 failed, 3 nothing to do)."""
    from omview.agent import config, daemon

    try:
        if args.cmd == "start":
            cfg = config.load(args.config)
            if args.socket and os.path.abspath(args.socket) != os.path.abspath(cfg.socket):
                _err(f"omview-agent start: {cfg.path} makes the agent serve {cfg.socket}, not {args.socket}; "
                     "name the config of that agent with --config")  # fmt: skip
                return daemon.EXIT_FAILED
            return daemon.start(cfg, args.config, log_path=args.log, timeout=args.timeout,
                                no_systemd=args.no_systemd, out=_flush_out, err=_err)  # fmt: skip
        sock = _socket_of(args.config, args.socket)
        if args.cmd == "stop":
            return daemon.stop(sock, timeout=args.timeout, no_systemd=args.no_systemd, config_path=args.config,
                               out=_flush_out, err=_err)  # fmt: skip
        return daemon.status(sock, _out, as_json=args.json)
    except (ConfigError, PidFileError) as exc:  # a PID file that cannot be used is never overwritten
        _err(f"omview-agent {args.cmd}: {exc}")
        return daemon.EXIT_FAILED


def _flush_out(text: str) -> None:
    """Progress lines must reach an ssh channel (or the GUI) as they happen, not at exit."""
    _out(text)
    sys.stdout.flush()


def _check_config(config_path: str | None) -> int:
    from omview.agent import config
    from omview.agent.core import initial_membership
    from omview.agent.node.state import StateStore
    from omview.agent.peers.gossip import load_key

    try:
        cfg = config.load(config_path)
        load_key(cfg.key_file)
        m = initial_membership(cfg, StateStore(cfg.state_dir))
    except ConfigError as exc:
        _err(f"omview-agent: {exc}")
        return 1
    _out(f"config:      {cfg.path}")
    _out(f"node:        {m.node_id} (0x{m.node_id:04x}) at {m.address}")
    _out(f"membership:  {m.mode} ({m.source}{', interface ' + m.interface if m.interface else ''})")
    if m.mode == "map":
        _out(
            f"peers:       {', '.join(f'{n}={a[0]}' for n, a in sorted(m.peers.items()) if n != m.node_id) or 'none'}"
        )
    _out(f"gossip:      UDP port {cfg.port}, fanout {cfg.gossip_fanout}, down after {cfg.down_after:g} s")
    _out(f"key:         {cfg.key_file} (ok)")
    _out(f"socket:      {cfg.socket}")
    _out(f"state:       {cfg.state_dir}")
    _out(f"scope:       {cfg.process_scope}")
    return 0


def _bridge_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--socket", help="agent socket (default: $OMVIEW_SOCKET or /run/omview/agent.sock)")
    return p


def _bridge_parser() -> argparse.ArgumentParser:
    return _bridge_args(
        argparse.ArgumentParser(prog="omview-agent bridge", description="join stdin/stdout to the agent socket")
    )


@quiet_pipe
def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    if given[:1] == ["bridge"]:
        # every new SSH link to a node starts one: skip the full parser and what it imports (asyncio,
        # the daemon helpers: ~40 ms of a link's set-up)
        args = _bridge_parser().parse_args(given[1:])
        args.cmd = "bridge"
    else:
        args = _parser().parse_args(given)
    if args.cmd == "run":
        return _run(args.config, args.verbose)
    if args.cmd in ("start", "stop", "status"):
        return _control(args)
    if args.cmd == "bridge":
        from omview.agent.bridge import bridge

        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # a closed ssh channel ends us quietly
        try:
            return bridge(args.socket or paths.socket_path())
        except AgentUnavailable as exc:
            _err(f"omview-agent bridge: {exc}")
            return 2
        except KeyboardInterrupt:
            return 130
    if args.cmd == "genkey":
        from omview.agent.peers.gossip import genkey

        try:
            genkey(args.path)
        except FileExistsError:
            _err(f"omview-agent: {args.path} already exists; remove it first to make a new key")
            return 1
        except OSError as exc:
            _err(f"omview-agent: cannot write {args.path}: {exc.strerror}")
            return 1
        _out(f"wrote a new cluster key to {args.path}; copy it (mode 0600) to every node")
        return 0
    if args.cmd == "calibrate":
        from omview.agent.node.calibrate import measure

        _out(measure())
        return 0
    if args.cmd == "check-config":
        return _check_config(args.config)
    if args.cmd == "mig-abort":
        return _mig_abort(args.config, args.mig)
    return 2


def _mig_abort(config_path: str | None, mig: str) -> int:
    """Print 'committed', 'aborted' or 'unknown' for an arriving migration (see omview.agent.migration.target)."""
    from omview.agent import config
    from omview.agent.jobs.table import JOBS_DIR
    from omview.agent.migration.common import MigrationError
    from omview.agent.migration.target import abort_incoming

    try:
        cfg = config.load(config_path)
        _out(abort_incoming(cfg.state_dir, mig, os.path.join(cfg.state_dir, JOBS_DIR)))
    except (ConfigError, MigrationError) as exc:
        _err(f"omview-agent mig-abort: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
