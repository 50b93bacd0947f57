"""openmosixanalyzer --find-out: the statistics equal those computed from the CSV export."""

from __future__ import annotations

import csv
import io
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from omview.analyzer.app import main
from omview.analyzer.data import HistoryData, find_out, iso, parse_time
from tests.analyzer.conftest import START, HistoryFactory


def _csv_rows(logdir: Path) -> list[dict[str, str]]:
    out = subprocess.run(
        [sys.executable, "-m", "omview.collector", "--export", "csv", "--history", str(logdir)],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return list(csv.DictReader(io.StringIO(out.stdout)))


def _expected(rows: list[dict[str, str]], lo: float, hi: float, interval: float) -> dict[str, Any]:
    """The find-out numbers computed the plain way, from the CSV text alone."""
    picked = [r for r in rows if lo <= float(r["epoch"]) <= hi]

    def block(rs: list[dict[str, str]]) -> dict[str, Any]:
        loads = [int(r["load"]) for r in rs]
        mems = [int(r["mem"]) for r in rs]
        last: dict[str, dict[str, str]] = {}
        for r in rs:  # rows are in time order: the last one per node wins
            last[r["node"]] = r
        return {
            "samples": len(rs),
            "load": {"min": min(loads), "max": max(loads), "mean": statistics.fmean(loads)},
            "mem": {"min": min(mems), "max": max(mems), "mean": statistics.fmean(mems)},
            "cpus": sum(int(r["cpus"]) for r in last.values()),
            "tmem": sum(int(r["tmem"]) for r in last.values()),
            "speed": sum(int(r["speed"]) for r in last.values()),
            "above_75_s": sum(1 for x in loads if x > 75) * interval,
        }

    nodes = sorted({int(r["node"]) for r in rows})
    return {
        "nodes": {n: block([r for r in picked if int(r["node"]) == n]) for n in nodes},
        "cluster": block(picked),
    }


def _same(got: dict[str, Any], want: dict[str, Any]) -> None:
    for key in ("samples", "cpus", "tmem", "speed"):
        assert got[key] == want[key], key
    assert got["above_75_s"] == pytest.approx(want["above_75_s"])
    for field in ("load", "mem"):
        assert got[field]["min"] == want[field]["min"]
        assert got[field]["max"] == want[field]["max"]
        assert got[field]["mean"] == pytest.approx(want[field]["mean"], rel=1e-12)


@pytest.mark.parametrize("window", [None, (30.5, 150.0)])
def test_find_out_equals_csv_export(make_history: HistoryFactory, window: tuple[float, float] | None) -> None:
    logdir = make_history(nodes=5, ticks=240)
    rows = _csv_rows(logdir)
    data = HistoryData(str(logdir))
    lo, hi = (data.start, data.end) if window is None else (START + window[0], START + window[1])
    got = find_out(data, None, None if window is None else lo, None if window is None else hi)
    want = _expected(rows, lo, hi, data.history.interval)
    assert got["from"] == iso(lo) and got["to"] == iso(hi)
    assert [b["id"] for b in got["nodes"]] == sorted(want["nodes"])
    for b in got["nodes"]:
        _same(b, want["nodes"][b["id"]])
    _same(got["cluster"], want["cluster"])
    assert any(b["above_75_s"] > 0 for b in got["nodes"]), "the fixture should have a busy node"


def test_find_out_json_command(make_history: HistoryFactory) -> None:
    """The command prints exactly the issue's JSON shape, for one node and the cluster."""
    logdir = make_history(nodes=4, ticks=120)
    out = subprocess.run(
        [sys.executable, "-m", "omview.analyzer.app", str(logdir), "--find-out", "--node", "3",
         "--from", iso(START + 10), "--to", str(START + 100), "--json"],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    result = json.loads(out.stdout)
    assert set(result) == {"from", "to", "nodes", "cluster"}
    assert result["from"] == iso(START + 10) and result["to"] == iso(START + 100)
    (node,) = result["nodes"]
    keys = {"id", "samples", "load", "mem", "cpus", "tmem", "speed", "above_75_s"}
    assert set(node) == keys and set(result["cluster"]) == keys - {"id"}
    assert node["id"] == 3 and node["samples"] == 91  # 10 s .. 100 s inclusive at 1 s
    assert set(node["load"]) == set(node["mem"]) == {"min", "max", "mean"}
    want = _expected(_csv_rows(logdir), START + 10, START + 100, 1.0)
    _same(node, want["nodes"][3])
    _same(result["cluster"], want["cluster"])


def test_find_out_text_and_errors(make_history: HistoryFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logdir = make_history(nodes=2, ticks=30)
    assert main([str(logdir), "--find-out"]) == 0
    text = capsys.readouterr().out
    assert "node 1:" in text and "cluster:" in text and "load min/max/mean" in text
    assert main([str(logdir), "--find-out", "--node", "9"]) == 1
    assert "no node 9" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "cluster").write_bytes(b"PK\x03\x04 not a history")
    assert main([str(foreign), "--find-out"]) == 1
    err = capsys.readouterr().err
    assert str(foreign / "cluster") in err and "not an omview collector history" in err


def test_parse_time() -> None:
    assert parse_time("1780000000.5") == 1780000000.5
    assert parse_time("2026-05-28T20:26:40Z") == 1780000000.0
    assert parse_time("2026-05-28T22:26:40+02:00") == 1780000000.0
    with pytest.raises(ValueError):
        parse_time("yesterday")
