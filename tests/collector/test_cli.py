"""openmosixcollector end to end: real processes, PID files, signals, control socket, kill -9.

The daemon runs as ``python -m omview.collector``; most tests feed it ``--synthetic N`` (a
synthetic cluster instead of an agent), the last one a real omview agent on loopback.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from omview.collector import control
from omview.model import records
from omview.model.pidfile import read_pid
from tests.collector.conftest import cli, free_port
from tests.support.agents import Cluster, make_base

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]




def wait_for(pred, timeout: float = 15.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def ticks_in(logdir: Path) -> int:
    try:
        return len(records.History.open(str(logdir)).ticks)
    except (records.HistoryFormatError, records.HistoryRotated, FileNotFoundError):
        return 0


@pytest.fixture
def paths(tmp_path: Path) -> Iterator[dict[str, Path]]:
    p = {"logdir": tmp_path / "log", "pidfile": tmp_path / "run" / "collector.pid"}
    p["pidfile"].parent.mkdir()
    yield p
    # never leave a daemon behind, whatever the test did
    pid = read_pid(str(p["pidfile"]))
    if pid is not None and control.pid_alive(pid) and control.is_collector(pid):
        os.kill(pid, signal.SIGKILL)


def common(paths: dict[str, Path]) -> list[str]:
    return ["--logdir", str(paths["logdir"]), "--pidfile", str(paths["pidfile"])]


def test_no_argument_prints_the_short_help() -> None:
    r = cli()
    assert r.returncode == 0
    for flag in ("-d ", "-k ", "-n [LABEL]", "-r ", "--export csv"):
        assert flag in r.stdout


def test_daemon_start_checkpoint_rotate_stop(paths: dict[str, Path]) -> None:
    args = common(paths)
    r = cli("-d", *args, "--synthetic", "6", "--interval", "0.1")
    assert r.returncode == 0, r.stderr
    assert "started" in r.stdout
    pid = read_pid(str(paths["pidfile"]))
    assert pid is not None and control.pid_alive(pid) and control.is_collector(pid)
    assert os.getppid() != pid and os.getsid(pid) != os.getsid(0)  # detached into its own session
    wait_for(lambda: ticks_in(paths["logdir"]) >= 5, what="samples")

    second = cli("-d", *args, "--synthetic", "6")
    assert second.returncode == 1 and "already running" in second.stderr

    r = cli("-n", "render start", *args)
    assert r.returncode == 0 and "render start" in r.stdout, r.stderr
    r = cli("-n", *args)
    assert r.returncode == 0, r.stderr
    h = records.History.open(str(paths["logdir"]))
    assert [c.label for c in h.checkpoints] == ["render start", ""]

    r = cli("-s", *args)
    assert r.returncode == 0 and f"pid {pid}" in r.stdout and "6 nodes" in r.stdout
    r = cli("-s", "--json", *args)
    assert r.returncode == 0, r.stderr
    shape = json.loads(r.stdout)
    assert shape == {"running": True, "pid": pid, "nodes": 6, "ticks": shape["ticks"], "reason": None,
                     "logdir": str(paths["logdir"]), "pidfile": str(paths["pidfile"])}  # fmt: skip
    assert shape["ticks"] >= 5 and r.stdout.count("\n") == 1

    r = cli("-r", *args)
    assert r.returncode == 0, r.stderr
    backup = r.stdout.split("history saved to ", 1)[1].split(";", 1)[0]
    assert os.path.isdir(backup) and backup.startswith(str(paths["logdir"]) + "-")
    old = records.History.open(backup)
    assert [c.label for c in old.checkpoints] == ["render start", ""]
    # the backup is compressed in the background; it stays readable meanwhile and after
    wait_for(lambda: all(n.endswith(".xz") for n in os.listdir(backup)), what="compression")
    assert len(records.History.open(backup).ticks) == len(old.ticks)
    wait_for(lambda: ticks_in(paths["logdir"]) >= 3, what="samples in the new history")

    r = cli("-k", *args)
    assert r.returncode == 0 and f"stopped (pid {pid})" in r.stdout
    assert not control.pid_alive(pid)
    assert not paths["pidfile"].exists()
    assert not Path(control.control_path(str(paths["pidfile"]))).exists()
    log_text = (paths["logdir"] / "collector.log").read_text()
    assert "checkpoint 'render start'" in log_text and "stopping" in log_text

    r = cli("-k", *args)
    assert r.returncode == 1 and "no openmosixcollector is running" in r.stderr
    r = cli("-n", "late", *args)
    assert r.returncode == 1 and "start it with" in r.stderr
    r = cli("-s", "--json", *args)
    assert r.returncode == 1 and r.stderr == ""
    shape = json.loads(r.stdout)
    assert shape["running"] is False and shape["pid"] is None and "no openmosixcollector" in shape["reason"]
    assert set(shape) == {"running", "pid", "nodes", "ticks", "logdir", "pidfile", "reason"}
    r = cli("-k", "--json", *args)
    assert r.returncode == 1 and "--json goes with -s" in r.stderr


def test_stale_pid_files_are_recovered(paths: dict[str, Path]) -> None:
    args = common(paths)
    dead = subprocess.Popen(["true"])
    dead.wait()
    paths["pidfile"].write_text(f"{dead.pid}\n")
    r = cli("-d", *args, "--synthetic", "2", "--interval", "0.2")
    assert r.returncode == 0, r.stderr
    pid = read_pid(str(paths["pidfile"]))
    assert pid != dead.pid
    assert f"pid {dead.pid} is gone" in (paths["logdir"] / "collector.log").read_text()
    assert cli("-k", *args).returncode == 0

    # a PID that now belongs to some other program is stale too
    other = subprocess.Popen(["sleep", "30"])
    try:
        paths["pidfile"].write_text(f"{other.pid}\n")
        r = cli("-k", *args)
        assert r.returncode == 1 and "stale" in r.stderr
        assert other.poll() is None  # -k must never signal a process that is not a collector
        paths["pidfile"].write_text(f"{other.pid}\n")
        r = cli("-d", *args, "--synthetic", "2", "--interval", "0.2")
        assert r.returncode == 0, r.stderr
        assert "is not a collector" in (paths["logdir"] / "collector.log").read_text()
        assert cli("-k", *args).returncode == 0
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_garbled_pid_file_is_reported_and_kept(paths: dict[str, Path]) -> None:
    """The agent's PID-file rules (omview.model.pidfile): no PID in it is an error, never overwritten."""
    args = common(paths)
    paths["pidfile"].write_text("garbage\n")
    for flags in (["-d", "--synthetic", "2"], ["-f", "--synthetic", "2"], ["-k"], ["-s"]):
        r = cli(*flags, *args)
        assert r.returncode == 1 and "holds no PID" in r.stderr and str(paths["pidfile"]) in r.stderr, (flags, r)
    assert paths["pidfile"].read_text() == "garbage\n"
    paths["pidfile"].unlink()


