"""L2 agent: openMosix-style load gossip over UDP (own record + a window of fresh records with ages
to a few random peers each second), multicast discovery, and HMAC-checked datagrams (forged,
replayed, stale ones are dropped and counted). Wire format: docs/agent.md, "Gossip datagrams".
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import logging
import math
import os
import random
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeGuard

from omview.agent.peers.membership import Membership
from omview.model.cluster import NodeInfo, valid_node_id
from omview.model.errors import ConfigError

log = logging.getLogger(__name__)

MAGIC = b"OMV1"
MAC_LEN = 32
MAX_DATAGRAM = 65507
#: datagrams whose timestamp is further than this from our clock are dropped as stale
MAX_SKEW = 30.0
#: how many records about other nodes ride along in each datagram (the "window to the world")
WINDOW = 16
MAX_WINDOW = 64
#: ignore (and count) a flood beyond this many datagrams per readable event; the rest wait
RECV_BATCH = 256
TYPES = ("info", "quiet", "leave")
#: fields a quiet node still sends in its heartbeat (no load, memory or utilisation)
HEARTBEAT_FIELDS = (
    "id",
    "address",
    "hostname",
    "speed",
    "cpus",
    "tmem",
    "block",
    "quiet",
    "stay",
    "protocol",
    "version",
)
COUNTERS = (
    "sent", "send_errors", "received", "accepted", "forged", "replayed", "stale", "malformed",
    "unknown_sender", "conflict", "own", "ignored_off",
)  # fmt: skip

IP_MULTICAST_ALL = 49  # Linux: 0 = only groups joined on this socket


class DatagramError(Exception):
    """A datagram that must be dropped; ``kind`` names the counter to bump."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# --- the key ------------------------------------------------------------------------------


def genkey(path: str) -> None:
    """Write a new random 256-bit key (hex) with mode 0600; never overwrites."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(os.urandom(32).hex() + "\n")


def load_key(path: str) -> bytes:
    """Read the cluster key; every problem says how to fix it."""
    fix = f"create it with 'omview-agent genkey {path}' and copy the same file to every node"
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"the cluster key file does not exist; {fix}", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the cluster key: {exc.strerror}", path=path) from None
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"the cluster key is accessible to other users (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"anyone who reads it can forge cluster traffic: chmod 600 {path}",
            path=path,
        )
    text = raw.strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = text
    if len(key) < 16:
        raise ConfigError(
            f"the cluster key is too short ({len(key)} bytes, need at least 16); {fix}", path=path
        )
    return key


# --- datagram format ----------------------------------------------------------------------


class Codec:
    """MAGIC | HMAC-SHA256(key, MAGIC + payload) | payload (compact JSON)."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def encode(self, payload: dict[str, Any]) -> bytes:
        body = json.dumps(payload, separators=(",", ":")).encode()
        mac = hmac.new(self.key, MAGIC + body, hashlib.sha256).digest()
        return MAGIC + mac + body

    def decode(self, data: bytes) -> dict[str, Any]:
        if len(data) < len(MAGIC) + MAC_LEN + 2 or not data.startswith(MAGIC):
            raise DatagramError("malformed", "not an omview datagram (bad magic or too short)")
        mac = data[len(MAGIC) : len(MAGIC) + MAC_LEN]
        body = data[len(MAGIC) + MAC_LEN :]
        want = hmac.new(self.key, MAGIC + body, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, want):
            raise DatagramError("forged", "bad MAC (wrong cluster key or tampered datagram)")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise DatagramError("malformed", "authenticated datagram is not JSON") from None
        return check_payload(payload)


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


_TYPE_NAMES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
}
#: NodeInfo field -> accepted JSON types (annotations are strings under postponed evaluation)
_INFO_TYPES: dict[str, tuple[type, ...]] = {f.name: _TYPE_NAMES[str(f.type)] for f in fields(NodeInfo)}


def clean_info(raw: object) -> dict[str, Any]:
    """A node record from the wire, type-checked field by field (unknown fields dropped)."""
    if not isinstance(raw, dict):
        raise DatagramError("malformed", "node record is not an object")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        types = _INFO_TYPES.get(name)
        if types is None or name in ("status", "age"):
            continue
        if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
            raise DatagramError("malformed", f"node record field {name!r} has the wrong type")
        if isinstance(value, str) and len(value) > 255:
            raise DatagramError("malformed", f"node record field {name!r} is too long")
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (value < 0 or not math.isfinite(value))
        ):
            raise DatagramError("malformed", f"node record field {name!r} is negative")
        out[name] = value
    if not valid_node_id(out.get("id")) or not isinstance(out.get("address"), str):
        raise DatagramError("malformed", "node record needs an id and an address")
    return out


