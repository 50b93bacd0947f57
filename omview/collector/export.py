"""L3 collector: history -> CSV (spreadsheets, pandas) and the live table as OpenMetrics text.

CSV is the long form, one row per node sample, ordered by time then node. The metrics
endpoint answers any GET with the latest sample of every node plus counters and histograms of
the migrations the collector's agent reported, named as Prometheus expects (units in names,
``_total`` counters); the names are listed in docs/collector.md.
"""

from __future__ import annotations

import csv
import heapq
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from omview.collector.control import read_request
from omview.collector.writer import CollectorError
from omview.model import records
from omview.model.cluster import NodeInfo

log = logging.getLogger(__name__)

CSV_COLUMNS = ("time", "epoch", "node", "status", "load", "util", "mem", "rmem", "tmem", "speed", "cpus")


def _node_rows(h: records.History, nid: int) -> Iterator[tuple[int, int, list[Any]]]:
    s = h.series(nid)
    for i in range(len(s)):
        t = s.times[i]
        st = s.status[i]
        yield (
            s.ticks[i],
            nid,
            [
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z",
                f"{t:.3f}",
                nid,
                records.STATUS_NAMES[st] if 0 <= st < 3 else "unknown",
                s.load[i],
                s.util[i],
                s.mem[i],
                s.rmem[i],
                s.tmem[i],
                s.speed[i],
                s.cpus[i],
            ],
        )


def export_csv(history_path: str, out: IO[str]) -> int:
    """Write a history's samples as CSV (header row first); returns the number of rows.

    Raises HistoryFormatError if the history cannot be read.
    """
    h = records.History.open(history_path)
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    n = 0
    merged = heapq.merge(*(_node_rows(h, nid) for nid in h.node_ids()), key=lambda r: (r[0], r[1]))
    for _, _, row in merged:
        w.writerow(row)
        n += 1
    for problem in h.problems:
        log.warning("%s", problem)
    return n


# ---------------------------------------------------------------------------------------
# OpenMetrics

#: Upper bounds (seconds) of the migration histograms: a lazy migration freezes a job for
#: milliseconds, an image copy of a large job for seconds to minutes.
FROZEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOTAL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_MAX_LABEL_VALUE = 64


class Histogram:
    """Cumulative bucket counts, sum and count of observations (OpenMetrics histogram)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.bounds):
            if value <= b:
                self.counts[i] += 1
        self.count += 1
        self.sum += value


@dataclass
class MigrationStats:
    """Totals over the migration events seen since the collector started.

    Events are ``migration.done`` / ``migration.failed`` with the agent's migration record
    (docs/agent.md): ``result``, ``reason``, ``frozen_s``, ``total_s``, ``bytes``. Missing
    fields (older agents, the synthetic source) count as result ok/failed, reason "unknown".
    """

    by_outcome: dict[tuple[str, str], int] = field(default_factory=dict)
    moved_bytes: int = 0
    frozen: Histogram = field(default_factory=lambda: Histogram(FROZEN_BUCKETS))
    total: Histogram = field(default_factory=lambda: Histogram(TOTAL_BUCKETS))

    def observe(self, name: str, data: Any) -> None:
        if name not in ("migration.done", "migration.failed") or not isinstance(data, dict):
            return
        result = _short(data.get("result"), "ok" if name == "migration.done" else "failed")
        reason = _short(data.get("reason"), "unknown")
        self.by_outcome[(result, reason)] = self.by_outcome.get((result, reason), 0) + 1
        moved = _number(data.get("bytes"))
        if moved is not None and moved > 0:
            self.moved_bytes += int(moved)
        total = _number(data.get("total_s"))
        if total is not None and total >= 0:
            self.total.observe(total)
        frozen = _number(data.get("frozen_s"))
        # a failed migration's frozen time is not the job's pause on a new node: only count moves
        if result == "ok" and frozen is not None and frozen >= 0:
            self.frozen.observe(frozen)


def _short(value: Any, default: str) -> str:
    # label values come from the agent: bound their length so one odd event cannot bloat every scrape
    return str(value)[:_MAX_LABEL_VALUE] if isinstance(value, str) and value else default


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class _Table(Protocol):
    latest: list[NodeInfo]
    latest_time: float
    migrations: MigrationStats


# (family name, type, unit, help, value): OpenMetrics wants the unit as the name's suffix
_NODE_METRICS: tuple[tuple[str, str, str, str, Callable[[NodeInfo], float]], ...] = (
    ("omview_node_up", "gauge", "", "1 if the node is up, 0 if it is down", lambda n: 1 if n.status == "up" else 0),
    ("omview_node_load", "gauge", "", "openMosix load (100 = one reference CPU busy)", lambda n: n.load),
    ("omview_node_cpu_utilisation_ratio", "gauge", "ratio", "CPU utilisation (0 to 1)", lambda n: n.util / 100),
    ("omview_node_memory_available_bytes", "gauge", "bytes", "memory available (mem)", lambda n: n.mem),
    ("omview_node_memory_free_bytes", "gauge", "bytes", "free memory as Linux reports it (rmem)", lambda n: n.rmem),
    ("omview_node_memory_total_bytes", "gauge", "bytes", "total memory (tmem)", lambda n: n.tmem),
    ("omview_node_speed", "gauge", "", "relative CPU speed (10000 = reference)", lambda n: n.speed),
    ("omview_node_cpus", "gauge", "", "number of CPUs", lambda n: n.cpus),
)  # fmt: skip


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(lines: list[str], name: str, kind: str, unit: str, help_text: str) -> None:
    lines.append(f"# TYPE {name} {kind}")
    if unit:
        lines.append(f"# UNIT {name} {unit}")
    lines.append(f"# HELP {name} {help_text}")


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def _histogram(lines: list[str], name: str, help_text: str, h: Histogram) -> None:
    _family(lines, name, "histogram", "seconds", help_text)
    for bound, n in zip(h.bounds, h.counts, strict=True):
        lines.append(f'{name}_bucket{{le="{bound!r}"}} {n}')
    lines.append(f'{name}_bucket{{le="+Inf"}} {h.count}')
    lines.append(f"{name}_count {h.count}")
    lines.append(f"{name}_sum {_num(h.sum)}")


def openmetrics_text(nodes: list[NodeInfo], stamp: float, migrations: MigrationStats | None = None) -> str:
    """The table (and migration totals) in OpenMetrics text exposition format, ending with ``# EOF``."""
    lines: list[str] = []
    for name, kind, unit, help_text, get in _NODE_METRICS:
        _family(lines, name, kind, unit, help_text)
        for n in nodes:
            labels = f'node="{n.id}",address="{_label(n.address)}",hostname="{_label(n.hostname)}"'
            lines.append(f"{name}{{{labels}}} {_num(get(n))}")
    _family(lines, "omview_collector_last_sample_timestamp_seconds", "gauge", "seconds",
            "wall-clock time of the collector's latest sample")  # fmt: skip
    lines.append(f"omview_collector_last_sample_timestamp_seconds {stamp:.3f}")
    m = migrations or MigrationStats()
    _family(lines, "omview_migrations", "counter", "",
            "finished migrations reported by the collector's agent, by result and reason")  # fmt: skip
    for (result, reason), count in sorted(m.by_outcome.items()):
        lines.append(f'omview_migrations_total{{result="{_label(result)}",reason="{_label(reason)}"}} {count}')
    _family(lines, "omview_migration_moved_bytes", "counter", "bytes",
            "bytes of checkpoint images sent by finished migrations")  # fmt: skip
    lines.append(f"omview_migration_moved_bytes_total {m.moved_bytes}")
    _histogram(lines, "omview_migration_frozen_seconds", "time a moved job stood frozen", m.frozen)
    _histogram(lines, "omview_migration_duration_seconds", "total time of a finished migration", m.total)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


