"""Tests for scripts/install-criu.sh: the recorded CRIU works on this kernel, and a real job survives
dump -> kill -> restore (feasibility §2.1-2.2, on the host, no netns). Root only; fails when not root."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from omview.model import procfs

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install-criu.sh"
BASE = Path(os.environ.get("OMVIEW_CRIU_BASE", "/opt/omview/criu"))
PATH_FILE = BASE / "criu-path"
WRAPPER = BASE / "bin" / "criu"
JOB_PYTHON = "/usr/bin/python3"  # the system interpreter: same path on every node (feasibility §2.9)

COUNTER = textwrap.dedent(
    """
    import os, sys, time
    path = sys.argv[1]
    n = 0
    while True:
        n += 1
        # open/append/close each time: no regular file is held open across a dump, so its size
        # cannot disagree with the image (CRIU's "has bad size" check).
        with open(path, "a") as f:
            f.write("%d %d %.3f\\n" % (n, os.getpid(), time.time()))
        time.sleep(0.1)
    """
)


@pytest.fixture
def root() -> None:
    # CI runs as root; CRIU needs it. Never skip silently: a non-root run is a failure to fix.
    if os.geteuid() != 0:
        pytest.fail("tests/migration/test_criu_install.py must run as root (CRIU needs it); run pytest as root")


@pytest.fixture
def criu(root: None) -> str:
    if not PATH_FILE.is_file():
        pytest.fail(f"{PATH_FILE} is missing; run `bash {SCRIPT}` as root first")
    path = PATH_FILE.read_text().strip()
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"{PATH_FILE} names {path!r}, which is not an executable; rerun `bash {SCRIPT}`")
    return path


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    return procfs.alive(pid, None)


def proc_state(pid: int) -> str | None:
    return procfs.state(pid)


def descendants(pid: int) -> list[int]:
    """All descendants of pid (by /proc/*/task/*/children), deepest last."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def kill9(pid: int, marker: str | None = None) -> None:
    """SIGKILL pid; with marker, only if its command line still contains it (guards PID reuse)."""
    if marker is not None:
        try:
            if marker not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                return
        except OSError:
            return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_bounded(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run cmd; on timeout kill it and every process it started (a hung restore can leave tasks)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *descendants(proc.pid)]:
            kill9(pid)
        proc.communicate(timeout=10)
        pytest.fail(f"{cmd[:2]} did not finish within {timeout:.0f} s; killed it and its children")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def counts(path: Path) -> list[tuple[int, int]]:
    """(count, pid-inside-the-job) for every complete line of the counter file."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
            n, pid, _t = line.split()
            rows.append((int(n), int(pid)))
    return rows


def log_tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


SOURCES_DEB822 = """\
# the main archive, as Debian's installer writes it
Types: deb deb-src
URIs: http://mirror.example/debian/
Suites: {cn} {cn}-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: {cn}-security
Components: main

Types: deb
URIs: http://disabled.example/debian
Suites: {cn}
Components: main
Enabled: no

Types: deb
URIs: https://thirdparty.example/linux/debian
Suites: {cn}
Components: stable

Types: deb
URIs:
 http://second.example/debian
