"""The history file format (omview.model.records): encodings, framing, damage and versions."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omview.model import records
from omview.model.cluster import ProcessInfo

VALUES = st.tuples(*([st.integers(-(1 << 40), 1 << 40)] * 7), st.integers(0, 2))


@given(st.integers(-(1 << 62), 1 << 62))
def test_svarint_round_trip(n: int) -> None:
    out = bytearray()
    records.put_svarint(out, n)
    assert records.get_svarint(bytes(out), 0) == (n, len(out))


def test_small_deltas_are_one_byte() -> None:
    for n in range(-64, 64):
        out = bytearray()
        records.put_svarint(out, n)
        assert len(out) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), VALUES), min_size=1, max_size=60))
def test_node_records_round_trip(steps: list[tuple[int, tuple[int, ...]]]) -> None:
    """Whatever sequence of samples (with gaps) the encoder gets, the decoder returns exactly it."""
    enc = records.NodeEncoder(key_every=7)
    buf = bytearray()
    expected = []
    tick = 0
    for gap, values in steps:
        tick += gap
        buf += enc.encode(tick, values)  # type: ignore[arg-type]
        enc.commit()
        expected.append((tick, list(values)))
    got: list[tuple[int, list[int]]] = []
    res = records.NodeDecoder().decode(bytes(buf), 0, lambda t, v: got.append((t, list(v))))
    assert got == expected
    assert res.end == len(buf) and not res.torn and res.damaged == 0


def _node_stream(n: int, seed: int = 5) -> tuple[bytes, list[tuple[int, list[int]]], list[int]]:
    rng = random.Random(seed)
    enc = records.NodeEncoder(key_every=10)
    buf = bytearray()
    ends = []
    expected = []
    vals = [100, 1 << 20, 1 << 19, 50, 1 << 21, 10000, 4, 1]
    for tick in range(n):
        vals = [v + rng.randint(-3, 3) if i < 4 else v for i, v in enumerate(vals)]
        buf += enc.encode(tick, tuple(vals))  # type: ignore[arg-type]
        enc.commit()
        ends.append(len(buf))
        expected.append((tick, list(vals)))
    return bytes(buf), expected, ends


def test_unchanged_sample_costs_two_bytes() -> None:
    v = (1, 2, 3, 4, 5, 6, 7, 1)
    assert len(records.encode_sample(10, v, 11, v)) == 2


def test_torn_tail_at_every_cut_is_detected() -> None:
    """A file cut at any byte yields exactly the complete records before the cut."""
    buf, expected, ends = _node_stream(40)
    for cut in range(len(buf)):
        got: list[tuple[int, list[int]]] = []
        res = records.NodeDecoder().decode(buf[:cut], 0, lambda t, v, got=got: got.append((t, list(v))))
        complete = sum(1 for e in ends if e <= cut)
        assert got == expected[:complete], cut
        assert res.end == (ends[complete - 1] if complete else 0)


def test_damage_is_skipped_to_the_next_key_frame() -> None:
    buf, expected, ends = _node_stream(40)
    damaged = bytearray(buf)
    hit = ends[12] + 1  # inside record 13 (ticks 10..19 are deltas after the key at tick 10)
    damaged[hit] ^= 0x55
    got: list[int] = []
    dec = records.NodeDecoder()
    res = dec.decode(bytes(damaged), 0, lambda t, v: got.append(t))
    assert dec.damaged > 0 and res.damaged > 0
    assert got[:13] == list(range(13))
    assert 13 not in got and got[-1] == 39
    assert 20 in got  # the key frame at tick 20 resynchronised the reader


def test_zero_filled_tail_is_not_taken_for_samples() -> None:
    buf, expected, _ = _node_stream(15)
    got: list[int] = []
    res = records.NodeDecoder().decode(buf + bytes(64), 0, lambda t, v: got.append(t))
    assert got == list(range(15))
    assert res.end == len(buf)


def test_frames_round_trip_and_torn_tail() -> None:
    frames = [records.tick_frame(i, 1_700_000_000.5 + i) for i in range(10)]
    frames.append(records.json_frame(records.T_CHECKPOINT, {"tick": 9, "t": 1.0, "label": "ünïcode"}))
    buf = b"".join(frames)
    got, res = records.scan_frames(buf)
    assert [f.rtype for f in got] == [records.T_TICK] * 10 + [records.T_CHECKPOINT]
    assert res.end == len(buf) and not res.torn
    got, res = records.scan_frames(buf[:-3])
    assert len(got) == 10 and res.torn and res.end == len(buf) - len(frames[-1])


def test_frame_damage_resynchronises() -> None:
    frames = [records.tick_frame(i, 1000.0 + i) for i in range(10)]
    buf = bytearray(b"".join(frames))
    buf[len(frames[0]) * 3 + 2] ^= 0xFF
    got, res = records.scan_frames(bytes(buf))
    ticks = [records.get_uvarint(f.payload, 0)[0] for f in got]
    assert ticks == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert res.damaged == len(frames[3])


def test_header_versions() -> None:
    head = records.encode_header("cluster", "abc", 1000.0, 1.0)
    meta, start = records.decode_header(head + b"rest")
    assert meta["kind"] == "cluster" and start == len(head)
    assert [f["name"] for f in meta["node_fields"]] == list(records.FIELD_NAMES)
    assert all(f["unit"] for f in meta["node_fields"])
    future = bytearray(head)
    future[8] = records.FORMAT_VERSION + 1
    with pytest.raises(records.HistoryFormatError, match="upgrade omview") as ei:
        records.decode_header(bytes(future), "x")
    assert ei.value.version == records.FORMAT_VERSION + 1
    with pytest.raises(records.HistoryFormatError, match="cut short"):
        records.decode_header(head[:20])
    with pytest.raises(records.HistoryFormatError, match="not an omview"):
        records.decode_header(b"timestamp,load\n1,2\n")
    bad = bytearray(head)
    bad[20] ^= 1
    with pytest.raises(records.HistoryFormatError, match="damaged"):
        records.decode_header(bytes(bad))


def _proc(pid: int, cpu: float = 0.0, rss: int = 1 << 20, state: str = "S", where: int = 1) -> ProcessInfo:
    return ProcessInfo(pid, 1, 0, "root", state, 0, cpu, rss, 1, f"p{pid}", (f"/bin/p{pid}", "-x"), 1, where)


def test_process_records_reconstruct_every_snapshot() -> None:
    enc = records.ProcEncoder(key_every=5)
    rng = random.Random(3)
    procs = {pid: _proc(pid) for pid in range(100, 130)}
    buf = bytearray()
    expected: dict[int, list[ProcessInfo]] = {}
    for tick in range(23):
        for pid in rng.sample(sorted(procs), 4):
            procs[pid] = _proc(pid, cpu=rng.randint(0, 100), where=rng.randint(1, 3))
        if tick % 4 == 1:
            del procs[rng.choice(sorted(procs))]
            procs[1000 + tick] = _proc(1000 + tick, state="R")
        data = enc.encode(tick, list(procs.values()))
        enc.commit()
        if data is not None:
            buf += data
        expected[tick] = [
            records.proc_from_row(records.proc_row(p)) for p in sorted(procs.values(), key=lambda p: p.pid)
        ]
    frames, _ = records.scan_frames(bytes(buf))
    hist = records.ProcessHistory(lambda t: float(t))
    for fr in frames:
        hist._add(fr)
    for tick in (22, 0, 7, 13, 5, 21, 3):  # out of order: the cache must not leak state
        assert hist.at(tick + 0.5) == expected[tick], tick
    assert hist.at(-1.0) == []


def test_rss_noise_is_not_recorded_but_real_growth_is() -> None:
    enc = records.ProcEncoder()
    enc.encode(0, [_proc(5, rss=100 << 20)])
    enc.commit()
    assert enc.encode(1, [_proc(5, rss=(100 << 20) + (512 << 10))]) is None
    enc.commit()
    assert enc.encode(2, [_proc(5, rss=200 << 20)]) is not None


def test_backup_names_sort_by_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    logdir = str(tmp_path / "openmosixcollector")
    a = records.backup_dir_name(logdir, 1_700_000_000)
    assert a == logdir + "-2023-11-14_22-13-20Z"
    (tmp_path / "openmosixcollector").mkdir()
    for t in (1_700_050_000, 1_700_000_000, 1_600_000_000):
        (tmp_path / records.backup_dir_name(logdir, t).rsplit("/", 1)[1]).mkdir()
    dup = records.backup_dir_name(logdir, 1_700_000_000)
    assert dup == a + ".2"
    (tmp_path / dup.rsplit("/", 1)[1]).mkdir()
    found = records.list_histories(logdir)
    assert found[-1] == logdir
    assert found[:-1] == sorted(found[:-1]) and len(found) == 5
    assert found[1] == a and found[2] == dup