def test_unwritable_log_directory_is_reported_before_detaching(
    paths: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "plainfile").write_text("")
    r = cli(
        "-d",
        "--logdir",
        str(tmp_path / "plainfile" / "log"),
        "--pidfile",
        str(paths["pidfile"]),
        "--synthetic",
        "2",
    )
    assert r.returncode == 1
    assert "cannot create the log directory" in r.stderr and "--logdir" in r.stderr
    assert not paths["pidfile"].exists()


def test_bad_options_say_what_is_wrong(paths: dict[str, Path]) -> None:
    r = cli("-d", *common(paths), "--interval", "0")
    assert r.returncode == 1 and "--interval" in r.stderr


def test_kill_9_at_random_moments_never_leaves_an_unreadable_file(paths: dict[str, Path]) -> None:
    """SIGKILL the collector while it writes, rotates and compresses; then read everything."""
    rng = random.Random(20251121)
    args = common(paths)
    # 50 ticks/s and a rotation every ~1.5 s, so kills land in every phase
    run = [
        PY,
        "-m",
        "omview.collector",
        "-f",
        *args,
        "--synthetic",
        "40",
        "--interval",
        "0.02",
        "--rotate-hours",
        "0.0004",
    ]
    for round_ in range(6):
        proc = subprocess.Popen(run, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(lambda p=proc: read_pid(str(paths["pidfile"])) == p.pid, what="start")
            time.sleep(rng.uniform(0.3, 2.5))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        for d in records.list_histories(str(paths["logdir"])):
            h = records.History.open(d)  # must never raise
            for nid in h.node_ids():
                s = h.series(nid)
                assert len(s) <= len(h.ticks)
            h.processes().at(h.end)
            damage = [p for p in h.problems if "damaged" in p or "dropped" in p]
            assert damage == [], (round_, d, damage)
    # a last clean run after all that picks up the pieces (stale PID file, partial rotations)
    r = cli("-d", *args, "--synthetic", "40", "--interval", "0.05")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: ticks_in(paths["logdir"]) >= 3, what="samples after the crashes")
    assert cli("-k", *args).returncode == 0
    histories = records.list_histories(str(paths["logdir"]))
    assert len(histories) >= 3
    assert not any(name.endswith(".partial") for name in os.listdir(paths["logdir"].parent))
    for d in histories:
        h = records.History.open(d)
        assert h.problems == [] and len(h.ticks) > 0


