"""Issue 13, defect 9: history records whose checksum is right but whose content is ill-typed.

Every file here is crafted with valid CRCs, so only validation on read can catch it: a bad record
is skipped and counted, never fatal - for the CSV export, a collector continuing the history and
the compression of a rotated one.
"""

from __future__ import annotations

import io
import json
import logging
import lzma
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from omview.collector.daemon import background_compressor
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


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_a_collector_never_appends_to_a_history_with_bad_records(
    make_collector, clock, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    col = make_collector(2)
    run_ticks(col, clock, 5)
    col.close()
    cluster = tmp_path / "log" / "cluster"
    with open(cluster, "ab") as f:
        f.write(b"".join(BAD_CLUSTER))
        f.write(
            records.frame(
                records.T_TICK, bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 1])
            )
        )
    damaged = cluster.read_bytes()
    caplog.set_level(logging.INFO)
    col2 = make_collector(2)
    # before: the collector went on appending behind the bad records
    assert col2.writer.tick == 0
    said = [m for m in _messages(caplog) if "is damaged" in m]
    assert len(said) == 1 and "moved it to" in said[0] and "bad record" in said[0]
    run_ticks(col2, clock, 5)
    col2.close()
    live = records.History.open(str(tmp_path / "log"))
    assert list(live.ticks) == list(range(5)) and live.problems == [] and len(live.series(1)) == 5
    # the damaged history is kept whole for inspection, and readable: the damage is skipped and counted
    backups = records.list_histories(str(tmp_path / "log"))[:-1]
    assert len(backups) == 1
    assert (Path(backups[0]) / "cluster").read_bytes() == damaged
    old = records.History.open(backups[0])
    assert list(old.ticks) == list(range(5)) and old.bad_records == len(BAD_CLUSTER) + 1
    assert len(old.series(1)) == 5


def _garble_node_header_length(d: Path) -> None:
    b = bytearray((d / "node1").read_bytes())
    b[10:14] = (0x7FFF0000).to_bytes(4, "little")  # the header's length field
    (d / "node1").write_bytes(bytes(b))


def _garbage_after_last_key_frame(d: Path) -> None:
    b = (d / "node2").read_bytes()
    key = records.last_key_offset(b, 0)
    (d / "node2").write_bytes(b[: key + 20] + b"\x7f\x7f\x7f" + b[key + 20 :])


def _garbage_tail(name: str) -> Any:
    def damage(d: Path) -> None:
        with open(d / name, "ab") as f:
            f.write(b"\x00" * 4096)  # a zero-filled page, as a power loss leaves it

    return damage


def _garbled_frame_length(d: Path) -> None:
    # a record in the middle whose length field was hit: the records after it are still valid
    b = bytearray((d / "procs").read_bytes())
    _, start = records.decode_header(bytes(b))
    b[start + 1] ^= 0x40
    (d / "procs").write_bytes(bytes(b))


