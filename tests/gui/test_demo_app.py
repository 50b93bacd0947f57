"""``openmosixview --demo`` end to end (root): the real program under its own Xvfb brings up the
demo cluster, shows a row for every node, and a quit signal (SIGTERM from a service manager,
Ctrl-C's SIGINT, a closed terminal's SIGHUP) closes it and leaves no namespace, sshd or agent behind
(with --keep-demo the cluster stays)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omview.model import procfs
from omview.testbed import Cluster, leftovers, teardown

pytestmark = pytest.mark.cluster

OPENMOSIXVIEW = Path(sys.executable).parent / "openmosixview"


def alive(pid: int) -> bool:
    return procfs.alive(pid, None)


def wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float, seen: list[str]) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line:
            seen.append(line)
            if text in line:
                return line
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.05)
    raise AssertionError(f"no {text!r} from openmosixview within {timeout:.0f} s; it said:\n{''.join(seen)}")


@pytest.mark.parametrize(
    ("sig", "keep"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGHUP, False), (signal.SIGTERM, True)],
    ids=["SIGTERM", "SIGINT", "SIGHUP", "SIGTERM-keep-demo"],
)
def test_demo_window_shows_every_node_and_a_signal_takes_it_all_down(
    xvfb: str, tmp_path_factory: pytest.TempPathFactory, sig: signal.Signals, keep: bool
) -> None:
    state = tmp_path_factory.mktemp("cluster")
    home = tmp_path_factory.mktemp("home")
    env = dict(os.environ, DISPLAY=xvfb, QT_QPA_PLATFORM="xcb", HOME=str(home), XDG_CONFIG_HOME=str(home))
    argv = [str(OPENMOSIXVIEW), "--demo", "--demo-state", str(state), "--demo-nodes", "2",
            "--settings", str(home / "openmosixview.conf"), *(["--keep-demo"] if keep else [])]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        wait_for_line(proc, "window shown", 60, seen)
        line = wait_for_line(proc, "connected to entry node", 60, seen)
        assert "2 nodes, 2 rows" in line, line
        # the window is on the X display
        shown = subprocess.run(["xwininfo", "-display", xvfb, "-name", "openmosixview"], capture_output=True, text=True)
        assert shown.returncode == 0 and "Map State: IsViewable" in shown.stdout, shown.stdout + shown.stderr
        nodes = Cluster.load(state).nodes
        pids = [p for n in nodes for p in (n.sshd_pid, n.agent_pid, n.holder_pid) if p]
        assert pids and all(alive(p) for p in pids)
        proc.send_signal(sig)
        assert proc.wait(60) == 128 + sig, "".join(seen)
        # SIGINT once printed a KeyboardInterrupt traceback from a timer slot and the GUI kept running
        said = "".join(seen) + (proc.stderr.read() if proc.stderr is not None else "")
        assert "Traceback" not in said and "KeyboardInterrupt" not in said, said
        if keep:  # --keep-demo: the cluster outlives the window
            assert leftovers(state) and all(alive(p) for p in pids)
        else:
            assert not leftovers(state), leftovers(state)
            assert [p for p in pids if alive(p)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        teardown(state)
