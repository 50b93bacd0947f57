"""Issue 13, defect 3, without a cluster: what the target checks before CRIU reopens a job's files as
root (movable.check_here with the facts movable.tree_files records on the source)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from omview.agent.node import movable


def test_tree_files_records_type_owner_mode_and_access(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x" * 10)
    f.chmod(0o640)
    code = f"import os, time; fd = os.open({str(f)!r}, os.O_RDWR); print('ok', flush=True); time.sleep(30)"
    # no inherited descriptors (pytest captures into deleted files, where the scan stops)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert p.stdout is not None and p.stdout.readline() == "ok\n"
        item = {i["path"]: i for i in movable.tree_files(p.pid)}[str(f)]
    finally:
        p.kill()
        p.wait()
    assert item == {"path": str(f), "kind": "file", "size": -1, "uid": os.getuid(), "gid": os.getgid(),
                    "mode": 0o640, "access": "rw"}  # fmt: skip


def test_links_owner_mode_and_the_owners_rights_are_checked(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    f, other = d / "f", d / "other"
    f.write_text("public\n")
    other.write_text("SECRET\n")
    f.chmod(0o644)
    st = f.stat()
    item = {"path": str(f), "kind": "file", "size": st.st_size, "uid": st.st_uid, "gid": st.st_gid,
            "mode": 0o644, "access": "r"}  # fmt: skip
    assert movable.check_here(2, [], [item], 1, owner=(65534, 65534)) == []
    # the owner may not write a 0644 file of someone else
    assert "may not open" in movable.check_here(2, [], [dict(item, access="rw")], 1, owner=(65534, 65534))[0]
    f.chmod(0o600)
    assert "mode 600 on node 2" in movable.check_here(2, [], [item], 1)[0]
    f.chmod(0o644)
    f.unlink()
    f.symlink_to(other)
    assert "symbolic link" in movable.check_here(2, [], [item], 1, owner=(0, 0))[0]
    f.unlink()
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("public\n")
    d.rename(tmp_path / "gone")
    d.symlink_to(tmp_path / "real")  # a link on the way, not at the end
    assert "symbolic link or lies under one" in movable.check_here(2, [], [item], 1)[0]


def _sleeper(**kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "30"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]  # fmt: skip


def test_another_users_process_without_cap_sys_resource_says_why() -> None:
    """CRIU cannot dump another user's process when the agent lacks CAP_SYS_RESOURCE (prlimit): the
    process list said movable and the dump failed with "Can't get rlimit 0"."""
    lacking = not movable._agent_has_cap(movable.CAP_SYS_RESOURCE)
    for kw, other in (({}, False), ({"user": 65534, "group": 65534}, True)):
        p = _sleeper(**kw)
        try:
            time.sleep(0.1)  # exec'd
            why = movable.path_rules(p.pid)
        finally:
            p.kill()
            p.wait()
        if other and lacking:
            assert "uid 65534" in why and "CAP_SYS_RESOURCE" in why
        else:
            assert why == ""


def test_attached_sysv_shared_memory_is_a_reason() -> None:
    code = (
        "import ctypes, sys, time; libc = ctypes.CDLL(None, use_errno=True);"
        "libc.shmat.restype = ctypes.c_void_p;"
        "i = libc.shmget(0, 4096, 0o1600); assert i >= 0;"
        "a = libc.shmat(i, None, 0); libc.shmctl(i, 0, None);"  # IPC_RMID: gone once detached
        "print('ok', flush=True); time.sleep(30)"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert p.stdout is not None and p.stdout.readline() == "ok\n"
        assert "SysV shared memory" in movable.path_rules(p.pid)
    finally:
        p.kill()
        p.wait()
