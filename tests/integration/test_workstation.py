"""The workstation install (issue 14): a real unprivileged user runs scripts/install-workstation.sh
into its home (a venv under ~/.local/share/omview, no root, no agent, no CRIU) and drives the
namespace cluster's agents over SSH with only its own ~/.ssh/config, key and known_hosts: the
classic CLI through ``ssh NODE omview-agent bridge`` ($OMVIEW_HOST), and the GUI's session offscreen.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from omview.testbed import Cluster

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]

#: The GUI's own session (omview.gui), as openmosixview opens it: ~/.ssh/config and nothing else.
GUI_PROBE = """
import json, os, sys, time
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtWidgets import QApplication
from omview.gui.connect import SshConnector, SshSettings
from omview.gui.session import ClusterSession
app = QApplication([])
session = ClusterSession(SshConnector(SshSettings()), sys.argv[1], poll_interval=0.5)
session.start()
end = time.monotonic() + 30
while time.monotonic() < end and not (len(session.table) == 2 and all(n.up for n in session.table)):
    app.processEvents()
    time.sleep(0.05)
print(json.dumps([[n.id, n.address, n.status, n.version] for n in session.table]))
session.stop()
"""


@pytest.fixture
def user() -> Iterator[pwd.struct_passwd]:
    """A temporary unprivileged account with its home in /tmp; removed (with its home) afterwards."""
    name = f"omvws{uuid.uuid4().hex[:8]}"
    home = f"/tmp/{name}"
    subprocess.run(["useradd", "--create-home", "--home-dir", home, "--shell", "/bin/sh", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def as_user(user: pwd.struct_passwd, argv: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ARGV as USER with a clean login-like environment (nothing of root's leaks in)."""
    base = {"HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        ["runuser", "-u", user.pw_name, "--", "env", "-i", *(f"{k}={v}" for k, v in {**base, **env}.items()), *argv],
        capture_output=True, text=True, timeout=timeout, cwd="/", stdin=subprocess.DEVNULL,
    )  # fmt: skip


def ssh_setup(user: pwd.struct_passwd, cluster: Cluster) -> None:
    """What a user has after ssh-copy-id: a key, known_hosts and ~/.ssh/config naming the nodes."""
    ssh = Path(user.pw_dir) / ".ssh"
    ssh.mkdir(mode=0o700)
    shutil.copy(cluster.identity_path, ssh / "id_omview")
    shutil.copy(cluster.known_hosts_path, ssh / "known_hosts")
    lines = []
    for n in cluster.nodes:
        lines += [f"Host {n.name} {n.address}", f"  HostName {n.address}"]
    lines += ["Host node* 10.77.*", "  User root", "  IdentityFile ~/.ssh/id_omview", "  IdentitiesOnly yes"]
    (ssh / "config").write_text("\n".join(lines) + "\n")
    for path in (ssh, *ssh.iterdir()):
        os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(0o700 if path.is_dir() else 0o600)


def test_a_user_installs_and_drives_the_cluster_over_ssh(
    make_cluster: Callable[..., Cluster], user: pwd.struct_passwd
) -> None:
    cluster = make_cluster(2)
    ssh_setup(user, cluster)
    # the real install: a venv in the user's home, dependencies from the configured package index
    r = as_user(user, ["sh", str(REPO / "scripts" / "install-workstation.sh")], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    venv = Path(user.pw_dir) / ".local" / "share" / "omview" / "venv"
    bin_dir = Path(user.pw_dir) / ".local" / "bin"
    assert "installed in" in r.stdout and str(bin_dir) in r.stdout
    assert all(p.lstat().st_uid == user.pw_uid for p in (venv, venv / "bin" / "mosctl", bin_dir / "mosctl"))
    # a copy, not the checkout: omview is imported from the venv; the docs went where Help finds them
    where = as_user(user, [str(venv / "bin" / "python"), "-c",
                           "import omview, omview.gui.assets as a; print(omview.__file__); print(a.docs()[0])"])  # fmt: skip
    assert where.returncode == 0, where.stderr
    module, first_doc = where.stdout.split()
    assert module.startswith(str(venv)) and first_doc == str(venv / "share" / "doc" / "omview" / "agent.md")

    # the classic CLI through `ssh node omview-agent bridge`, with the user's own ssh files only
    st = as_user(user, [str(bin_dir / "mosctl"), "--json", "status"], OMVIEW_HOST="node2")
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["id"] == 2
    mon = as_user(user, [str(bin_dir / "mosmon"), "--once", "--json"], OMVIEW_HOST="node1")
    assert mon.returncode == 0, mon.stderr
    assert mon.stdout.count('"address"') == 2
    down = as_user(user, [str(bin_dir / "mps"), "--json"], OMVIEW_HOST="nosuchnode")
    assert down.returncode == 4 and "no omview agent reached on nosuchnode over ssh" in down.stderr, down.stderr

    # the GUI's session offscreen, from the user's venv: ~/.ssh/config, key and known_hosts
    gui = as_user(user, [str(venv / "bin" / "python"), "-c", GUI_PROBE, cluster.nodes[0].address], timeout=60)
    assert gui.returncode == 0, gui.stderr
    table = json.loads(gui.stdout.strip().splitlines()[-1])
    assert [(i, a, s) for i, a, s, _ in table] == [(n.id, n.address, "up") for n in cluster.nodes], gui.stdout
