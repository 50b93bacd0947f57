"""L2 agent: ``omview-agent start|stop|status`` and the agent's PID file (stdlib + omview.model only).

Under systemd (PID 1 is systemd and omview-agent.service is installed) start/stop go through
systemctl; otherwise ``start`` daemonizes ``omview-agent run`` itself (double fork, setsid, stdio
to a log file) and ``stop`` sends SIGTERM to the PID the PID file and the socket both name.
Every ``run`` keeps a PID file next to its socket (agent.sock -> agent.pid), however it was started;
what a missing, stale or unusable PID file means is omview.model.pidfile's, the collector's too.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from omview.agent.config import AgentConfig
from omview.model import pidfile as pidfiles
from omview.model.channel import UnixChannel
from omview.model.client import AgentClient
from omview.model.errors import ConfigError, OmviewError
from omview.model.pidfile import PidFileError, PidFileHeld, command_line, pid_alive, read_pid

#: exit codes of start / stop / status (docs/agent.md)
EXIT_OK = 0
EXIT_FAILED = 1  # could not start or stop; status: a live agent that does not answer
EXIT_ALREADY = 3  # start: an agent already runs; stop/status: no agent runs

SERVICE = "omview-agent.service"
START_TIMEOUT = 30.0
#: longer than core.EXPEL_ON_STOP_TIMEOUT (120 s): a stopping agent first sends its guests home
STOP_TIMEOUT = 150.0
PROGRESS_EVERY = 5.0
LOG_TAIL = 15
#: how the PID file's reasons name the agent ("pid N is not an omview agent")
AGENT = "an omview agent"

Say = Callable[[str], None]


# ---- the PID file -------------------------------------------------------------------------------


def pid_file_for(socket_path: str) -> str:
    """The PID file that goes with an agent socket: same directory, ``.sock`` -> ``.pid``."""
    base = os.path.basename(socket_path)
    stem = base[: -len(".sock")] if base.endswith(".sock") else base
    return os.path.join(os.path.dirname(socket_path) or ".", f"{stem}.pid")


def default_log(cfg: AgentConfig) -> str:
    """Where a self-daemonized agent writes: ``agent.log`` in its state directory (one per node,
    also for simulated nodes that share /var/log with their host)."""
    return os.path.join(cfg.state_dir, "agent.log")


def is_agent(pid: int) -> bool:
    """Is ``pid`` an ``omview-agent run`` process? (read from /proc, never matched by name)."""
    args = command_line(pid)
    return args is not None and _runs_agent(args)


def _runs_agent(args: list[str]) -> bool:
    agent = any(a == "omview.agent" or os.path.basename(a) == "omview-agent" for a in args)
    return agent and "run" in args


def holder(pidfile: str) -> tuple[int | None, str]:
    """(the live agent the PID file names, else None; why the file is stale, "" when missing or held).
    Raises PidFileError for a file that cannot be used (omview.model.pidfile)."""
    return pidfiles.holder(pidfile, _runs_agent, AGENT)


def running_pid(pidfile: str) -> int | None:
    """The live agent the PID file names, else None (raises PidFileError)."""
    return holder(pidfile)[0]


class PidFile(pidfiles.PidFile):
    """The PID file a running agent keeps (omview.model.pidfile), refusals as ConfigError."""

    def __init__(self, path: str, socket_path: str) -> None:
        super().__init__(path, _runs_agent, AGENT)
        self.socket_path = socket_path

    def acquire(self) -> None:
        """Raises ConfigError when another live agent holds the file or it cannot be taken."""
        try:
            super().acquire()
        except PidFileHeld as held:
            if probe(self.socket_path, 2.0).answers:
                raise ConfigError(
                    f"another omview agent is already serving this socket (pid {held.pid}); stop it first "
                    "with 'omview-agent stop'",
                    path=self.socket_path,
                ) from None
            raise ConfigError(
                f"another omview agent (pid {held.pid}) holds this PID file but does not answer on "
                f"{self.socket_path} (starting, or hung); stop it first with 'omview-agent stop'",
                path=self.path,
            ) from None
        except PidFileError as exc:
            raise ConfigError(str(exc)) from None


# ---- asking the socket --------------------------------------------------------------------------


class _PeerChannel(UnixChannel):
    """A UnixChannel that can tell which process listens on the other end."""

    def peer_pid(self) -> int | None:
        with contextlib.suppress(OSError):
            pid, _uid, _gid = struct.unpack("3i", self._sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))  # fmt: skip
            return pid if pid > 0 else None
        return None


@dataclass(frozen=True)
class Probe:
    """What the agent socket said: who listens (kernel-vouched PID) and whether it answered."""

    answers: bool
    pid: int | None = None
    node: int | None = None
    error: str = ""


def probe(socket_path: str, timeout: float = 3.0) -> Probe:
    """Connect and ``ping``; never raises."""
    try:
        channel = _PeerChannel(socket_path, connect_timeout=timeout)
    except OmviewError as exc:
        return Probe(False, error=str(exc))
    pid = channel.peer_pid()
    try:
        with AgentClient(channel, client_name="omview-agent-ctl", timeout=timeout) as client:
            client.call("ping")
            return Probe(True, pid, client.node_id)
    except (OmviewError, OSError, TimeoutError) as exc:
        return Probe(False, pid, error=str(exc) or type(exc).__name__)


def _guests(socket_path: str) -> int | None:
    """Guest jobs the agent still hosts (they leave before it stops), or None when it cannot tell."""
    try:
        with AgentClient.local(socket_path, client_name="omview-agent-ctl", timeout=3.0) as client:
            node = client.node_id
            jobs = client.call("job.list")
    except (OmviewError, OSError, TimeoutError):
        return None
    return sum(
        1 for j in jobs if j.get("where") == node and j.get("home") != node and j.get("state") == "running"
    )


# ---- systemd ------------------------------------------------------------------------------------


def systemd_manages() -> bool:
    """True when systemd is PID 1, systemctl exists and knows omview-agent.service."""
    systemctl = shutil.which("systemctl")
    if systemctl is None or not os.path.isdir("/run/systemd/system"):
        return False
    try:
        with open("/proc/1/comm", encoding="ascii", errors="replace") as fh:
            if fh.read().strip() != "systemd":
                return False
        cp = subprocess.run([systemctl, "show", "-p", "LoadState", "--value", SERVICE],
                            capture_output=True, text=True, timeout=15)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return cp.returncode == 0 and cp.stdout.strip() == "loaded"


def use_systemd(config_path: str | None, no_systemd: bool) -> bool:
    """systemd runs the agent with /etc/omview/agent.toml and the default paths: only then."""
    if no_systemd or config_path is not None:
        return False
    if any(os.environ.get(v) for v in ("OMVIEW_SOCKET", "OMVIEW_CONFIG_DIR", "OMVIEW_STATE_DIR")):
        return False
    return systemd_manages()


def _systemctl(verb: str, timeout: float, say: Say) -> int:
    """``systemctl VERB omview-agent``, saying every few seconds that it still runs."""
    proc = subprocess.Popen(["systemctl", verb, SERVICE], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    started = time.monotonic()
    while True:
        try:
            out, _ = proc.communicate(timeout=PROGRESS_EVERY)
            break
        except subprocess.TimeoutExpired:
            waited = time.monotonic() - started
            if waited > timeout:
                proc.kill()
                proc.communicate()
                say(f"systemctl {verb} {SERVICE} did not finish within {timeout:.0f} s")
                return EXIT_FAILED
            say(f"systemctl {verb} {SERVICE}: still waiting ({waited:.0f} s)")
    if proc.returncode != 0:
        say(f"systemctl {verb} {SERVICE} failed (exit {proc.returncode}): {out.strip()}")
        say(f"see 'journalctl -u {SERVICE} -n 50'")
        return EXIT_FAILED
    return EXIT_OK


def _main_pid() -> int | None:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired, ValueError):
        cp = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", SERVICE],
                            capture_output=True, text=True, timeout=15)  # fmt: skip
        pid = int(cp.stdout.strip() or 0)
        return pid or None
    return None


# ---- start --------------------------------------------------------------------------------------


def _log_tail(path: str, offset: int, lines: int = LOG_TAIL) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"
    tail = [ln for ln in text.splitlines() if ln.strip()][-lines:]
    return "\n".join(f"  | {ln}" for ln in tail) if tail else "  (the log is empty)"


def _already(cfg: AgentConfig, pidfile: str, out: Say, err: Say) -> int | None:
    """EXIT_ALREADY with a message when an agent answers or lives; removes a stale PID file."""
    p = probe(cfg.socket)
    if p.answers:
        err(f"omview-agent: an agent already runs (pid {p.pid or _file_pid(pidfile) or '?'}, node {p.node}) "
            f"and answers on {cfg.socket}; stop it first with 'omview-agent stop'")  # fmt: skip
        return EXIT_ALREADY
    pid, why = holder(pidfile)
    if pid is not None:
        err(f"omview-agent: agent pid {pid} (from {pidfile}) runs but does not answer on {cfg.socket} "
            "(still starting, or hung); 'omview-agent stop' ends it")  # fmt: skip
        return EXIT_ALREADY
    if why:
        out(f"removing the stale PID file {pidfile} ({why})")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pidfile)
    return None


def _file_pid(pidfile: str) -> int | None:
    """The PID in the file where it only adds to a message or confirms a PID known otherwise."""
    try:
        return read_pid(pidfile)
    except PidFileError:
        return None


def _spawn_daemon(argv: list[str], log_path: str) -> int:
    """Double fork + setsid; the grandchild execs ``argv`` with stdio on ``log_path``. Returns its PID."""
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    first = os.fork()
    if first == 0:  # pragma: no cover - runs in the child
        try:
            os.close(rfd)
            os.setsid()  # no controlling terminal; an ssh session's hangup does not reach the daemon
            second = os.fork()
            if second:
                os.write(wfd, f"{second}\n".encode())
                os._exit(0)
            os.close(wfd)
            os.chdir("/")  # a daemon must not keep the starter's directory (or its mount) busy
            os.umask(0o022)
            null = os.open(os.devnull, os.O_RDONLY)
            logfd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            os.dup2(null, 0)
            os.dup2(logfd, 1)
            os.dup2(logfd, 2)
            os.close(null)
            os.close(logfd)
            os.execv(argv[0], argv)
        except BaseException as exc:  # the exec failed: say so in the log the starter shows
            with contextlib.suppress(OSError):
                os.write(2, f"omview-agent start: cannot run {argv}: {exc}\n".encode())
            os._exit(127)
    os.close(wfd)
    data = b""
    while chunk := os.read(rfd, 64):
        data += chunk
    os.close(rfd)
    os.waitpid(first, 0)
    if not data.strip().isdigit():
        raise OSError(errno.ECHILD, "the daemon could not be forked")
    return int(data)


def start(cfg: AgentConfig, config_path: str | None, *, log_path: str | None, timeout: float,
          no_systemd: bool, out: Say, err: Say) -> int:  # fmt: skip
    """``omview-agent start``: see the module docstring; returns an EXIT_* code."""
    pidfile = pid_file_for(cfg.socket)
    already = _already(cfg, pidfile, out, err)
    if already is not None:
        return already
    if use_systemd(config_path, no_systemd):
        out(f"starting {SERVICE} with systemctl")
        if _systemctl("start", timeout, err) != EXIT_OK:
            return EXIT_FAILED
        if not _wait_answer(cfg.socket, None, timeout):
            err(f"omview-agent: systemd started {SERVICE} but nothing answers on {cfg.socket} within "
                f"{timeout:.0f} s; see 'journalctl -u {SERVICE} -n 50'")  # fmt: skip
            return EXIT_FAILED
        out(f"omview-agent started by systemd (pid {_main_pid() or '?'}), answering on {cfg.socket}")
        return EXIT_OK
    log_path = log_path or default_log(cfg)
    try:
        os.makedirs(os.path.dirname(log_path) or ".", mode=0o755, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(f"--- omview-agent start {time.strftime('%Y-%m-%d %H:%M:%S')} (by pid {os.getpid()})\n")
            offset = fh.tell()
    except OSError as exc:
        err(f"omview-agent: cannot write the log file {log_path}: {exc.strerror}; choose another with --log")
        return EXIT_FAILED
    argv = [sys.executable, "-m", "omview.agent", "run"]
    if config_path is not None:
        argv += ["--config", os.path.abspath(config_path)]
    try:
        pid = _spawn_daemon(argv, log_path)
    except OSError as exc:
        err(f"omview-agent: cannot start the daemon: {exc}")
        return EXIT_FAILED
    if _wait_answer(cfg.socket, pid, timeout, pidfile):
        out(f"omview-agent started (pid {pid}), answering on {cfg.socket}; log {log_path}")
        return EXIT_OK
    if pid_alive(pid):
        # half started is worse than not started: nobody would know it is there
        _terminate(pid, 10.0)
        err(f"omview-agent: the agent (pid {pid}) did not answer on {cfg.socket} within {timeout:.0f} s; "
            f"stopped it again. Last lines of {log_path}:")  # fmt: skip
    else:
        err(f"omview-agent: the agent exited while starting. Last lines of {log_path}:")
    err(_log_tail(log_path, offset))
    return EXIT_FAILED


def _wait_answer(socket_path: str, pid: int | None, timeout: float, pidfile: str | None = None) -> bool:
    """Until the agent ``pid`` (any when None) answers on the socket; False when it died or timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is not None and not pid_alive(pid):
            return False
        if os.path.exists(socket_path):
            p = probe(socket_path, 2.0)
            if p.answers and (pid is None or p.pid == pid or (pidfile and _file_pid(pidfile) == pid)):
                return True
        time.sleep(0.1)
    return False


