"""The OpenMetrics endpoint's text as Prometheus sees it: parsed with prometheus_client's strict parser."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from omview.collector.export import MigrationStats, openmetrics_text, parse_listen
from omview.collector.synthetic import SyntheticSource
from omview.collector.writer import CollectorError
from tests.collector.conftest import cli, free_port, run_ticks


def _done(**kw: Any) -> tuple[str, dict[str, Any]]:
    rec = {"result": "ok", "reason": "balance", "bytes": 1000, "frozen_s": 0.02, "total_s": 0.4}
    rec.update(kw)
    return ("migration.done", rec)


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_names_types_units_and_values_parse() -> None:
    nodes = SyntheticSource(3, seed=5).nodes()
    m = MigrationStats()
    for name, data in (
        _done(),
        _done(frozen_s=3.0, total_s=7.5, bytes=5000),
        ("migration.failed", {"result": "failed", "reason": "request", "bytes": 10, "total_s": 0.05}),
        ("migration.failed", {"result": "fell back", "reason": "balance", "total_s": 0.1}),
        ("migration.started", {"result": "running", "reason": "balance"}),  # not finished: not counted
        ("node.up", {"node": 2}),
    ):
        m.observe(name, data)
    text = openmetrics_text(nodes, 1_700_000_000.25, m)
    assert text.endswith("# EOF\n")
    fam = _families(text)
    assert fam["omview_node_load"].type == "gauge"
    mem = fam["omview_node_memory_total_bytes"]
    assert (mem.type, mem.unit) == ("gauge", "bytes")
    loads = {s.labels["node"]: s.value for s in fam["omview_node_load"].samples}
    assert loads == {str(n.id): n.load for n in nodes}
    assert {s.labels["hostname"] for s in mem.samples} == {"node001", "node002", "node003"}
    util = {s.labels["node"]: s.value for s in fam["omview_node_cpu_utilisation_ratio"].samples}
    assert util == {str(n.id): n.util / 100 for n in nodes}
    assert fam["omview_collector_last_sample_timestamp_seconds"].samples[0].value == 1_700_000_000.25

    migs = fam["omview_migrations"]
    assert migs.type == "counter"
    counts = {
        (s.labels["result"], s.labels["reason"]): s.value for s in migs.samples if s.name.endswith("_total")
    }
    assert counts == {("ok", "balance"): 2, ("failed", "request"): 1, ("fell back", "balance"): 1}
    moved = fam["omview_migration_moved_bytes"]
    assert (moved.type, moved.unit) == ("counter", "bytes")
    assert moved.samples[0].name == "omview_migration_moved_bytes_total" and moved.samples[0].value == 6010

    frozen = fam["omview_migration_frozen_seconds"]
    assert (frozen.type, frozen.unit) == ("histogram", "seconds")
    by = {s.name: s for s in frozen.samples if not s.name.endswith("_bucket")}
    assert by["omview_migration_frozen_seconds_count"].value == 2  # failed ones have no frozen time
    assert by["omview_migration_frozen_seconds_sum"].value == pytest.approx(3.02)
    buckets = {s.labels["le"]: s.value for s in frozen.samples if s.name.endswith("_bucket")}
    assert buckets["0.01"] == 0 and buckets["0.025"] == 1 and buckets["2.5"] == 1 and buckets["5.0"] == 2
    assert buckets["+Inf"] == 2
    total = fam["omview_migration_duration_seconds"]
    assert {s.name: s.value for s in total.samples}["omview_migration_duration_seconds_count"] == 4


def test_an_empty_table_and_odd_labels_still_parse() -> None:
    m = MigrationStats()
    m.observe("migration.done", {"reason": 'we"ird\\reason\nx' * 10, "bytes": True, "frozen_s": "?"})
    m.observe("migration.failed", None)
    fam = _families(openmetrics_text([], 0.0, m))
    assert fam["omview_node_load"].samples == []
    (sample,) = [s for s in fam["omview_migrations"].samples if s.name == "omview_migrations_total"]
    assert sample.labels["result"] == "ok" and sample.labels["reason"].startswith('we"ird\\reason\n')
    assert len(sample.labels["reason"]) == 64
    assert fam["omview_migration_moved_bytes"].samples[0].value == 0


def test_the_collector_counts_its_agents_migration_events(make_collector, clock) -> None:  # type: ignore[no-untyped-def]
    src = SyntheticSource(4, seed=3, churn=0)
    col = make_collector(source=src)
    original = src.events

    def events() -> list[tuple[str, Any]]:
        return [*original(), _done(), ("migration.failed", {"result": "failed", "reason": "request"})]

    src.events = events  # type: ignore[method-assign]
    run_ticks(col, clock, 5)
    n = col.ticks
    assert col.migrations.by_outcome[("failed", "request")] == n
    assert col.migrations.by_outcome[("ok", "balance")] >= n
    assert col.migrations.frozen.count == col.migrations.by_outcome[("ok", "balance")]


@pytest.mark.parametrize(
    ("spec", "default", "want"),
    [
        ("0.0.0.0:9100", None, ("0.0.0.0", 9100)),
        (":9100", None, ("127.0.0.1", 9100)),
        ("10.1.2.3", 9200, ("10.1.2.3", 9200)),
        ("[::1]:9100", None, ("::1", 9100)),
        ("::", 9100, ("::", 9100)),
        ("localhost:0", None, ("localhost", 0)),
    ],
)
def test_listen_addresses(spec: str, default: int | None, want: tuple[str, int]) -> None:
    assert parse_listen(spec, default) == want


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("nonsense:9100", "is not an IP address"),
        ("127.0.0.1:http", "port must be a number"),
        ("127.0.0.1:70000", "port must be a number"),
        ("[::1", "IPv6"),
        ("127.0.0.1", "has no port"),
    ],
)
def test_bad_listen_addresses_are_refused(spec: str, says: str) -> None:
    with pytest.raises(CollectorError, match=says):
        parse_listen(spec)






def test_a_bad_or_unusable_address_is_one_clear_line(tmp_path: Path) -> None:
    common = ["--logdir", str(tmp_path / "log"), "--pidfile", str(tmp_path / "c.pid"), "--synthetic", "2"]
    r = cli("-d", *common, "--metrics-listen", "collector.example:9100")
    assert r.returncode == 1 and r.stderr.startswith("openmosixcollector: --metrics-listen")
    assert "Traceback" not in r.stderr
    # 192.0.2.1 (TEST-NET-1) is nobody's address here: the bind fails and says where
    r = cli("-d", *common, "--metrics-listen", "192.0.2.1:9100")
    assert r.returncode == 1
    assert "cannot listen for metrics on 192.0.2.1:9100" in r.stderr and "Traceback" not in r.stderr


def test_the_endpoint_on_an_ipv6_loopback(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 is not configured here")
    port = free_port()
    pidfile = tmp_path / "c.pid"
    common = ["--logdir", str(tmp_path / "log"), "--pidfile", str(pidfile), "--synthetic", "2"]
    r = cli("-d", *common, "--interval", "0.1", "--metrics-listen", f"[::1]:{port}")
    assert r.returncode == 0, r.stderr
    try:
        deadline = time.monotonic() + 15
        while True:
            with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=5) as resp:
                fam = _families(resp.read().decode())
            if len(fam["omview_node_up"].samples) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(fam["omview_node_up"].samples) == 2
    finally:
        if cli("-k", "--pidfile", str(pidfile)).returncode != 0:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
