"""L3 collector: history -> CSV (spreadsheets, pandas) and the live table as OpenMetrics text.

CSV is the long form, one row per node sample, ordered by time then node. The metrics
endpoint answers any GET on a loopback port with the latest sample of every node.
"""

from __future__ import annotations

import csv
import heapq
import logging
import socket
import time
from collections.abc import Iterator
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


class _Table(Protocol):
    latest: list[NodeInfo]
    latest_time: float


_METRICS = (
    ("omview_node_up", "gauge", "1 if the node is up", lambda n: 1 if n.status == "up" else 0),
    ("omview_node_load", "gauge", "openMosix load (100 = one reference CPU busy)", lambda n: n.load),
    ("omview_node_utilisation_percent", "gauge", "CPU utilisation", lambda n: n.util),
    ("omview_node_memory_available_bytes", "gauge", "memory available (mem)", lambda n: n.mem),
    ("omview_node_memory_free_bytes", "gauge", "free memory as Linux reports (rmem)", lambda n: n.rmem),
    ("omview_node_memory_total_bytes", "gauge", "total memory (tmem)", lambda n: n.tmem),
    ("omview_node_speed", "gauge", "relative CPU speed (10000 = reference)", lambda n: n.speed),
    ("omview_node_cpus", "gauge", "number of CPUs", lambda n: n.cpus),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics_text(nodes: list[NodeInfo], stamp: float) -> str:
    """The table in OpenMetrics text exposition format (ends with ``# EOF``)."""
    lines: list[str] = []
    for name, kind, help_text, get in _METRICS:
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"# HELP {name} {help_text}")
        for n in nodes:
            labels = f'node="{n.id}",address="{_label(n.address)}",hostname="{_label(n.hostname)}"'
            lines.append(f"{name}{{{labels}}} {get(n)}")
    lines.append("# TYPE omview_collector_last_sample_timestamp_seconds gauge")
    lines.append(f"omview_collector_last_sample_timestamp_seconds {stamp:.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


class MetricsServer:
    """A tiny HTTP responder on 127.0.0.1 serving openmetrics_text of the collector's latest table."""

    CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

    def __init__(self, port: int, table: _Table, host: str = "127.0.0.1") -> None:
        self.table = table
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise CollectorError(
                f"cannot listen for metrics on {host}:{port}: {exc.strerror}; choose another --metrics-port"
            ) from exc
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

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
                body = openmetrics_text(self.table.latest, self.table.latest_time).encode()
                head = (
                    f"HTTP/1.1 200 OK\r\nContent-Type: {self.CONTENT_TYPE}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                ).encode()
                conn.sendall(head + body)
            except OSError as exc:
                log.debug("metrics request failed: %s", exc)

    def close(self) -> None:
        self.sock.close()