def _terminate(pid: int, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid) and is_agent(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ---- stop ---------------------------------------------------------------------------------------


def _target(socket_path: str, pidfile: str) -> tuple[int | None, Probe]:
    """The agent to stop: the PID the socket's listener has (kernel-vouched), else the PID file's;
    only ever a live ``omview-agent run`` process. Raises PidFileError when only the file could tell
    and it cannot be used."""
    p = probe(socket_path)
    if p.pid is not None and p.pid != os.getpid() and pid_alive(p.pid) and is_agent(p.pid):
        return p.pid, p
    pid = running_pid(pidfile)
    return (pid if pid != os.getpid() else None), p


def stop(socket_path: str, *, timeout: float, no_systemd: bool, config_path: str | None,
         out: Say, err: Say) -> int:  # fmt: skip
    """``omview-agent stop``: returns EXIT_OK (stopped), EXIT_ALREADY (none ran) or EXIT_FAILED."""
    pidfile = pid_file_for(socket_path)
    pid, p = _target(socket_path, pidfile)
    if pid is None:
        _, why = holder(pidfile)
        if why:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pidfile)
            err(f"omview-agent: no agent is running (removed the stale PID file {pidfile}: {why})")
        elif p.pid is not None:
            err(
                f"omview-agent: pid {p.pid} listens on {socket_path} but is not an omview agent; not stopping it"
            )
            return EXIT_FAILED
        else:
            err(
                f"omview-agent: no agent is running (nothing answers on {socket_path}, no PID file {pidfile})"
            )
        return EXIT_ALREADY
    guests = _guests(socket_path) if p.answers else None
    first = f"stopping omview-agent (pid {pid}"
    first += f", node {p.node})" if p.node is not None else ")"
    if guests:
        first += f"; it sends its {guests} guest job(s) home first, which can take a while"
    out(first)
    if use_systemd(config_path, no_systemd) and pid == _main_pid():
        code = _systemctl("stop", timeout, out)
        if code == EXIT_OK:
            out(f"omview-agent stopped by systemd (pid {pid})")
        return code
    try:
        os.kill(pid, signal.SIGTERM)
    except PermissionError:
        err(f"omview-agent: not allowed to stop pid {pid}; run this as root")
        return EXIT_FAILED
    except ProcessLookupError:
        pass
    started = time.monotonic()
    next_report = started + PROGRESS_EVERY
    while pid_alive(pid):
        now = time.monotonic()
        if now - started > timeout:
            err(f"omview-agent: pid {pid} did not exit within {timeout:.0f} s (it may still be sending "
                f"guests home); try again later, or end it with 'kill -KILL {pid}'")  # fmt: skip
            return EXIT_FAILED
        if now >= next_report:
            next_report = now + PROGRESS_EVERY
            left = _guests(socket_path) if p.answers else None  # a silent agent would only cost 3 s
            detail = f", {left} guest job(s) still here" if left is not None else ""
            out(f"still stopping pid {pid} ({now - started:.0f} s{detail})")
        time.sleep(0.1)
    if _file_pid(pidfile) == pid:  # it died without cleaning up (killed meanwhile)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pidfile)
    out(f"omview-agent stopped (pid {pid}) after {time.monotonic() - started:.1f} s")
    return EXIT_OK


