"""The analyzer window on histories written by the real collector writer (pytest-qt, offscreen)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtCore import QPointF
from PySide6.QtGui import QImage

from omview.analyzer import raster
from omview.analyzer import window as window_module
from omview.analyzer.data import RED_LOAD, find_out, list_entries
from omview.analyzer.window import AnalyzerWindow
from omview.model import records
from tests.analyzer.conftest import START, HistoryFactory, write_history


def _window(qtbot: Any, path: Path | str, renderer: str = "raster") -> AnalyzerWindow:
    win = AnalyzerWindow(str(path), renderer=renderer)
    qtbot.addWidget(win)
    assert win.wait_loaded(30)
    return win


def _only(win: AnalyzerWindow, nid: int) -> None:
    """Show node nid alone over the whole history."""
    win.nodes.set_all(False)
    item = win.nodes.item_for(nid)
    assert item is not None
    item.setCheckState(pg.QtCore.Qt.CheckState.Checked)
    win.show_whole()


def _shown_picture(win: AnalyzerWindow) -> tuple[QImage, np.ndarray]:
    """The overview shown as the screen shows it (its viewport painted now) and its picture's
    colour indices (the picture is built by that paint)."""
    plot = win.current_plot()
    image = plot.viewport().grab().toImage()
    pic = win.pictures["load" if plot is win.load_plot else "memory"].picture
    assert pic is not None
    return image, pic


def _colours_at(win: AnalyzerWindow, image: QImage, x: float, y: float) -> set[tuple[int, int, int]]:
    """The colours of the 3 x 3 screen pixels around the data point (x, y) of the overview shown."""
    plot = win.current_plot()
    p = plot.mapFromScene(plot.getViewBox().mapViewToScene(QPointF(x, y)))
    out = set()
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            c = image.pixelColor(p.x() + dx, p.y() + dy)
            out.add((c.red(), c.green(), c.blue()))
    return out


RED_PX, BLACK_PX = (220, 0, 0), (0, 0, 0)


def _points(item: pg.PlotCurveItem) -> tuple[np.ndarray, np.ndarray]:
    """The item's points with NaN where its connect array breaks the line."""
    x, y = item.getData()
    if x is None or not len(x):
        return np.empty(0), np.empty(0)
    connect = item.opts["connect"]
    assert isinstance(connect, np.ndarray) and len(connect) == len(x)
    breaks = np.flatnonzero(~connect[:-1]) + 1
    return np.insert(np.asarray(x), breaks, np.nan), np.insert(np.asarray(y, dtype=float), breaks, np.nan)


def test_picture_red_above_75_and_hidden_nodes_leave_nothing(qtbot: Any, make_history: HistoryFactory) -> None:
    """On screen: under every sample of a node shown alone the pixel is red where the load is
    above 75 and black where it is below; a hidden node draws no pixel; a node that never
    passes 75 draws no red."""
    logdir = make_history(nodes=5, ticks=240, checkpoints=())  # no label over the lines
    win = _window(qtbot, logdir)
    win.resize(1200, 700)
    win.show()
    h = records.History.open(str(logdir))
    busy = idle = 0
    for nid in h.node_ids():
        _only(win, nid)
        image, pic = _shown_picture(win)
        s = h.series(nid)
        load = np.frombuffer(s.load, dtype=np.int64)
        times = np.frombuffer(s.times, dtype=np.float64)
        for t, v in zip(times.tolist(), load.tolist(), strict=True):
            colours = _colours_at(win, image, t, v)
            if v > RED_LOAD + 5:
                assert RED_PX in colours and BLACK_PX not in colours, (nid, t, v, colours)
            elif v < RED_LOAD - 5:
                assert BLACK_PX in colours and RED_PX not in colours, (nid, t, v, colours)
        # nothing else is drawn: above the node's highest load the columns stay empty
        top = win.load_plot.getViewBox().mapViewToScene(QPointF(times[0], float(load.max()) + 10)).y()
        assert not pic[: max(0, int(top) - int(win.load_plot.getViewBox().sceneBoundingRect().top()) - 2)].any()
        if load.max() > RED_LOAD:
            busy += 1
        else:
            idle += 1
            assert not (pic == window_module.RED).any()  # an idle node: no red at all
    assert busy and idle, "the fixture should have busy and idle nodes"
    win.nodes.set_all(False)
    image, pic = _shown_picture(win)
    assert not pic.any()  # every node hidden: an empty picture ...
    vb_rect = win.load_plot.mapFromScene(win.load_plot.getViewBox().sceneBoundingRect()).boundingRect()
    inner = image.copy(vb_rect.adjusted(8, 8, -8, -8))  # inside the axes' tick marks
    arr = np.frombuffer(inner.convertToFormat(QImage.Format.Format_RGB32).constBits(), np.uint32)
    reds = ((arr >> 16) & 0xFF > 150) & ((arr >> 8) & 0xFF < 60)
    blacks = (arr & 0xFFFFFF) == 0
    assert not reds.any() and not blacks.any()  # ... and no line pixel on screen
    assert isinstance(win.load_plot.getAxis("bottom"), pg.DateAxisItem)


