"""L0 model: the collector's history files, format version 1 (stdlib only).

The one contract between openmosixcollector (writes) and the analyzer / history browser (read):
the byte encodings, the file layout of a history directory and the readers. docs/collector.md
describes the bytes; change FORMAT_VERSION whenever a reader of the old version would misread.
"""

from __future__ import annotations

import json
import logging
import lzma
import math
import os
import re
import struct
import sys
import time
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import lshift
from typing import Any, NamedTuple

from omview.model.cluster import NodeInfo, ProcessInfo
from omview.model.errors import OmviewError

log = logging.getLogger(__name__)

#: Bumped whenever a reader of the previous version would misread the files.
FORMAT_VERSION = 1
#: First 8 bytes of every history file.
MAGIC = b"OMVHIST\n"
#: Names inside a history directory.
CLUSTER_FILE = "cluster"
PROCS_FILE = "procs"
NODE_PREFIX = "node"
#: Suffix of files compressed after rotation (xz container, lzma).
COMPRESSED_SUFFIX = ".xz"
#: Where the collector writes unless told otherwise ($OMVIEW_COLLECTOR_DIR overrides).
DEFAULT_LOGDIR = "/var/log/openmosixcollector"
#: A history is closed and moved aside after this long (the original's 12 hours).
ROTATE_SECONDS = 12 * 3600
#: Node files and the process file get a self-contained key record this often (in ticks),
#: so readers can seek and resynchronise, and a damaged byte costs at most this many samples.
KEY_EVERY = 300

_NODE_FILE_RE = re.compile(r"^node(\d{1,5})(\.xz)?$")
_BACKUP_STAMP = "%Y-%m-%d_%H-%M-%S"
_BACKUP_RE = re.compile(r"-(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})Z(\.\d+)?$")


class HistoryFormatError(OmviewError):
    """A history file is not one this omview can read (wrong magic, version or damaged header)."""

    def __init__(self, message: str, *, path: str = "", version: int | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.version = version


# ---------------------------------------------------------------------------------------
# Self-description


class BadRecord(ValueError):
    """A record whose checksum is right but whose content is not what the format says (issue 13,
    defect 9): readers skip it and count it in ``History.bad_records``, never fail on it."""


_INT64 = 1 << 63


def _json_object(payload: bytes, what: str = "record") -> dict[str, Any]:
    """PAYLOAD as a JSON object, else BadRecord (bad UTF-8 or JSON, nesting too deep, not an object)."""
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadRecord(f"{what} is not JSON ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise BadRecord(f"{what} is not a JSON object")
    return obj


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -_INT64 <= v < _INT64


def _is_num(v: Any) -> bool:
    return (isinstance(v, float) and math.isfinite(v)) or _is_int(v)


def _field_int(rec: dict[str, Any], key: str, default: int | None = None) -> int:
    """REC[KEY] as a 64-bit integer (DEFAULT if absent), else BadRecord."""
    v: Any = rec.get(key, default)
    if not _is_int(v):
        raise BadRecord(f"{key!r} is not an integer: {_short(v)}")
    return int(v)


def _field_num(rec: dict[str, Any], key: str, default: float | None = None) -> float:
    """REC[KEY] as a finite number (DEFAULT if absent), else BadRecord."""
    v: Any = rec.get(key, default)
    if not _is_num(v):
        raise BadRecord(f"{key!r} is not a finite number: {_short(v)}")
    return float(v)


def _field_text(rec: dict[str, Any], key: str, default: str | None = "") -> str:
    """REC[KEY] as a string (DEFAULT if absent), else BadRecord."""
    v = rec.get(key, default)
    if not isinstance(v, str):
        raise BadRecord(f"{key!r} is not a string: {_short(v)}")
    return v


def _short(v: Any) -> str:
    text = repr(v) if not isinstance(v, (list, dict)) else type(v).__name__
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class FieldSpec:
    """One recorded quantity: its name, the unit stored on disk and what it means."""

    name: str
    unit: str
    description: str


#: Per-node sample fields, in on-disk order. Memory is stored in KiB (readers give bytes).
NODE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("load", "load", "openMosix load: 100 = one reference-speed CPU kept busy"),
    FieldSpec("mem", "KiB", "memory available as omview believes (/proc/hpc/nodes/N/mem)"),
    FieldSpec("rmem", "KiB", "free memory as Linux believes (rmem)"),
    FieldSpec("util", "percent", "CPU utilisation of the node, 0..100"),
    FieldSpec("tmem", "KiB", "total memory (tmem)"),
    FieldSpec("speed", "speed", "relative CPU speed, 10000 = the reference CPU"),
    FieldSpec("cpus", "count", "number of CPUs"),
    FieldSpec("status", "enum", "0 down, 1 up, 2 unknown"),
)
FIELD_NAMES = tuple(f.name for f in NODE_FIELDS)
STATUS_NAMES = ("down", "up", "unknown")
_MEM_FIELDS = (1, 2, 4)

#: Process fields, in the order used inside process records.
PROC_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("pid", "pid", "process ID on the collector's node"),
    FieldSpec("ppid", "pid", "parent process ID"),
    FieldSpec("uid", "uid", "owner's user ID"),
    FieldSpec("user", "name", "owner's user name"),
    FieldSpec("state", "letter", "state letter as in /proc/PID/stat"),
    FieldSpec("nice", "nice", "nice value"),
    FieldSpec("cpu", "percent", "CPU use of one CPU, rounded to whole percent"),
    FieldSpec("rss", "KiB", "resident memory; a change under 1/32 (and under 1 MiB) is not recorded"),
    FieldSpec("threads", "count", "number of threads"),
    FieldSpec("name", "text", "command name"),
    FieldSpec("cmdline", "list", "command line"),
    FieldSpec("home", "node", "home node ID"),
    FieldSpec("where", "node", "node the process runs on"),
    FieldSpec("lock", "bool", "locked to its node"),
    FieldSpec("nmigs", "count", "migrations so far"),
    FieldSpec("cantmove", "text", "why it cannot migrate, empty if it can"),
    FieldSpec("job", "text", "cluster job id"),
)
_P_CPU = 6
_P_RSS = 7


def _spec_list(specs: Sequence[FieldSpec]) -> list[dict[str, str]]:
    return [{"name": f.name, "unit": f.unit, "description": f.description} for f in specs]


# ---------------------------------------------------------------------------------------
# Varints and framing


def put_uvarint(out: bytearray, n: int) -> None:
    """Append an unsigned LEB128 varint (7 bits per byte, low group first)."""
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def put_svarint(out: bytearray, n: int) -> None:
    """Append a signed varint, zigzag-mapped so small magnitudes stay short."""
    put_uvarint(out, n << 1 if n >= 0 else ((-n) << 1) - 1)