def check_payload(p: object) -> dict[str, Any]:
    """Validate the structure of an authenticated payload."""
    if not isinstance(p, dict):
        raise DatagramError("malformed", "payload is not an object")
    t, node, boot, seq, ts = p.get("t"), p.get("node"), p.get("boot"), p.get("seq"), p.get("ts")
    if t not in TYPES or not valid_node_id(node) or not isinstance(p.get("addr"), str):
        raise DatagramError("malformed", "payload needs t, node and addr")
    if not isinstance(boot, str) or not 1 <= len(boot) <= 64 or not _is_int(seq) or seq < 0:
        raise DatagramError("malformed", "payload needs boot and seq")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
        raise DatagramError("malformed", "payload needs a timestamp")
    if t != "leave":
        p["info"] = clean_info(p.get("info"))
        if p["info"]["id"] != node:
            raise DatagramError("malformed", "record id differs from the sender")
    window = p.get("window", [])
    if not isinstance(window, list) or len(window) > MAX_WINDOW:
        raise DatagramError("malformed", "window is not a short list")
    clean = []
    for item in window:
        if not isinstance(item, dict):
            raise DatagramError("malformed", "window entry is not an object")
        age, wboot = item.get("age"), item.get("boot")
        if not isinstance(age, (int, float)) or isinstance(age, bool) or not 0 <= age < 1e6:
            raise DatagramError("malformed", "window entry needs an age")
        if wboot is not None and not isinstance(wboot, str):
            raise DatagramError("malformed", "window entry boot must be a string")
        clean.append({"info": clean_info(item.get("info")), "age": float(age), "boot": wboot})
    p["window"] = clean
    return p


# --- the cluster table --------------------------------------------------------------------


@dataclass
class Entry:
    """What this node knows about another node."""

    id: int
    address: str
    info: dict[str, Any]
    fresh_at: float | None = None  # monotonic time the info was fresh; None = never heard
    boot: str | None = None
    left: bool = False
    up: bool = False


class NodeTable:
    """Cluster-wide table: newest information wins, judged by age, not by wall clocks."""

    def __init__(self, self_id: int, down_after: float) -> None:
        self.self_id = self_id
        self.down_after = down_after
        self.entries: dict[int, Entry] = {}

    def ensure(self, node: int, address: str) -> tuple[Entry, bool]:
        entry = self.entries.get(node)
        if entry is None:
            entry = Entry(node, address, {"id": node, "address": address})
            self.entries[node] = entry
            return entry, True
        return entry, False

    def is_up(self, entry: Entry, now: float) -> bool:
        return not entry.left and entry.fresh_at is not None and now - entry.fresh_at < self.down_after

    def update(
        self, node: int, info: dict[str, Any], fresh_at: float, boot: str | None, *, merge: bool = False
    ) -> bool:
        """Take ``info`` if it is newer than what we hold; returns True when it was taken."""
        entry, _ = self.ensure(node, info["address"])
        if entry.fresh_at is not None and fresh_at <= entry.fresh_at:
            return False
        entry.info = {**entry.info, **info} if merge else dict(info)
        entry.address = info["address"]
        entry.fresh_at = fresh_at
        entry.boot = boot
        entry.left = False
        return True

    def leave(self, node: int, boot: str, now: float) -> bool:
        entry = self.entries.get(node)
        if entry is None or (entry.boot is not None and entry.boot != boot):
            return False  # a leave from an older incarnation must not take down the new one
        entry.left = True
        entry.fresh_at = now  # older news relayed by others must not bring it back
        return True

    def window(self, now: float) -> list[dict[str, Any]]:
        fresh = [
            e for e in self.entries.values()
            if e.id != self.self_id and not e.left and e.fresh_at is not None and now - e.fresh_at < self.down_after
        ]  # fmt: skip
        fresh.sort(key=lambda e: -(e.fresh_at or 0.0))
        return [
            {"info": e.info, "age": round(max(0.0, now - (e.fresh_at or now)), 3), "boot": e.boot}
            for e in fresh[:WINDOW]
        ]

    def node_info(self, entry: Entry, now: float) -> NodeInfo:
        age = -1.0 if entry.fresh_at is None else round(max(0.0, now - entry.fresh_at), 2)
        data = {**entry.info, "id": entry.id, "address": entry.address}
        data["status"] = "up" if self.is_up(entry, now) else "down"
        data["age"] = age
        return NodeInfo.from_dict(data)


