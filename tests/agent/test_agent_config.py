"""Agent configuration, map and key errors: each names the file, line or key and says what to do."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from omview.agent import config
from omview.agent.node.state import atomic_write
from omview.agent.peers.gossip import load_key
from omview.agent.peers.membership import default_route_interface
from omview.model.errors import ConfigError
from tests.support.agents import REPO, Cluster


def run_agent(
    args: list[str], env: dict[str, str] | None = None, wrap: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(wrap or []), sys.executable, "-m", "omview.agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port = 70000", "key 'port' = 70000: must be between 1 and 65535"),
        ("port = true", "key 'port' = True: must be an integer"),
        ('process_scope = "pid"', 'key \'process_scope\' = "pid": must be "all" or "netns"'),
        ('address = "10.1.2"', "key 'address' = \"10.1.2\": must be an IPv4 address"),
        ('multicast_group = "10.0.0.1"', "must be an IPv4 multicast address"),
        ("down_after = 0", "key 'down_after' = 0: must be between 1 and 3600"),
        ('map_file = "relative.map"', "key 'map_file' = \"relative.map\": must be an absolute path"),
        ("node_id = 70000", "key 'node_id' = 70000: must be between 1 and 65535"),
        ("gosip_fanout = 3", "unknown key 'gosip_fanout' = 3; known keys:"),
        ('discovery = true\nmap_file = "/etc/x.map"', "contradict each other"),
        ("port = [", "not valid TOML"),
    ],
)
def test_config_errors_name_file_key_and_value(tmp_path, text: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "agent.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as e:
        config.load(str(path))
    assert str(e.value).startswith(f"{path}: ") and expected in str(e.value), str(e.value)


def test_config_defaults_follow_env(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OMVIEW_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("OMVIEW_STATE_DIR", str(tmp_path / "st"))
    monkeypatch.setenv("OMVIEW_SOCKET", str(tmp_path / "s.sock"))
    cfg = config.load()  # no file: all defaults
    assert cfg.key_file == str(tmp_path / "cluster.key") and cfg.state_dir == str(tmp_path / "st")
    assert cfg.socket == str(tmp_path / "s.sock") and cfg.port == 5428 and cfg.process_scope == "all"
    with pytest.raises(ConfigError, match="config file does not exist"):
        config.load(str(tmp_path / "missing.toml"))


def test_key_file_problems(tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = tmp_path / "cluster.key"
    with pytest.raises(ConfigError) as e:
        load_key(str(key))
    assert f"omview-agent genkey {key}" in str(e.value)
    res = run_agent(["genkey", str(key)])
    assert res.returncode == 0 and oct(os.stat(key).st_mode & 0o777) == "0o600"
    assert len(load_key(str(key))) == 32
    res = run_agent(["genkey", str(key)])
    assert res.returncode == 1 and "already exists" in res.stderr
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match=f"chmod 600 {key}"):
        load_key(str(key))
    short = tmp_path / "short.key"
    short.write_text("abcd\n")
    os.chmod(short, 0o600)
    with pytest.raises(ConfigError, match="too short"):
        load_key(str(short))


def test_bad_map_line_names_file_and_line(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0]
    with open(cl.map_path, "w", encoding="utf-8") as fh:
        fh.write("# header\n1 127.0.0.2 1\n2 node2 3\n")
    a.write_config()
    res = run_agent(["check-config", "--config", a.config], env=a.env)
    assert res.returncode == 1
    assert f"{cl.map_path}:3: a range of 3 nodes needs an IP address" in res.stderr, res.stderr
    res = run_agent(["run", "--config", a.config], env=a.env)
    assert res.returncode == 1 and f"{cl.map_path}:3:" in res.stderr, res.stderr
    assert not os.path.exists(a.socket)


def test_map_file_must_be_a_small_regular_file(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0]
    big = os.path.join(cl.base, "big.map")
    with open(big, "wb") as fh:
        fh.write(b"1 127.0.0.2 1\n" + b"#\n" * (1 << 20))
    for path, why in (("/dev/zero", "not a regular file"), (big, "larger than 1048576 bytes (1 MiB)")):
        a.settings["map_file"] = path
        a.write_config()
        res = run_agent(["check-config", "--config", a.config], env=a.env)
        assert res.returncode == 1 and f"{path}: cannot read the map file: {why}" in res.stderr, res.stderr


def test_own_address_missing_from_map(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1, address="127.0.0.9")
    a = cl.agents[0]
    a.write_config()
    res = run_agent(["run", "--config", a.config], env=a.env)
    assert res.returncode == 1
    assert "the supplied table is well-formatted, but my IP address (127.0.0.9) is not there!" in res.stderr
    # with a good map, check-config prints what the agent would use
    a.settings["address"] = "127.0.0.2"
    a.write_config()
    res = run_agent(["check-config", "--config", a.config], env=a.env)
    assert res.returncode == 0, res.stderr
    assert "node:        1 (0x0001) at 127.0.0.2" in res.stdout and "membership:  map" in res.stdout


def test_discovery_without_interface_or_default_route_exits(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0]
    for k in ("map_file", "address"):
        a.settings.pop(k)
    a.settings["discovery"] = True
    a.write_config()
    # a fresh network namespace has no routes at all (lo is not even up)
    res = run_agent(["run", "--config", a.config], env=a.env, wrap=["unshare", "--net"])
    assert res.returncode != 0
    assert "unable to determine the interface: no default route; set interface in agent.toml" in res.stderr, (
        res.stderr
    )
    probe = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", "from omview.agent.peers.membership import default_route_interface as d; print(d())"],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "None"
    # on the host there is one (the test machine has a default route), and it is found
    assert default_route_interface() is not None


def test_atomic_write_never_leaves_partial_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "flags.json"
    atomic_write(str(target), b"one\n")
    atomic_write(str(target), b"two\n")
    assert target.read_bytes() == b"two\n"
    assert sorted(os.listdir(tmp_path)) == ["flags.json"]


def test_corrupt_state_is_set_aside(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(1)
    a = cl.agents[0]
    os.makedirs(a.state_dir)
    with open(os.path.join(a.state_dir, "flags.json"), "w", encoding="utf-8") as fh:
        fh.write('{"speed": -5}')
    a.start()
    with a.client() as c:
        assert c.flags().speed > 0
    assert any(n.startswith("flags.json.corrupt-") for n in os.listdir(a.state_dir))
    assert "flags.json is invalid" in a.log()


def test_hosts_file_trap_is_reported() -> None:
    from omview.agent.peers.membership import address_warnings

    warn = address_warnings("localhost", "10.77.0.11")
    assert len(warn) == 1 and "resolves to 127.0.0.1" in warn[0] and "/etc/hosts" in warn[0]
    assert address_warnings("localhost", "127.0.0.2") == []


def test_load_smoothing_time_constants_match_the_docs() -> None:
    """docs/agent.md: defaults give tau 1.30 s rising and 3.95 s falling."""
    import math

    from omview.agent.node.sampler import smooth
    from omview.model.cluster import Flags

    f = Flags()
    up = smooth(0.0, 100.0, 1.30, f)
    down = smooth(100.0, 0.0, 3.95, f)
    assert abs(up - 100 * (1 - math.exp(-1))) < 0.5
    assert abs(down - 100 * math.exp(-1)) < 0.5
    # per-second steps compose to the same curve as one long step
    x = 0.0
    for _ in range(3):
        x = smooth(x, 100.0, 1.0, f)
    assert abs(x - smooth(0.0, 100.0, 3.0, f)) < 1e-9 and 89 < x < 91
    assert smooth(37.0, 250.0, 1.0, Flags(fast_decay=0)) == 250.0
    assert smooth(37.0, 250.0, 1.0, Flags(fast_decay=1000)) == 37.0
    # decay_interval stretches time: interval 2 s halves the speed
    assert abs(smooth(0.0, 100.0, 2.0, Flags(decay_interval=2)) - smooth(0.0, 100.0, 1.0, f)) < 1e-9
