"""L2 agent: read ``agent.toml`` into a frozen AgentConfig (stdlib tomllib only).

Every key is optional; every error names the file, the key and the offending value, so an
admin can fix it without reading code. Paths default from omview.model.paths (env overrides).
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
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


def _describe(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f'"{value}"'


class _Checker:
    """Type/range checks that all produce 'FILE: key X = VALUE: what is wrong' errors."""

    def __init__(self, path: str, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def fail(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"key '{key}' = {_describe(self.data[key])}: {why}", path=self.path)

    def has(self, key: str) -> bool:
        return key in self.data

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


KNOWN_KEYS = (
    "node_id", "address", "interface", "map_file", "discovery", "multicast_group", "port", "key_file",
    "cpus", "memory", "process_scope", "socket", "state_dir", "down_after", "gossip_fanout", "criu",
    "request_timeout", "max_clients",
)  # fmt: skip


def parse(text: str, *, path: str) -> AgentConfig:
    """Validate the TOML text of an agent config."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=path) from None
    unknown = sorted(set(data) - set(KNOWN_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key '{unknown[0]}' = {_describe(data[unknown[0]])}; known keys: {', '.join(KNOWN_KEYS)}",
            path=path,
        )
    c = _Checker(path, data)
    kw: dict[str, Any] = {"path": path}
    if c.has("node_id"):
        kw["node_id"] = c.int_("node_id", MIN_NODE_ID, MAX_NODE_ID)
    if c.has("address"):
        kw["address"] = c.ipv4("address")
    if c.has("interface"):
        name = c.str_("interface")
        if len(name) > 15 or "/" in name or " " in name:
            raise c.fail("interface", "is not a valid network interface name (at most 15 characters)")
        kw["interface"] = name
    if c.has("map_file"):
        kw["map_file"] = c.path_("map_file")
    if c.has("discovery"):
        kw["discovery"] = c.bool_("discovery")
    if c.has("multicast_group"):
        kw["multicast_group"] = c.ipv4("multicast_group", multicast=True)
    if c.has("port"):
        kw["port"] = c.int_("port", 1, 65535)
    if c.has("key_file"):
        kw["key_file"] = c.path_("key_file")
    if c.has("cpus"):
        kw["cpus"] = c.int_("cpus", 1, 4096)
    if c.has("memory"):
        kw["memory"] = c.int_("memory", 1 << 20, 1 << 50)
    if c.has("process_scope"):
        scope = c.str_("process_scope")
        if scope not in ("all", "netns"):
            raise c.fail("process_scope", 'must be "all" or "netns"')
        kw["process_scope"] = scope
    if c.has("socket"):
        kw["socket"] = c.path_("socket")
    if c.has("state_dir"):
        kw["state_dir"] = c.path_("state_dir")
    if c.has("down_after"):
        kw["down_after"] = c.float_("down_after", 1.0, 3600.0)
    if c.has("gossip_fanout"):
        kw["gossip_fanout"] = c.int_("gossip_fanout", 1, 64)
    if c.has("criu"):
        kw["criu"] = c.path_("criu")
    if c.has("request_timeout"):
        kw["request_timeout"] = c.float_("request_timeout", 0.1, 3600.0)
    if c.has("max_clients"):
        kw["max_clients"] = c.int_("max_clients", 1, 10000)
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
