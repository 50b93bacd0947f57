"""End to end: the classic tools against a real omview agent process on loopback.

One agent per module (127.0.0.2, its own socket, config and state in a temp dir, a free UDP
port); every tool runs as a subprocess so exit codes and output are the real ones.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from omview.model import mapfile
from omview.model.client import AgentClient
from tests.support.agents import Cluster, make_base

REPO = Path(__file__).resolve().parents[2]
ADDRESS = "127.0.0.2"


class Agent:
    """A running agent (tests.support.agents, node 1 on 127.0.0.2) and the CLI's environment for it."""

    def __init__(self) -> None:
        # make_base() is world-traversable (tmp_path is 0700), so non-root runs reach the socket
        self.cluster = Cluster(make_base(), 1)
        self.proc = self.cluster.agents[0]
        self.cluster.start()
        self.env = self.proc.env
        self.sock = Path(self.proc.socket)
        self.map = Path(self.cluster.map_path)

    def log_text(self) -> str:
        return self.proc.log()[-2000:]

    def stop(self) -> None:
        self.cluster.stop()
        shutil.rmtree(self.cluster.base, ignore_errors=True)

    def run(
        self, tool: str, *args: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **(extra_env or {})}
        return subprocess.run(
            [sys.executable, "-m", f"omview.cli.{tool}", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def ok(self, tool: str, *args: str, **kw: dict[str, str]) -> str:
        res = self.run(tool, *args, **kw)  # type: ignore[arg-type]
        assert res.returncode == 0, (tool, args, res.returncode, res.stderr, self.log_text())
        assert "Traceback" not in res.stderr
        return res.stdout


@pytest.fixture(scope="module")
def agent() -> Iterator[Agent]:
    a = Agent()
    try:
        yield a
    finally:
        a.stop()


# --- mosctl --------------------------------------------------------------------------------


def _status(agent: Agent) -> dict[str, str]:
    out = agent.ok("mosctl", "status")
    fields = {}
    for line in out.splitlines()[1:]:
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


@pytest.mark.parametrize("flag", ["stay", "lstay", "block", "quiet"])
def test_flag_verbs_round_trip(agent: Agent, flag: str) -> None:
    assert agent.ok("mosctl", flag) == ""
    assert _status(agent)[flag] == "yes"
    assert json.loads(agent.ok("mosctl", "--json", "status"))["flags"][flag] is True
    assert agent.ok("mosctl", f"no{flag}") == ""
    assert _status(agent)[flag] == "no"
    assert json.loads(agent.ok("mosctl", "status", "--json"))["flags"][flag] is False


def test_setspeed_getspeed(agent: Agent) -> None:
    before = agent.ok("mosctl", "getspeed").strip()
    try:
        assert agent.ok("mosctl", "setspeed", "7609") == ""
        assert agent.ok("mosctl", "getspeed") == "7609\n"
        assert agent.ok("mosctl", "getspeed", "1") == "7609\n"
        assert json.loads(agent.ok("mosctl", "--json", "getspeed")) == {
            "node": 1,
            "speed": 7609,
            "status": "up",
        }
        assert _status(agent)["speed"] == "7609"
    finally:
        agent.ok("mosctl", "setspeed", before)


def test_setdecay_getdecay(agent: Agent) -> None:
    assert json.loads(agent.ok("mosctl", "--json", "getdecay")) == {
        "decay_interval": 1,
        "slow_decay": 975,
        "fast_decay": 926,
    }
    try:
        agent.ok("mosctl", "setdecay", "3", "950", "900")
        assert agent.ok("mosctl", "getdecay") == (
            "decay interval: 3 s\nslow decay:     950 (per mille)\nfast decay:     900 (per mille)\n"
        )
        agent.ok("mosctl", "setdecay", "2")
        assert json.loads(agent.ok("mosctl", "--json", "getdecay")) == {
            "decay_interval": 2,
            "slow_decay": 950,
            "fast_decay": 900,
        }
        assert "decay:       interval 2 s, slow 950, fast 900" in agent.ok("mosctl", "status")
    finally:
        agent.ok("mosctl", "setdecay", "1", "975", "926")


def test_getters_print_plain_numbers_matching_the_agent(agent: Agent) -> None:
    with AgentClient.local(str(agent.sock)) as client:
        info = client.node_info()
    for verb, field in (("getmem", "mem"), ("getfree", "rmem"), ("getutil", "util"), ("getload", "load")):
        out = agent.ok("mosctl", verb)
        assert out.strip().isdigit(), (verb, out)
        data = json.loads(agent.ok("mosctl", "--json", verb, "1"))
        assert data["node"] == 1 and isinstance(data[field], int)
    # memory moves slowly: the CLI's figure is the agent's within 5 % of the total
    assert abs(int(agent.ok("mosctl", "getmem")) - info.mem) < info.tmem * 0.05


def test_status_shows_identity_resources_and_criu(agent: Agent) -> None:
    out = agent.ok("mosctl", "status")
    assert out.startswith(f"This is omview node #1 ({ADDRESS}")
    st = _status(agent)
    assert st["status"] == "up"
    assert st["membership"].startswith("map")
    assert int(st["cpus"]) >= 1
    assert "GiB total" in st["memory"] or "MiB total" in st["memory"]
    assert "criu" in st  # the agent reports CRIU availability; the CLI must show it
    data = json.loads(agent.ok("mosctl", "--json", "status"))
    assert data["id"] == 1 and data["address"] == ADDRESS and "criu" in data


def test_isup_and_unknown_node(agent: Agent) -> None:
    res = agent.run("mosctl", "isup")
    assert (res.returncode, res.stdout) == (0, "up\n")
    assert json.loads(agent.ok("mosctl", "--json", "isup", "1")) == {"node": 1, "status": "up", "up": True}
    res = agent.run("mosctl", "getload", "99")
    assert res.returncode == 2
    assert "node 99 is not in this cluster (known nodes: 1)" in res.stderr


def test_whois(agent: Agent) -> None:
    assert agent.ok("mosctl", "whois", ADDRESS) == "1\n"
    assert agent.ok("mosctl", "whois", "1").startswith(ADDRESS)
    assert agent.ok("mosctl", "whois", "0x0001").startswith(ADDRESS)
    assert agent.ok("mosctl", "whois").startswith(f"1 {ADDRESS}")
    assert json.loads(agent.ok("mosctl", "--json", "whois", "1"))["address"] == ADDRESS
    res = agent.run("mosctl", "whois", "42")
    assert res.returncode == 3
    assert res.stderr.startswith("mosctl: ") and res.stderr.rstrip().endswith("[NO_SUCH_NODE]")


def test_expel_bring_print_the_agent_report(agent: Agent) -> None:
    for verb in ("expel", "bring"):
        out = agent.ok("mosctl", verb)
        assert "moved: none" in out
        assert json.loads(agent.ok("mosctl", "--json", verb))["moved"] == []


def test_agent_fault_is_exit_3_with_fault_name(agent: Agent) -> None:
    res = agent.run("mosctl", "setspeed", "99999999999")
    assert res.returncode == 3
    assert res.stderr.startswith("mosctl: ") and res.stderr.rstrip().endswith("[BAD_ARGUMENT]")
    assert "Traceback" not in res.stderr


NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


def test_non_root_reads_but_may_not_change(agent: Agent) -> None:
    # CI runs as root; drop to nobody for real, so the agent's SO_PEERCRED check is what refuses
    assert os.geteuid() == 0, "this test needs root to switch to uid 65534"

    def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*NOBODY, sys.executable, "-m", *argv],
            env=agent.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    res = as_nobody("omview.cli.mosctl", "getload")
    assert res.returncode == 0 and res.stdout.strip().isdigit(), res.stderr
    res = as_nobody("omview.cli.mosctl", "block")
    assert res.returncode == 3
    assert res.stderr.startswith("mosctl: ") and res.stderr.rstrip().endswith("[PERMISSION_DENIED]")
    assert _status(agent)["block"] == "no"
    res = as_nobody("omview.cli.setpe", "-off")
    assert res.returncode == 3 and "[PERMISSION_DENIED]" in res.stderr
    # mps without -a shows only the caller's processes: nobody owns none of ours
    res = as_nobody("omview.cli.mps")
    assert res.returncode == 0 and str(os.getpid()) not in res.stdout


def test_not_applicable_even_with_agent(agent: Agent) -> None:
    res = agent.run("mosctl", "gettune")
    assert res.returncode == 2 and "not applicable on omview" in res.stderr


# --- showmap / setpe -------------------------------------------------------------------------

GOLDEN_ONE = (
    "My Node-Id: 0x0001\n"
    "\n"
    "Base Node-Id Address          Count\n"
    "------------ ---------------- -----\n"
    "0x0001       127.0.0.2        1\n"
)


def test_showmap_golden(agent: Agent) -> None:
    assert agent.ok("showmap") == GOLDEN_ONE
    data = json.loads(agent.ok("showmap", "--json"))
    assert data["node"] == 1 and data["entries"] == [{"base": 1, "address": ADDRESS, "count": 1}]


def test_setpe_write_read_off_cycle(agent: Agent, tmp_path: Path) -> None:
    two = tmp_path / "two.map"
    two.write_text(f"# test map\n1 {ADDRESS} 1\n2 127.0.0.3 1\n")
    try:
        assert agent.ok("setpe", "-w", "-f", str(two)) == ""
        assert agent.ok("showmap") == GOLDEN_ONE + "0x0002       127.0.0.3        1\n"
        expected = mapfile.format_map(mapfile.parse(two.read_text()))
        assert agent.ok("setpe", "-r") == expected
        out_file = tmp_path / "readback.map"
        assert agent.ok("setpe", "-r", "-f", str(out_file)) == ""
        assert out_file.read_text() == expected
        assert mapfile.parse(out_file.read_text()) == mapfile.parse(two.read_text())
        assert json.loads(agent.ok("setpe", "-r", "--json"))["entries"][1] == {
            "base": 2,
            "address": "127.0.0.3",
            "count": 1,
        }
        # node 2 is in the map but no agent runs there: a negative answer, exit 1
        res = agent.run("mosctl", "isup", "2")
        assert (res.returncode, res.stdout) == (1, "down\n")
        assert "status:      down" in agent.ok("mosctl", "status", "2")
        # a well-formed map without this node's address is refused, as openMosix setpe did
        other = tmp_path / "other.map"
        other.write_text("5 10.9.9.9 1\n")
        res = agent.run("setpe", "-w", "-f", str(other))
        assert res.returncode == 2
        assert f"my IP address ({ADDRESS}) is not there!" in res.stderr
        # off: the agent leaves the cluster, the map is empty
        assert agent.ok("setpe", "-off") == ""
        assert agent.ok("showmap") == GOLDEN_ONE.split("0x0001       ")[0]
        assert _status(agent)["membership"].startswith("off")
    finally:
        agent.ok("setpe", "-w", "-f", str(agent.map))
    assert agent.ok("showmap") == GOLDEN_ONE


# --- mps -------------------------------------------------------------------------------------


def test_mps_lists_this_process(agent: Agent) -> None:
    me = os.getpid()
    rows = agent.ok("mps").splitlines()
    assert rows[0].split()[:3] == ["PID", "USER", "N#"]
    mine = [r for r in rows[1:] if r.split()[0] == str(me)]
    assert len(mine) == 1 and mine[0].split()[2] == "0"  # runs here: N# 0
    pids = [int(r.split()[0]) for r in rows[1:]]
    assert pids == sorted(pids)
    only = agent.ok("mps", "-c", str(me)).splitlines()
    assert len(only) == 2 and "CANTMOVE" in only[0] and only[1].split()[0] == str(me)
    data = json.loads(agent.ok("mps", "--json", str(me)))
    assert data[0]["pid"] == me and data[0]["node"] == 0
    assert any(r.split()[0] == str(me) for r in agent.ok("mps", "-a").splitlines()[1:])


def test_mps_keeps_one_row_per_process_with_control_characters(agent: Agent) -> None:
    # an argument with a newline (sh -c scripts do this) once split a row in two and broke parsers
    script = "import time; time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", script, "first\nsecond\tthird"])  # noqa: S603
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if b"second" in Path(f"/proc/{child.pid}/cmdline").read_bytes():
                break
            time.sleep(0.02)
        rows = agent.ok("mps", "-a").splitlines()
        assert all(r.split() and r.split()[0].isdigit() for r in rows[1:]), rows
        mine = [r for r in rows[1:] if r.split()[0] == str(child.pid)]
        assert len(mine) == 1 and mine[0].endswith(f"{script} first?second?third")
    finally:
        child.kill()
        child.wait(timeout=10)


