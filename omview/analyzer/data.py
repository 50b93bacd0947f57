"""L5 analyzer, Qt-free: a history as numpy arrays, the find-out statistics and time parsing.

``HistoryData`` wraps ``records.History`` and keeps every node's samples as compact numpy
arrays (``NodeArrays``: ~16 bytes a sample), converted from the reader's samples node by node
as they are decoded. ``find_out`` computes the statistics of the issue's JSON
shape over exactly the samples ``openmosixcollector --export csv`` prints whose epoch lies in
[from, to].
"""

from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from omview.model import records
from omview.model.cluster import ProcessInfo

#: Load above this is drawn red and counted in "time above 75" (the original's threshold).
RED_LOAD = 75


def time_arg(text: str) -> float:
    """parse_time for an argparse option: a bad time is a usage error that shows the accepted forms."""
    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: give epoch seconds or ISO-8601 such as 2026-12-04T17:00:00"
        ) from None


def parse_time(text: str) -> float:
    """Epoch seconds from ``1733320000[.5]`` or ISO-8601 (``2026-12-04T17:00:00[Z|+01:00]``,
    ``2026-12-04 17:00``); a time without zone is local time. Raises ValueError."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)  # raises ValueError with a readable message
    return dt.timestamp()  # naive -> local time, as a user types it


def iso(t: float) -> str:
    """ISO-8601 in UTC with milliseconds, e.g. ``2026-12-04T17:00:00.000Z`` (the CSV's form)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(round(t * 1000)) % 1000:03d}Z"


class Clock:
    """The history's tick axis shared by every node: tick numbers and their wall times (float64)."""

    def __init__(self) -> None:
        self.ticks = np.empty(0, np.int64)
        self.times = np.empty(0, np.float64)

    def update(self, h: records.History) -> None:
        # copies: numpy views would stop the reader's arrays from growing on refresh (BufferError)
        if len(h.ticks) != len(self.ticks):
            self.ticks = np.array(h.ticks, dtype=np.int64)
            self.times = np.array(h.times, dtype=np.float64)


class _Column:
    """A growable numpy column of a small integer type, widened to int64 if a value needs it."""

    def __init__(self, dtype: type) -> None:
        self.buf: np.ndarray = np.empty(0, dtype)
        self.n = 0

    @property
    def values(self) -> np.ndarray:
        return self.buf[: self.n]

    def extend(self, v: np.ndarray, exact: bool) -> None:
        if not len(v):
            return
        info = np.iinfo(self.buf.dtype)
        if int(v.min()) < info.min or int(v.max()) > info.max:
            self.buf = self.buf.astype(np.int64)
        need = self.n + len(v)
        if need > len(self.buf):
            # a live history grows by a second's samples at a time: amortised growth, not a copy each time
            grown = np.empty(need if exact else max(need, len(self.buf) * 3 // 2 + 1024), self.buf.dtype)
            grown[: self.n] = self.buf[: self.n]
            self.buf = grown
        self.buf[self.n : need] = v
        self.n = need


class _Runs:
    """A column that rarely changes (tmem, speed, cpus) as runs: first sample index and value of each."""

    def __init__(self) -> None:
        self.starts = np.empty(0, np.int64)
        self.vals = np.empty(0, np.int64)
        self.n = 0

    def extend(self, v: np.ndarray) -> None:
        if not len(v):
            return
        st = np.flatnonzero(v[1:] != v[:-1]) + 1
        st = np.concatenate(([0], st))
        vals = v[st].astype(np.int64)
        if len(self.vals) and vals[0] == self.vals[-1]:
            st, vals = st[1:], vals[1:]
        self.starts = np.concatenate((self.starts, st + self.n))
        self.vals = np.concatenate((self.vals, vals))
        self.n += len(v)

    def expand(self, j0: int = 0, j1: int | None = None) -> np.ndarray:
        """The values of samples j0..j1 (default: all) as int64."""
        j1 = self.n if j1 is None else j1
        if j1 <= j0:
            return np.empty(0, np.int64)
        a = int(np.searchsorted(self.starts, j0, "right")) - 1
        b = int(np.searchsorted(self.starts, j1, "left"))
        bounds = np.clip(np.append(self.starts[a + 1 : b], j1), j0, j1)
        lengths = np.diff(np.concatenate(([j0], bounds)))
        return np.repeat(self.vals[a:b], lengths)


class NodeArrays:
    """One node's samples as compact numpy arrays (~16 bytes a sample instead of ~80).

    Stored: the index of each sample's tick in the shared ``Clock`` (uint32), load (int32),
    mem and rmem in KiB (uint32; widened if a value needs it) and tmem/speed/cpus as runs.
    The properties give the familiar form: ``times`` float64 epoch seconds, memory in bytes as
    int64, every column as long as the node's sample count.
    """

    def __init__(self, node_id: int, clock: Clock) -> None:
        self.node_id = node_id
        self.clock = clock
        self._tix = _Column(np.uint32)
        self._load = _Column(np.int32)
        self._mem = _Column(np.uint32)
        self._rmem = _Column(np.uint32)
        self._tmem = _Runs()
        self._speed = _Runs()
        self._cpus = _Runs()

    def __len__(self) -> int:
        return self._tix.n

    def extend(self, s: records.NodeSeries, *, exact: bool) -> None:
        """Append a NodeSeries (the reader's samples, taken from it); ``exact``: no room to grow."""
        if not len(s):
            return
        ticks = np.frombuffer(s.ticks, dtype=np.int64)
        # every sample's tick has a time record: the reader drops samples without one
        self._tix.extend(np.searchsorted(self.clock.ticks, ticks), exact)
        self._load.extend(np.frombuffer(s.load, dtype=np.int64), exact)
        self._mem.extend(np.frombuffer(s.mem, dtype=np.int64) >> 10, exact)
        self._rmem.extend(np.frombuffer(s.rmem, dtype=np.int64) >> 10, exact)
        self._tmem.extend(np.frombuffer(s.tmem, dtype=np.int64) >> 10)
        self._speed.extend(np.frombuffer(s.speed, dtype=np.int64))
        self._cpus.extend(np.frombuffer(s.cpus, dtype=np.int64))

    @property
    def tix(self) -> np.ndarray:
        """Index of each sample's tick in the clock (increasing)."""
        return self._tix.values

    @property
    def times(self) -> np.ndarray:
        return self.clock.times[self.tix]

    @property
    def load(self) -> np.ndarray:
        return self._load.values

    @property
    def mem(self) -> np.ndarray:
        return self._mem.values.astype(np.int64) << 10

    @property
    def rmem(self) -> np.ndarray:
        return self._rmem.values.astype(np.int64) << 10

    @property
    def tmem(self) -> np.ndarray:
        return self._tmem.expand() << 10

    @property
    def speed(self) -> np.ndarray:
        return self._speed.expand()

    @property
    def cpus(self) -> np.ndarray:
        return self._cpus.expand()

    def kib(self, name: str, j0: int = 0, j1: int | None = None) -> np.ndarray:
        """Samples j0..j1 of load or of mem/rmem/tmem in KiB (the overviews' source)."""
        if name == "tmem":
            return self._tmem.expand(j0, j1)
        col = {"load": self._load, "mem": self._mem, "rmem": self._rmem}[name]
        return col.values[j0:j1]


class HistoryData:
    """One opened history (live or backup) as compact numpy arrays per node.

    Node samples are taken from the reader node by node (``records.History.take_series``) and
    converted at once, so the reader's Python arrays of all nodes never exist at the same time.
    """

    def __init__(self, path: str) -> None:
        self.history = records.History.open(path)
        self.directory = self.history.directory
        #: a dated backup never grows: its arrays are allocated to size
        self.frozen = live_dir_of(self.directory) != self.directory.rstrip("/")
        self.clock = Clock()
        self.clock.update(self.history)
        self._arrays: dict[int, NodeArrays] = {}

    @property
    def problems(self) -> list[str]:
        return self.history.problems

    def node_ids(self) -> list[int]:
        return self.history.node_ids()

    def load_node(self, node_id: int) -> NodeArrays:
        """Decode (first call) and return the node's arrays."""
        a = self._arrays.get(node_id)
        if a is None:
            a = self._arrays[node_id] = NodeArrays(node_id, self.clock)
            a.extend(self.history.take_series(node_id), exact=self.frozen)
        return a

    def arrays(self) -> dict[int, NodeArrays]:
        return {nid: self.load_node(nid) for nid in self.node_ids()}

    def loaded(self) -> dict[int, NodeArrays]:
        return dict(self._arrays)

    def refresh(self) -> dict[int, int]:
        """Read what the collector appended; returns {loaded node: its sample count before} for
        the nodes that grew.

        Raises records.HistoryRotated when the live files were moved to a backup.
        """
        if self.frozen:
            return {}  # a backup's files are complete
        self.history.refresh()
        self.clock.update(self.history)
        grown: dict[int, int] = {}
        for nid, a in self._arrays.items():
            s = self.history.take_series(nid)
            if len(s):
                grown[nid] = len(a)
                a.extend(s, exact=False)
        return grown

    @property
    def start(self) -> float:
        return self.history.start

    @property
    def end(self) -> float:
        return self.history.end


# ---------------------------------------------------------------------------------------
# Find out


def _stats(values: np.ndarray) -> dict[str, float | int | None]:
    if not len(values):
        return {"min": None, "max": None, "mean": None}
    return {"min": int(values.min()), "max": int(values.max()), "mean": float(values.mean())}


def _block(node_id: int | None, parts: list[tuple[NodeArrays, np.ndarray]], interval: float) -> dict[str, Any]:
    """Statistics over the selected samples of one node (or of all nodes for the cluster)."""
    load = np.concatenate([a.load[m] for a, m in parts]) if parts else np.empty(0, np.int64)
    mem = np.concatenate([a.mem[m] for a, m in parts]) if parts else np.empty(0, np.int64)
    # static data: the latest sample in the range of each node; the cluster sums its nodes
    last = [(a, np.flatnonzero(m)[-1]) for a, m in parts if m.any()]
    out: dict[str, Any] = {}
    if node_id is not None:
        out["id"] = node_id
    out["samples"] = int(len(load))
    out["load"] = _stats(load)
    out["mem"] = _stats(mem)
    out["cpus"] = int(sum(int(a.cpus[i]) for a, i in last)) if last else None
    out["tmem"] = int(sum(int(a.tmem[i]) for a, i in last)) if last else None
    out["speed"] = int(sum(int(a.speed[i]) for a, i in last)) if last else None
    out["above_75_s"] = float(np.count_nonzero(load > RED_LOAD) * interval)
    return out


def find_out(
    data: HistoryData,
    node: int | None = None,
    t_from: float | None = None,
    t_to: float | None = None,
) -> dict[str, Any]:
    """The find-out statistics, as ``openmosixanalyzer --find-out --json`` prints them.

    Samples: those with ``from <= time <= to`` (the CSV export's rows in that range). Per node:
    load and mem (bytes, "available memory") min/max/mean, and the static data (cpus, tmem,
    speed) of the node's latest sample in the range. ``above_75_s`` counts samples with load
    above 75 times the sampling interval. The cluster block pools every node's samples; its
    cpus, tmem and speed are the sums of the nodes' values, its above_75_s is node-seconds.
    ``node`` restricts the "nodes" list, never the cluster block.
    """
    lo = data.start if t_from is None else t_from
    hi = data.end if t_to is None else t_to
    interval = data.history.interval
    parts: list[tuple[NodeArrays, np.ndarray]] = []
    nodes: list[dict[str, Any]] = []
    for nid in data.node_ids():
        a = data.load_node(nid)
        mask = (a.times >= lo) & (a.times <= hi)
        parts.append((a, mask))
        if node is None or nid == node:
            nodes.append(_block(nid, [(a, mask)], interval))
    return {"from": iso(lo), "to": iso(hi), "nodes": nodes, "cluster": _block(None, parts, interval)}


def format_find_out(result: dict[str, Any]) -> str:
    """The find-out result as text for a terminal (one block per node, then the cluster)."""
    lines = [f"from {result['from']} to {result['to']}"]

    def fmt(v: Any, scale: float = 1.0, unit: str = "") -> str:
        if v is None:
            return "-"
        return f"{v / scale:.1f}{unit}" if isinstance(v, float) or scale != 1.0 else f"{v}{unit}"

    def block(title: str, b: dict[str, Any]) -> None:
        ld, mm = b["load"], b["mem"]
        lines.append(
            f"{title}: {b['samples']} samples; load min/max/mean {fmt(ld['min'])}/{fmt(ld['max'])}/"
            f"{fmt(ld['mean'])}; mem min/max/mean {fmt(mm['min'], 2**20, ' MiB')}/"
            f"{fmt(mm['max'], 2**20, ' MiB')}/{fmt(mm['mean'], 2**20, ' MiB')}; CPUs {fmt(b['cpus'])}; "
            f"avail. mem {fmt(b['tmem'], 2**20, ' MiB')}; speed {fmt(b['speed'])}; "
            f"above 75: {b['above_75_s']:.0f} s"
        )

    for b in result["nodes"]:
        block(f"node {b['id']}", b)
    block("cluster", result["cluster"])
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Histories on disk


@dataclass(frozen=True)
class HistoryEntry:
    """A history directory (a dated backup or the live one) and its time range."""

    path: str
    start: float
    end: float
    live: bool
    error: str = ""

    def describe(self) -> str:
        name = os.path.basename(self.path.rstrip("/"))
        if self.error:
            return f"{name}: {self.error}"
        span = f"{_local(self.start)} – {_local(self.end)}"
        return f"{'current history' if self.live else name}: {span}"


def _local(t: float) -> str:
    if not math.isfinite(t):
        return "?"
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


_BACKUP_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}Z(\.\d+)?$")


def live_dir_of(path: str) -> str:
    """The live history directory a path belongs to: a dated backup names it (docs/collector.md)."""
    path = path.rstrip("/") or "/"
    if os.path.basename(path) in (records.CLUSTER_FILE, records.CLUSTER_FILE + records.COMPRESSED_SUFFIX):
        path = os.path.dirname(path) or "."
    base = _BACKUP_SUFFIX.sub("", path)
    return base if base != path and records.is_backup_name(base.rsplit("/", 1)[-1], os.path.basename(path)) else path


def list_entries(logdir: str) -> list[HistoryEntry]:
    """Every history of logdir (backups oldest first, then the live one) with its time range.

    Only the ``cluster`` file of each is read (its tick records carry the times).
    """
    out: list[HistoryEntry] = []
    live = os.path.abspath(logdir).rstrip("/")
    for path in records.list_histories(logdir):
        is_live = os.path.abspath(path).rstrip("/") == live
        try:
            h = records.History.open(path)
        except (records.HistoryFormatError, OSError) as exc:
            out.append(HistoryEntry(path, math.nan, math.nan, is_live, str(exc)))
            continue
        out.append(HistoryEntry(path, h.start, h.end, is_live))
    return out


# ---------------------------------------------------------------------------------------
# Process history (openmosixhistory)


def nearest_tick_time(h: records.History, when: float) -> float | None:
    """The time of the sample nearest to ``when`` (None for a history without samples)."""
    if not h.times:
        return None
    times = np.frombuffer(h.times, dtype=np.float64).copy()  # a copy: the reader's array must grow
    i = int(np.searchsorted(times, when))
    if i <= 0:
        return float(times[0])
    if i >= len(times):
        return float(times[-1])
    return float(times[i] if times[i] - when < when - times[i - 1] else times[i - 1])


def processes_at(h: records.History, when: float) -> tuple[float | None, list[ProcessInfo]]:
    """The collector node's process list at the sample nearest to ``when``, and that sample's time.

    The process file records changes only, so the list in effect at a sample's time is exactly
    what the collector saw at that sample.
    """
    t = nearest_tick_time(h, when)
    if t is None:
        return None, []
    return t, h.processes().at(t)


#: The history window's columns (rss in KiB), also the text form of ``openmosixhistory --at``.
COLUMNS = ("pid", "n#", "stat", "user", "cpu", "rss", "cmdline")


def format_rows(procs: list[ProcessInfo]) -> list[tuple[str, ...]]:
    """The table's cells, one tuple per process (n# marks a migrated job with its home)."""
    rows: list[tuple[str, ...]] = []
    for p in procs:
        node = f"{p.where}" if p.where == p.home else f"{p.where} (home {p.home})"
        rows.append((str(p.pid), node, p.state, p.user, f"{p.cpu:.0f}", f"{p.rss >> 10}",
                     " ".join(p.cmdline) or p.name))  # fmt: skip
    return rows


def process_dict(p: ProcessInfo) -> dict[str, Any]:
    """One row of ``openmosixhistory --at --json`` (the window's columns plus home and migrations)."""
    return {
        "pid": p.pid,
        "node": p.where,
        "home": p.home,
        "stat": p.state,
        "user": p.user,
        "cpu": p.cpu,
        "rss": p.rss,
        "cmdline": list(p.cmdline) or [p.name],
        "nmigs": p.nmigs,
    }
