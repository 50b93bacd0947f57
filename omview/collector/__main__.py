"""L4 entry point: the ``openmosixcollector`` command (-d, -k, -n, -r, --export, help).

Start/stop/checkpoint/rotate as the original did; the daemon itself is omview.collector.daemon.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import sys
from collections.abc import Sequence

from omview.collector import control
from omview.collector.daemon import Options, serve, validate_label
from omview.collector.export import DEFAULT_METRICS_HOST, export_csv, parse_listen
from omview.collector.source import AgentSource, Source, SourceUnavailable, agent_connector
from omview.collector.synthetic import SyntheticSource
from omview.collector.writer import CollectorError
from omview.model import records
from omview.model.hosts import HostError, check_host
from omview.model.pipes import quiet_pipe, stdout_closed

log = logging.getLogger("omview.collector")

SHORT_HELP = """\
openmosixcollector - keeps the history of the cluster's load, memory and processes

  openmosixcollector -d           starts the collector as a daemon
  openmosixcollector -k           stops the collector
  openmosixcollector -n [LABEL]   writes a checkpoint to the history
  openmosixcollector -r           saves the current history and starts a new one
  openmosixcollector -s [--json]  shows whether it runs and what it writes
  openmosixcollector --export csv [--history DIR] [-o FILE]
                                  writes a history as CSV (spreadsheets, pandas)
  openmosixcollector              prints this short help