# --- the service --------------------------------------------------------------------------

EventSink = Callable[[str, dict[str, Any]], None]


class Gossip:
    """Owns the UDP sockets, the table and the replay state; driven by the agent's loop."""

    def __init__(
        self,
        *,
        codec: Codec,
        port: int,
        group: str,
        fanout: int,
        down_after: float,
        on_event: EventSink,
    ) -> None:
        self.codec = codec
        self.port = port
        self.group = group
        self.fanout = fanout
        self.down_after = down_after
        self.on_event = on_event
        self.boot = os.urandom(8).hex()
        self.seq = 0
        self.stats: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.membership: Membership | None = None
        self.table = NodeTable(0, down_after)
        self._usock: socket.socket | None = None
        self._msock: socket.socket | None = None
        self._loop: Any = None
        self._seen: dict[int, dict[str, int]] = {}
        self._announce = False
        self._next_beacon = 0.0
        self._beacons = 0
        self._warned: dict[str, float] = {}

    # sockets -----------------------------------------------------------------------------

    def _open(self, m: Membership) -> tuple[socket.socket | None, socket.socket | None]:
        if m.mode == "off":
            return None, None
        usock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        msock = None
        try:
            usock.setblocking(False)
            try:
                usock.bind((m.address, self.port))
            except OSError as exc:
                raise ConfigError(
                    f"cannot bind UDP {m.address}:{self.port}: {exc.strerror}; "
                    "is this address configured on this node, and is no other agent running?"
                ) from None
            if m.mode == "discovery":
                assert m.interface is not None
                try:
                    ifindex = socket.if_nametoindex(m.interface)
                except OSError:
                    raise ConfigError(f"network interface {m.interface!r} does not exist") from None
                mreqn = struct.pack(
                    "4s4si", socket.inet_aton(self.group), socket.inet_aton(m.address), ifindex
                )
                # ip_mreqn: send beacons out of the chosen interface, never via the routing table
                usock.setsockopt(
                    socket.IPPROTO_IP,
                    socket.IP_MULTICAST_IF,
                    struct.pack("4s4si", b"\0" * 4, socket.inet_aton(m.address), ifindex),
                )
                usock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
                msock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                msock.setblocking(False)
                msock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    msock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
                except OSError:
                    pass
                try:
                    msock.bind((self.group, self.port))
                    msock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
                except OSError as exc:
                    raise ConfigError(
                        f"cannot join multicast group {self.group}:{self.port} on {m.interface}: {exc.strerror}"
                    ) from None
        except BaseException:
            usock.close()
            if msock is not None:
                msock.close()
            raise
        return usock, msock

    def _close_sockets(self) -> None:
        for sock in (self._usock, self._msock):
            if sock is not None:
                if self._loop is not None:
                    self._loop.remove_reader(sock.fileno())
                sock.close()
        self._usock = self._msock = None

    def _attach(self, socks: tuple[socket.socket | None, socket.socket | None]) -> None:
        self._usock, self._msock = socks
        for sock in socks:
            if sock is not None:
                self._loop.add_reader(sock.fileno(), self._on_readable, sock)

    def configure(self, m: Membership, loop: Any) -> None:
        """Start or switch membership (map, discovery, off); raises ConfigError if sockets fail."""
        old = self.membership
        same_sockets = (
            old is not None
            and old.mode == m.mode
            and old.address == m.address
            and old.interface == m.interface
        )
        if not same_sockets:
            # close first: the new sockets may need the very address and port the old ones hold
            self._close_sockets()
            self._loop = loop
            try:
                self._attach(self._open(m))
            except ConfigError:
                if old is not None:
                    try:
                        self._attach(self._open(old))  # keep the node in the cluster it was in
                    except ConfigError as exc:
                        log.error("cannot restore the previous gossip sockets either: %s", exc)
                raise
        self._loop = loop
        self.membership = m
        self._rebuild_table(m, old)
        self._announce = m.mode != "off"
        self._next_beacon = 0.0
        self._beacons = 0

    def _rebuild_table(self, m: Membership, old: Membership | None) -> None:
        now = time.monotonic()
        table = NodeTable(m.node_id, self.down_after)
        if m.mode == "off":
            for e in self.table.entries.values():
                if e.up and e.id != self.table.self_id:
                    self.on_event("node.down", {"node": e.id, "address": e.address, "reason": "off"})
            self.table = table
            return
        keep = self.table.entries if old is not None and old.mode != "off" else {}
        if m.mode == "map":
            for node, addrs in m.peers.items():
                if node == m.node_id:
                    continue
                prev = keep.get(node)
                if prev is not None and prev.address in addrs:
                    table.entries[node] = prev
                else:
                    table.entries[node] = Entry(node, addrs[0], {"id": node, "address": addrs[0]})
        else:
            for node, prev in keep.items():
                if node != m.node_id:
                    table.entries[node] = prev
        for node, prev in self.table.entries.items():
            if prev.up and node not in table.entries and node != self.table.self_id:
                self.on_event(
                    "node.down", {"node": node, "address": prev.address, "reason": "removed from the map"}
                )
        self.table = table
        self.evaluate(now)

    def close(self) -> None:
        self._close_sockets()

    # receiving ---------------------------------------------------------------------------

    def _warn(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned.get(key, -1e9) >= 60.0:
            self._warned[key] = now
            log.warning(msg, *args)

    def _on_readable(self, sock: socket.socket) -> None:
        for _ in range(RECV_BATCH):
            try:
                data, src = sock.recvfrom(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("recvfrom failed: %s", exc)
                return
            self.receive(data, src[0])

    def receive(self, data: bytes, src: str) -> None:
        """Handle one datagram from address ``src``."""
        self.stats["received"] += 1
        m = self.membership
        try:
            p = self.codec.decode(data)
        except DatagramError as exc:
            self.stats[exc.kind] += 1
            if exc.kind == "forged":
                self._warn("forged:" + src, "dropped a datagram from %s: %s", src, exc)
            return
        node: int = p["node"]
        if abs(p["ts"] - time.time()) > MAX_SKEW:
            self.stats["stale"] += 1
            self._warn(
                "stale:" + src,
                "dropped a stale datagram from %s (clock %.0f s off); are the clocks synchronised?",
                src,
                p["ts"] - time.time(),
            )
            return
        if m is None or m.mode == "off":
            self.stats["ignored_off"] += 1
            return
        if node == m.node_id:
            if p["boot"] == self.boot:
                self.stats["own"] += 1
            else:
                self.stats["conflict"] += 1
                self._warn(
                    "conflict", "node %s at %s claims my node ID %s; node IDs must be unique", node, src, node
                )
            return
        if m.mode == "map" and src not in m.peers.get(node, ()):
            self.stats["unknown_sender"] += 1
            self._warn(
                "unknown:" + src,
                "Received an unauthorized information request from %s (node %s is not in the map at that address)",
                src,
                node,
            )
            return
        seen = self._seen.setdefault(node, {})
        last = seen.get(p["boot"])
        if last is not None and p["seq"] <= last:
            self.stats["replayed"] += 1
            return
        seen.pop(p["boot"], None)
        seen[p["boot"]] = p["seq"]
        while len(seen) > 4:  # remember the last few incarnations of each node
            seen.pop(next(iter(seen)))
        self.stats["accepted"] += 1
        now = time.monotonic()
        if p["t"] == "leave":
            if self.table.leave(node, p["boot"], now):
                self.evaluate(now)
            return
        info = dict(p["info"])
        if m.mode == "discovery":
            info["address"] = src  # where it really came from; the claimed address is not trusted
        else:
            info["address"] = m.peers[node][0]
        self._learn(node, info, now, p["boot"], merge=p["t"] == "quiet")
        if p["t"] == "info":
            for item in p["window"]:
                other = item["info"]["id"]
                if other == m.node_id:
                    continue
                if m.mode == "map":
                    if other not in m.peers:
                        continue
                    item["info"]["address"] = m.peers[other][0]
                self._learn(other, item["info"], now - item["age"], item["boot"])
        self.evaluate(now)

    def _learn(
        self, node: int, info: dict[str, Any], fresh_at: float, boot: str | None, *, merge: bool = False
    ) -> None:
        if node not in self.table.entries:
            self.table.ensure(node, info["address"])
            self.on_event("node.joined", {"node": node, "address": info["address"]})
        self.table.update(node, info, fresh_at, boot, merge=merge)

    def evaluate(self, now: float) -> None:
        """Emit node.up / node.down for every status change."""
        for e in self.table.entries.values():
            if e.id == self.table.self_id:
                continue
            up = self.table.is_up(e, now)
            if up != e.up:
                e.up = up
                if up:
                    self.on_event("node.up", {"node": e.id, "address": e.address})
                else:
                    self.on_event(
                        "node.down",
                        {"node": e.id, "address": e.address, "reason": "left" if e.left else "silent"},
                    )

    # sending -----------------------------------------------------------------------------

    def peers(self) -> list[tuple[int, str]]:
        m = self.membership
        if m is None or m.mode == "off":
            return []
        if m.mode == "map":
            return [(n, a[0]) for n, a in m.peers.items() if n != m.node_id]
        return [(e.id, e.address) for e in self.table.entries.values() if e.id != m.node_id]

    def _payload(self, t: str, info: dict[str, Any] | None, window: list[dict[str, Any]]) -> dict[str, Any]:
        assert self.membership is not None
        self.seq += 1
        p: dict[str, Any] = {
            "t": t, "node": self.membership.node_id, "addr": self.membership.address,
            "boot": self.boot, "seq": self.seq, "ts": round(time.time(), 3),
        }  # fmt: skip
        if info is not None:
            p["info"] = info
        if window:
            p["window"] = window
        return p

    def _send(self, payload_fn: Callable[[], dict[str, Any]], addr: str) -> None:
        if self._usock is None:
            return
        data = self.codec.encode(payload_fn())
        try:
            self._usock.sendto(data, (addr, self.port))
            self.stats["sent"] += 1
        except OSError as exc:
            self.stats["send_errors"] += 1
            if exc.errno not in (errno.EAGAIN, errno.ECONNREFUSED):
                self._warn("send:" + addr, "cannot send to %s:%s: %s", addr, self.port, exc.strerror)

    def tick(self, self_info: dict[str, Any]) -> None:
        """Once a second: tell ``gossip_fanout`` random peers (all of them right after a start)."""
        m = self.membership
        now = time.monotonic()
        if m is None or m.mode == "off":
            return
        quiet = bool(self_info.get("quiet"))
        if quiet:
            info = {k: self_info[k] for k in HEARTBEAT_FIELDS if k in self_info}

            def build() -> dict[str, Any]:
                return self._payload("quiet", info, [])
        else:
            window = self.table.window(now)

            def build() -> dict[str, Any]:
                return self._payload("info", self_info, window)

        peers = self.peers()
        if self._announce:
            targets = peers
            self._announce = False
        else:
            targets = random.sample(peers, min(self.fanout, len(peers)))
        for _, addr in targets:
            self._send(build, addr)
        if m.mode == "discovery" and now >= self._next_beacon:
            # a small beacon (no window) to the group: how unknown nodes find us
            if quiet:
                self._send(build, self.group)
            else:
                self._send(lambda: self._payload("info", self_info, []), self.group)
            self._beacons += 1
            interval = 1.0 if self._beacons < 3 else max(1.0, min(2.0, self.down_after / 3))
            self._next_beacon = now + interval
        self.evaluate(now)

    def announce_leaving(self) -> None:
        """Tell every known peer (and the discovery group) that this node leaves now."""
        m = self.membership
        if m is None or m.mode == "off":
            return
        for _, addr in self.peers():
            self._send(lambda: self._payload("leave", None, []), addr)
        if m.mode == "discovery":
            self._send(lambda: self._payload("leave", None, []), self.group)

    # reading -----------------------------------------------------------------------------

    def nodes(self, me: NodeInfo) -> list[NodeInfo]:
        """Every known node, this one included, sorted by ID."""
        now = time.monotonic()
        out = [me]
        for e in self.table.entries.values():
            if e.id != me.id:
                out.append(self.table.node_info(e, now))
        return sorted(out, key=lambda n: n.id)
