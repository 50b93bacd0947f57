"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes a real collector and answers PromQL.

The collector samples the synthetic cluster (as the other CLI tests do); Prometheus runs on a
free loopback port with a temporary config and storage directory and is stopped by its PID.
scripts/setup.sh installs the package; nothing is installed here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omview.model import records
from tests.collector.conftest import cli, free_port

PROMETHEUS = "/usr/bin/prometheus"

pytestmark = pytest.mark.slow






def _query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        answer = json.load(resp)
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    logdir, pidfile = tmp_path / "log", tmp_path / "collector.pid"
    common = ["--logdir", str(logdir), "--pidfile", str(pidfile)]
    r = cli("-d", *common, "--synthetic", "3", "--interval", "0.2", "--metrics-port", str(port))
    assert r.returncode == 0, r.stderr
    try:
        yield port, logdir
    finally:
        if cli("-k", *common).returncode != 0 and pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


@pytest.fixture
def prometheus(tmp_path: Path, collector: tuple[int, Path]) -> Iterator[int]:
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail(f"{PROMETHEUS} is missing: run scripts/setup.sh (it installs Debian's prometheus)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    # JSON is YAML: no YAML writer needed
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "omview", "static_configs": [{"targets": [f"127.0.0.1:{collector[0]}"]}]}
                ],
            }
        )
    )
    log = open(tmp_path / "prometheus.log", "wb")  # closed in the finally below
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if proc.returncode not in (0, -signal.SIGTERM):
            print((tmp_path / "prometheus.log").read_text(errors="replace")[-3000:])


def test_prometheus_scrapes_the_collector_and_answers_promql(
    prometheus: int, collector: tuple[int, Path], tmp_path: Path
) -> None:
    deadline = time.monotonic() + 60
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            result = _query(prometheus, 'omview_node_load{node="2"}')
        except OSError:
            result = []  # Prometheus still starting
        if result:
            break
        time.sleep(0.5)
    log = (tmp_path / "prometheus.log").read_text(errors="replace")
    assert result, f"Prometheus never got node 2's load; its log:\n{log[-3000:]}"
    (series,) = result
    assert series["metric"]["job"] == "omview" and series["metric"]["hostname"] == "node002"
    load = float(series["value"][1])
    # the value Prometheus holds is one the collector sampled and recorded for node 2
    assert load in {float(x) for x in records.History.open(str(collector[1])).series(2).load}
    # the scrape was accepted whole (the OpenMetrics parser of Prometheus is strict)
    (up,) = _query(prometheus, 'up{job="omview"}')
    assert up["value"][1] == "1"
    # the documented PromQL examples are valid and see the migration families
    assert _query(prometheus, "sum by (result) (increase(omview_migrations_total[5m]))") is not None
    quantile = "histogram_quantile(0.9, sum by (le) (rate(omview_migration_frozen_seconds_bucket[5m])))"
    assert _query(prometheus, quantile) is not None
    assert len(_query(prometheus, "omview_migration_frozen_seconds_bucket")) == 14  # 13 bounds and +Inf
    assert len(_query(prometheus, "omview_node_memory_total_bytes")) == 3