Suites: stable
Components: main
"""

SOURCES_LIST = """\
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://third.example/debian {cn} main
deb http://mirror.example/debian {cn} main
# deb http://commented.example/debian {cn} main
deb-src http://src.example/debian {cn} main
deb http://mirror.example/debian-security {cn}-security main
deb cdrom:[Debian GNU/Linux 12]/ {cn} main
"""


def test_archive_detection_from_apt_sources(tmp_path: Path) -> None:
    """The script finds the main Debian archive(s) in deb822 and one-line sources, nothing else."""
    cn = re.search(r"^VERSION_CODENAME=(\S+)$", Path("/etc/os-release").read_text(), re.M)
    assert cn, "/etc/os-release has no VERSION_CODENAME"
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(SOURCES_DEB822.format(cn=cn.group(1)))
    (tmp_path / "sources.list").write_text(SOURCES_LIST.format(cn=cn.group(1)))
    conf = tmp_path / "apt.conf"
    conf.write_text(f'Dir::Etc::sourcelist "{tmp_path}/sources.list";\nDir::Etc::sourceparts "{parts}";\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMVIEW_CRIU_")}
    res = subprocess.run(
        ["bash", str(SCRIPT), "--print-archive"], env={**env, "APT_CONFIG": str(conf)},
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [
        "http://mirror.example/debian", "http://second.example/debian", "http://third.example/debian",
    ]


def test_wrapper_reports_criu_4(root: None) -> None:
    assert WRAPPER.is_file(), f"{WRAPPER} is missing; run `bash {SCRIPT}` as root"
    res = run_bounded([str(WRAPPER), "--version"], timeout=30)
    assert res.returncode == 0, res.stderr
    m = re.search(r"Version:\s*(\d+)\.(\d+)", res.stdout)
    assert m, f"unexpected `criu --version` output: {res.stdout!r}"
    assert int(m.group(1)) == 4, f"wrapper runs CRIU {m.group(1)}.{m.group(2)}, expected 4.x"


def test_recorded_criu_passes_check(criu: str) -> None:
    res = run_bounded([criu, "check"], timeout=60)
    assert res.returncode == 0, f"`{criu} check` failed:\n{res.stdout}{res.stderr}"
    assert "Looks good" in res.stdout + res.stderr


def test_install_script_is_idempotent_and_fast(root: None) -> None:
    first = run_bounded(["bash", str(SCRIPT)], timeout=280)  # installs only if something is missing
    assert first.returncode == 0, first.stderr[-3000:]
    t0 = time.monotonic()
    second = run_bounded(["bash", str(SCRIPT)], timeout=60)
    elapsed = time.monotonic() - t0
    assert second.returncode == 0, second.stderr[-3000:]
    assert elapsed < 2.0, f"second run took {elapsed:.2f} s (expected the < 2 s fast path)"
    assert "criu check: Looks good" in second.stdout
    assert PATH_FILE.read_text().count("\n") == 1, "criu-path must hold exactly one line"


def test_dump_kill_restore_continues_counter(criu: str, tmp_path: Path) -> None:
    script = tmp_path / "counter.py"
    script.write_text(COUNTER)
    count_file = tmp_path / "count.txt"
    img = tmp_path / "img"
    img.mkdir()  # criu does not create -D
    jobs: list[int] = []  # job PIDs we own (source, restored copy), killed in `finally`
    launcher: subprocess.Popen[bytes] | None = None
    # Feasibility §2.1: own session, PID 1 of its own pid ns (so the restore never meets a busy PID),
    # no terminal, stdio to files; the inner setsid makes the job its own session leader. The job's
    # stdio files are opened by `sh -c exec` inside, not inherited from unshare: when the job is
    # killed, util-linux 2.38's unshare writes "sigprocmask unblock failed" to *its* stderr, and had
    # the job shared that file, the restore would fail with "stderr has bad size".
    inner = f'exec {JOB_PYTHON} "$0" "$1" </dev/null >stdout 2>stderr'
    with open(tmp_path / "launcher.log", "wb") as log:
        launcher = subprocess.Popen(
            ["setsid", "unshare", "--pid", "--fork", "setsid", "/bin/sh", "-c", inner, str(script), str(count_file)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=tmp_path,
        )
    try:
        # launcher.pid is unshare itself: the outer setsid execs, as its caller is no group leader.
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children")
        wait_for(lambda: children.exists() and children.read_text().split() != [], 10, "unshare's child")
        job = int(children.read_text().split()[0])
        jobs.append(job)
        wait_for(lambda: len(counts(count_file)) >= 5, 20, "the counter to reach 5")
        assert all(p == 1 for _n, p in counts(count_file)), "the job is not PID 1 in its own pid ns"

        dump = run_bounded(
            [criu, "dump", "-t", str(job), "-D", str(img), "--leave-stopped", "-o", "dump.log"], timeout=60
        )
        assert dump.returncode == 0, f"criu dump failed:\n{log_tail(img / 'dump.log')}"
        assert proc_state(job) in ("T", "t"), "--leave-stopped should leave the source stopped"
        before = counts(count_file)
        last = before[-1][0]
        time.sleep(0.3)
        assert counts(count_file) == before, "the source kept counting after the dump"

        kill9(job)  # a pid-ns init ignores SIGTERM (feasibility §2.1)
        launcher.wait(timeout=10)
        wait_for(lambda: not alive(job), 10, "the source job to exit")

        pidfile = img / "restored.pid"
        restore = run_bounded(
            [criu, "restore", "-D", str(img), "-d", "--pidfile", str(pidfile), "-o", "restore.log"],
            timeout=60,
        )
        if pidfile.exists() and pidfile.read_text().strip():
            jobs.append(int(pidfile.read_text().strip()))
        assert restore.returncode == 0, f"criu restore failed:\n{log_tail(img / 'restore.log')}"
        new = int(pidfile.read_text().strip())
        assert alive(new), "restored job is not running"
        nspid = re.search(r"^NSpid:\s*(.*)$", Path(f"/proc/{new}/status").read_text(), re.M)
        assert nspid and nspid.group(1).split()[-1] == "1", f"restored job not PID 1 in a pid ns: {nspid}"

        wait_for(lambda: counts(count_file)[-1][0] >= last + 5, 20, "the restored counter to advance by 5")
        after = [n for n, _p in counts(count_file)]
        # No restart: the numbers go on from where the dump left them, with no gap and no reset.
        assert after == list(range(1, len(after) + 1)), f"counter restarted or skipped: {after}"
        assert after[len(before)] == last + 1
    finally:
        for pid in jobs:
            kill9(pid, marker=str(script))
        if launcher is not None and launcher.poll() is None:
            launcher.kill()
            launcher.wait(timeout=10)
        for pid in jobs:
            deadline = time.monotonic() + 10
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