# ---- status -------------------------------------------------------------------------------------


def status_info(socket_path: str) -> tuple[int, dict[str, object]]:
    """The exit code of ``omview-agent status`` and what it found, in the shape of ``--json``
    (docs/agent.md): state running|silent|stopped, pid, node, socket, pidfile, error, stale."""
    pidfile = pid_file_for(socket_path)
    pid, p = _target(socket_path, pidfile)
    info: dict[str, object] = {"socket": socket_path, "pidfile": pidfile, "pid": pid or p.pid, "node": p.node,
                               "error": None, "stale": None}  # fmt: skip
    if p.answers:
        return EXIT_OK, {**info, "state": "running"}
    if pid is not None:
        return EXIT_FAILED, {**info, "state": "silent", "error": p.error}
    _, why = holder(pidfile)
    return EXIT_ALREADY, {**info, "state": "stopped", "pid": None, "stale": why or None}


def status(socket_path: str, out: Say, as_json: bool = False) -> int:
    """``omview-agent status``: EXIT_OK running, EXIT_FAILED alive but silent, EXIT_ALREADY not running."""
    code, info = status_info(socket_path)
    if as_json:
        out(json.dumps(info, sort_keys=True))
    elif info["state"] == "running":
        pid = info["pid"] or "?"
        out(f"omview-agent is running (pid {pid}, node {info['node']}), answering on {socket_path}")
    elif info["state"] == "silent":
        out(f"omview-agent pid {info['pid']} runs but does not answer on {socket_path} ({info['error']})")
    else:
        extra = f"; stale PID file {info['pidfile']}: {info['stale']}" if info["stale"] else ""
        out(f"omview-agent is not running (nothing answers on {socket_path}{extra})")
    return code
