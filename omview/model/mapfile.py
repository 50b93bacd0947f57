"""L0 model: the openMosix cluster map (``/etc/openmosix.map``) and ``showmap`` output.

Format, one range per line, ``#`` starts a comment::

    ID  ADDRESS  COUNT        COUNT > 1 counts up the last IPv4 octet (IDs ID..ID+COUNT-1)
    ID  ADDRESS  ALIAS        another address of node ID (same as COUNT 0)

Hostnames are allowed only with COUNT 1 or ALIAS, as in openMosix. Every error names the file,
the line and what to change.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from omview.model.cluster import MAX_NODE_ID, MIN_NODE_ID
from omview.model.errors import ConfigError

#: Lookup order of the openMosix userland tools.
MAP_PATHS = ("/etc/openmosix.map", "/etc/mosix.map", "/etc/hpc.map")
#: A map has one short line per range of nodes (65535 one-node lines fit in about 2 MB, ranges
#: in far less); anything bigger is the wrong file (/dev/zero once grew setpe -w to 3.5 GB).
MAX_MAP_BYTES = 1 << 20

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@dataclass(frozen=True)
class MapEntry:
    """One line of a map file: a range of node IDs, or an alias address (count 0)."""

    base: int
    address: str
    count: int

    @property
    def alias(self) -> bool:
        return self.count == 0

    def to_dict(self) -> dict[str, object]:
        return {"base": self.base, "address": self.address, "count": self.count}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> MapEntry:
        base, address, count = data.get("base"), data.get("address"), data.get("count")
        if not isinstance(base, int) or not isinstance(address, str) or not isinstance(count, int):
            raise ConfigError(f"map entry needs integer base/count and string address, got {data!r}")
        return cls(base, address, count)


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def parse_line(text: str, *, path: str = "<map>", line: int = 0) -> MapEntry | None:
    """Parse one map line; None for blank/comment lines. Raises ConfigError."""
    body = text.split("#", 1)[0].strip()
    if not body:
        return None
    parts = body.split()
    if len(parts) != 3:
        raise ConfigError(
            f"expected 3 fields 'ID ADDRESS COUNT', found {len(parts)}: {body!r}", path=path, line=line
        )
    id_text, address, count_text = parts
    try:
        base = int(id_text)
    except ValueError:
        raise ConfigError(f"node ID {id_text!r} is not a number", path=path, line=line) from None
    if not MIN_NODE_ID <= base <= MAX_NODE_ID:
        raise ConfigError(
            f"node ID {base} is outside {MIN_NODE_ID}..{MAX_NODE_ID}", path=path, line=line
        )
    if count_text.upper() == "ALIAS":
        count = 0
    else:
        try:
            count = int(count_text)
        except ValueError:
            raise ConfigError(
                f"count {count_text!r} is neither a number nor ALIAS", path=path, line=line
            ) from None
        if count < 0:
            raise ConfigError(f"count {count} is negative", path=path, line=line)
    ipv4 = _is_ipv4(address)
    if not ipv4 and not _HOSTNAME.match(address):
        raise ConfigError(f"{address!r} is neither an IPv4 address nor a hostname", path=path, line=line)
    if count > 1:
        if not ipv4:
            raise ConfigError(
                f"a range of {count} nodes needs an IP address, not the hostname {address!r}; "
                "write one line per host or use the first IP of the range",
                path=path,
                line=line,
            )
        last = int(address.rsplit(".", 1)[1])
        if last + count - 1 > 255:
            raise ConfigError(
                f"range {address} + {count} runs past .255 in the last octet", path=path, line=line
            )
        if base + count - 1 > MAX_NODE_ID:
            raise ConfigError(f"IDs {base}..{base + count - 1} run past {MAX_NODE_ID}", path=path, line=line)
    return MapEntry(base, address, count)


def read(path: str) -> str:
    """The text of the map file PATH: a regular file of at most MAX_MAP_BYTES of UTF-8. Every map
    reader goes through here (agent config and check-config, setpe -w), so none can be fed a device
    or a FIFO, or grow without bound. Errors read "PATH: cannot read the map file: why"."""

    def fail(why: str) -> ConfigError:
        return ConfigError(f"cannot read the map file: {why}", path=path)

    try:
        # O_NONBLOCK: opening a FIFO must not hang; it is refused below as not a regular file
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise fail(exc.strerror or str(exc)) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise fail("not a regular file")
    with os.fdopen(fd, "rb") as fh:
        os.set_blocking(fd, True)
        try:
            data = fh.read(MAX_MAP_BYTES + 1)
        except OSError as exc:
            raise fail(exc.strerror or str(exc)) from None
    if len(data) > MAX_MAP_BYTES:
        raise fail(f"larger than {MAX_MAP_BYTES} bytes (1 MiB), the limit for a map; is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text ({exc})") from None


def parse(text: str, *, path: str = "<map>") -> list[MapEntry]:
    """Parse a whole map and check it is consistent (no overlaps, aliases point at nodes)."""
    entries: list[tuple[int, MapEntry]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        entry = parse_line(raw, path=path, line=lineno)
        if entry is not None:
            entries.append((lineno, entry))
    return validate(entries, path=path)


def validate(numbered: Iterable[tuple[int, MapEntry]], *, path: str = "<map>") -> list[MapEntry]:
    """Check a list of (line, entry) for overlapping IDs, duplicate addresses, orphan aliases."""
    owner: dict[int, int] = {}
    seen_addr: dict[str, int] = {}
    pending_alias: list[tuple[int, MapEntry]] = []
    out: list[MapEntry] = []
    for lineno, entry in numbered:
        out.append(entry)
        for addr in expand_entry(entry).values():
            if addr in seen_addr:
                raise ConfigError(
                    f"address {addr} is already used on line {seen_addr[addr]}", path=path, line=lineno
                )
            seen_addr[addr] = lineno
        if entry.alias:
            pending_alias.append((lineno, entry))
            continue
        for node in range(entry.base, entry.base + entry.count):
            if node in owner:
                raise ConfigError(
                    f"node ID {node} is already defined on line {owner[node]}", path=path, line=lineno
                )
            owner[node] = lineno
    for lineno, entry in pending_alias:
        if entry.base not in owner:
            raise ConfigError(
                f"ALIAS for node {entry.base}, but no line defines node {entry.base}", path=path, line=lineno
            )
    return out


def expand_entry(entry: MapEntry) -> dict[int, str]:
    """Node ID -> address for one entry (an alias maps its ID to its extra address)."""
    if entry.count <= 1:
        return {entry.base: entry.address}
    head, last = entry.address.rsplit(".", 1)
    return {entry.base + i: f"{head}.{int(last) + i}" for i in range(entry.count)}


def expand(entries: Iterable[MapEntry]) -> dict[int, list[str]]:
    """Node ID -> its addresses (primary first, then aliases), sorted by ID."""
    nodes: dict[int, list[str]] = {}
    aliases: list[MapEntry] = []
    for entry in entries:
        if entry.alias:
            aliases.append(entry)
            continue
        for node, addr in expand_entry(entry).items():
            nodes.setdefault(node, []).append(addr)
    for entry in aliases:
        nodes.setdefault(entry.base, []).append(entry.address)
    return dict(sorted(nodes.items()))


def node_id_from_ipv4(address: str) -> int:
    """Autodiscovery node ID: the low 16 bits of the IPv4 address (192.168.100.11 -> 25611)."""
    value = int(ipaddress.IPv4Address(address)) & 0xFFFF
    if value == 0:
        raise ConfigError(f"{address} gives node ID 0; set node_id explicitly in the agent config")
    return value


def format_map(entries: Iterable[MapEntry]) -> str:
    """The map as a file (what ``setpe -r`` prints)."""
    lines = ["# omview cluster map: ID ADDRESS COUNT (ALIAS = extra address of a node)"]
    for e in entries:
        lines.append(f"{e.base} {e.address} {'ALIAS' if e.alias else e.count}")
    return "\n".join(lines) + "\n"


def format_showmap(my_id: int, entries: Iterable[MapEntry]) -> str:
    """``showmap`` output, as the openMosix tools printed it."""
    lines = [f"My Node-Id: 0x{my_id:04x}", "", "Base Node-Id Address          Count", "------------ ---------------- -----"]
    for e in entries:
        count = "ALIAS" if e.alias else str(e.count)
        lines.append(f"0x{e.base:04x}       {e.address:<16} {count}")
    return "\n".join(lines) + "\n"