def test_export_csv(paths: dict[str, Path], tmp_path: Path) -> None:
    args = common(paths)
    assert cli("-d", *args, "--synthetic", "4", "--interval", "0.05").returncode == 0
    wait_for(lambda: ticks_in(paths["logdir"]) >= 20, what="samples")
    assert cli("-k", *args).returncode == 0
    out = tmp_path / "cluster.csv"
    r = cli("--export", "csv", "--history", str(paths["logdir"] / "cluster"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out.open()))
    h = records.History.open(str(paths["logdir"]))
    assert len(rows) == sum(len(h.series(n)) for n in h.node_ids())
    assert [float(r["epoch"]) for r in rows] == sorted(float(r["epoch"]) for r in rows)
    s = h.series(3)
    mine = [r for r in rows if r["node"] == "3"]
    assert [int(r["mem"]) for r in mine] == list(s.mem)
    assert {r["status"] for r in rows} <= {"up", "down"}
    r = cli("--export", "csv", "--history", str(tmp_path))
    assert r.returncode == 1 and "no 'cluster' file" in r.stderr




def test_openmetrics_endpoint(paths: dict[str, Path]) -> None:
    args = common(paths)
    port = free_port()
    r = cli("-d", *args, "--synthetic", "3", "--interval", "0.1", "--metrics-port", str(port))
    assert r.returncode == 0, r.stderr
    try:
        wait_for(lambda: ticks_in(paths["logdir"]) >= 2, what="samples")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            text = resp.read().decode()
        assert text.endswith("# EOF\n")
        load_lines = [line for line in text.splitlines() if line.startswith("omview_node_load{")]
        assert len(load_lines) == 3 and 'node="2"' in load_lines[1]
    finally:
        assert cli("-k", *args).returncode == 0


def test_with_a_real_agent_on_loopback(paths: dict[str, Path]) -> None:
    """The collector samples a real omview agent process (node 1 on 127.0.0.2)."""
    agents = Cluster(make_base(), 1)
    env = agents.agents[0].env
    args = common(paths)
    try:
        agents.start()
        r = cli("-d", *args, "--interval", "0.25", env=env)
        assert r.returncode == 0, r.stderr
        assert "the agent answers: 1 nodes" in r.stdout
        wait_for(lambda: ticks_in(paths["logdir"]) >= 4, timeout=30, what="samples from the agent")
        assert cli("-n", "with agent", *args, env=env).returncode == 0
        wait_for(lambda: ticks_in(paths["logdir"]) >= 6, timeout=30, what="more samples")
        assert cli("-k", *args, env=env).returncode == 0
    finally:
        agents.stop()
        shutil.rmtree(agents.base, ignore_errors=True)
    h = records.History.open(str(paths["logdir"]))
    assert h.problems == []
    assert h.node_ids() == [1] and h.nodes[1].address == "127.0.0.2"
    s = h.series(1)
    assert len(s) == len(h.ticks) >= 6
    assert set(s.status) == {1} and s.cpus[0] == os.cpu_count()
    assert 0 < s.mem[-1] <= s.tmem[-1]
    assert [c.label for c in h.checkpoints] == ["with agent"]
    procs = h.processes().at(h.end)
    assert os.getpid() in {p.pid for p in procs}  # process_scope "all": this test runner is listed


def test_systemd_unit_is_valid_and_uses_real_options() -> None:
    unit = ROOT / "resources" / "systemd" / "omview-collector.service"
    text = unit.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    argv = exec_start.split("openmosixcollector", 1)[1].split()
    # every option the unit passes must be one the CLI accepts (parse only, do not run)
    from omview.collector.__main__ import build_parser

    build_parser().parse_args(argv)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_node_is_never_an_ssh_option(paths: dict[str, Path], tmp_path: Path) -> None:
    """Issue 13, defect 10: --node='-oProxyCommand=touch FILE' used to run the command through ssh."""
    victim = tmp_path / "pwned"
    for act in ("-d", "-f"):
        r = cli(act, *common(paths), f"--node=-oProxyCommand=touch {victim}", timeout=30)
        assert r.returncode == 1 and "--node" in r.stderr and "not a host name" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    time.sleep(0.5)
    assert not victim.exists()
    assert not paths["pidfile"].exists()