DEFAULT_METRICS_HOST = "127.0.0.1"


def parse_listen(spec: str, default_port: int | None = None) -> tuple[str, int]:
    """``ADDR``, ``ADDR:PORT``, ``[IPv6]:PORT`` or ``:PORT`` -> (address, port); raises CollectorError.

    ADDR is an IP address (``0.0.0.0`` / ``::`` for every interface) or ``localhost``; a missing
    port is ``default_port``, a missing address 127.0.0.1.
    """
    text = spec.strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1 :] and not text[end + 1 :].startswith(":")):
            raise CollectorError(f"--metrics-listen {spec!r}: write an IPv6 address as [ADDR] or [ADDR]:PORT")
        host, port_text = text[1:end], text[end + 2 :]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    host = host or DEFAULT_METRICS_HOST
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise CollectorError(
                f"--metrics-listen {spec!r}: {host!r} is not an IP address"
                " (use 127.0.0.1, ::1, 0.0.0.0 for every interface, or one of this node's addresses)"
            ) from None
    if port_text:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise CollectorError(f"--metrics-listen {spec!r}: the port must be a number 0-65535")
        return host, int(port_text)
    if default_port is None:
        raise CollectorError(f"--metrics-listen {spec!r} has no port: write ADDR:PORT or add --metrics-port")
    return host, default_port


def format_listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MetricsServer:
    """A tiny HTTP responder serving openmetrics_text of the collector's latest table."""

    CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

    def __init__(self, port: int, table: _Table, host: str = DEFAULT_METRICS_HOST) -> None:
        self.table = table
        where = format_listen(host, port)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise CollectorError(f"cannot listen for metrics on {where}: {exc.strerror}") from exc
        family, _, _, _, addr = infos[0]
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind(addr)
        except OSError as exc:
            self.sock.close()
            raise CollectorError(
                f"cannot listen for metrics on {where}: {exc.strerror}; choose another --metrics-listen/--metrics-port"
            ) from exc
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.host = host
        self.port = self.sock.getsockname()[1]

    @property
    def address(self) -> str:
        return format_listen(self.host, self.port)

    def fileno(self) -> int:
        return self.sock.fileno()

    def handle(self) -> None:
        try:
            got = read_request(self.sock, b"\r\n\r\n", 8192, 1.0)
        except OSError as exc:
            log.debug("metrics request failed: %s", exc)
            return
        if got is None:
            return
        conn, req = got
        with conn:
            try:
                if not req.startswith(b"GET "):
                    conn.sendall(
                        b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    return
                t = self.table
                body = openmetrics_text(t.latest, t.latest_time, t.migrations).encode()
                head = (
                    f"HTTP/1.1 200 OK\r\nContent-Type: {self.CONTENT_TYPE}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                ).encode()
                conn.sendall(head + body)
            except OSError as exc:
                log.debug("metrics request failed: %s", exc)

    def close(self) -> None:
        self.sock.close()
