"""L2 agent: who is in the cluster and who am I: the persisted ``setpe -w`` map, the map file, or
multicast autodiscovery (interface from /proc/net/route, address by SIOCGIFADDR); validates map.set.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from omview.agent.config import AgentConfig
from omview.model import mapfile
from omview.model.errors import ConfigError
from omview.model.mapfile import MapEntry

SIOCGIFADDR = 0x8915
RTF_UP = 0x0001

NO_ROUTE_MESSAGE = "unable to determine the interface: no default route; set interface in agent.toml"


@dataclass(frozen=True)
class Membership:
    """This node's place in the cluster."""

    mode: str  # "map", "discovery" or "off"
    node_id: int
    address: str
    entries: tuple[MapEntry, ...] = ()
    source: str = ""
    interface: str | None = None
    #: map mode: node ID -> its IPv4 addresses (primary first, then aliases)
    peers: dict[int, tuple[str, ...]] = field(default_factory=dict)


def default_route_interface(route_file: str = "/proc/net/route") -> str | None:
    """The interface of the IPv4 default route with the lowest metric, or None."""
    best: tuple[int, str] | None = None
    try:
        with open(route_file, encoding="ascii") as fh:
            lines = fh.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) < 8:
            continue
        iface, dest, flags, metric, mask = parts[0], parts[1], int(parts[3], 16), int(parts[6]), parts[7]
        if dest == "00000000" and mask == "00000000" and flags & RTF_UP:
            if best is None or metric < best[0]:
                best = (metric, iface)
    return best[1] if best else None


