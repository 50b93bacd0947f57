"""L2 agent: read ``agent.toml`` into a frozen AgentConfig; every key is optional and every error
names the file, the key and the value. Paths default from omview.model.paths (env overrides).
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omview.model import paths
from omview.model.cluster import MAX_NODE_ID, MIN_NODE_ID
from omview.model.errors import ConfigError

DEFAULT_PORT = 5428  # the openMosix info daemon port (INFODAEMONPORT)
DEFAULT_GROUP = "239.255.77.1"
DEFAULT_DOWN_AFTER = 6.0
DEFAULT_FANOUT = 3
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_MAX_CLIENTS = 64
DEFAULT_MAX_CLIENTS_PER_USER = 16


def default_config_path() -> str:
    """Where ``run`` looks when no --config is given."""
    return os.path.join(paths.config_dir(), "agent.toml")


@dataclass(frozen=True)
class AgentConfig:
    """The agent's configuration after validation; None means "work it out at start"."""

    path: str
    node_id: int | None = None
    address: str | None = None
    interface: str | None = None
    map_file: str | None = None
    discovery: bool | None = None
    multicast_group: str = DEFAULT_GROUP
    port: int = DEFAULT_PORT
    key_file: str = field(default_factory=lambda: os.path.join(paths.config_dir(), "cluster.key"))
    cpus: int | None = None
    memory: int | None = None
    process_scope: str = "all"
    socket: str = field(default_factory=paths.socket_path)
    state_dir: str = field(default_factory=paths.state_dir)
    down_after: float = DEFAULT_DOWN_AFTER
    gossip_fanout: int = DEFAULT_FANOUT
    criu: str | None = None
    #: seconds a half-sent request line may sit idle before the agent answers TIMEOUT and closes
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    #: connections served at once; one more is answered BUSY and closed
    max_clients: int = DEFAULT_MAX_CLIENTS
    #: connections one non-root user may hold at once (root's are counted apart, see server.Server)
    max_clients_per_user: int = DEFAULT_MAX_CLIENTS_PER_USER
    #: MOSIX-like automatic migration of mosrun jobs between nodes (docs/migration.md)
    balance: bool = True
    #: test clusters only: honour the migration fault-injection hooks in state_dir/faults/
    test_mode: bool = False


def _describe(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f'"{value}"'


class _Checker:
    """Type/range checks that all produce 'FILE: key X = VALUE: what is wrong' errors."""

    def __init__(self, path: str, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def fail(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"key '{key}' = {_describe(self.data[key])}: {why}", path=self.path)

    def int_(self, key: str, lo: int, hi: int) -> int:
        v = self.data[key]
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.fail(key, "must be an integer")
        if not lo <= v <= hi:
            raise self.fail(key, f"must be between {lo} and {hi}")
        return v

    def float_(self, key: str, lo: float, hi: float) -> float:
        v = self.data[key]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise self.fail(key, "must be a number")
        if not lo <= v <= hi:
            raise self.fail(key, f"must be between {lo:g} and {hi:g}")
        return float(v)

    def bool_(self, key: str) -> bool:
        v = self.data[key]
        if not isinstance(v, bool):
            raise self.fail(key, "must be true or false")
        return v

    def str_(self, key: str) -> str:
        v = self.data[key]
        if not isinstance(v, str) or not v.strip():
            raise self.fail(key, "must be a non-empty string")
        return v.strip()

    def ipv4(self, key: str, *, multicast: bool = False) -> str:
        text = self.str_(key)
        try:
            addr = ipaddress.IPv4Address(text)
        except ValueError:
            raise self.fail(key, "must be an IPv4 address like 10.77.0.11") from None
        if multicast and not addr.is_multicast:
            raise self.fail(key, "must be an IPv4 multicast address (224.0.0.0/4), e.g. 239.255.77.1")
        if not multicast and (addr.is_multicast or addr.is_unspecified):
            raise self.fail(key, "must be this node's own unicast address")
        return text

    def path_(self, key: str) -> str:
        text = self.str_(key)
        if not os.path.isabs(text):
            raise self.fail(key, "must be an absolute path")
        return text

    def interface(self, key: str) -> str:
        name = self.str_(key)
        if len(name) > 15 or "/" in name or " " in name:
            raise self.fail(key, "is not a valid network interface name (at most 15 characters)")
        return name

    def scope(self, key: str) -> str:
        scope = self.str_(key)
        if scope not in ("all", "netns"):
            raise self.fail(key, 'must be "all" or "netns"')
        return scope


#: every key agent.toml may hold, with its check (which also converts the value)
CHECKS: dict[str, Callable[[_Checker, str], Any]] = {
    "node_id": lambda c, k: c.int_(k, MIN_NODE_ID, MAX_NODE_ID),
    "address": lambda c, k: c.ipv4(k),
    "interface": _Checker.interface,
    "map_file": _Checker.path_,
    "discovery": _Checker.bool_,
    "multicast_group": lambda c, k: c.ipv4(k, multicast=True),
    "port": lambda c, k: c.int_(k, 1, 65535),
    "key_file": _Checker.path_,
    "cpus": lambda c, k: c.int_(k, 1, 4096),
    "memory": lambda c, k: c.int_(k, 1 << 20, 1 << 50),
    "process_scope": _Checker.scope,
    "socket": _Checker.path_,
    "state_dir": _Checker.path_,
    "down_after": lambda c, k: c.float_(k, 1.0, 3600.0),
    "gossip_fanout": lambda c, k: c.int_(k, 1, 64),
    "criu": _Checker.path_,
    "request_timeout": lambda c, k: c.float_(k, 0.1, 3600.0),
    "max_clients": lambda c, k: c.int_(k, 1, 10000),
    "max_clients_per_user": lambda c, k: c.int_(k, 1, 10000),
    "balance": _Checker.bool_,
    "test_mode": _Checker.bool_,
}


def parse(text: str, *, path: str) -> AgentConfig:
    """Validate the TOML text of an agent config."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=path) from None
    unknown = sorted(set(data) - set(CHECKS))
    if unknown:
        raise ConfigError(
            f"unknown key '{unknown[0]}' = {_describe(data[unknown[0]])}; known keys: {', '.join(CHECKS)}",
            path=path,
        )
    c = _Checker(path, data)
    kw: dict[str, Any] = {"path": path, **{key: CHECKS[key](c, key) for key in data}}
    if kw.get("discovery") is True and "map_file" in kw:
        raise ConfigError(
            f"key 'discovery' = true and key 'map_file' = \"{kw['map_file']}\" contradict each other; "
            "use a static map or autodiscovery, not both",
            path=path,
        )
    return AgentConfig(**kw)


def load(path: str | None = None) -> AgentConfig:
    """Read the config file; a missing *default* file means all defaults, a missing explicit one is an error."""
    explicit = path is not None
    path = path or default_config_path()
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        if explicit:
            raise ConfigError("config file does not exist", path=path) from None
        return AgentConfig(path=path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config file: {exc}", path=path) from None
    return parse(text, path=path)