def test_load_curves_red_above_75(qtbot: Any, make_history: HistoryFactory) -> None:
    """The "curves" way (the SVG export's vector curves): black to 75, red above."""
    logdir = make_history(nodes=5, ticks=240)
    win = _window(qtbot, logdir, "curves")
    win.resize(1200, 700)
    win.show()
    h = records.History.open(str(logdir))
    assert sorted(win.rows) == h.node_ids()
    assert x_dtype_ok(win)
    busy = idle = 0
    for nid in h.node_ids():
        _only(win, nid)  # 240 samples in ~1000 pixel columns: every sample is a point
        s = h.series(nid)
        load = np.frombuffer(s.load, dtype=np.int64)
        times = np.frombuffer(s.times, dtype=np.float64)
        bx, by = _points(win.items["load"])
        rx, ry = _points(win.items["red"])
        bf, rf = np.isfinite(by), np.isfinite(ry)
        # black runs through the samples at or below 75, red through those above (points inside
        # a flat stretch are left out, so compare with the drawn line, not with its points)
        low, high = load < RED_LOAD, load > RED_LOAD
        assert np.array_equal(np.interp(times[low], bx[bf], by[bf]), load[low])
        if high.any():
            assert np.array_equal(np.interp(times[high], rx[rf], ry[rf]), load[high])
        assert (by[np.isfinite(by)] <= RED_LOAD).all() and (ry[np.isfinite(ry)] >= RED_LOAD).all()
        if (load > RED_LOAD).any():
            busy += 1
        else:
            idle += 1
            assert not len(rx)
    assert busy and idle, "the fixture should have busy and idle nodes"
    pen = win.items["red"].opts["pen"].color()
    assert pen.red() > 200 and pen.blue() == 0
    assert win.statusBar().currentMessage() == "displaying the load overview now"
    assert isinstance(win.load_plot.getAxis("bottom"), pg.DateAxisItem)


def x_dtype_ok(win: AnalyzerWindow) -> bool:
    x, _ = _points(win.items["load"])
    return x.dtype == np.float64 and len(x) > 0


