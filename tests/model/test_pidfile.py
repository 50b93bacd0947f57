"""The PID files of the agent and the collector: missing, stale, reused, held, garbled, unreadable."""

from __future__ import annotations

import builtins
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omview.model import pidfile, procfs
from omview.model.pidfile import PidFile, PidFileError, PidFileHeld


def _is_sleep(args: list[str]) -> bool:
    """The "daemon" of these tests: a `sleep` process."""
    return bool(args) and os.path.basename(args[0]) == "sleep"


def _never(args: list[str]) -> bool:
    return False


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def gone_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _take(path: Path, is_daemon: pidfile.IsDaemon = _never) -> PidFile:
    pf = PidFile(str(path), is_daemon, "a test daemon")
    pf.acquire()
    return pf


def test_missing_file_is_not_running_and_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "d.pid"
    assert pidfile.read_pid(str(path)) is None
    assert pidfile.holder(str(path), _never, "a test daemon") == (None, "")
    pf = _take(path)
    assert pidfile.read_pid(str(path)) == os.getpid() and pf.replaced == ""
    assert os.listdir(path.parent) == ["d.pid"]  # the temporary file it was linked from is gone
    pf.release()
    assert not path.exists()


def test_stale_pid_is_replaced(tmp_path: Path, gone_pid: int) -> None:
    path = tmp_path / "d.pid"
    path.write_text(f"{gone_pid}\n")
    assert pidfile.holder(str(path), _is_sleep, "a test daemon") == (None, f"pid {gone_pid} is gone")
    pf = _take(path)
    assert pf.replaced == f"pid {gone_pid} is gone"
    assert pidfile.read_pid(str(path)) == os.getpid()
    pf.release()


def test_pid_reused_by_another_program_is_replaced_and_left_alone(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    path = tmp_path / "d.pid"
    path.write_text(f"{sleeper.pid}\n")
    why = f"pid {sleeper.pid} is not a test daemon"
    assert pidfile.holder(str(path), _never, "a test daemon") == (None, why)
    pf = _take(path)
    assert pf.replaced == why and pidfile.read_pid(str(path)) == os.getpid()
    assert sleeper.poll() is None
    pf.release()


def test_a_live_daemon_holds_the_file(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    path = tmp_path / "d.pid"
    path.write_text(f"{sleeper.pid}\n")
    assert pidfile.holder(str(path), _is_sleep, "a test daemon") == (sleeper.pid, "")
    with pytest.raises(PidFileHeld) as held:
        _take(path, _is_sleep)
    assert held.value.pid == sleeper.pid
    assert path.read_text() == f"{sleeper.pid}\n"


def test_a_zombie_is_gone() -> None:
    proc = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while procfs.state(proc.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert procfs.state(proc.pid) == "Z" and not pidfile.pid_alive(proc.pid)
    finally:
        proc.wait()


@pytest.mark.parametrize("content", ["", "\n", "hello\n", "0\n", "-5\n", "12 34\n", "\x00\x00"])
def test_garbled_file_is_an_error_and_is_not_overwritten(tmp_path: Path, content: str) -> None:
    path = tmp_path / "d.pid"
    path.write_text(content)
    with pytest.raises(PidFileError, match="holds no PID") as err:
        pidfile.read_pid(str(path))
    assert str(path) in str(err.value)
    with pytest.raises(PidFileError):
        pidfile.holder(str(path), _never, "a test daemon")
    with pytest.raises(PidFileError):
        _take(path)
    assert path.read_text() == content
    assert os.listdir(tmp_path) == ["d.pid"]


def test_unreadable_file_is_an_error_and_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "d.pid"
    path.write_text("1\n")
    real_open = builtins.open

    def deny(file: Any, *args: Any, **kw: Any) -> Any:
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kw)

    monkeypatch.setattr(builtins, "open", deny)  # root reads any file: refuse it this way
    with pytest.raises(PidFileError, match="cannot read it: Permission denied"):
        pidfile.read_pid(str(path))
    with pytest.raises(PidFileError):
        _take(path)
    monkeypatch.undo()
    assert path.read_text() == "1\n"


def test_a_directory_in_its_place_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "d.pid"
    path.mkdir()
    with pytest.raises(PidFileError, match="cannot read it"):
        pidfile.read_pid(str(path))
    with pytest.raises(PidFileError):
        _take(path)
    assert path.is_dir()


def test_a_process_whose_state_cannot_be_read_counts_as_alive(
    monkeypatch: pytest.MonkeyPatch, gone_pid: int
) -> None:
    monkeypatch.setattr(pidfile, "read_stat", lambda pid: None)
    assert pidfile.pid_alive(os.getpid())  # the kernel says it exists: not knowing is no proof it ended
    assert not pidfile.pid_alive(gone_pid)


def test_a_process_whose_command_line_cannot_be_read_is_not_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen[bytes]
) -> None:
    path = tmp_path / "d.pid"
    path.write_text(f"{sleeper.pid}\n")
    monkeypatch.setattr(pidfile, "command_line", lambda pid: None)
    with pytest.raises(PidFileError, match="cannot be read"):
        _take(path)
    assert path.read_text() == f"{sleeper.pid}\n"


def test_release_leaves_a_file_that_names_another_process(tmp_path: Path) -> None:
    path = tmp_path / "d.pid"
    pf = _take(path)
    path.write_text("1\n")  # taken over meanwhile (by hand)
    pf.release()
    assert path.read_text() == "1\n"