def get_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode an unsigned varint at pos; returns (value, next position); IndexError if cut."""
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ValueError("varint longer than 10 bytes")


def get_svarint(buf: bytes, pos: int) -> tuple[int, int]:
    z, pos = get_uvarint(buf, pos)
    return (z >> 1) if not z & 1 else -((z + 1) >> 1), pos


# Framed record types. Cluster file: 1-15; process file: 16-31.
T_TICK = 1  # payload: uvarint tick, uvarint wall time in ms since the epoch
T_CHECKPOINT = 2  # JSON {"tick", "t", "label"}
T_EVENT = 3  # JSON {"tick", "t", "name", "data"}
T_NODE = 4  # JSON {"tick", "t", "id", "address", "hostname", "version"}: node seen / changed
T_SESSION = 5  # JSON {"tick", "t", "pid", "host", "interval", "writer"}: a collector (re)started
T_CLOCK = 6  # JSON {"tick", "t", "jump"}: the wall clock jumped by `jump` seconds
T_GAP = 7  # JSON {"tick", "t", "since", "reason"}: nothing was recorded from wall time since to t
T_PKEY = 16  # JSON {"tick", "procs": [[field values]...]}: the full process list
T_PDELTA = 17  # JSON {"tick", "add": [...], "del": [pid...], "chg": [[pid, i, v, i, v...]...]}
_KNOWN_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 16, 17})
_MAX_FRAME = 16 << 20


def frame(rtype: int, payload: bytes) -> bytes:
    """One framed record: type byte, uvarint length, payload, CRC-32 (LE) of all before it."""
    out = bytearray((rtype,))
    put_uvarint(out, len(payload))
    out += payload
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out)


def json_frame(rtype: int, obj: dict[str, Any]) -> bytes:
    return frame(rtype, json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())


def tick_frame(tick: int, wall: float) -> bytes:
    out = bytearray()
    put_uvarint(out, tick)
    put_uvarint(out, max(0, round(wall * 1000)))
    return frame(T_TICK, bytes(out))


def decode_tick(payload: bytes) -> tuple[int, int]:
    """(tick, wall time in ms) of a T_TICK payload; BadRecord if cut, too long or out of range."""
    try:
        tick, p = get_uvarint(payload, 0)
        ms, p = get_uvarint(payload, p)
    except (IndexError, ValueError):
        raise BadRecord("a tick record is not two varints") from None
    if p != len(payload) or tick >= _INT64 or ms >= _INT64:
        raise BadRecord(f"a tick record is out of range (tick {tick}, {ms} ms, {len(payload)} bytes)")
    return tick, ms


class Frame(NamedTuple):
    rtype: int
    payload: bytes
    offset: int


@dataclass
class ScanResult:
    """What a scan of appended bytes found: good records, where to resume, damage seen."""

    end: int  # offset after the last complete, valid record (resume here)
    damaged: int = 0  # bytes skipped because they were not valid records
    torn: bool = False  # the data ends inside a record (being written, or cut by a crash)
    #: the bytes after ``end`` are no start of a record (garbage, zeros), not just one cut short
    bad_tail: bool = False


def _try_frame(buf: bytes, pos: int) -> tuple[Frame | None, int]:
    """Parse one frame at pos. Returns (frame, next) / (None, -1) if cut / (None, -2) if bad."""
    n = len(buf)
    rtype = buf[pos]
    if rtype not in _KNOWN_TYPES:
        return None, -2
    try:
        length, p = get_uvarint(buf, pos + 1)
    except IndexError:
        return None, -1
    except ValueError:
        return None, -2
    if length > _MAX_FRAME:
        return None, -2
    end = p + length + 4
    if end > n:
        return None, -1
    (crc,) = struct.unpack_from("<I", buf, p + length)
    if zlib.crc32(buf[pos : p + length]) != crc:
        return None, -2
    return Frame(rtype, bytes(buf[p : p + length]), pos), end


def scan_frames(buf: bytes, start: int = 0) -> tuple[list[Frame], ScanResult]:
    """All valid framed records in buf[start:]; skips damage, stops before a torn tail.

    A record that fails its CRC with more data behind it is damage: the scan looks for the
    next offset where a valid record starts (a false match needs a 32-bit CRC collision).
    """
    frames: list[Frame] = []
    res = ScanResult(end=start)
    pos = start
    n = len(buf)
    while pos < n:
        fr, nxt = _try_frame(buf, pos)
        if fr is not None:
            frames.append(fr)
            pos = nxt
            res.end = pos
            continue
        if nxt == -1 and not _valid_frame_after(buf, pos + 1):
            res.torn = True
            break
        # damage: resynchronise on the next valid frame
        skip = pos + 1
        while skip < n:
            fr2, nxt2 = _try_frame(buf, skip)
            if fr2 is not None:
                break
            skip += 1
        if skip >= n:
            # nothing valid follows: treat as a torn tail so a live reader retries later
            res.torn = res.bad_tail = True
            break
        res.damaged += skip - pos
        pos = skip
    return frames, res


def _valid_frame_after(buf: bytes, pos: int) -> bool:
    """True if some valid frame starts at or after pos (so the bytes before it are damage)."""
    n = len(buf)
    # only called on the rare damaged/torn path; bounded by the buffer
    while pos < n:
        fr, _ = _try_frame(buf, pos)
        if fr is not None:
            return True
        pos += 1
    return False


# ---------------------------------------------------------------------------------------
# File headers


def encode_header(kind: str, history_id: str, created: float, interval: float, **extra: Any) -> bytes:
    """The first bytes of a history file: magic, version, JSON self-description, CRC-32.

    ``kind`` is "cluster", "node" (live delta records), "procs" or "node-columns" (a node file
    transcoded at rotation).
    """
    meta: dict[str, Any] = {
        "format": "omview-collector-history",
        "version": FORMAT_VERSION,
        "kind": kind,
        "history": history_id,
        "created": round(created, 3),
        "interval": interval,
    }
    # every file names its fields and units; the descriptions are in the cluster file only
    if kind == "cluster":
        meta["node_fields"] = _spec_list(NODE_FIELDS)
        meta["proc_fields"] = _spec_list(PROC_FIELDS)
    elif kind == "procs":
        meta["proc_fields"] = [[f.name, f.unit] for f in PROC_FIELDS]
    else:
        meta["node_fields"] = [[f.name, f.unit] for f in NODE_FIELDS]
    if kind != "procs":
        meta["key_every"] = KEY_EVERY
    meta.update(extra)
    return _header_bytes(meta)


def _header_bytes(meta: dict[str, Any]) -> bytes:
    body = json.dumps(meta, separators=(",", ":")).encode()
    head = MAGIC + struct.pack("<HI", FORMAT_VERSION, len(body)) + body
    return head + struct.pack("<I", zlib.crc32(head))


_KINDS = frozenset({"cluster", "node", "procs", "node-columns"})
#: Real headers are about 1 KiB; a longer length field is garbled.
_MAX_HEADER = 1 << 20


def decode_header(buf: bytes, path: str = "") -> tuple[dict[str, Any], int]:
    """Parse a header; returns (metadata, offset of the first record).

    Raises HistoryFormatError for a foreign file, another version or a damaged header; its
    ``version`` is set when the version could be read. The writer renames a file into place only
    after its whole header is written, so a header cut short is damage (a crash before the data
    reached the disk, a garbled length), never a file being created.
    """
    if len(buf) < len(MAGIC) + 6:
        if MAGIC.startswith(bytes(buf[: len(MAGIC)])):
            raise HistoryFormatError("damaged header: cut short (a crash, or damage)", path=path)
        raise HistoryFormatError("not an omview collector history file", path=path)
    if bytes(buf[: len(MAGIC)]) != MAGIC:
        raise HistoryFormatError("not an omview collector history file (bad magic)", path=path)
    version, length = struct.unpack_from("<HI", buf, len(MAGIC))
    if version != FORMAT_VERSION:
        raise HistoryFormatError(
            f"written in history format version {version}; this omview reads version {FORMAT_VERSION}"
            + (" (upgrade omview)" if version > FORMAT_VERSION else " (convert or keep an older omview)"),
            path=path,
            version=version,
        )
    if length > _MAX_HEADER:
        raise HistoryFormatError(
            f"damaged header: length {length} is out of range", path=path, version=version
        )
    end = len(MAGIC) + 6 + length
    if len(buf) < end + 4:
        raise HistoryFormatError(
            f"damaged header: cut short ({len(buf)} bytes, the header says {end + 4})",
            path=path,
            version=version,
        )
    (crc,) = struct.unpack_from("<I", buf, end)
    if zlib.crc32(buf[:end]) != crc:
        raise HistoryFormatError("damaged header (checksum mismatch)", path=path, version=version)
    try:
        meta = json.loads(bytes(buf[len(MAGIC) + 6 : end]))
    except ValueError as exc:  # bad UTF-8, bad JSON, an integer of too many digits
        raise HistoryFormatError(f"damaged header: {exc}", path=path, version=version) from None
    except RecursionError:
        raise HistoryFormatError("damaged header: nested too deep", path=path, version=version) from None
    if not isinstance(meta, dict):
        raise HistoryFormatError("damaged header: not a JSON object", path=path, version=version)
    # the CRC only says the bytes are as written; what readers and the writer take from the header
    # must also have its type, or a reader fails later (created "now": ValueError)
    try:
        if _field_text(meta, "kind", None) not in _KINDS:
            raise BadRecord(f"unknown kind {_short(meta.get('kind'))}")
        _field_text(meta, "history", None)
        _field_num(meta, "created", None)
        if not 0 < _field_num(meta, "interval", None) <= 86400:
            raise BadRecord(f"interval {meta['interval']} is out of range")
        if "key_every" in meta and _field_int(meta, "key_every") < 1:
            raise BadRecord("key_every must be positive")
    except BadRecord as exc:
        raise HistoryFormatError(f"damaged header: {exc}", path=path, version=version) from None
    return meta, end + 4


# ---------------------------------------------------------------------------------------
# Node samples: delta records with periodic key frames

#: A key frame starts with these 4 bytes; sample records always start with a byte < 0x40.
KEY_MAGIC = b"\xffOMK"
_M_GAP = 0x10  # a uvarint g follows: this record's tick is previous tick + 2 + g
_M_EXT = 0x20  # an extension mask byte follows (bits 0-3: tmem, speed, cpus, status)
_M_FIELDS = 0x0F  # bits 0-3: load, mem, rmem, util changed (a zigzag delta follows each)

Values = tuple[int, int, int, int, int, int, int, int]


def node_values(info: NodeInfo) -> Values:
    """The stored form of a NodeInfo: ints in NODE_FIELDS order (memory in KiB)."""
    status = 1 if info.status == "up" else 0 if info.status == "down" else 2
    return (
        int(info.load),
        int(info.mem) >> 10,
        int(info.rmem) >> 10,
        int(info.util),
        int(info.tmem) >> 10,
        int(info.speed),
        int(info.cpus),
        status,
    )


def _check_byte(record: bytes | bytearray) -> int:
    return zlib.crc32(record) & 0xFF


def encode_key(tick: int, values: Values) -> bytes:
    """A self-contained key frame: magic, uvarint length, tick + absolute values, CRC-32."""
    body = bytearray()
    put_uvarint(body, tick)
    for v in values:
        put_svarint(body, v)
    out = bytearray(KEY_MAGIC)
    put_uvarint(out, len(body))
    out += body
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out)


def encode_sample(prev_tick: int, prev: Values, tick: int, values: Values) -> bytes:
    """A delta record against the node's previous sample; ends with a 1-byte check (CRC-32 & 0xFF).

    Unchanged samples cost 2 bytes. ``tick`` must be greater than ``prev_tick``.
    """
    if tick <= prev_tick:
        raise ValueError(f"tick {tick} does not follow {prev_tick}")
    mask = 0
    ext = 0
    tail = bytearray()
    for i in range(4):
        d = values[i] - prev[i]
        if d:
            mask |= 1 << i
            put_svarint(tail, d)
    for i in range(4, 7):
        d = values[i] - prev[i]
        if d:
            ext |= 1 << (i - 4)
            put_svarint(tail, d)
    if values[7] != prev[7]:
        ext |= 0x08
        put_uvarint(tail, values[7])
    out = bytearray(1)
    if ext:
        mask |= _M_EXT
        out.append(ext)
    if tick != prev_tick + 1:
        mask |= _M_GAP
        put_uvarint(out, tick - prev_tick - 2)
    out[0] = mask
    out += tail
    out.append(_check_byte(out))
    return bytes(out)


class NodeEncoder:
    """Writer-side state of one node file: turns samples into records, commits after a write.

    The caller writes the returned bytes and calls ``commit`` only if the write succeeded, so a
    failed write (disk full) never makes later deltas refer to a sample that is not on disk.
    """

    def __init__(self, key_every: int = KEY_EVERY) -> None:
        self.key_every = key_every
        self.tick = -1
        self.values: Values | None = None
        self.last_key = -(1 << 62)
        self._pending: tuple[int, Values, bool] | None = None

    def encode(self, tick: int, values: Values, *, force_key: bool = False) -> bytes:
        key = force_key or self.values is None or tick - self.last_key >= self.key_every
        if key:
            data = encode_key(tick, values)
        else:
            assert self.values is not None
            data = encode_sample(self.tick, self.values, tick, values)
        self._pending = (tick, values, key)
        return data

    def commit(self) -> None:
        assert self._pending is not None
        self.tick, self.values, key = self._pending
        if key:
            self.last_key = self.tick
        self._pending = None


@dataclass
class NodeSeries:
    """One node's samples as parallel arrays (numpy: ``np.frombuffer(s.load, dtype=np.int64)``).

    ``times`` are wall-clock seconds as recorded (see History.clock_jumps); ``ticks`` always
    increase. Memory arrays are in bytes like NodeInfo; ``status`` holds 0 down, 1 up, 2 unknown.
    """

    node_id: int
    ticks: array[int] = field(default_factory=lambda: array("q"))
    times: array[float] = field(default_factory=lambda: array("d"))
    load: array[int] = field(default_factory=lambda: array("q"))
    mem: array[int] = field(default_factory=lambda: array("q"))
    rmem: array[int] = field(default_factory=lambda: array("q"))
    util: array[int] = field(default_factory=lambda: array("q"))
    tmem: array[int] = field(default_factory=lambda: array("q"))
    speed: array[int] = field(default_factory=lambda: array("q"))
    cpus: array[int] = field(default_factory=lambda: array("q"))
    status: array[int] = field(default_factory=lambda: array("b"))

    def __len__(self) -> int:
        return len(self.ticks)

    def columns(self) -> dict[str, array[Any]]:
        """Field name -> array, in NODE_FIELDS order plus "tick" and "time"."""
        cols: dict[str, array[Any]] = {"tick": self.ticks, "time": self.times}
        for name in FIELD_NAMES:
            cols[name] = getattr(self, name)
        return cols

    def sample(self, i: int) -> NodeInfo:
        """Row i as a NodeInfo (address/hostname empty: see History.nodes for those)."""
        return NodeInfo(
            id=self.node_id,
            address="",
            status=STATUS_NAMES[self.status[i]] if 0 <= self.status[i] < 3 else "unknown",
            load=self.load[i],
            speed=self.speed[i],
            cpus=self.cpus[i],
            tmem=self.tmem[i],
            mem=self.mem[i],
            rmem=self.rmem[i],
            util=self.util[i],
        )


class NodeDecoder:
    """Incremental decoder of one node file's records (shared by the readers and the writer's recovery)."""

    def __init__(self) -> None:
        self.tick = -1
        self.values: list[int] | None = None
        self.damaged = 0
        self.orphans = 0

    def decode(
        self,
        buf: bytes,
        start: int,
        emit: Any,
        *,
        max_tick: int | None = None,
    ) -> ScanResult:
        """Decode records in buf[start:], calling ``emit(tick, values)`` for each sample.

        Stops before a torn tail, and before the first sample whose tick is above ``max_tick``
        (a live reader has not seen that tick's time yet). Damage (bad check, bad lead byte) is
        skipped up to the next key frame.
        """
        res = ScanResult(end=start)
        pos = start
        n = len(buf)
        crc32 = zlib.crc32
        while pos < n:
            b = buf[pos]
            rec_start = pos
            try:
                if b == 0xFF:
                    if bytes(buf[pos : pos + 4]) != KEY_MAGIC:
                        if n - pos < 4 and KEY_MAGIC.startswith(bytes(buf[pos:])):
                            res.torn = True
                            break
                        raise ValueError("bad key magic")
                    length, p = get_uvarint(buf, pos + 4)
                    end = p + length
                    if end + 4 > n:
                        raise IndexError
                    (crc,) = struct.unpack_from("<I", buf, end)
                    if crc32(buf[pos:end]) != crc:
                        raise ValueError("key frame checksum")
                    tick, p = get_uvarint(buf, p)
                    vals = []
                    for _ in range(8):
                        v, p = get_svarint(buf, p)
                        vals.append(v)
                    if p != end:
                        raise ValueError("key frame length")
                    if tick <= self.tick:
                        raise ValueError("key frame tick goes backwards")
                    if max_tick is not None and tick > max_tick:
                        break
                    self.tick = tick
                    self.values = vals
                    pos = end + 4
                elif b < 0x40:
                    if self.values is None:
                        raise ValueError("sample before any key frame")
                    p = pos + 1
                    ext = 0
                    if b & _M_EXT:
                        ext = buf[p]
                        p += 1
                        if ext & 0xF0 or not ext:
                            raise ValueError("bad extension mask")
                    tick = self.tick + 1
                    if b & _M_GAP:
                        g, p = get_uvarint(buf, p)
                        tick += 1 + g
                    vals = self.values.copy()
                    for i in range(4):
                        if b & (1 << i):
                            # inline zigzag varint: the hot path of every reader
                            z = buf[p]
                            p += 1
                            if z >= 0x80:
                                z, p = get_uvarint(buf, p - 1)
                            vals[i] += (z >> 1) if not z & 1 else -((z + 1) >> 1)
                    if ext:
                        for i in range(3):
                            if ext & (1 << i):
                                d, p = get_svarint(buf, p)
                                vals[4 + i] += d
                        if ext & 0x08:
                            vals[7], p = get_uvarint(buf, p)
                    if buf[p] != crc32(buf[pos:p]) & 0xFF:
                        raise ValueError("sample check byte")
                    if max_tick is not None and tick > max_tick:
                        break
                    self.tick = tick
                    self.values = vals
                    pos = p + 1
                else:
                    raise ValueError("bad lead byte")
            except IndexError:
                res.torn = True
                break
            except ValueError:
                nxt = buf.find(KEY_MAGIC, rec_start + 1)
                if nxt < 0:
                    # nothing to resynchronise on yet; a live reader retries from here later
                    res.torn = res.bad_tail = True
                    break
                res.damaged += nxt - rec_start
                self.damaged += nxt - rec_start
                pos = nxt
                continue
            emit(self.tick, self.values)
            res.end = pos
        return res


def last_key_offset(buf: bytes, start: int) -> int:
    """Offset of the last valid key frame at or after start, or -1 (for the writer's recovery)."""
    pos = len(buf)
    while True:
        pos = buf.rfind(KEY_MAGIC, start, pos)
        if pos < 0:
            return -1
        try:
            length, p = get_uvarint(buf, pos + 4)
            end = p + length
            if end + 4 <= len(buf):
                (crc,) = struct.unpack_from("<I", buf, end)
                if zlib.crc32(buf[pos:end]) == crc:
                    return pos
        except (IndexError, ValueError):
            pass


#: Column order of a "node-columns" file: the tick, then NODE_FIELDS (memory in KiB).
COLUMN_NAMES = ("tick", *FIELD_NAMES)


def pack_node_file(buf: bytes, path: str = "") -> bytes:
    """Transcode a live node file into the rotated "node-columns" form (not yet compressed).

    Layout after the header: uvarint N, then 9 columns of N little-endian int64 each (tick
    and NODE_FIELDS), every column stored as differences to the previous row (the first row
    against 0). Per-record check bytes are dropped: the xz container around the rotated file
    carries a CRC-64. A file with damage (skipped bytes, garbage at the end) raises
    HistoryFormatError: transcoding would drop the damaged bytes, and they are kept for inspection.
    """
    meta, start = decode_header(buf, path)
    if meta.get("kind") != "node":
        raise HistoryFormatError(f"not a live node file (kind {meta.get('kind')!r})", path=path)
    cols = [array("q") for _ in COLUMN_NAMES]
    prev = [0] * len(COLUMN_NAMES)

    def emit(tick: int, values: list[int]) -> None:
        row = (tick, *values)
        for i, v in enumerate(row):
            cols[i].append(v - prev[i])
            prev[i] = v

    res = NodeDecoder().decode(buf, start, emit)
    if res.damaged or res.bad_tail:
        raise HistoryFormatError(
            f"damaged node file ({res.damaged} damaged bytes, {len(buf) - res.end} bytes after the last record)",
            path=path,
        )
    meta = dict(meta, kind="node-columns", columns=list(COLUMN_NAMES))
    out = bytearray(_header_bytes(meta))
    put_uvarint(out, len(cols[0]))
    for c in cols:
        if sys.byteorder == "big":
            c.byteswap()
        out += c.tobytes()
    return bytes(out)


def unpack_columns(buf: bytes, start: int, path: str = "") -> list[array[int]]:
    """The absolute columns (COLUMN_NAMES order) of a "node-columns" file body."""
    n, p = get_uvarint(buf, start)
    if p + 8 * n * len(COLUMN_NAMES) > len(buf):
        raise HistoryFormatError("node-columns file is shorter than its row count says", path=path)
    out = []
    for _ in COLUMN_NAMES:
        d = array("q")
        d.frombytes(buf[p : p + 8 * n])
        if sys.byteorder == "big":
            d.byteswap()
        p += 8 * n
        out.append(array("q", accumulate(d)))
    return out


# ---------------------------------------------------------------------------------------
# Process snapshots: full lists now and then, changes in between


def proc_row(p: ProcessInfo) -> list[Any]:
    """The stored form of a ProcessInfo (PROC_FIELDS order, cpu whole percent, rss KiB)."""
    return [
        p.pid,
        p.ppid,
        p.uid,
        p.user,
        p.state,
        p.nice,
        round(p.cpu),
        p.rss >> 10,
        p.threads,
        p.name,
        list(p.cmdline),
        p.home,
        p.where,
        1 if p.lock else 0,
        p.nmigs,
        p.cantmove,
        p.job,
    ]


def proc_from_row(row: Sequence[Any]) -> ProcessInfo:
    return ProcessInfo(
        pid=row[0],
        ppid=row[1],
        uid=row[2],
        user=row[3],
        state=row[4],
        nice=row[5],
        cpu=float(row[6]),
        rss=row[7] << 10,
        threads=row[8],
        name=row[9],
        cmdline=tuple(row[10]),
        home=row[11],
        where=row[12],
        lock=bool(row[13]),
        nmigs=row[14],
        cantmove=row[15],
        job=row[16],
    )


#: The type of every PROC_FIELDS value as stored (cpu may be written as a float by other writers).
_PROC_TYPES: tuple[str, ...] = (
    "int", "int", "int", "str", "str", "int", "num", "int", "int", "str", "strs", "int", "int", "int", "int",
    "str", "str",
)  # fmt: skip


def _proc_value_ok(i: int, v: Any) -> bool:
    kind = _PROC_TYPES[i]
    if kind == "int":
        return _is_int(v) or (i == 13 and isinstance(v, bool))
    if kind == "num":
        return _is_num(v)
    if kind == "str":
        return isinstance(v, str)
    return isinstance(v, list) and all(isinstance(a, str) for a in v)


def _check_proc_row(row: Any) -> None:
    if not isinstance(row, list) or len(row) != len(PROC_FIELDS):
        raise BadRecord(f"a process row is not a list of {len(PROC_FIELDS)} values")
    for i, v in enumerate(row):
        if not _proc_value_ok(i, v):
            raise BadRecord(f"process field {PROC_FIELDS[i].name} is {_short(v)}")


def _check_proc_record(rtype: int, rec: dict[str, Any]) -> int:
    """The record's tick, after checking every row and change in it (BadRecord otherwise), so that
    applying it later cannot fail."""
    tick = _field_int(rec, "tick", None)
    lists = ("procs",) if rtype == T_PKEY else ("add", "del", "chg")
    for key in lists:
        items = rec.get(key, [])
        if not isinstance(items, list):
            raise BadRecord(f"{key!r} is not a list")
        for item in items:
            if key == "del":
                if not _is_int(item):
                    raise BadRecord(f"a deleted pid is {_short(item)}")
            elif key != "chg":
                _check_proc_row(item)
            elif not (isinstance(item, list) and len(item) % 2 == 1 and _is_int(item[0])) or not all(
                _is_int(i) and 0 < i < len(PROC_FIELDS) and _proc_value_ok(i, v)
                for i, v in zip(item[1::2], item[2::2], strict=True)
            ):
                raise BadRecord(f"a process change is {_short(item)}")
    return tick


def _rss_changed(old: int, new: int) -> bool:
    # resident size wobbles by a few pages every second; recording that would dominate the file
    return abs(new - old) * 32 > old and abs(new - old) >= 1024 or (old == 0) != (new == 0)


class ProcEncoder:
    """Writer-side state of the process file: a full list every KEY_EVERY ticks, else changes."""

    def __init__(self, key_every: int = KEY_EVERY) -> None:
        self.key_every = key_every
        self.rows: dict[int, list[Any]] | None = None
        self.last_key = -(1 << 62)
        self._pending: tuple[dict[int, list[Any]], int | None] | None = None

    def encode(self, tick: int, procs: Iterable[ProcessInfo], *, force_key: bool = False) -> bytes | None:
        """The record for this tick, or None when nothing changed; then call commit() after writing."""
        new: dict[int, list[Any]] = {}
        for p in procs:
            new[p.pid] = proc_row(p)
        old = self.rows
        if force_key or old is None or tick - self.last_key >= self.key_every:
            self._pending = (new, tick)
            return json_frame(T_PKEY, {"tick": tick, "procs": list(new.values())})
        add: list[list[Any]] = []
        chg: list[list[Any]] = []
        stored: dict[int, list[Any]] = {}
        for pid, row in new.items():
            prev = old.get(pid)
            if prev is None or prev[9] != row[9] or prev[10] != row[10] or prev[1] != row[1]:
                # new process, or the pid was reused by another program
                add.append(row)
                stored[pid] = row
                continue
            changes: list[Any] = [pid]
            kept = prev.copy()
            for i, v in enumerate(row):
                if v == prev[i]:
                    continue
                if i == _P_RSS and not _rss_changed(prev[i], v):
                    continue
                changes += (i, v)
                kept[i] = v
            if len(changes) > 1:
                chg.append(changes)
            stored[pid] = kept
        gone = [pid for pid in old if pid not in new]
        self._pending = (stored, None)
        if not add and not chg and not gone:
            return None
        rec: dict[str, Any] = {"tick": tick}
        if add:
            rec["add"] = add
        if gone:
            rec["del"] = gone
        if chg:
            rec["chg"] = chg
        return json_frame(T_PDELTA, rec)

    def commit(self) -> None:
        assert self._pending is not None
        self.rows, key_tick = self._pending
        if key_tick is not None:
            self.last_key = key_tick
        self._pending = None


# ---------------------------------------------------------------------------------------
# Reading a history directory


@dataclass(frozen=True)
class Checkpoint:
    """A marker set with ``openmosixcollector -n [LABEL]`` (drawn as a blue vertical line)."""

    time: float
    tick: int
    label: str


@dataclass(frozen=True)
class Event:
    """Something the agent reported (node.up, node.down, migration.*) or the collector noticed."""

    time: float
    tick: int
    name: str
    data: Any


@dataclass(frozen=True)
class NodeMeta:
    """What the cluster file says about a node (the latest NODE record)."""

    id: int
    address: str = ""
    hostname: str = ""
    version: str = ""
    first_seen: float = 0.0


@dataclass(frozen=True)
class Session:
    """A collector process that wrote to this history (a restart adds one)."""

    time: float
    tick: int
    pid: int
    host: str
    interval: float


@dataclass(frozen=True)
class Gap:
    """A stretch of wall time with no samples (agent unreachable, disk full...)."""

    start: float
    end: float
    tick: int  # the first tick written after the gap
    reason: str


@dataclass(frozen=True)
class ClockJump:
    """The wall clock jumped by ``jump`` seconds just before ``tick`` (negative = backwards)."""

    time: float
    tick: int
    jump: float


def default_logdir() -> str:
    """The live history directory ($OMVIEW_COLLECTOR_DIR overrides DEFAULT_LOGDIR)."""
    return os.environ.get("OMVIEW_COLLECTOR_DIR", DEFAULT_LOGDIR)


def backup_dir_name(logdir: str, when: float) -> str:
    """``<logdir>-YYYY-MM-DD_HH-MM-SSZ`` (UTC, so names sort by time); ``.2``, ``.3`` on collision."""
    base = f"{logdir.rstrip('/')}-{time.strftime(_BACKUP_STAMP, time.gmtime(when))}Z"
    name = base
    n = 1
    while os.path.exists(name) or os.path.exists(name + ".partial"):
        n += 1
        name = f"{base}.{n}"
    return name


def is_backup_name(base: str, name: str) -> bool:
    """True if ``name`` is a dated backup of the log directory named ``base``."""
    return name.startswith(base + "-") and _BACKUP_RE.search(name[len(base) :]) is not None


def list_histories(logdir: str | None = None) -> list[str]:
    """The dated backups of logdir (oldest first) followed by logdir itself if it exists."""
    logdir = (logdir or default_logdir()).rstrip("/")
    parent, base = os.path.split(logdir)
    found: list[str] = []
    try:
        names = os.listdir(parent or ".")
    except OSError:
        names = []
    for name in names:
        if is_backup_name(base, name):
            path = os.path.join(parent, name)
            if os.path.isdir(path):
                found.append(path)
    found.sort(key=lambda p: _backup_sort_key(p[len(logdir) :]))
    if os.path.isdir(logdir):
        found.append(logdir)
    return found


def _backup_sort_key(suffix: str) -> tuple[str, int]:
    m = _BACKUP_RE.search(suffix)
    if not m:
        return (suffix, 0)
    return (m.group(1), int(m.group(2)[1:]) if m.group(2) else 1)


def history_files(directory: str) -> dict[str, str]:
    """Logical name ("cluster", "procs", "node3") -> path; the plain file wins over ``.xz``."""
    out: dict[str, str] = {}
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return out
    for name in names:
        logical = name[: -len(COMPRESSED_SUFFIX)] if name.endswith(COMPRESSED_SUFFIX) else name
        if logical in (CLUSTER_FILE, PROCS_FILE) or _NODE_FILE_RE.match(name):
            if logical not in out or not name.endswith(COMPRESSED_SUFFIX):
                out[logical] = os.path.join(directory, name)
    return out


def node_id_of(logical: str) -> int | None:
    m = _NODE_FILE_RE.match(logical)
    return int(m.group(1)) if m else None


class _Source:
    """Incrementally read bytes of one (possibly live, possibly compressed) file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.compressed = path.endswith(COMPRESSED_SUFFIX)
        self.buf = b""
        self.base = 0  # file offset of buf[0]
        self.ino: tuple[int, int] | None = None

    def read(self) -> bytes:
        """All bytes from self.base on (the whole file once for compressed files)."""
        if self.compressed:
            if self.ino is None:
                with open(self.path, "rb") as f:
                    st = os.fstat(f.fileno())
                    self.ino = (st.st_dev, st.st_ino)
                    try:
                        self.buf = lzma.decompress(f.read())
                    except lzma.LZMAError as exc:
                        raise HistoryFormatError(f"damaged compressed file: {exc}", path=self.path) from None
            return self.buf
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise HistoryRotated(self.path) from None
        with f:
            st = os.fstat(f.fileno())
            ino = (st.st_dev, st.st_ino)
            if self.ino is not None and ino != self.ino:
                raise HistoryRotated(self.path)
            self.ino = ino
            f.seek(self.base + len(self.buf))
            more = f.read()
        if more:
            self.buf = self.buf + more if self.buf else more
        return self.buf

    def consume(self, upto: int) -> None:
        """Forget bytes before buf offset ``upto`` (they have been decoded)."""
        if upto <= 0:
            return
        self.base += upto
        self.buf = self.buf[upto:]


class HistoryRotated(OmviewError):
    """The live history was moved aside since it was opened: open the directory again."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} was rotated away since it was opened; open the history again")
        self.path = path


class ProcessHistory:
    """The collector node's process list over time; ``at(t)`` is the list in effect at t."""

    def __init__(self, time_of: Any) -> None:
        self._time_of = time_of
        self.ticks: list[int] = []
        self._records: list[tuple[int, bytes]] = []  # (rtype, JSON payload)
        self._keys: list[int] = []  # indexes of key records
        self._cache: tuple[int, dict[int, list[Any]]] | None = None

    def _add(self, fr: Frame, tick: int | None = None) -> None:
        """Keep record FR; TICK is what _check_proc_record returned for it (checked here if None)."""
        if tick is None:
            tick = _check_proc_record(fr.rtype, _json_object(fr.payload))
        if self.ticks and tick <= self.ticks[-1]:
            return
        if fr.rtype == T_PKEY:
            self._keys.append(len(self._records))
        elif not self._keys:
            return  # a change record before any full list cannot be applied
        self.ticks.append(tick)
        self._records.append((fr.rtype, fr.payload))

    @property
    def times(self) -> list[float]:
        """Wall time of every recorded change (the history browser's slider stops)."""
        return [self._time_of(t) for t in self.ticks]

    def __len__(self) -> int:
        return len(self.ticks)

    def index_at(self, when: float, times: Sequence[float] | None = None) -> int:
        """Index of the last record at or before wall time ``when`` (-1 if none)."""
        ts = list(times) if times is not None else self.times
        # wall stamps may step back after a clock jump; the last record not after `when` in
        # file order is still the right answer for monotone stretches, so bisect on ticks order
        return bisect_right(ts, when) - 1

    def snapshot(self, index: int) -> list[ProcessInfo]:
        """The full process list after record ``index`` (sorted by pid)."""
        if not 0 <= index < len(self._records):
            raise IndexError(f"no process record {index} (have {len(self._records)})")
        rows = self._rows_at(index)
        return [proc_from_row(rows[pid]) for pid in sorted(rows)]

    def at(self, when: float) -> list[ProcessInfo]:
        """The process list as it was at wall time ``when`` (empty before the first record)."""
        i = self.index_at(when)
        return self.snapshot(i) if i >= 0 else []

    def _rows_at(self, index: int) -> dict[int, list[Any]]:
        k = self._keys[bisect_right(self._keys, index) - 1]
        if self._cache is not None and k <= self._cache[0] <= index:
            start, rows = self._cache[0] + 1, dict(self._cache[1])
        else:
            start, rows = k, {}
        for j in range(start, index + 1):
            rtype, payload = self._records[j]
            rec = json.loads(payload)
            if rtype == T_PKEY:
                rows = {r[0]: r for r in rec["procs"]}
                continue
            for pid in rec.get("del", ()):
                rows.pop(pid, None)
            for r in rec.get("add", ()):
                rows[r[0]] = r
            for c in rec.get("chg", ()):
                row = rows.get(c[0])
                if row is None:
                    continue
                row = list(row)
                for i in range(1, len(c) - 1, 2):
                    row[c[i]] = c[i + 1]
                rows[c[0]] = row
        self._cache = (index, rows)
        return dict(rows)


class History:
    """One history directory (live or a dated backup), read through the shared format code.

    Open with ``History.open(path)`` where path is the directory or its ``cluster`` file; call
    ``refresh()`` to pick up what a running collector appended since (it raises HistoryRotated
    when the live files were moved to a backup). Non-fatal trouble is listed in ``problems``.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        files = history_files(directory)
        cluster = files.get(CLUSTER_FILE)
        if cluster is None:
            raise HistoryFormatError(
                f"no '{CLUSTER_FILE}' file in {directory}: not a collector history (or an empty one)",
                path=directory,
            )
        self._cluster = _Source(cluster)
        buf = self._cluster.read()
        self.header, start = decode_header(buf, cluster)
        self._cluster.consume(start)
        # decode_header checked these fields' types
        self.history_id: str = self.header["history"]
        self.created: float = float(self.header["created"])
        self.interval: float = float(self.header["interval"])
        self.ticks: array[int] = array("q")
        self.times: array[float] = array("d")
        self._tick_index: dict[int, int] = {}
        self.checkpoints: list[Checkpoint] = []
        self.events: list[Event] = []
        self.nodes: dict[int, NodeMeta] = {}
        self.sessions: list[Session] = []
        self.gaps: list[Gap] = []
        self.clock_jumps: list[ClockJump] = []
        self.problems: list[str] = []
        #: records skipped because their content was ill-typed although their checksum was right
        self.bad_records = 0
        #: node and process files skipped whole (damaged header, another history's file)
        self.bad_files = 0
        self._procs_bad = False
        self._tails_reported: dict[str, int] = {}
        self._series: dict[int, NodeSeries] = {}
        self._decoders: dict[int, tuple[_Source | None, NodeDecoder]] = {}
        self._procs: ProcessHistory | None = None
        self._procs_src: _Source | None = None
        self._cluster_damage_seen = 0
        self._read_cluster()

    @classmethod
    def open(cls, path: str) -> History:
        """Open a history by its directory or by its ``cluster`` / ``cluster.xz`` file."""
        if os.path.isdir(path):
            return cls(path)
        name = os.path.basename(path)
        if name in (CLUSTER_FILE, CLUSTER_FILE + COMPRESSED_SUFFIX):
            return cls(os.path.dirname(path) or ".")
        if not os.path.exists(path):
            raise HistoryFormatError("no such file or directory", path=path)
        raise HistoryFormatError(
            f"open a history by its directory or its '{CLUSTER_FILE}' file, not {name!r}", path=path
        )

    # -- time axis --------------------------------------------------------------------

    def time_of(self, tick: int) -> float:
        """Wall time of a tick (NaN if the tick has no time record)."""
        i = self._tick_index.get(tick)
        return self.times[i] if i is not None else float("nan")

    @property
    def start(self) -> float:
        return self.times[0] if self.times else self.created

    @property
    def end(self) -> float:
        return self.times[-1] if self.times else self.created

    def _read_cluster(self) -> None:
        buf = self._cluster.read()
        frames, res = scan_frames(buf)
        if res.damaged:
            self.problems.append(f"{self._cluster.path}: skipped {res.damaged} damaged bytes")
        self._bad_tail(self._cluster, res, len(buf))
        for fr in frames:
            try:
                self._apply_cluster(fr)
            except (BadRecord, ValueError, IndexError) as exc:
                self._bad_record(self._cluster.path, fr, exc)
        self._cluster.consume(res.end)

    def _bad_tail(self, src: _Source, res: ScanResult, size: int) -> None:
        """Name garbage after a file's last record once (a record cut short is no problem: the
        writer completes or cuts it); a live reader still looks again from there on refresh."""
        at = src.base + res.end
        if res.bad_tail and self._tails_reported.get(src.path) != at:
            self._tails_reported[src.path] = at
            self.problems.append(
                f"{src.path}: {size - res.end} bytes after the last record at {at} are no record"
            )

    def _bad_file(self, problem: str) -> None:
        self.bad_files += 1
        self.problems.append(problem)

    def _bad_record(self, path: str, fr: Frame, exc: Exception) -> None:
        self.bad_records += 1
        self.problems.append(f"{path}: skipped a bad record at {fr.offset}: {exc}")

    def _apply_cluster(self, fr: Frame) -> None:
        """Apply one cluster-file record; BadRecord (or ValueError/IndexError from a varint) if any
        field has the wrong type or range, and then nothing is applied."""
        if fr.rtype == T_TICK:
            tick, ms = decode_tick(fr.payload)
            if self.ticks and tick <= self.ticks[-1]:
                raise BadRecord(f"tick {tick} after {self.ticks[-1]}")
            self._tick_index[tick] = len(self.ticks)
            self.ticks.append(tick)
            self.times.append(ms / 1000.0)
            return
        if fr.rtype not in (T_CHECKPOINT, T_EVENT, T_NODE, T_SESSION, T_CLOCK, T_GAP):
            return
        rec = _json_object(fr.payload)
        t = _field_num(rec, "t", 0.0)
        tick = _field_int(rec, "tick", -1)
        if fr.rtype == T_CHECKPOINT:
            self.checkpoints.append(Checkpoint(t, tick, _field_text(rec, "label")))
        elif fr.rtype == T_EVENT:
            self.events.append(Event(t, tick, _field_text(rec, "name", None), rec.get("data")))
        elif fr.rtype == T_NODE:
            nid = _field_int(rec, "id", None)
            if not 0 <= nid <= 65535:
                raise BadRecord(f"node id {nid} out of range")
            address, hostname = _field_text(rec, "address"), _field_text(rec, "hostname")
            version = _field_text(rec, "version")
            first = self.nodes[nid].first_seen if nid in self.nodes else t
            self.nodes[nid] = NodeMeta(nid, address, hostname, version, first)
        elif fr.rtype == T_SESSION:
            self.sessions.append(
                Session(
                    t,
                    tick,
                    _field_int(rec, "pid", 0),
                    _field_text(rec, "host"),
                    _field_num(rec, "interval", 0),
                )
            )
        elif fr.rtype == T_CLOCK:
            self.clock_jumps.append(ClockJump(t, tick, _field_num(rec, "jump", None)))
        elif fr.rtype == T_GAP:
            self.gaps.append(Gap(_field_num(rec, "since", None), t, tick, _field_text(rec, "reason")))

    # -- nodes --------------------------------------------------------------------------

    def node_ids(self) -> list[int]:
        """Every node with a file or a NODE record in this history, ascending."""
        ids = set(self.nodes)
        for logical in history_files(self.directory):
            nid = node_id_of(logical)
            if nid is not None:
                ids.add(nid)
        return sorted(ids)

    def series(self, node_id: int) -> NodeSeries:
        """The node's samples (decoded on first use, extended by refresh())."""
        s = self._series.get(node_id)
        if s is None:
            s = NodeSeries(node_id)
            self._series[node_id] = s
            self._read_node(node_id)
        return s

    def take_series(self, node_id: int) -> NodeSeries:
        """The node's samples decoded since the last take (all of them the first time).

        The History keeps its decoding state but lets go of the samples, so a reader that
        converts them into a store of its own (the analyzer's compact numpy arrays) never holds
        every node's samples twice; ``refresh()`` then decodes only what was appended. After a
        take, ``series(node_id)`` holds only the samples decoded since.
        """
        s = self.series(node_id)
        self._series[node_id] = NodeSeries(node_id)
        return s

    def all_series(self) -> dict[int, NodeSeries]:
        return {nid: self.series(nid) for nid in self.node_ids()}

    def _read_node(self, node_id: int) -> None:
        s = self._series[node_id]
        entry = self._decoders.get(node_id)
        if entry is None:
            path = history_files(self.directory).get(f"{NODE_PREFIX}{node_id}")
            if path is None:
                return  # no file (yet): a later refresh() looks again
            src: _Source | None = _Source(path)
            dec = NodeDecoder()
            assert src is not None
            try:
                buf = src.read()
                meta, start = decode_header(buf, path)
            except HistoryFormatError as exc:
                # files appear by rename with their whole header, so this is damage, not a file
                # being created: skipped for good and counted (a refresh does not look again)
                self._bad_file(str(exc))
                self._decoders[node_id] = (None, dec)
                return
            if meta.get("history") != self.history_id:
                self._bad_file(f"{path}: belongs to another history ({meta.get('history')}); ignored")
                self._decoders[node_id] = (None, dec)
                return
            if meta.get("kind") == "node-columns":
                self._decoders[node_id] = (None, dec)
                try:
                    self._load_columns(s, unpack_columns(buf, start, path))
                except (HistoryFormatError, ValueError, IndexError) as exc:
                    self.problems.append(f"{path}: {exc}")
                return
            src.consume(start)
            entry = (src, dec)
            self._decoders[node_id] = entry
        src, dec = entry
        if src is None:
            return
        buf = src.read()
        index = self._tick_index
        times = self.times
        ticks_a, times_a = s.ticks, s.times
        cols = (s.load, s.mem, s.rmem, s.util, s.tmem, s.speed, s.cpus)
        status_a = s.status
        orphans = 0

        def emit(tick: int, v: list[int]) -> None:
            nonlocal orphans
            i = index.get(tick)
            if i is None:
                orphans += 1  # the tick's time record was lost; the sample cannot be placed
                return
            ticks_a.append(tick)
            times_a.append(times[i])
            cols[0].append(v[0])
            cols[1].append(v[1] << 10)
            cols[2].append(v[2] << 10)
            cols[3].append(v[3])
            cols[4].append(v[4] << 10)
            cols[5].append(v[5])
            cols[6].append(v[6])
            status_a.append(v[7])

        max_tick = self.ticks[-1] if self.ticks else -1
        damaged_before = dec.damaged
        res = dec.decode(buf, 0, emit, max_tick=max_tick)
        if dec.damaged > damaged_before:
            self.problems.append(f"{src.path}: skipped {dec.damaged - damaged_before} damaged bytes")
        self._bad_tail(src, res, len(buf))
        if orphans:
            self.problems.append(f"{src.path}: {orphans} samples without a time record were dropped")
        src.consume(res.end)

    def _load_columns(self, s: NodeSeries, cols: list[array[int]]) -> None:
        ticks = cols[0]
        index = self._tick_index
        times = self.times
        pos = list(map(index.get, ticks))
        if None in pos:
            keep = [i for i, p in enumerate(pos) if p is not None]
            self.problems.append(
                f"node {s.node_id}: {len(ticks) - len(keep)} samples without a time record were dropped"
            )
            cols = [array("q", (c[i] for i in keep)) for c in cols]
            ticks = cols[0]
            pos = [p for p in pos if p is not None]
        s.ticks.extend(ticks)
        s.times.extend(map(times.__getitem__, pos))  # type: ignore[arg-type]
        for name, col in zip(FIELD_NAMES, cols[1:], strict=True):
            target = getattr(s, name)
            if name in ("mem", "rmem", "tmem"):
                target.extend(map(lshift, col, repeat(10)))
            elif target.typecode != col.typecode:
                target.extend(iter(col))
            else:
                target.extend(col)

    # -- processes ----------------------------------------------------------------------

    def processes(self) -> ProcessHistory:
        """The collector node's process list over time (empty if no process file)."""
        if self._procs is None:
            self._procs = ProcessHistory(self.time_of)
            path = history_files(self.directory).get(PROCS_FILE)
            if path is not None:
                self._procs_src = _Source(path)
                try:
                    meta, start = decode_header(self._procs_src.read(), path)
                    if meta.get("history") != self.history_id:
                        raise HistoryFormatError("belongs to another history", path=path)
                    self._procs_src.consume(start)
                except HistoryFormatError as exc:
                    self._bad_file(str(exc))
                    self._procs_bad = True  # damage: a refresh does not read it again
                    self._procs_src = None
            self._read_procs()
        return self._procs

    def _read_procs(self) -> None:
        if self._procs_src is None or self._procs is None:
            return
        buf = self._procs_src.read()
        frames, res = scan_frames(buf)
        if res.damaged:
            self.problems.append(f"{self._procs_src.path}: skipped {res.damaged} damaged bytes")
        self._bad_tail(self._procs_src, res, len(buf))
        last = self.ticks[-1] if self.ticks else -1
        end = res.end
        for fr in frames:
            if fr.rtype not in (T_PKEY, T_PDELTA):
                continue
            try:
                tick = _check_proc_record(fr.rtype, _json_object(fr.payload))
            except BadRecord as exc:
                self._bad_record(self._procs_src.path, fr, exc)
                continue
            if tick > last:
                end = fr.offset  # its time is not known yet; read it on the next refresh
                break
            self._procs._add(fr, tick)
        self._procs_src.consume(end)

    # -- live ---------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Read what the collector appended since; True if anything new arrived.

        Raises HistoryRotated when the live files were moved to a dated backup meanwhile.
        """
        before = (len(self.ticks), len(self.checkpoints), len(self.events))
        self._read_cluster()
        for nid in list(self._series):
            self._read_node(nid)
        if self._procs is not None:
            if self._procs_src is None and not self._procs_bad:
                self._procs = None
                self.processes()
            else:
                self._read_procs()
        return (len(self.ticks), len(self.checkpoints), len(self.events)) != before

    def iter_samples(self) -> Iterator[tuple[float, int, NodeSeries, int]]:
        """(time, node id, series, row) for every sample, node by node (for exports)."""
        for nid in self.node_ids():
            s = self.series(nid)
            for i in range(len(s)):
                yield s.times[i], nid, s, i
