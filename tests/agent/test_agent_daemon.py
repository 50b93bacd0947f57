"""omview-agent start/stop/status with real processes: daemonizing, the PID file, stale files, refusals."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from omview.agent import core, daemon
from omview.model.procfs import read_stat
from tests.support.agents import PY, REPO, AgentProc, Cluster, wait_for


def ctl(agent: AgentProc, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``omview-agent ARGS`` as an admin would, with the agent's config and env overrides."""
    return subprocess.run([PY, "-m", "omview.agent", *args], env=agent.env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def pidfile(agent: AgentProc) -> str:
    return os.path.join(os.path.dirname(agent.socket), "agent.pid")


@pytest.fixture
def node(cluster_factory: Callable[..., Cluster]) -> Iterator[AgentProc]:
    """One configured (not started) agent; every agent PID seen in its PID file is stopped afterwards."""
    cluster = cluster_factory(1)
    agent = cluster.agents[0]
    agent.write_config()
    seen: set[int] = set()
    agent.seen = seen  # type: ignore[attr-defined]
    yield agent
    pid = daemon.read_pid(pidfile(agent))
    if pid is not None:
        seen.add(pid)
    for pid in seen:
        if daemon.pid_alive(pid) and daemon.is_agent(pid):
            os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(AssertionError):
                wait_for(lambda p=pid: not daemon.pid_alive(p), 15, f"agent {pid} to exit")
            if daemon.pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not any(daemon.pid_alive(p) for p in seen), "an agent started by the test is still running"


def started_pid(agent: AgentProc, res: subprocess.CompletedProcess[str]) -> int:
    assert res.returncode == 0, res.stdout + res.stderr
    pid = daemon.read_pid(pidfile(agent))
    assert pid is not None
    agent.seen.add(pid)  # type: ignore[attr-defined]
    assert f"omview-agent started (pid {pid})" in res.stdout, res.stdout
    return pid


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not an omview agent."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait(5)


def test_start_daemonizes_refuses_twice_and_stop_ends_it(node: AgentProc) -> None:
    res = ctl(node, "start", "--config", node.config)
    pid = started_pid(node, res)
    # a real daemon: not our child, in a session of its own, no terminal, stdio on its log file
    st = read_stat(pid)
    assert st is not None and st.ppid != os.getpid() and os.getsid(pid) != os.getsid(0) and st.tty_nr == 0
    log_path = os.path.join(node.state_dir, "agent.log")
    assert os.path.realpath(f"/proc/{pid}/fd/2") == log_path
    assert os.readlink(f"/proc/{pid}/fd/0") == os.devnull
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    with node.client() as c:
        assert c.call("ping")["pong"]
    wait_for(lambda: "omview agent" in open(log_path).read(), 10, "the agent's start line in its log")

    again = ctl(node, "start", "--config", node.config)
    assert again.returncode == daemon.EXIT_ALREADY
    assert f"already runs (pid {pid}" in again.stderr and "omview-agent stop" in again.stderr, again.stderr
    assert daemon.read_pid(pidfile(node)) == pid and daemon.pid_alive(pid)

    st = ctl(node, "status", "--config", node.config)
    assert st.returncode == 0 and f"running (pid {pid}, node 1)" in st.stdout, st.stdout
    st = ctl(node, "status", "--json", "--config", node.config)
    assert st.returncode == 0 and json.loads(st.stdout) == {
        "state": "running", "pid": pid, "node": 1, "socket": node.socket, "pidfile": pidfile(node),
        "error": None, "stale": None}  # fmt: skip

    stop = ctl(node, "stop", "--config", node.config)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"stopping omview-agent (pid {pid}, node 1)" in stop.stdout
    assert f"omview-agent stopped (pid {pid})" in stop.stdout
    assert not daemon.pid_alive(pid)
    assert not os.path.exists(pidfile(node)) and not os.path.exists(node.socket)
    assert "stopped" in open(log_path).read()

    none = ctl(node, "stop", "--config", node.config)
    assert none.returncode == daemon.EXIT_ALREADY
    assert "no agent is running" in none.stderr and node.socket in none.stderr, none.stderr
    st = ctl(node, "status", "--config", node.config)
    assert st.returncode == daemon.EXIT_ALREADY and "not running" in st.stdout
    st = ctl(node, "status", "--json", "--config", node.config)
    assert st.returncode == daemon.EXIT_ALREADY and json.loads(st.stdout) == {
        "state": "stopped", "pid": None, "node": None, "socket": node.socket, "pidfile": pidfile(node),
        "error": None, "stale": None}  # fmt: skip


@pytest.mark.parametrize("holder", ["dead", "not-an-agent"])
def test_stale_pid_file_is_replaced(node: AgentProc, sleeper: subprocess.Popen[bytes], holder: str) -> None:
    if holder == "dead":
        gone = subprocess.Popen(["true"])
        gone.wait(5)
        stale = gone.pid
    else:
        stale = sleeper.pid
    os.makedirs(os.path.dirname(pidfile(node)), exist_ok=True)
    with open(pidfile(node), "w") as fh:
        fh.write(f"{stale}\n")
    res = ctl(node, "start", "--config", node.config)
    pid = started_pid(node, res)
    why = f"pid {stale} is gone" if holder == "dead" else f"pid {stale} is not an omview agent"
    assert f"removing the stale PID file {pidfile(node)} ({why})" in res.stdout
    assert pid != stale
    assert sleeper.poll() is None  # the unrelated process was left alone
    assert ctl(node, "stop", "--config", node.config).returncode == 0
    assert not daemon.pid_alive(pid) and sleeper.poll() is None


def test_garbled_pid_file_is_reported_and_kept(node: AgentProc) -> None:
    """A PID file that holds no PID may be someone else's: start, stop and status say so, and leave it."""
    os.makedirs(os.path.dirname(pidfile(node)), exist_ok=True)
    with open(pidfile(node), "w") as fh:
        fh.write("not a pid\n")
    for verb in ("start", "stop", "status"):
        res = ctl(node, verb, "--config", node.config)
        assert res.returncode == daemon.EXIT_FAILED, (verb, res.stdout, res.stderr)
        assert "holds no PID" in res.stderr and pidfile(node) in res.stderr, (verb, res.stderr)
    with open(pidfile(node)) as fh:
        assert fh.read() == "not a pid\n"
    os.unlink(pidfile(node))


def test_foreground_run_keeps_and_recovers_its_pid_file(
    node: AgentProc, sleeper: subprocess.Popen[bytes]
) -> None:
    """`run` (systemd, the cluster harness) writes the PID file too, replacing a stale one itself."""
    os.makedirs(os.path.dirname(pidfile(node)), exist_ok=True)
    with open(pidfile(node), "w") as fh:
        fh.write(f"{sleeper.pid}\n")
    node.start()
    assert node.proc is not None
    assert daemon.read_pid(pidfile(node)) == node.proc.pid
    assert (
        f"replaced the stale PID file {pidfile(node)} (pid {sleeper.pid} is not an omview agent)"
        in node.log()
    )
    # stop finds a foreground agent through its socket and PID file
    st = ctl(node, "status", "--socket", node.socket)
    assert st.returncode == 0 and f"pid {node.proc.pid}" in st.stdout
    assert node.stop() == 0
    assert not os.path.exists(pidfile(node)) and sleeper.poll() is None


def test_stop_never_signals_a_process_that_is_not_an_agent(
    node: AgentProc, sleeper: subprocess.Popen[bytes]
) -> None:
    os.makedirs(os.path.dirname(pidfile(node)), exist_ok=True)
    with open(pidfile(node), "w") as fh:
        fh.write(f"{sleeper.pid}\n")
    res = ctl(node, "stop", "--socket", node.socket)
    assert res.returncode == daemon.EXIT_ALREADY
    assert "no agent is running" in res.stderr and "stale PID file" in res.stderr, res.stderr
    time.sleep(0.2)
    assert sleeper.poll() is None and not os.path.exists(pidfile(node))


def test_start_failure_shows_the_log_and_leaves_nothing(node: AgentProc) -> None:
    node.settings["key_file"] = os.path.join(node.dir, "no-such.key")
    node.write_config()
    res = ctl(node, "start", "--config", node.config)
    assert res.returncode == daemon.EXIT_FAILED
    assert "exited while starting" in res.stderr and "no-such.key" in res.stderr, res.stderr
    assert "  | " in res.stderr  # the log's last lines are quoted
    assert daemon.read_pid(pidfile(node)) is None


def test_start_checks_the_socket_the_gui_means(node: AgentProc) -> None:
    res = ctl(node, "start", "--config", node.config, "--socket", "/tmp/not-this.sock")
    assert res.returncode == daemon.EXIT_FAILED and "not /tmp/not-this.sock" in res.stderr
    assert not os.path.exists(pidfile(node))


def test_timeouts_and_systemd_choice(monkeypatch: Any) -> None:
    # a stop must outwait the agent sending its guests home
    assert daemon.STOP_TIMEOUT > core.EXPEL_ON_STOP_TIMEOUT
    assert daemon.pid_file_for("/run/omview/agent.sock") == "/run/omview/agent.pid"
    assert daemon.pid_file_for("/x/y/node7") == "/x/y/node7.pid"
    # an explicit config or env override means "not the systemd unit's agent"
    assert not daemon.use_systemd("/etc/omview/agent.toml", False)
    assert not daemon.use_systemd(None, True)
    monkeypatch.setenv("OMVIEW_SOCKET", "/tmp/x.sock")
    assert not daemon.use_systemd(None, False)
    monkeypatch.delenv("OMVIEW_SOCKET")
    with open("/proc/1/comm") as fh:
        pid1 = fh.read().strip()
    if pid1 != "systemd":  # this machine: start/stop must daemonize themselves
        assert not daemon.systemd_manages()


def test_stop_reports_progress_and_gives_up_after_its_timeout(node: AgentProc) -> None:
    """An agent slow to exit (here: SIGSTOPped, as if busy sending guests home) gets progress lines."""
    pid = started_pid(node, ctl(node, "start", "--config", node.config))
    os.kill(pid, signal.SIGSTOP)
    try:
        quick = ctl(node, "stop", "--config", node.config, "--timeout", "1")
        assert quick.returncode == daemon.EXIT_FAILED
        assert f"pid {pid} did not exit within 1 s" in quick.stderr and f"kill -KILL {pid}" in quick.stderr
        assert daemon.pid_alive(pid) and daemon.read_pid(pidfile(node)) == pid
        slow = subprocess.Popen([PY, "-m", "omview.agent", "stop", "--config", node.config], env=node.env,
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert slow.stdout is not None
        lines = [slow.stdout.readline(), slow.stdout.readline()]  # each arrives as it happens
        assert lines[0].startswith(f"stopping omview-agent (pid {pid}")
        assert lines[1].startswith(f"still stopping pid {pid} (")
    finally:
        os.kill(pid, signal.SIGCONT)
    out, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, out + err
    assert f"omview-agent stopped (pid {pid})" in out
    assert not daemon.pid_alive(pid) and not os.path.exists(pidfile(node))