@pytest.mark.parametrize(
    "damage",
    [
        _garble_node_header_length,
        _garbage_after_last_key_frame,
        _garbage_tail("node2"),
        _garbage_tail("cluster"),
        _garbage_tail("procs"),
        _garbled_frame_length,
    ],
    ids=[
        "node-header-length",
        "node-middle",
        "node-tail",
        "cluster-tail",
        "procs-tail",
        "procs-frame-length",
    ],
)
def test_damage_found_at_start_moves_the_history_aside(
    damage, make_collector, clock, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "log"
    col = make_collector(2)
    run_ticks(col, clock, 8)
    col.close()
    damage(d)
    before = {
        p.name: p.read_bytes()
        for p in d.iterdir()
        if records.node_id_of(p.name) or p.name in ("cluster", "procs")
    }
    caplog.set_level(logging.INFO)
    col2 = make_collector(2)
    said = [m for m in _messages(caplog) if "is damaged" in m]
    assert len(said) == 1 and "moved it to" in said[0], _messages(caplog)
    assert col2.writer.tick == 0
    run_ticks(col2, clock, 3)
    col2.close()
    assert records.History.open(str(d)).problems == []
    (backup,) = records.list_histories(str(d))[:-1]
    assert {n: (Path(backup) / n).read_bytes() for n in before} == before  # kept as it was
    old = records.History.open(backup)
    assert len(old.ticks) == 8
    for nid in old.node_ids():
        old.series(nid)
    old.processes()
    assert old.problems  # the readers skip the damage and say so


def test_a_torn_tail_is_still_cut_off_and_the_history_continues(
    make_collector, clock, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    col = make_collector(2)
    run_ticks(col, clock, 4)
    col.close()
    with open(tmp_path / "log" / "procs", "ab") as f:
        f.write(records.json_frame(records.T_PDELTA, {"tick": 4, "del": [1]})[:-3])
    caplog.set_level(logging.INFO)
    col2 = make_collector(2)
    assert col2.writer.tick == 4 and not any("is damaged" in m for m in _messages(caplog))
    assert any("cut off" in m for m in _messages(caplog))


def test_a_node_file_with_a_garbled_header_length_is_skipped_and_counted(tmp_path: Path) -> None:
    d = tmp_path / "h"
    _write_history(d, [])
    b = bytearray((d / "node1").read_bytes())
    b[10:14] = (1 << 31).to_bytes(4, "little")
    (d / "node1").write_bytes(bytes(b))
    h = records.History.open(str(d))
    assert len(h.series(1)) == 0
    # before: taken for a file being created, retried on every refresh and never reported
    assert h.bad_files == 1 and any("damaged header" in p for p in h.problems)
    h.refresh()
    assert h.bad_files == 1 and len(h.problems) == 1


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


def test_a_damaged_node_file_is_compressed_as_it_is(tmp_path: Path) -> None:
    d = tmp_path / "backup"
    _write_history(d, [])
    damaged = (d / "node1").read_bytes() + b"\x7f" * 5
    (d / "node1").write_bytes(damaged)
    compress_history(str(d))
    # before: transcoded to columns, the damaged bytes gone
    assert lzma.decompress((d / "node1.xz").read_bytes()) == damaged


def test_the_compression_thread_survives_an_unreadable_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "backup"
    d.mkdir()
    for name in ("cluster", "node1", "node3", "procs"):
        (d / name).write_bytes(os.urandom(3000))
    (d / "node2").mkdir()  # not a file: reading it fails
    died: list[BaseException | None] = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: died.append(args.exc_value)
    caplog.set_level(logging.INFO)
    try:
        background_compressor()(str(d))
        for t in threading.enumerate():
            if t.name.startswith("compress "):
                t.join(60)
    finally:
        threading.excepthook = old_hook
    assert died == []
    # before: the first unreadable file stopped the rest (node3, procs stayed uncompressed)
    assert sorted(os.listdir(d)) == ["cluster.xz", "node1.xz", "node2", "node3.xz", "procs.xz"]
    assert any("could not compress" in m for m in _messages(caplog))


def test_a_running_collector_moves_the_history_aside_after_a_foreign_write(
    make_collector, clock, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    col = make_collector(2, sync_every=5)
    run_ticks(col, clock, 3)
    with open(tmp_path / "log" / "node1", "ab") as f:
        f.write(b"\x7f" * 7)  # not the collector's bytes
    caplog.set_level(logging.INFO)
    run_ticks(col, clock, 8)
    assert any("something else wrote to the history" in m for m in _messages(caplog))
    # before: the collector went on appending samples behind the foreign bytes
    assert len(col.rotations) == 1
    assert b"\x7f" * 7 in (Path(col.rotations[0]) / "node1").read_bytes()
    run_ticks(col, clock, 3)
    col.close()
    assert records.History.open(str(tmp_path / "log")).problems == []