def test_overview_keeps_peaks_at_any_zoom(qtbot: Any, make_history: HistoryFactory,
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Zoomed out (many samples per pixel column) each node's extremes and every stretch above
    75 are still drawn: one (min, max) pair per column, from the pyramid."""
    logdir = make_history(nodes=3, ticks=3000, checkpoints=())
    win = _window(qtbot, logdir, "curves")
    win.resize(500, 400)  # ~400 columns for 3000 samples: the pyramid's blocks are used
    win.show()
    h = records.History.open(str(logdir))
    for nid in h.node_ids():
        _only(win, nid)
        load = np.frombuffer(h.series(nid).load, dtype=np.int64)
        bx, by = _points(win.items["load"])
        rx, ry = _points(win.items["red"])
        assert len(bx) + len(rx) < len(load)  # decimated
        assert np.nanmax(np.concatenate((by, ry))) == load.max()
        assert np.nanmin(np.concatenate((by, ry))) == load.min()
        assert bool(len(rx)) == bool((load > RED_LOAD).any())
    # many nodes: beyond the point budget the columns get wider, the extremes stay
    monkeypatch.setattr(window_module, "POINT_BUDGET", 600)
    win.nodes.set_all(True)
    bx, by = _points(win.items["load"])
    rx, ry = _points(win.items["red"])
    assert np.isfinite(by).sum() + np.isfinite(ry).sum() <= 3 * (2 * 200 + 4) * 2  # 200 columns, split at 75
    top = max(int(np.frombuffer(h.series(n).load, dtype=np.int64).max()) for n in h.node_ids())
    assert np.nanmax(np.concatenate((by, ry))) == top


def test_checkpoints_drawn_in_both_overviews(qtbot: Any, make_history: HistoryFactory) -> None:
    logdir = make_history(checkpoints=((50, "job start"), (150, "job end")))
    win = _window(qtbot, logdir)
    cps = records.History.open(str(logdir)).checkpoints
    assert len(cps) == 2
    for plot in (win.load_plot, win.mem_plot):
        lines = [i for i in plot.plotItem.items if isinstance(i, pg.InfiniteLine)]
        assert sorted(line.value() for line in lines) == sorted(c.time for c in cps)
        assert {line.label.textItem.toPlainText() for line in lines} == {"job start", "job end"}
        assert all(line.pen.color().blue() == 255 and line.pen.color().red() == 0 for line in lines)
    win.resize(1200, 700)
    win.show()
    for tab in (0, 1):
        win.tabs.setCurrentIndex(tab)
        image, pic = _shown_picture(win)
        vb = win.current_plot().getViewBox()
        for cp in cps:  # a blue line on screen at each checkpoint's time, over the picture
            y = vb.viewRange()[1][0] + 0.3 * (vb.viewRange()[1][1] - vb.viewRange()[1][0])
            assert (0, 0, 255) in _colours_at(win, image, cp.time, y)
    assert win.statusBar().currentMessage() == "displaying the memory overview now"
    # mem, rmem and tmem all drawn: green, blue, grey
    assert {window_module.GREEN, window_module.BLUE, window_module.GREY} <= set(np.unique(pic).tolist())


def test_node_list_search_all_none(qtbot: Any, make_history: HistoryFactory) -> None:
    win = _window(qtbot, make_history(nodes=12, ticks=30))
    assert win.nodes.shown() == set(range(1, 13))
    win.nodes.set_all(False)
    assert win.nodes.shown() == set() and not _shown_picture(win)[1].any()
    win.nodes.search.setText("node01")  # node010, node011, node012 by hostname
    win.nodes.set_all(True)
    assert win.nodes.shown() == {10, 11, 12}
    assert sorted(win._shown_rows().tolist()) == sorted(win.rows[n] for n in (10, 11, 12))
    assert _shown_picture(win)[1].any()


def test_find_out_dialog_matches_command(qtbot: Any, make_history: HistoryFactory) -> None:
    win = _window(qtbot, make_history(nodes=4, ticks=120))
    assert win.data is not None
    for node in (None, 4):
        dlg = win.find_out(node)
        assert dlg is not None
        qtbot.addWidget(dlg)
        lo, hi = dlg.range()
        res = find_out(win.data, node, lo, hi)
        want = res["cluster"] if node is None else res["nodes"][0]
        assert dlg.figures == want and want["samples"] > 0
        assert dlg.values["cpus"].text() == str(want["cpus"])
        dlg.ed_from.setDateTime(dlg.ed_from.dateTime().addSecs(60))  # recomputed on change
        assert dlg.figures["samples"] < want["samples"]


def test_backup_opens_from_histories(qtbot: Any, tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    write_history(logdir, nodes=3, ticks=90, rotate=True)
    write_history(logdir, nodes=3, ticks=30, start=START + 500)
    entries = list_entries(str(logdir))
    assert [e.live for e in entries] == [False, True]
    backup = entries[0]
    assert backup.end - backup.start >= 80 and not backup.error
    assert any(n.endswith(".xz") for n in (p.name for p in Path(backup.path).iterdir()))
    win = _window(qtbot, logdir)
    win._fill_histories_menu()
    texts = [a.text() for a in win.menu_histories.actions()]
    assert texts[0].startswith("current history") and "log-" in texts[1]
    win.menu_histories.actions()[1].trigger()
    assert win.wait_loaded(30)
    assert win.data is not None and win.data.directory == backup.path
    assert win.data.frozen  # a backup: arrays allocated to size, no refresh
    assert len(win.data.load_node(1)) == len(records.History.open(backup.path).series(1)) > 0


def test_damaged_and_foreign_files(qtbot: Any, make_history: HistoryFactory, tmp_path: Path) -> None:
    logdir = make_history(nodes=3, ticks=700)  # key frames at ticks 0, 300, 600
    node2 = logdir / "node2"
    raw = bytearray(node2.read_bytes())
    raw[20] ^= 0xFF  # inside the header's JSON: its checksum no longer matches
    node2.write_bytes(bytes(raw))
    node3 = logdir / "node3"
    raw = bytearray(node3.read_bytes())
    _, body = records.decode_header(bytes(raw))
    raw[body + (len(raw) - body) // 3] ^= 0x5A  # a flipped byte among the samples
    node3.write_bytes(bytes(raw))
    win = _window(qtbot, logdir)
    text = win.lbl_problems.text()
    assert win.lbl_problems.isVisibleTo(win)
    assert f"{node2}: damaged header" in text and f"{node3}: skipped" in text
    assert win.data is not None
    assert len(win.data.load_node(1)) == 700  # the intact node is all there
    assert 300 <= len(win.data.load_node(3)) < 700  # what is readable of node 3 is shown
    assert len(win.data.load_node(2)) == 0 and 2 in win.rows  # the node is listed, nothing drawn
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "cluster").write_text("id,load\n1,20\n")
    win.open_history(str(foreign))
    assert str(foreign / "cluster") in win.lbl_problems.text() and "not an omview collector history" in win.lbl_problems.text()
    assert not win.rows


def test_refresh_follows_the_live_history(qtbot: Any, make_history: HistoryFactory) -> None:
    logdir = make_history(nodes=2, ticks=60, checkpoints=())
    win = _window(qtbot, logdir)
    assert win.data is not None and not win.data.frozen  # the live history: copies that can grow
    win.resize(1000, 600)
    win.show()
    before = len(win.data.load_node(1))
    end_before = win.data.end
    write_history(logdir, nodes=2, ticks=30, start=START + 61, checkpoints=((10, "later"),))
    win.chk_refresh.setChecked(True)  # refreshes at once, then every second
    assert len(win.data.load_node(1)) > before
    _image, pic = _shown_picture(win)
    x0, x1 = win.x_range()
    drawn = np.flatnonzero(pic.any(axis=0))
    assert x0 + (drawn[-1] + 0.5) * (x1 - x0) / pic.shape[1] > end_before + 20  # the new samples are drawn
    assert any(line.label.textItem.toPlainText() == "later" for line in win.checkpoint_lines)
    assert win.x_range()[1] >= win.data.end - 1  # type: ignore[union-attr]
    win.chk_refresh.setChecked(False)


def test_exports(qtbot: Any, make_history: HistoryFactory, tmp_path: Path) -> None:
    win = _window(qtbot, make_history(nodes=3, ticks=60))
    win.export_png(str(tmp_path / "a.png"))
    win.export_svg(str(tmp_path / "a.svg"))
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    svg = (tmp_path / "a.svg").read_bytes()
    assert b"<svg" in svg[:400]
    # the SVG holds the visible curves as vector paths, not the picture; the window is as before
    assert svg.count(b"<path") >= 2 and b"<image" not in svg
    assert win.pictures["load"].isVisible()
    assert not [i for p in (win.load_plot, win.mem_plot) for i in p.plotItem.items if isinstance(i, pg.PlotCurveItem)]
    win.nodes.item_for(2).setCheckState(pg.QtCore.Qt.CheckState.Unchecked)  # type: ignore[union-attr]
    n = win.export_csv(str(tmp_path / "a.csv"))
    rows = list(csv.DictReader((tmp_path / "a.csv").open()))
    assert n == len(rows) == 120 and {r["node"] for r in rows} == {"1", "3"}
    assert [float(r["epoch"]) for r in rows] == sorted(float(r["epoch"]) for r in rows)


def test_overviews_share_the_time_range_on_switch(qtbot: Any, make_history: HistoryFactory) -> None:
    win = _window(qtbot, make_history(nodes=2, ticks=120))
    assert win.data is not None
    lo, hi = win.data.start + 20, win.data.start + 50
    win.load_plot.setXRange(lo, hi, padding=0)
    win.tabs.setCurrentIndex(1)
    got = win.mem_plot.viewRange()[0]
    assert got[0] == pytest.approx(lo) and got[1] == pytest.approx(hi)
    assert win.x_range() == pytest.approx((lo, hi))


def test_refresh_after_rotation_opens_the_new_history(qtbot: Any, tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    write_history(logdir, nodes=2, ticks=40)
    win = _window(qtbot, logdir)
    old = win.data.history.history_id  # type: ignore[union-attr]
    write_history(logdir, nodes=3, ticks=20, start=START + 100, rotate=True)  # -r: saved, a new one begins
    write_history(logdir, nodes=3, ticks=10, start=START + 200)
    win.refresh()
    assert win.wait_loaded(30)
    assert win.data is not None and win.data.history.history_id != old
    assert "new history" in win.statusBar().currentMessage()
    assert sorted(win.rows) == [1, 2, 3]
    assert len(win.data.load_node(3)) == 10


def test_truncated_compressed_backup(qtbot: Any, tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    write_history(logdir, nodes=3, ticks=60, rotate=True)
    backup = Path(list_entries(str(logdir))[0].path)
    node2 = backup / "node2.xz"
    node2.write_bytes(node2.read_bytes()[: node2.stat().st_size // 2])  # cut short (a full disk, a copy stopped)
    win = _window(qtbot, backup)
    assert f"{node2}: damaged compressed file" in win.lbl_problems.text()
    assert win.data is not None
    assert len(win.data.load_node(1)) == 60
    assert len(win.data.load_node(3)) == 60


def test_backwards_clock_jump_breaks_the_line(qtbot: Any, make_history: HistoryFactory) -> None:
    logdir = make_history(nodes=2, ticks=120, clock_jump=(60, -30.0))
    h = records.History.open(str(logdir))
    assert h.clock_jumps and h.clock_jumps[0].jump < 0
    win = _window(qtbot, logdir, "curves")
    win.resize(1200, 700)
    win.show()
    _only(win, 1)
    assert win.data is not None
    times = win.data.load_node(1).times
    assert (times[1:] < times[:-1]).sum() == 1  # the node's samples step back once
    for name in ("load", "red"):
        x, y = _points(win.items[name])
        fin = np.isfinite(x) & np.isfinite(y)
        drawn = fin[:-1] & fin[1:]
        # no segment is drawn backwards in time: the line is broken at the jump
        assert (x[1:][drawn] >= x[:-1][drawn]).all()
    xs = np.concatenate([_points(win.items[n])[0] for n in ("load", "red")])
    xs = set(xs[np.isfinite(xs)].tolist())
    jump = int(np.flatnonzero(times[1:] < times[:-1])[0])
    # both sides are drawn, each from its first to its last sample
    assert {times[0], times[jump], times[jump + 1], times[-1]} <= xs


@pytest.mark.parametrize(("ticks", "span", "width", "dense"), [(2400, 0.7, 420, False), (600, 0.4, 900, True)])
def test_pan_shifts_the_picture_and_builds_only_new_columns(qtbot: Any, make_history: HistoryFactory, ticks: int,
                                                           span: float, width: int, dense: bool) -> None:  # fmt: skip
    """A pan at the same scale keeps the picture's columns and computes the ones that came into
    view: the result equals a picture built from scratch for the same columns."""
    win = _window(qtbot, make_history(nodes=4, ticks=ticks, checkpoints=()))
    win.resize(width, 400)
    win.show()
    assert win.data is not None
    for tab, name in ((0, "load"), (1, "memory")):  # the memory one: its tmem dashes continue too
        win.tabs.setCurrentIndex(tab)
        item = win.pictures[name]
        plot = win.current_plot()
        lo, hi = win.data.start + ticks * 0.1, win.data.start + ticks * (0.1 + span)
        plot.setXRange(lo, hi, padding=0)
        _shown_picture(win)
        builds, scrolls = item.builds, item.scrolls
        for step in (0.05, 0.11, -0.23):  # right, right, left
            lo, hi = lo + step * (hi - lo), hi + step * (hi - lo)
            plot.setXRange(lo, hi, padding=0)
            _image, pic = _shown_picture(win)
            assert (item.builds, item.scrolls) == (builds, scrolls + 1)
            scrolls += 1
            anchor, dx, y0, y1, w, h, _v, column = item._grid  # type: ignore[misc]
            assert name != "load" or (dx <= raster.DENSE_SAMPLES) == dense  # samples per column (1 s apart)
            fresh = win._picture(name, anchor, anchor + w * dx, y0, y1, w, h, column)
            assert np.array_equal(pic, fresh)
            assert pic.any()