def test_mps_into_a_closed_pipe_is_quiet(agent: Agent) -> None:
    # `mps -a | head -n 1`: head exits early; mps must not spill a BrokenPipeError traceback
    res = subprocess.run(
        ["sh", "-c", f"'{sys.executable}' -m omview.cli.mps -a -c | head -n 1"],
        env=agent.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.stdout.split()[:3] == ["PID", "USER", "N#"]
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr


def test_mps_missing_pid_is_exit_1(agent: Agent) -> None:
    res = agent.run("mps", str(os.getpid()), "4194303")
    assert res.returncode == 1
    assert str(os.getpid()) in res.stdout
    assert "mps: no process 4194303 on this node" in res.stderr


# --- mosmon ----------------------------------------------------------------------------------


def test_mosmon_once_shows_the_node(agent: Agent) -> None:
    out = agent.ok("mosmon", "--once", "--total", extra_env={"COLUMNS": "60", "LINES": "14"})
    lines = out.splitlines()
    assert len(lines) == 14 and all(len(line) <= 60 for line in lines)
    assert lines[0].startswith("omview mosmon: load")
    assert "machines: 1 configured, 1 up, 0 down" in out
    assert any(line.split() == ["+*1"] for line in lines)
    for mode, title in (("speed", "speed"), ("memory", "memory"), ("util", "utilisation")):
        assert agent.ok("mosmon", "--once", "--mode", mode).startswith(f"omview mosmon: {title}")
    data = json.loads(agent.ok("mosmon", "--once", "--json"))
    assert [n["id"] for n in data] == [1] and data[0]["status"] == "up"
    tiny = agent.ok("mosmon", "--once", extra_env={"COLUMNS": "12", "LINES": "4"})
    assert tiny == "mosmon: term\n"


def _winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_mosmon_curses_keys_and_resize(agent: Agent) -> None:
    master, slave = pty.openpty()
    _winsize(slave, 24, 80)
    proc = subprocess.Popen(
        [sys.executable, "-m", "omview.cli.mosmon", "--interval", "0.2"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**agent.env, "TERM": "xterm"},
        cwd=REPO,
        start_new_session=True,
    )
    os.close(slave)
    seen = bytearray()

    def expect(pattern: bytes, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while pattern not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{pattern!r} not on screen; got {bytes(seen[-400:])!r}"
            ready, _, _ = select.select([master], [], [], min(left, 0.2))
            if ready:
                try:
                    seen.extend(os.read(master, 65536))
                except OSError:
                    break

    try:
        expect(b"omview mosmon: load")
        expect(b"*1")
        seen.clear()
        os.write(master, b"t")
        expect(b"machines: 1 configured, 1 up")
        seen.clear()
        os.write(master, b"m")
        expect(b"memory")
        # shrink below the minimum, then grow again: no crash, the frame follows
        seen.clear()
        _winsize(master, 3, 10)
        os.kill(proc.pid, signal.SIGWINCH)
        expect(b"mosmon: te")
        seen.clear()
        _winsize(master, 30, 100)
        os.kill(proc.pid, signal.SIGWINCH)
        expect(b"*1")
        os.write(master, b"q")
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)
