"""HistoryData's compact arrays hold exactly what the one reader (records.History) decodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omview.analyzer.data import HistoryData
from omview.model import records
from tests.analyzer.conftest import START, write_history

FIELDS = ("load", "mem", "rmem", "tmem", "speed", "cpus")


def _same(data: HistoryData, logdir: Path) -> None:
    h = records.History.open(str(logdir))
    for nid in h.node_ids():
        s, a = h.series(nid), data.load_node(nid)
        assert len(a) == len(s) > 0
        assert np.array_equal(a.times, np.frombuffer(s.times, dtype=np.float64))
        for name in FIELDS:
            assert np.array_equal(getattr(a, name), np.frombuffer(getattr(s, name), dtype=np.int64)), name


def test_compact_arrays_equal_the_reader_through_refresh(tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    write_history(logdir, nodes=4, ticks=400)
    data = HistoryData(str(logdir))
    _same(data, logdir)
    a = data.load_node(1)
    # ~16 bytes a sample: tick index, load, mem and rmem (KiB); tmem, speed, cpus as runs
    assert (a.tix.dtype, a.load.dtype) == (np.uint32, np.int32) and a.kib("mem").dtype == np.uint32
    assert len(a._tmem.vals) < len(a) // 10
    # the reader let go of the samples it handed over
    assert len(data.history.series(1)) == 0
    write_history(logdir, nodes=4, ticks=50, start=START + 401)  # the collector appends
    grown = data.refresh()
    assert set(grown) == {1, 2, 3, 4} and grown[1] == 400
    _same(data, logdir)


def test_a_backup_is_read_the_same(tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    write_history(logdir, nodes=3, ticks=120, rotate=True)
    backup = records.list_histories(str(logdir))[0]
    data = HistoryData(backup)
    assert data.frozen and data.refresh() == {}
    _same(data, Path(backup))
