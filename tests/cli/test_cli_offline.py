"""CLI behaviour that needs no agent: usage errors, the no-agent message, kernel-only verbs,
map-file errors in setpe, and the pure formatting/rendering functions."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from omview.cli import mosctl, mosmon, mps
from omview.model.cluster import NodeInfo, ProcessInfo

Runner = Callable[..., subprocess.CompletedProcess[str]]
TOOLS = ("mosctl", "showmap", "setpe", "mps", "mosmon")


# --- exit code 4 and the no-agent message ----------------------------------------------


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("mosctl", ["status"]),
        ("mosctl", ["getload"]),
        ("mosctl", ["isup", "2"]),
        ("mosctl", ["stay"]),
        ("mosctl", ["whois"]),
        ("showmap", []),
        ("setpe", ["-r"]),
        ("setpe", ["-off"]),
        ("mps", []),
        ("mosmon", ["--once"]),
    ],
)
def test_no_agent_exit_4_with_clear_message(
    cli: Runner, no_agent_env: dict[str, str], tool: str, args: list[str]
) -> None:
    res = cli(tool, *args)
    assert res.returncode == 4, res.stderr
    sock = no_agent_env["OMVIEW_SOCKET"]
    assert res.stderr.startswith(
        f"{tool}: no omview agent is running on this node (nothing listens on {sock})"
    )
    assert "start it with" in res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout == ""


# --- --help lists the verbs ------------------------------------------------------------------


@pytest.mark.parametrize("tool", TOOLS)
def test_help_exits_0(cli: Runner, tool: str) -> None:
    res = cli(tool, "--help")
    assert res.returncode == 0
    assert res.stdout.startswith(f"usage: {tool}")
    assert "exit codes" in res.stdout


def test_mosctl_help_lists_every_verb(cli: Runner) -> None:
    out = cli("mosctl", "--help").stdout
    for verb in mosctl.HANDLERS:
        assert verb in out, verb


# --- usage errors: exit 2, no agent contacted -----------------------------------------------


@pytest.mark.parametrize(
    ("tool", "args", "needle"),
    [
        ("mosctl", [], "a verb is required"),
        ("mosctl", ["frobnicate"], "unknown verb 'frobnicate'"),
        ("mosctl", ["stay", "now"], "stay takes no argument"),
        ("mosctl", ["getload", "x"], "node ID 'x' is not a number"),
        ("mosctl", ["getload", "0"], "node ID 0 is outside 1..65535"),
        ("mosctl", ["isup", "70000"], "outside 1..65535"),
        ("mosctl", ["getspeed", "1", "2"], "at most one node ID"),
        ("mosctl", ["setspeed"], "usage: mosctl setspeed N"),
        ("mosctl", ["setspeed", "fast"], "speed must be an integer"),
        ("mosctl", ["setspeed", "0"], "speed must be at least 1"),
        ("mosctl", ["setdecay"], "usage: mosctl setdecay"),
        ("mosctl", ["setdecay", "1", "975"], "usage: mosctl setdecay"),
        ("mosctl", ["setdecay", "0"], "decay interval must be at least 1"),
        ("mosctl", ["setdecay", "1", "2000", "926"], "slow decay must be at most 1000"),
        ("mosctl", ["whois", "a", "b"], "usage: mosctl whois"),
        ("mosctl", ["balancer", "0"], "N must be at least 1"),
        ("mosctl", ["balancer", "5", "6"], "usage: mosctl balancer [N]"),
        ("mosctl", ["--bogus", "status"], "unrecognized arguments"),
        ("setpe", [], "one of -w, -r or -off is required"),
        ("setpe", ["-w", "-r"], "not allowed with argument"),
        ("setpe", ["-off", "-f", "x"], "-off takes no map file"),
        ("setpe", ["-w", "--json", "-f", "x"], "--json only applies to -r"),
        ("mps", ["abc"], "PID 'abc' is not a positive number"),
        ("mps", ["0"], "PID '0' is not a positive number"),
        ("mosmon", ["--json"], "--json needs --once"),
        ("mosmon", ["--interval", "0"], "--interval must be between"),
        ("mosmon", ["--mode", "disk"], "invalid choice"),
        ("showmap", ["extra"], "unrecognized arguments"),
    ],
)
def test_usage_errors_exit_2(cli: Runner, tool: str, args: list[str], needle: str) -> None:
    res = cli(tool, *args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert "no omview agent" not in res.stderr  # rejected before any connection attempt


def test_mosmon_without_terminal_says_use_once(cli: Runner, tmp_path: Path) -> None:
    # subprocess stdout is a pipe: the curses monitor must refuse cleanly, before connecting
    res = cli("mosmon")
    assert res.returncode == 2
    assert "needs a terminal; use 'mosmon --once'" in res.stderr


# --- kernel-only verbs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "why"),
    [
        ("mfs", "MFS"),
        ("nomfs", "MFS"),
        ("gettune", "overhead"),
        ("getyard", "yardstick"),
        ("setyard", "yardstick"),
    ],
)
def test_kernel_only_verbs_not_applicable(cli: Runner, verb: str, why: str) -> None:
    res = cli("mosctl", verb, *(["this"] if verb == "setyard" else []))
    assert res.returncode == 2
    assert res.stderr.startswith(f"mosctl: {verb}: not applicable on omview: ")
    assert why in res.stderr
    assert "Traceback" not in res.stderr


# --- setpe -w: the map file is checked locally, errors name file:line -----------------------


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("1 10.0.0.1 1\n2 10.0.0.2 x\n", 2, "count 'x' is neither a number nor ALIAS"),
        ("# nodes\n\n1 10.0.0.1\n", 3, "expected 3 fields"),
        ("1 10.0.0.1 2\n2 10.0.0.9 1\n", 2, "node ID 2 is already defined on line 1"),
        ("1 node-a 3\n", 1, "needs an IP address, not the hostname"),
        ("0 10.0.0.1 1\n", 1, "node ID 0 is outside 1..65535"),
        ("1 10.0.0.1 1\n5 10.0.0.7 ALIAS\n", 2, "ALIAS for node 5, but no line defines node 5"),
    ],
)
def test_setpe_w_reports_file_line_reason(
    cli: Runner, tmp_path: Path, text: str, line: int, reason: str
) -> None:
    path = tmp_path / "bad.map"
    path.write_text(text)
    res = cli("setpe", "-w", "-f", str(path))
    assert res.returncode == 2
    assert res.stderr.startswith(f"setpe: {path}:{line}: ")
    assert reason in res.stderr
    assert "Traceback" not in res.stderr


def test_setpe_w_refuses_a_device_or_a_huge_file(cli: Runner, tmp_path: Path) -> None:
    res = cli("setpe", "-w", "-f", "/dev/zero")  # once grew to 3.5 GB
    assert res.returncode == 2
    assert "setpe: /dev/zero: cannot read the map file: not a regular file" in res.stderr
    big = tmp_path / "big.map"
    big.write_bytes(b"#\n" * (1 << 20))
    res = cli("setpe", "-w", "-f", str(big))
    assert res.returncode == 2
    assert f"setpe: {big}: cannot read the map file: larger than 1048576 bytes" in res.stderr
    assert "Traceback" not in res.stderr


def test_setpe_w_missing_and_empty_file(cli: Runner, tmp_path: Path) -> None:
    res = cli("setpe", "-w", "-f", str(tmp_path / "nope.map"))
    assert res.returncode == 2
    nope = tmp_path / "nope.map"
    assert f"setpe: {nope}: cannot read the map file: No such file or directory" in res.stderr
    empty = tmp_path / "empty.map"
    empty.write_text("# nothing here\n")
    res = cli("setpe", "-w", "-f", str(empty))
    assert res.returncode == 2
    assert "the map defines no nodes" in res.stderr


def test_setpe_w_good_file_then_needs_agent(cli: Runner, tmp_path: Path) -> None:
    good = tmp_path / "good.map"
    good.write_text("1 10.0.0.1 2\n")
    res = cli("setpe", "-w", "-f", str(good))
    assert res.returncode == 4  # parsed fine, then no agent to hand it to


# --- pure formatting -----------------------------------------------------------------------


def _node(node_id: int, status: str = "up", **kw: object) -> NodeInfo:
    return NodeInfo(id=node_id, address=f"10.0.0.{node_id % 250}", status=status, **kw)  # type: ignore[arg-type]


def test_whois_lines_resolve_both_ways() -> None:
    row = {"id": 3, "address": "10.0.0.3", "hostname": "node3", "addresses": ["10.0.0.3", "10.1.0.3"]}
    assert mosctl.whois_lines("3", row) == ["10.0.0.3 (node3) alias 10.1.0.3"]
    assert mosctl.whois_lines("10.0.0.3", row) == ["3"]
    assert mosctl.whois_lines("node3", [row]) == ["3"]
    assert mosctl.whois_lines(None, row) == ["3 10.0.0.3 (node3) alias 10.1.0.3"]


def test_describe_agent_reports() -> None:
    assert mosctl.describe(None) == []
    assert mosctl.describe("2 guests sent away") == ["2 guests sent away"]
    assert mosctl.describe({"note": "later", "message": "done", "moved": [101, 102], "failed": []}) == [
        "done",
        "later",
        "failed: none",
        "moved: 101, 102",
    ]


def test_status_lines_show_flags_and_criu() -> None:
    rec = _node(1, load=42, cpus=2, tmem=2 << 30, mem=1 << 30, rmem=1 << 29, util=21, hostname="h1").to_dict()
    rec["criu"] = {"checked": True, "ok": False, "path": None, "detail": "criu not installed"}
    rec["mode"] = "map"
    flags = {
        "stay": True,
        "lstay": False,
        "block": True,
        "quiet": False,
        "speed": 7609,
        "decay_interval": 1,
        "slow_decay": 975,
        "fast_decay": 926,
    }
    text = "\n".join(mosctl.status_lines(rec, flags))
    assert "This is omview node #1 (10.0.0.1, host h1)" in text
    assert "stay:        yes" in text and "block:       yes" in text and "lstay:       no" in text
    assert "speed:       7609" in text
    assert "load:        42" in text and "cpus:        2" in text
    assert "2.0 GiB total, 1.0 GiB available, 512.0 MiB free" in text
    assert "criu:        not available, criu not installed" in text
    assert "membership:  map (from a map file or setpe)" in text


def _proc(pid: int, where: int, **kw: object) -> ProcessInfo:
    base: dict[str, object] = dict(
        ppid=1,
        uid=0,
        user="root",
        state="R",
        nice=0,
        cpu=12.5,
        rss=4096 * 1024,
        threads=1,
        name="burn",
        cmdline=("burn", "-n", "1"),
        home=1,
        where=where,
    )
    base.update(kw)
    return ProcessInfo(pid=pid, **base)  # type: ignore[arg-type]


def test_mps_marks_numbers_from_an_old_report() -> None:
    """A job on a node that stopped reporting: its row says so (STAT R~), as the box dims it."""
    lines = mps.format_table([_proc(10, 3, stats_age=42.0), _proc(11, 3, stats_age=-1.0), _proc(12, 3)], 1,
                             cantmove=False, width=None)  # fmt: skip
    assert [line.split()[3] for line in lines[1:]] == ["R~", "R~", "R"]


def test_mps_table_node_column_and_cantmove() -> None:
    procs = [
        _proc(10, 1),
        _proc(11, 3, lock=True, nmigs=2, cantmove="locked"),
        _proc(12, 1, cmdline=(), name="kworker"),
    ]
    lines = mps.format_table(procs, 1, cantmove=True, width=None)
    assert lines[0].split() == [
        "PID",
        "USER",
        "N#",
        "STAT",
        "NI",
        "%CPU",
        "RSS",
        "LOCK",
        "NMIGS",
        "CANTMOVE",
        "COMMAND",
    ]
    assert lines[1].split() == [
        "10",
        "root",
        "0",
        "R",
        "0",
        "12.5",
        "4096",
        "no",
        "0",
        "-",
        "burn",
        "-n",
        "1",
    ]
    assert lines[2].split()[2] == "3" and "locked" in lines[2] and lines[2].split()[7] == "yes"
    assert lines[3].endswith("[kworker]")
    narrow = mps.format_table(procs, 1, cantmove=False, width=30)
    assert all(len(line) <= 30 for line in narrow) and "CANTMOVE" not in narrow[0]


def _frame(nodes: list[NodeInfo], view: mosmon.View, w: int, h: int) -> list[str]:
    frame = mosmon.render(nodes, view, w, h, my_id=1, clock="12:00:00")
    assert len(frame) <= h
    lines = ["".join(t for t, _ in line) for line in frame]
    assert all(len(line) <= w for line in lines)
    return lines


def test_mosmon_frame_bars_down_nodes_and_total() -> None:
    nodes = [_node(1, load=150), _node(2, status="down", load=80), _node(25611, load=30)]
    lines = _frame(nodes, mosmon.View(show_total=True), 60, 16)
    text = "\n".join(lines)
    assert lines[0].startswith("omview mosmon: load") and lines[0].endswith("12:00:00")
    assert "machines: 3 configured, 2 up, 1 down | total load 180" in text
    axis = next(line for line in lines if line.lstrip().startswith("+"))
    assert axis.split() == ["+*1", "#2", "#25611"]
    assert "DOWN" in text and "150" in text and "30" in text
    # node 1 (load 150 of scale 200) has a taller bar than node 25611 (30)
    col1 = sum(1 for line in lines if line[7:13] == "######")
    col3 = sum(1 for line in lines if line[21:27] == "######")
    assert col1 > col3 > 0


@pytest.mark.parametrize("mode", mosmon.MODES)
@pytest.mark.parametrize(
    ("w", "h"), [(0, 0), (1, 1), (10, 3), (23, 7), (24, 8), (40, 9), (80, 24), (200, 60)]
)
def test_mosmon_any_size_never_overflows(mode: str, w: int, h: int) -> None:
    nodes = [
        _node(
            i,
            load=i * 37,
            tmem=1 << 30,
            mem=1 << 29,
            util=i,
            speed=1000 * i,
            status="down" if i % 4 == 0 else "up",
        )
        for i in range(1, 30)
    ]
    lines = _frame(nodes, mosmon.View(mode=mode, show_total=True), w, h)
    if w >= mosmon.MIN_WIDTH and h >= mosmon.MIN_HEIGHT:
        assert len(lines) == h
        assert "/29]" in lines[0] or w >= 200
    elif w and h:
        assert lines[0].startswith("mosmon: terminal too small"[:w])


def test_mosmon_scrolling_offset_is_clamped() -> None:
    nodes = [_node(i) for i in range(1, 40)]
    view = mosmon.View(offset=1000)
    lines = _frame(nodes, view, 40, 12)
    assert "/39]" in lines[0]
    assert view.offset == 39 - (40 - mosmon.Y_AXIS) // 5
    assert lines[-2].split()[-1] == "#39"
