"""Host names on ssh command lines (issue 13, defect 10): checked, and always after ``--``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from omview.agent.peers.links import PeerError, PeerLinks
from omview.collector.source import agent_connector
from omview.model.hosts import HostError, check_host

HOSTILE = [
    "-oProxyCommand=touch /tmp/x",
    "-F/etc/passwd",
    "",
    "a b",
    "a;b",
    "node\n",
    "$(id)",
    "x" * 300,
    "@n",
]


@pytest.mark.parametrize("host", ["node1", "10.0.0.1", "root@node1", "fe80::1", "[fe80::1%eth0]", "a.b-c_d"])
def test_real_hosts_pass(host: str) -> None:
    assert check_host(host) == host


@pytest.mark.parametrize("host", HOSTILE)
def test_hostile_hosts_are_refused(host: str) -> None:
    with pytest.raises(HostError, match="not a host name"):
        check_host(host)


def _fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An 'ssh' on PATH that records its argv and exits, so no real ssh runs."""
    out = tmp_path / "argv"
    ssh = tmp_path / "bin" / "ssh"
    ssh.parent.mkdir()
    ssh.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {out}\nexit 255\n')
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{ssh.parent}:{os.environ['PATH']}")
    return out


def test_collector_refuses_a_hostile_node_and_puts_dashdash_before_a_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(HostError):
        agent_connector("-oProxyCommand=touch /tmp/x")
    out = _fake_ssh(tmp_path, monkeypatch)
    with pytest.raises(Exception):  # noqa: B017 - the fake ssh exits at once, any connect error will do
        agent_connector("node1")()
    argv = out.read_text().split("\n")
    assert argv[argv.index("--") + 1] == "node1"


def test_peer_links_refuse_a_hostile_address_and_put_dashdash_before_it(tmp_path: Path) -> None:
    addresses = {1: "-oProxyCommand=touch /tmp/x", 2: "10.0.0.2"}
    links = PeerLinks(addresses.get, str(tmp_path / "peers"))
    with pytest.raises(PeerError, match="not a host name"):
        links.ssh_argv(1, "true")
    for argv in (links.ssh_argv(2, "true"), links.control_argv(2, "-O", "check")):
        assert argv[argv.index("--") + 1] == "10.0.0.2"
        assert argv.index("--") > max(i for i, a in enumerate(argv) if a.startswith("-") and a != "--")
