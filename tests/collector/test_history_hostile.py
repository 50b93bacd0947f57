"""Issue 13, defect 9: history records whose checksum is right but whose content is ill-typed.

Every file here is crafted with valid CRCs, so only validation on read can catch it: a bad record
is skipped and counted, never fatal - for the CSV export, a collector continuing the history and
the compression of a rotated one.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from omview.collector.export import export_csv
from omview.collector.writer import compress_history
from omview.model import records
from tests.collector.conftest import run_ticks

HID = "cafe01"


def _header(file_kind: str = "cluster", /, **meta: Any) -> bytes:
    """A header with valid CRC whose fields may be overridden with anything."""
    m, _ = records.decode_header(records.encode_header(file_kind, HID, 1000.0, 1.0))
    m.update(meta)
    return records._header_bytes(m)


def _write_history(d: Path, cluster_records: list[bytes], procs_records: list[bytes] | None = None) -> None:
    d.mkdir(exist_ok=True)
    body = b"".join(records.tick_frame(t, 1000.0 + t) for t in range(3))
    (d / "cluster").write_bytes(_header() + body + b"".join(cluster_records) + records.tick_frame(3, 1003.0))
    enc = records.NodeEncoder()
    node = records.encode_header("node", HID, 1000.0, 1.0)
    for t in range(4):
        node += enc.encode(t, [t, 1, 2, 3, 4, 5, 6, 1])
        enc.commit()
    (d / "node1").write_bytes(node)
    if procs_records is not None:
        (d / "procs").write_bytes(records.encode_header("procs", HID, 1000.0, 1.0) + b"".join(procs_records))


def _json(rtype: int, text: str) -> bytes:
    return records.frame(rtype, text.encode())


ROW = [7, 1, 0, "root", "S", 0, 0, 1024, 1, "sleep", ["sleep", "9"], 1, 1, 0, 0, "", ""]
BAD_CLUSTER = [
    _json(records.T_EVENT, "[1, 2]"),  # not an object: AttributeError before
    _json(records.T_EVENT, "[" * 100_000 + "]" * 100_000),  # RecursionError before
    _json(records.T_NODE, '{"id": "x", "tick": 1}'),
    _json(records.T_NODE, '{"id": 1e400}'),
    _json(records.T_SESSION, '{"tick": 1, "t": "now", "pid": [1]}'),
    _json(records.T_CHECKPOINT, '{"tick": 1, "t": 1.0, "label": {"a": 1}}'),
    _json(records.T_GAP, '{"tick": 1, "t": 1.0}'),
    _json(records.T_CLOCK, '{"tick": 1, "t": 1.0, "jump": "far"}'),
    _json(records.T_EVENT, '{"tick": 1, "t": 1.0, "name": "x", "data": 1}'.replace("1.0", "1" + "0" * 5000)),
    records.frame(records.T_TICK, b"\xff\xff"),  # a cut varint
    records.frame(records.T_TICK, b"\x05\x05\x05"),  # trailing garbage
    records.frame(records.T_EVENT, b"\xff\xfe not utf-8"),
]
BAD_PROCS = [
    _json(records.T_PKEY, '{"tick": "0", "procs": []}'),
    _json(records.T_PKEY, '{"tick": 0, "procs": [[1, 2]]}'),
    _json(records.T_PKEY, '{"tick": 0, "procs": {"a": 1}}'),
    _json(records.T_PDELTA, '{"tick": 1, "chg": [[7, 99, 1]]}'),
    _json(records.T_PDELTA, '{"tick": 1, "chg": [[7, 3, 5]]}'),  # user must be a string
    _json(records.T_PDELTA, '{"tick": 1, "del": ["7"]}'),
]
GOOD_PROCS = [
    _json(records.T_PKEY, json.dumps({"tick": 0, "procs": [ROW]})),
    _json(records.T_PDELTA, json.dumps({"tick": 1, "chg": [[7, 6, 50]]})),
]


def test_ill_typed_records_are_skipped_and_counted(tmp_path: Path) -> None:
    d = tmp_path / "h"
    _write_history(d, BAD_CLUSTER, GOOD_PROCS[:1] + BAD_PROCS + GOOD_PROCS[1:])
    h = records.History.open(str(d))
    assert list(h.ticks) == [0, 1, 2, 3]
    assert h.events == [] and h.nodes == {} and h.sessions == [] and h.checkpoints == []
    assert h.bad_records == len(BAD_CLUSTER)
    procs = h.processes()
    assert h.bad_records == len(BAD_CLUSTER) + len(BAD_PROCS)
    assert len(procs) == 2 and procs.at(1001.5)[0].cpu == 50.0
    assert sum("skipped a bad record" in p for p in h.problems) == h.bad_records
    out = io.StringIO()
    assert export_csv(str(d), out) == 4


@pytest.mark.parametrize(
    "meta",
    [
        {"created": "now"},
        {"interval": 0},
        {"interval": "1"},
        {"history": 5},
        {"kind": ["cluster"]},
        {"created": None},
    ],
)
def test_an_ill_typed_header_is_a_format_error_and_the_collector_moves_it_aside(
    meta: dict[str, Any],
    make_collector,
    clock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    d = tmp_path / "log"
    d.mkdir()
    (d / "cluster").write_bytes(_header(**meta) + records.tick_frame(0, 1000.0))
    with pytest.raises(records.HistoryFormatError, match="damaged header"):
        records.History.open(str(d))
    caplog.set_level(logging.INFO)
    col = make_collector(2)  # refused to start before: ValueError from float("now")
    assert "moved it to" in " ".join(r.getMessage() for r in caplog.records)
    col.close()
    assert records.History.open(str(d)).header["history"] != HID


def test_a_collector_continues_a_history_with_bad_records(make_collector, clock, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    col = make_collector(2)
    run_ticks(col, clock, 5)
    col.close()
    with open(tmp_path / "log" / "cluster", "ab") as f:
        f.write(b"".join(BAD_CLUSTER))
        f.write(
            records.frame(
                records.T_TICK, bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 1])
            )
        )
    col2 = make_collector(2)
    assert col2.writer.tick == 5  # never numbered from the bad tick record
    run_ticks(col2, clock, 5)
    col2.close()
    h = records.History.open(str(tmp_path / "log"))
    assert list(h.ticks) == list(range(10)) and h.bad_records == len(BAD_CLUSTER) + 1
    assert len(h.series(1)) == 10


def test_compressing_an_all_garbage_directory_keeps_the_files(tmp_path: Path) -> None:
    d = tmp_path / "backup"
    d.mkdir()
    for name in ("cluster", "node1", "node2", "procs"):
        (d / name).write_bytes(os.urandom(3000))
    (d / "node3").write_bytes(_header("node", key_every=0) + b"\x00" * 10)
    compress_history(str(d))
    assert sorted(os.listdir(d)) == sorted(n + ".xz" for n in ("cluster", "node1", "node2", "node3", "procs"))
    with pytest.raises(records.HistoryFormatError):
        records.History.open(str(d))