def interface_ipv4(name: str) -> str | None:
    """The primary IPv4 address of an interface (SIOCGIFADDR), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(res[20:24])


def local_ipv4_addresses() -> list[str]:
    """IPv4 addresses of this node: every interface's primary address, then the hostname's."""
    found: list[str] = []
    try:
        names = [n for _, n in socket.if_nameindex()]
    except OSError:
        names = []
    for name in names:
        addr = interface_ipv4(name)
        if addr and addr not in found:
            found.append(addr)
    try:
        addr = socket.gethostbyname(socket.gethostname())
        if addr not in found:
            found.append(addr)
    except OSError:
        pass
    return found


def _resolve(host: str) -> str:
    try:
        ipaddress.IPv4Address(host)
        return host
    except ValueError:
        pass
    try:
        return socket.gethostbyname(host)
    except OSError as exc:
        raise ConfigError(
            f"cannot resolve host name {host!r}: {exc}; use its IP address in the map"
        ) from None


def map_peers(entries: Iterable[MapEntry]) -> dict[int, tuple[str, ...]]:
    """Node ID -> resolved IPv4 addresses for a validated map."""
    return {node: tuple(_resolve(a) for a in addrs) for node, addrs in mapfile.expand(entries).items()}


def from_map(
    entries: Sequence[MapEntry], *, source: str, cfg: AgentConfig, prefer_address: str | None = None
) -> Membership:
    """Membership for a validated static map: find my address in it (setpe's rule)."""
    peers = map_peers(entries)
    by_addr = {addr: node for node, addrs in peers.items() for addr in addrs}
    candidates = [a for a in (cfg.address, prefer_address) if a]
    if cfg.address is None:
        candidates += local_ipv4_addresses()
    mine = next((a for a in candidates if a in by_addr), None)
    if mine is None:
        shown = cfg.address or prefer_address or (candidates[0] if candidates else "unknown")
        hint = (
            "set 'address' in agent.toml to this node's cluster address"
            if cfg.address is None
            else "add this node to the map, or fix 'address' in agent.toml"
        )
        raise ConfigError(
            f"the supplied table is well-formatted, but my IP address ({shown}) is not there! "
            f"(addresses of this node: {', '.join(candidates) or 'none'}; {hint})",
            path=source or None,
        )
    node_id = by_addr[mine]
    if cfg.node_id is not None and cfg.node_id != node_id:
        raise ConfigError(
            f"agent.toml sets node_id = {cfg.node_id}, but the map gives my address {mine} the ID {node_id}; "
            "remove node_id from agent.toml or fix the map",
            path=source or None,
        )
    # always gossip from the primary address of my node, even if an alias matched
    primary = peers[node_id][0]
    if cfg.address is None and primary != mine and primary in candidates:
        mine = primary
    return Membership("map", node_id, mine, tuple(entries), source, None, peers)


def read_map_file(path: str) -> list[MapEntry]:
    """Parse a map file; errors name file:line."""
    entries = mapfile.parse(mapfile.read(path), path=path)
    if not entries:
        raise ConfigError("the map defines no nodes; add lines 'ID ADDRESS COUNT'", path=path)
    return entries


def discovery(cfg: AgentConfig) -> Membership:
    """Autodiscovery membership: interface, address and the 16-bit node ID."""
    iface = cfg.interface or default_route_interface()
    if iface is None:
        raise ConfigError(NO_ROUTE_MESSAGE, path=cfg.path)
    address = cfg.address or interface_ipv4(iface)
    if address is None:
        raise ConfigError(
            f"interface {iface!r} has no IPv4 address (or does not exist); "
            "set interface (and address) in agent.toml",
            path=cfg.path,
        )
    node_id = cfg.node_id if cfg.node_id is not None else mapfile.node_id_from_ipv4(address)
    return Membership("discovery", node_id, address, (), "autodiscovery", iface, {})


def configured_map_file(cfg: AgentConfig) -> str | None:
    """The map file in use: the configured one, else the first existing openMosix default."""
    if cfg.map_file:
        return cfg.map_file
    return next((p for p in mapfile.MAP_PATHS if os.path.exists(p)), None)


def configured(cfg: AgentConfig) -> Membership:
    """Membership from the config alone (map file or discovery), ignoring persisted state."""
    if cfg.discovery is True:
        return discovery(cfg)
    path = configured_map_file(cfg)
    if path is None:
        if cfg.discovery is False:
            raise ConfigError(
                "discovery = false but no map file found "
                f"(looked for {', '.join(mapfile.MAP_PATHS)}); set map_file or enable discovery",
                path=cfg.path,
            )
        return discovery(cfg)
    return from_map(read_map_file(path), source=path, cfg=cfg)


def entries_from_wire(raw: list[object], *, source: str) -> list[MapEntry]:
    """Validate ``map.set`` entries (dicts as MapEntry.to_dict makes them); errors name the entry."""
    numbered: list[tuple[int, MapEntry]] = []
    for index, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            raise ConfigError(
                f"entry {index} must be an object {{base, address, count}}, got {item!r}", path=source
            )
        try:
            entry = MapEntry.from_dict(item)
            # re-check the text form so ranges, ALIAS and hostnames follow the file rules exactly
            text = f"{entry.base} {entry.address} {'ALIAS' if entry.alias else entry.count}"
            checked = mapfile.parse_line(text, path=source, line=index)
        except ConfigError as exc:
            raise ConfigError(f"entry {index}: {exc.reason}", path=source) from None
        assert checked is not None
        numbered.append((index, checked))
    return mapfile.validate(numbered, path=source)


def address_warnings(hostname: str, address: str) -> list[str]:
    """The classic setpe trap: the host name resolving to a loopback address, not the cluster one."""
    try:
        resolved = socket.gethostbyname(hostname)
    except OSError:
        return []
    if ipaddress.IPv4Address(resolved).is_loopback and not ipaddress.IPv4Address(address).is_loopback:
        return [
            f"host name {hostname!r} resolves to {resolved}, not to the cluster address {address}; "
            f"put '{address} {hostname}' in /etc/hosts (openMosix: 'my IP address (127.0.0.1) is not there!')"
        ]
    return []