Options: --logdir DIR (default {logdir}), --interval SECONDS (1),
  --node HOST|/SOCKET (whose agent to ask; default this node's), --pidfile PATH
  (default {pidfile}), --metrics-port PORT, --metrics-listen ADDR[:PORT], -f (run in the foreground).
More: openmosixcollector --help, docs/collector.md.
"""


def _out(text: str, end: str = "\n") -> None:
    sys.stdout.write(text + end)


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="openmosixcollector",
        description="Log the cluster's load, memory, processes and migrations into history files.",
    )
    act = p.add_mutually_exclusive_group()
    act.add_argument("-d", "--daemon", action="store_true", help="start the collector as a daemon")
    act.add_argument(
        "-f",
        "--foreground",
        action="store_true",
        help="run the collector in the foreground (systemd, debugging)",
    )
    act.add_argument(
        "-k", "--kill", action="store_true", help="stop the running collector (through its PID file)"
    )
    act.add_argument(
        "-n", "--checkpoint", nargs="?", const="", metavar="LABEL", help="write a checkpoint to the history"
    )
    act.add_argument(
        "-r",
        "--rotate",
        action="store_true",
        help="save the current history to a dated backup and start a new one",
    )
    act.add_argument("-s", "--status", action="store_true", help="say whether the collector runs")
    p.add_argument("--json", action="store_true", help="with -s: print one JSON object (docs/collector.md)")
    act.add_argument("--export", choices=("csv",), help="write a history in this format to stdout (or -o)")
    p.add_argument("--logdir", default=None, help=f"history directory (default {records.default_logdir()})")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    p.add_argument(
        "--node", default=None, help="whose agent to sample: a host (reached by ssh) or an agent socket path"
    )
    p.add_argument(
        "--pidfile", default=control.DEFAULT_PIDFILE, help=f"PID file (default {control.DEFAULT_PIDFILE})"
    )
    p.add_argument(
        "--rotate-hours",
        type=float,
        default=records.ROTATE_SECONDS / 3600,
        help="start a new history this often (default 12)",
    )
    p.add_argument(
        "--sync-seconds", type=float, default=60.0, help="fdatasync the history files this often (default 60)"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve the current table and migration metrics as OpenMetrics on 127.0.0.1:PORT",
    )
    p.add_argument(
        "--metrics-listen",
        default=None,
        metavar="ADDR[:PORT]",
        help="serve the metrics on this address instead of 127.0.0.1 (0.0.0.0 or :: for every"
        " interface, [IPv6]:PORT); the port defaults to --metrics-port",
    )
    p.add_argument("--no-processes", action="store_true", help="do not record this node's process list")
    p.add_argument(
        "--history",
        default=None,
        help="for --export: the history directory or its cluster file (default: --logdir)",
    )
    p.add_argument("-o", "--output", default=None, help="for --export: write to this file instead of stdout")
    p.add_argument(
        "--synthetic",
        type=int,
        default=None,
        metavar="N",
        help="demo/test: record a synthetic cluster of N nodes instead of asking an agent",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="more log output")
    return p


def _options(a: argparse.Namespace) -> Options:
    if not 0.01 <= a.interval <= 3600:
        raise CollectorError(f"--interval {a.interval} is out of range; use 0.01 to 3600 seconds")
    if a.rotate_hours <= 0:
        raise CollectorError(f"--rotate-hours must be positive, not {a.rotate_hours}")
    if a.synthetic is not None and not 1 <= a.synthetic <= 65535:
        raise CollectorError(f"--synthetic {a.synthetic}: the node count must be 1..65535")
    if a.metrics_port is not None and not 0 <= a.metrics_port <= 65535:
        raise CollectorError(f"--metrics-port {a.metrics_port} is not a TCP port (0-65535)")
    if a.node is not None and not a.node.startswith("/"):
        try:
            check_host(a.node)
        except HostError as exc:
            raise CollectorError(f"--node {exc}") from None
    metrics_host, metrics_port = DEFAULT_METRICS_HOST, a.metrics_port
    if a.metrics_listen is not None:
        metrics_host, metrics_port = parse_listen(a.metrics_listen, a.metrics_port)
    return Options(
        logdir=os.path.abspath(a.logdir or records.default_logdir()),
        pidfile=os.path.abspath(a.pidfile),
        interval=a.interval,
        node=a.node,
        rotate_every=a.rotate_hours * 3600,
        sync_every=a.sync_seconds,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        processes=not a.no_processes,
    )


def _source(opts: Options, synthetic: int | None) -> Source:
    if synthetic is not None:
        return SyntheticSource(synthetic, wire=True)
    return AgentSource(agent_connector(opts.node))


def _probe_agent(node: str | None) -> None:
    src = AgentSource(agent_connector(node))
    try:
        n = len(src.nodes())
        _out(f"the agent answers: {n} nodes in the cluster table")
    except SourceUnavailable as exc:
        _err(f"warning: {exc}\n  the collector starts anyway and records as soon as the agent answers")
    finally:
        src.close()


def _status_json(pidfile: str) -> int:
    """``-s --json``: the stable shape of docs/collector.md; exit 0 running, 1 not (or broken)."""
    shape: dict[str, object] = {"running": False, "pid": None, "nodes": None, "ticks": None, "logdir": None,
                                "pidfile": pidfile, "reason": None}  # fmt: skip
    try:
        answer = json.loads(control.request(pidfile, "status json", timeout=10.0))
    except control.NotRunning as exc:
        _out(json.dumps({**shape, "reason": str(exc)}, sort_keys=True))
        return 1
    except ValueError as exc:  # a daemon of an older omview answers text only
        raise CollectorError(f"the running collector does not answer in JSON ({exc}); restart it") from None
    _out(json.dumps({**shape, **answer, "running": True}, sort_keys=True))
    return 0


def _daemonize(opts: Options, synthetic: int | None) -> int:
    """Double fork; the parent waits until the daemon says it runs (or why it could not)."""
    pid = control.running_pid(opts.pidfile)
    if pid is not None:
        _err(f"openmosixcollector: already running (pid {pid}); stop it with -k first")
        return 1
    if synthetic is None:
        _probe_agent(opts.node)
    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()
    first = os.fork()
    if first:
        os.close(wfd)
        data = b""
        while True:
            readable, _, _ = select.select([rfd], [], [], 30.0)
            if not readable:
                break
            chunk = os.read(rfd, 4096)
            if not chunk:
                break
            data += chunk
        os.close(rfd)
        os.waitpid(first, 0)
        text = data.decode(errors="replace").strip()
        if text.startswith("ok "):
            _out(f"openmosixcollector started (pid {text[3:]}), writing to {opts.logdir}")
            return 0
        if text.startswith("error "):
            _err(f"openmosixcollector: {text[6:]}")
        else:
            _err(f"openmosixcollector: the daemon exited while starting; see {opts.logdir}/collector.log")
        return 1
    # first child: new session, then fork again so the daemon can never regain a terminal
    os.close(rfd)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    os.umask(0o022)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    told = False

    def ready(error: str | None) -> None:
        nonlocal told
        if told:
            return
        told = True
        msg = f"ok {os.getpid()}\n" if error is None else f"error {error}\n"
        try:
            os.write(wfd, msg.encode())
            os.close(wfd)
        except OSError:
            pass

    code = 0
    try:
        serve(opts, _source(opts, synthetic), ready)
    except CollectorError:
        code = 1
    except BaseException as exc:  # the daemon's last words must reach its log and the starter
        log.exception("openmosixcollector died")
        ready(f"internal error: {exc!r}")
        code = 1
    os._exit(code)


@quiet_pipe
def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        _out(SHORT_HELP.format(logdir=records.default_logdir(), pidfile=control.DEFAULT_PIDFILE), end="")
        return 0
    a = build_parser().parse_args(args)
    logging.basicConfig(
        level=logging.DEBUG if a.verbose else logging.INFO,
        format="openmosixcollector: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        opts = _options(a)
        if a.json and not a.status:
            raise CollectorError("--json goes with -s/--status")
        if a.export:
            path = a.history or opts.logdir
            if a.output:
                with open(a.output, "w", newline="") as f:
                    n = export_csv(path, f)
                _err(f"wrote {n} samples to {a.output}")
            else:
                export_csv(path, sys.stdout)
            return 0
        if a.kill:
            pid = control.stop(opts.pidfile)
            _out(f"openmosixcollector stopped (pid {pid})")
            return 0
        if a.checkpoint is not None:
            _out(control.request(opts.pidfile, "checkpoint " + validate_label(a.checkpoint)))
            return 0
        if a.rotate:
            _out(control.request(opts.pidfile, "rotate", timeout=120.0))
            return 0
        if a.status:
            if a.json:
                return _status_json(opts.pidfile)
            _out(control.request(opts.pidfile, "status", timeout=10.0))
            return 0
        if a.daemon:
            return _daemonize(opts, a.synthetic)
        if a.foreground:
            serve(opts, _source(opts, a.synthetic))
            return 0
        _out(SHORT_HELP.format(logdir=records.default_logdir(), pidfile=control.DEFAULT_PIDFILE), end="")
        return 0
    except control.NotRunning as exc:
        _err(f"openmosixcollector: {exc}")
        return 1
    except (CollectorError, records.HistoryFormatError) as exc:
        _err(f"openmosixcollector: {exc}")
        return 1
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) and stdout_closed():
            raise  # `--export csv | head`: quiet_pipe ends us without a word
        _err(f"openmosixcollector: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
