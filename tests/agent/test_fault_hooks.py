"""Fault-injection hooks work only in test mode: a hook file under a shipping agent does nothing and is
logged once; test_mode = true (what omview-cluster writes) honours it and says so loudly at start."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from omview.agent import config
from omview.agent.migration.faults import FAULT_DIR, FaultHooks
from tests.support.agents import Cluster, make_base, wait_for


def hooks_dir(state: Path) -> Path:
    d = state / FAULT_DIR
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_a_hook_file_under_a_non_test_agent_does_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = hooks_dir(tmp_path)
    for name, value in (("method", "lazy"), ("stall-transfer", "30"), ("corrupt-image", ""),
                        ("pause-before-restore", "60")):  # fmt: skip
        (d / name).write_text(value)
    hooks = FaultHooks(str(tmp_path), enabled=False)
    with caplog.at_level(logging.WARNING, logger="omview.agent.migration.faults"):
        assert hooks.value("method") is None
        assert not hooks.on("corrupt-image")
        assert hooks.seconds("stall-transfer") is None
        hooks.pause("pause-before-restore")  # returns at once: no pause
    ignored = [r for r in caplog.records if "ignored the fault hook" in r.getMessage()]
    assert len(ignored) == 1 and "method" in ignored[0].getMessage()  # logged once, not per hook


def test_test_mode_honours_the_hooks(tmp_path: Path) -> None:
    d = hooks_dir(tmp_path)
    (d / "method").write_text("images\n")
    (d / "stall-transfer").write_text("")
    (d / "pause-after-restore").write_text("0.01")
    hooks = FaultHooks(str(tmp_path), enabled=True)
    assert hooks.value("method") == "images"
    assert hooks.seconds("stall-transfer") == 5.0  # empty: the default
    assert hooks.value("corrupt-image") is None and not hooks.on("corrupt-image")
    hooks.pause("pause-after-restore")


def test_test_mode_is_off_unless_configured(tmp_path: Path) -> None:
    path = str(tmp_path / "agent.toml")
    assert config.parse("", path=path).test_mode is False
    assert config.parse("test_mode = true", path=path).test_mode is True


@pytest.fixture
def base() -> Iterator[str]:
    b = make_base()
    yield b
    shutil.rmtree(b, ignore_errors=True)


@pytest.mark.parametrize("test_mode", [False, True])
def test_the_agent_says_at_start_what_it_does_with_hooks(base: str, test_mode: bool) -> None:
    c = Cluster(base, 1, **({"test_mode": True} if test_mode else {}))
    agent = c.agents[0]
    (hooks_dir(Path(agent.state_dir)) / "method").write_text("lazy")
    try:
        c.start()
        if test_mode:
            wait_for(lambda: "TEST MODE: fault-injection hooks" in agent.log(), 10, "the test-mode warning")
            assert "ignoring the fault hooks" not in agent.log()
        else:
            wait_for(lambda: "ignoring the fault hooks" in agent.log(), 10, "the ignored-hooks warning")
            assert "TEST MODE" not in agent.log()
        assert os.path.exists(agent.socket)
    finally:
        c.stop()


def test_number_hooks(tmp_path: Path) -> None:
    d = hooks_dir(tmp_path)
    hooks = FaultHooks(str(tmp_path), enabled=True)
    assert hooks.number("flip-image-byte") is None
    (d / "flip-image-byte").write_text("")
    assert hooks.number("flip-image-byte") == 0
    (d / "flip-image-byte").write_text("12345\n")
    assert hooks.number("flip-image-byte") == 12345
    assert FaultHooks(str(tmp_path), enabled=False).number("flip-image-byte") is None


@pytest.mark.parametrize("flip", [None, 0, 1, 7 * 2 + 1, 2 * 300_001])
def test_flip_image_byte_is_caught_by_the_receivers_sums(tmp_path: Path, flip: int | None) -> None:
    """The hook inverts one byte on the wire, before the receiver hashes it: the file that lands differs
    from the source's in exactly that byte, and the sums name it (the target then refuses to restore)."""
    import socket
    import threading

    from omview.agent.migration import stream

    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "jobs" / "1-42").mkdir(parents=True)
    blobs = {"pages-1.img": os.urandom(300_001), "core-1.img": os.urandom(7)}
    for name, data in blobs.items():
        (src / "images" / name).write_bytes(data)
    (src / "jobs" / "1-42" / "out").write_bytes(b"step 0\n")
    files = stream.collect(str(src / "images"), str(src / "jobs"), "1-42", set())
    a, b = socket.socketpair()
    dst = tmp_path / "dst"
    (dst / "images").mkdir(parents=True)
    sent: dict[str, str] = {}
    t = threading.Thread(target=lambda: sent.update(stream.send_files(a, files)))
    t.start()
    res = stream.receive_files(b, str(dst / "images"), str(dst), flip=flip)
    t.join(10)
    a.close()
    b.close()
    assert (dst / "1-42" / "out").read_bytes() == b"step 0\n"
    diffs = {}
    for name, data in blobs.items():
        got = (dst / "images" / name).read_bytes()
        assert len(got) == len(data)
        diffs[name] = [i for i in range(len(data)) if got[i] != data[i]]
    if flip is None:
        assert res["ok"] and not res["problems"] and res["sums"] == sent
        assert all(not d for d in diffs.values())
        return
    images = sorted((i, f.name) for i, f in enumerate(files) if f.dest == "img")
    name = images[flip % 2][1]
    offset = flip // 2 % len(blobs[name])
    assert diffs[name] == [offset] and all(not d for n, d in diffs.items() if n != name)
    assert not res["ok"] and res["problems"] == [f"{name} differs (sha256)"]
