"""L5 analyzer: the openmosixanalyzer window - load and memory overview of a collector history.

Plots (pyqtgraph, as docs/analyzer.md explains): each overview is one picture item
(``raster_item.RasterItem``) whose pixels are computed with numpy (``omview.analyzer.raster``)
from a min/max pyramid per quantity built once as the nodes load (``omview.analyzer.overview``):
per pixel column each shown node's span, black load, red above 75, green mem, blue rmem, grey
dashed tmem. It is rebuilt when painted after the view or the data changed, and a pan shifts it
and computes only the new columns, so a frame costs about the same at 4 nodes x 10 minutes and
at 256 nodes x 12 hours; x is float64 epoch seconds on a ``DateAxisItem``. ``renderer="curves"``
draws one curve item per colour instead (the SVG export's vector curves, the bench's comparison).

Reading: the cluster file is read when a history is opened; node files are decoded on the GUI
thread a few at a time from a zero-delay timer (``_load_step``: 30 ms, then 0.4 s steps), so the window
paints and answers while a large history loads, without a thread of its own. Local files need
no network, so ``omview.gui.links`` (the road to the nodes) is not involved.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from pyqtgraph.exporters import ImageExporter
from PySide6.QtCore import QEventLoop, QTimer, Signal, Slot
from PySide6.QtGui import QCloseEvent, QKeySequence, QPainter
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from omview import __version__
from omview.analyzer.data import RED_LOAD, HistoryData, NodeArrays, iso, live_dir_of
from omview.analyzer.find_out_dialog import FindOutDialog
from omview.analyzer.histories_menu import fill_histories_menu
from omview.analyzer.node_list import NodeList
from omview.analyzer.overview import Pyramid, as_connected, split_at, view_points
from omview.analyzer.raster import column_spans, coverage, keep_freed_memory, picture, row_values
from omview.analyzer.raster_item import RasterItem
from omview.gui.actions import action
from omview.gui.assets import app_icon
from omview.gui.lifecycle import SignalQuitter, application
from omview.model import records

log = logging.getLogger(__name__)

LOAD_PEN = pg.mkPen("k", width=1)
RED_PEN = pg.mkPen((220, 0, 0), width=1)  # a wider pen costs ~3x per frame in the raster engine
CHECKPOINT_PEN = pg.mkPen((0, 0, 255), width=1)
MEM_PENS = {
    "mem": pg.mkPen((0, 140, 0), width=1),
    "rmem": pg.mkPen((0, 90, 200), width=1),
    "tmem": pg.mkPen((120, 120, 120), width=1, style=pg.QtCore.Qt.PenStyle.DashLine),
}
#: Decoding time per load step: short for the first paint, then longer, because every step ends
#: in a redraw of the overview shown.
_FIRST_STEP_SECONDS = 0.03
_STEP_SECONDS = 0.4
REFRESH_MS = 1000
#: Points per overview frame (a (min, max) pair per column and node) before columns get wider
#: than a pixel: painting, not computing, is what a frame costs (bench/analyzer.py).
POINT_BUDGET = 150_000
#: The quantities with a pyramid, the plot showing them, and the KiB -> bytes factor.
QUANTITIES = {"load": ("load", 1.0), "mem": ("mem", 1024.0), "rmem": ("rmem", 1024.0), "tmem": ("mem", 1024.0)}
#: How the overviews are drawn: "raster" (a picture computed with numpy, the default) or
#: "curves" (one path per colour, the earlier way; kept for the SVG export's vector curves and
#: for bench/analyzer.py to compare).
RENDERERS = ("raster", "curves")
#: The pictures' colour table (index -> ARGB): what the curve pens draw in the "curves" way.
COLOURS = [0x00000000, 0xFF000000, 0xFFDC0000, 0xFF008C00, 0xFF005AC8, 0xFF787878]
BLACK, RED, GREEN, BLUE, GREY = 1, 2, 3, 4, 5
#: The memory overview's layers, bottom to top (tmem dashed: 4 pixel columns on, 4 off).
MEM_LAYERS = (("mem", GREEN), ("rmem", BLUE), ("tmem", GREY))


def add_curve(plot: pg.PlotWidget, pen: Any, z: float = 0.0) -> pg.PlotCurveItem:
    """One curve item of a colour: all shown nodes, NaN-separated, set again on every view change."""
    item = pg.PlotCurveItem(pen=pen, skipFiniteCheck=True)
    item.setZValue(z)
    plot.addItem(item)
    return item


def _set_curve(item: pg.PlotCurveItem, x: np.ndarray, y: np.ndarray) -> None:
    x, y, connect = as_connected(x, y)
    item.setData(x, y, connect=connect, skipFiniteCheck=True)


def _plot(title: str, y_label: str, units: str | None) -> pg.PlotWidget:
    """One overview: white like the original, black axes, a date/time x axis in local time."""
    w = pg.PlotWidget(background="w", axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
    w.setTitle(title, color="k")
    for name in ("left", "bottom"):
        ax = w.getAxis(name)
        ax.setPen("k")
        ax.setTextPen("k")
    w.setLabel("left", y_label, units=units)
    # no grid: pyqtgraph paints grid lines through the axis' QPicture, ~17 ms a frame at 1400 px
    w.setMouseEnabled(x=True, y=False)  # the wheel zooms time; y stays 0..max (see _fit_y)
    w.plotItem.setMenuEnabled(False)
    return w


class AnalyzerWindow(QMainWindow):
    """openMosixanalyzer: load overview, memory overview, checkpoints, node list, find-out."""

    sig_loaded = Signal()

    def __init__(self, path: str | None = None, parent: QWidget | None = None, *, renderer: str = "raster") -> None:
        super().__init__(parent)
        if renderer not in RENDERERS:
            raise ValueError(f"renderer must be one of {RENDERERS}, not {renderer!r}")
        self.renderer = renderer
        keep_freed_memory()
        self.setWindowTitle("openMosixanalyzer")
        self.setWindowIcon(app_icon())
        #: the live history directory (a backup given on the command line names its live one)
        self.logdir = live_dir_of(path or records.default_logdir())
        self.data: HistoryData | None = None
        self.loaded = False
        #: the curve items ("curves" renderer): "load", "red" in the load overview, "mem", "rmem",
        #: "tmem" in the memory one
        self.items: dict[str, pg.PlotCurveItem] = {}
        #: the picture items ("raster" renderer): "load" and "memory"
        self.pictures: dict[str, RasterItem] = {}
        self._shown_cache: tuple[tuple[int, int], np.ndarray] | None = None
        self._shown_version = 0
        self.pyramids: dict[str, Pyramid] = {}
        #: node id -> its row in the pyramids (the order of the node list)
        self.rows: dict[int, int] = {}
        self.checkpoint_lines: list[pg.InfiniteLine] = []
        self._queue: list[int] = []
        self._y_max = {"load": 100.0, "mem": 1.0}

        self.lbl_start = QLabel(self)
        self.chk_refresh = QCheckBox("refresh", self)
        self.chk_refresh.setToolTip("Follow the live history as the collector writes it")
        self.chk_refresh.toggled.connect(self._on_refresh_toggled)
        self.lbl_problems = QLabel(self)
        self.lbl_problems.setWordWrap(True)
        self.lbl_problems.setStyleSheet("color: #b00000")
        self.lbl_problems.hide()
        self.load_plot = _plot("load overview", "load", None)
        self.mem_plot = _plot("memory overview: mem (green), rmem (blue), tmem (grey, dashed)", "memory", "B")
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self.load_plot, "Load overview")
        self.tabs.addTab(self.mem_plot, "Memory overview")
        self.tabs.currentChanged.connect(self._on_tab_changed)
        for plot in (self.load_plot, self.mem_plot):
            vb = plot.getViewBox()
            vb.sigRangeChanged.connect(lambda *_a, p=plot: self._redraw(p))
            vb.sigResized.connect(lambda *_a, p=plot: self._redraw(p))
        self.nodes = NodeList(self)
        self.nodes.sig_shown_changed.connect(self._apply_shown)
        self.nodes.sig_find_out.connect(self._on_find_out)
        split = QSplitter(self)
        split.addWidget(self.nodes)
        split.addWidget(self.tabs)
        split.setStretchFactor(1, 1)
        split.setSizes([190, 900])
        top = QHBoxLayout()
        top.addWidget(self.lbl_start, 1)
        top.addWidget(self.chk_refresh)
        central = QWidget(self)
        lay = QVBoxLayout(central)
        lay.addLayout(top)
        lay.addWidget(self.lbl_problems)
        lay.addWidget(split, 1)
        self.setCentralWidget(central)
        self._build_menus()

        self._load_timer = QTimer(self, singleShot=True, interval=0)
        self._load_timer.timeout.connect(self._load_step)
        self._refresh_timer = QTimer(self, interval=REFRESH_MS)
        self._refresh_timer.timeout.connect(self.refresh)
        self._on_tab_changed(0)
        self.dialogs: list[FindOutDialog] = []
        self.open_history(path or self.logdir)

    # -- menus ----------------------------------------------------------------------------

    def _build_menus(self) -> None:
        mb = self.menuBar()
        file = mb.addMenu("&File")
        file.addAction(action("&Open history…", self, shortcut=QKeySequence.StandardKey.Open,
                               triggered=self._on_open_triggered))  # fmt: skip
        self.menu_histories = QMenu("&Histories", self)
        self.menu_histories.setToolTipsVisible(True)
        self.menu_histories.aboutToShow.connect(self._fill_histories_menu)
        file.addMenu(self.menu_histories)
        file.addSeparator()
        file.addAction(action("Export view as &PNG…", self, triggered=lambda: self._export_dialog("png")))
        file.addAction(action("Export view as &SVG…", self, triggered=lambda: self._export_dialog("svg")))
        file.addAction(action("Export shown data as &CSV…", self, triggered=lambda: self._export_dialog("csv")))
        file.addSeparator()
        file.addAction(action("&Quit", self, shortcut=QKeySequence.StandardKey.Quit, triggered=self.close))
        view = mb.addMenu("&View")
        view.addAction(action("&Whole history", self, shortcut="Home", triggered=self.show_whole))
        view.addAction(action("Find out: &cluster…", self, triggered=lambda: self._on_find_out(-1)))
        helpm = mb.addMenu("&Help")
        helpm.addAction(action("&About", self, triggered=lambda: self.statusBar().showMessage(
            f"openmosixanalyzer {__version__}: the history written by openmosixcollector", 5000)))  # fmt: skip

    def _fill_histories_menu(self) -> None:
        fill_histories_menu(self.menu_histories, self.logdir, self.open_history)

    @Slot()
    def _on_open_triggered(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a collector history", self.logdir)
        if path:
            self.open_history(path)

    # -- opening and loading ------------------------------------------------------------

    def open_history(self, path: str) -> None:
        """Show the history in ``path`` (a directory or its cluster file); trouble goes to the banner."""
        self._load_timer.stop()
        for plot in (self.load_plot, self.mem_plot):
            plot.clear()
        self.items, self.pictures = {}, {}
        if self.renderer == "curves":
            self.items = self._add_curves()
        else:
            for name, plot in (("load", self.load_plot), ("memory", self.mem_plot)):
                item = RasterItem(lambda *a, n=name: self._picture(n, *a), COLOURS)
                plot.addItem(item, ignoreBounds=True)
                self.pictures[name] = item
        self._shown_cache = None
        self.pyramids = {}
        self.rows = {}
        self.checkpoint_lines.clear()
        self.nodes.clear()
        self._queue = []
        self.loaded = False
        self._y_max = {"load": 100.0, "mem": 1.0}
        self.data = None
        try:
            self.data = HistoryData(path)
        except (records.HistoryFormatError, OSError) as exc:
            self.lbl_start.setText(f"<b>{path}</b>: cannot be shown")
            self._show_problems([str(exc)])
            self.loaded = True
            self.sig_loaded.emit()
            return
        d = self.data
        self.lbl_start.setText(
            f"start: <b>{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(d.start))}</b>"
            f" &nbsp; end: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(d.end))}"
            f" &nbsp; ({os.path.basename(d.directory.rstrip('/'))}, every {d.history.interval:g} s)"
        )
        self.setWindowTitle(f"openMosixanalyzer - {d.directory}")
        ids = d.node_ids()
        self.pyramids = {name: Pyramid(len(ids), len(d.clock.times), exact=d.frozen) for name in QUANTITIES}
        for nid in ids:
            self._add_row(nid)
        self._queue = ids
        self._add_checkpoints(d.history.checkpoints)
        self.show_whole()
        self._show_problems(d.problems)
        self._load_timer.start()

    def _add_row(self, nid: int) -> None:
        assert self.data is not None
        self.rows[nid] = len(self.rows)
        for pyr in self.pyramids.values():
            pyr.reserve(len(self.rows), len(self.data.clock.times))
        self.nodes.add_node(nid, self._node_label(nid))

    def _node_label(self, nid: int) -> str:
        assert self.data is not None
        meta = self.data.history.nodes.get(nid)
        if meta is None:
            return f"node {nid}"
        return f"node {nid}  {meta.hostname or ''} {meta.address}".rstrip()

    @Slot()
    def _load_step(self) -> None:
        """Decode queued node files for about 30 ms, then let the event loop paint and come back."""
        if self.data is None:
            return
        t0 = time.monotonic()
        budget = _STEP_SECONDS if self.data.loaded() else _FIRST_STEP_SECONDS
        while self._queue and time.monotonic() - t0 < budget:
            nid = self._queue.pop(0)
            self._set_node(nid, self.data.load_node(nid))
        self._fit_y()
        self._data_changed()
        if self._queue:
            self._load_timer.start()
            return
        self._show_problems(self.data.problems)
        self.loaded = True
        self.sig_loaded.emit()

    def wait_loaded(self, timeout: float = 60.0) -> bool:
        """Run the event loop until every node is loaded (tests, screenshots)."""
        app = QApplication.instance()
        deadline = time.monotonic() + timeout
        while not self.loaded and time.monotonic() < deadline:
            assert app is not None
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        return self.loaded

    def _set_node(self, nid: int, a: NodeArrays, first: int = 0) -> None:
        """Enter the node's samples from ``first`` on into the pyramids (on load and on refresh)."""
        row = self.rows[nid]
        j = Pyramid.start_of(a.tix, first)  # a refresh reads only the last block's samples on
        for name, pyr in self.pyramids.items():
            pyr.update(row, a.tix, a.kib(name, j), first, offset=j)
        if len(a) > first:
            self._y_max["load"] = max(self._y_max["load"], float(a.load[first:].max()))
            self._y_max["mem"] = max(self._y_max["mem"], float(a.kib("tmem", first).max()) * 1024,
                                     float(a.kib("mem", first).max()) * 1024)  # fmt: skip

    def _fit_y(self) -> None:
        # fixed y ranges: a pan never triggers an auto-range
        self.load_plot.setYRange(0, self._y_max["load"] * 1.05, padding=0)
        self.mem_plot.setYRange(0, self._y_max["mem"] * 1.05, padding=0)

    def _shown_rows(self) -> np.ndarray:
        """The pyramid rows of the nodes shown and loaded (kept until either changes)."""
        if self.data is None:
            return np.empty(0, np.intp)
        loaded = self.data.loaded()
        key = (self._shown_version, len(loaded))
        if self._shown_cache is None or self._shown_cache[0] != key:
            shown = self.nodes.shown()
            rows = np.array(sorted(r for nid, r in self.rows.items() if nid in shown and nid in loaded), np.intp)
            self._shown_cache = (key, rows)
        return self._shown_cache[1]

    def _raw(self, name: str) -> Any:
        assert self.data is not None
        by_row = {self.rows[nid]: a for nid, a in self.data.loaded().items()}

        def source(row: int) -> tuple[np.ndarray, Any]:
            a = by_row[row]
            return a.tix, lambda j0, j1: a.kib(name, j0, j1)

        return source

    def _data_changed(self) -> None:
        """Nodes were loaded, refreshed or shown/hidden: redraw what shows them."""
        for item in self.pictures.values():
            item.invalidate()
        self._redraw(self.current_plot())

    def _redraw(self, plot: pg.PlotWidget) -> None:
        """Follow the plot's view: its picture is rebuilt at its next paint; curves are recomputed
        now (only in the overview shown; the other on a switch)."""
        if self.data is None:
            return
        if self.pictures:
            item = self.pictures["load" if plot is self.load_plot else "memory"]
            item.set_view(plot.getViewBox().viewRect())
            return
        if self.items and plot is self.current_plot():
            self._draw_curves(plot, self.items)

    def _picture(self, name: str, x0: float, x1: float, y0: float, y1: float, w: int, h: int,
                 column: int = 0) -> np.ndarray:  # fmt: skip
        """The picture of the overview ``name`` ("load" or "memory") for a view at w x h pixels
        (``column``: the index of its first column on the picture item's grid)."""
        if self.data is None:
            return np.zeros((h, w), np.uint8)
        rows, times = self._shown_rows(), self.data.clock.times
        if name == "load":
            spans = column_spans(self.pyramids["load"], self._raw("load"), rows, times, x0, x1, w)
            codes = np.where(row_values(y0, y1, h) > RED_LOAD, RED, BLACK).astype(np.uint8)
            return picture([(coverage(spans, y0, y1, h), codes[None, :])], w, h)
        layers: list[tuple[np.ndarray, np.ndarray | int]] = []
        for q, index in MEM_LAYERS:
            scale = QUANTITIES[q][1]  # the pyramids hold KiB, the axis bytes
            mask = coverage(column_spans(self.pyramids[q], self._raw(q), rows, times, x0, x1, w),
                            y0 / scale, y1 / scale, h)  # fmt: skip
            if q == "tmem":  # dashes on the item's column grid: a strip after a pan continues them
                mask &= ((column + np.arange(w)) // 4 % 2 == 0)[:, None]
            layers.append((mask, index))
        return picture(layers, w, h)

    def _add_curves(self) -> dict[str, pg.PlotCurveItem]:
        return {
            "load": add_curve(self.load_plot, LOAD_PEN),
            "red": add_curve(self.load_plot, RED_PEN, 1.0),
            **{name: add_curve(self.mem_plot, pen) for name, pen in MEM_PENS.items()},
        }

    def _draw_curves(self, plot: pg.PlotWidget, items: dict[str, pg.PlotCurveItem]) -> None:
        """The plot's curves for its view: at most a (min, max) pair per column and node."""
        assert self.data is not None
        vb = plot.getViewBox()
        (x0, x1), width = vb.viewRange()[0], max(1, int(vb.width()))
        rows = self._shown_rows()
        # a pixel column per (min, max) pair while the points fit the budget; beyond it (many
        # nodes) wider columns: 256 overlapping lines show no more at 1 px than at 4 px
        width = max(min(width, 200), min(width, POINT_BUDGET // max(1, 2 * len(rows))))
        times = self.data.clock.times
        for name, (where, scale) in QUANTITIES.items():
            if (where == "load") != (plot is self.load_plot):
                continue
            x, y = view_points(self.pyramids[name], self._raw(name), rows, times, x0, x1, width, scale)
            if name == "load":
                # black up to 75, red above: split, not overlaid, so the two paths paint as one
                x, y, rx, ry = split_at(x, y, RED_LOAD)
                _set_curve(items["red"], rx, ry)
            _set_curve(items[name], x, y)

    def _add_checkpoints(self, checkpoints: list[records.Checkpoint]) -> None:
        for cp in checkpoints:
            label = (cp.label or "checkpoint").replace("{", "{{").replace("}", "}}")
            for plot in (self.load_plot, self.mem_plot):
                line = pg.InfiniteLine(pos=cp.time, angle=90, pen=CHECKPOINT_PEN, label=label,
                                       labelOpts={"position": 0.92, "color": (0, 0, 255), "movable": False,
                                                  "fill": (255, 255, 255, 210)})  # fmt: skip
                line.setZValue(10)  # over the curves: 256 busy nodes paint the plot red
                plot.addItem(line)
                self.checkpoint_lines.append(line)

    def _show_problems(self, problems: list[str]) -> None:
        if problems:
            head = "Some of this history could not be read; everything readable is shown:<br>"
            self.lbl_problems.setText(head + "<br>".join(f"• {p}" for p in problems[:8]))
            self.lbl_problems.show()
        else:
            self.lbl_problems.hide()

    # -- view -------------------------------------------------------------------------------

    def x_range(self) -> tuple[float, float]:
        lo, hi = self.current_plot().viewRange()[0]
        return float(lo), float(hi)

    def _set_x_limits(self, lo: float, hi: float) -> None:
        for plot in (self.load_plot, self.mem_plot):
            plot.setLimits(xMin=lo, xMax=hi)

    @Slot()
    def show_whole(self) -> None:
        """The whole history (at least one minute), which also turns x auto-range off (clipToView needs that)."""
        if self.data is None:
            return
        lo, hi = self.data.start, max(self.data.end, self.data.start + 60)
        pad = (hi - lo) * 0.02
        self._set_x_limits(lo - pad, hi + pad)
        self.current_plot().setXRange(lo, hi, padding=0.01)

    @Slot()
    def _apply_shown(self) -> None:
        self._shown_version += 1
        self._data_changed()

    @Slot(int)
    def _on_tab_changed(self, index: int) -> None:
        # the overviews are not x-linked: a linked hidden plot would re-clip and re-downsample
        # its 768 memory curves on every pan of the load overview; the range follows on a switch
        shown, hidden = (self.load_plot, self.mem_plot) if index == 0 else (self.mem_plot, self.load_plot)
        if self.data is not None:
            lo, hi = hidden.viewRange()[0]
            shown.setXRange(lo, hi, padding=0)
            self._redraw(shown)  # also when the range did not change
        what = "load" if index == 0 else "memory"
        self.statusBar().showMessage(f"displaying the {what} overview now")

    # -- live refresh ---------------------------------------------------------------------

    @Slot(bool)
    def _on_refresh_toggled(self, on: bool) -> None:
        if on:
            self._refresh_timer.start()
            self.refresh()
        else:
            self._refresh_timer.stop()

    @Slot()
    def refresh(self) -> None:
        """Read what the collector appended and extend the curves (the "refresh" checkbox)."""
        d = self.data
        if d is None or not self.loaded:
            if d is None:
                self.open_history(self.logdir)
            return
        old_end = d.end
        following = self.x_range()[1] >= old_end - 2 * d.history.interval
        n_cp = len(d.history.checkpoints)
        try:
            grown = d.refresh()
        except records.HistoryRotated:
            self.statusBar().showMessage("the collector started a new history; showing it", 5000)
            self.open_history(self.logdir)
            return
        except (records.HistoryFormatError, OSError) as exc:
            self._show_problems([*d.problems, str(exc)])
            return
        for pyr in self.pyramids.values():
            pyr.reserve(len(self.rows), len(d.clock.times))
        for nid, before in grown.items():
            self._set_node(nid, d.load_node(nid), before)
        for nid in d.node_ids():
            if nid not in self.rows:
                self._add_row(nid)
                self._set_node(nid, d.load_node(nid))
        self._add_checkpoints(d.history.checkpoints[n_cp:])
        self._fit_y()
        self._data_changed()
        self._show_problems(d.problems)
        if d.end != old_end:
            lo, hi = self.x_range()
            self._set_x_limits(d.start - 60, max(d.end, d.start + 60) + 60)
            if following:
                self.current_plot().setXRange(lo + (d.end - old_end), d.end, padding=0)
            self.lbl_start.setText(self.lbl_start.text().split("end:")[0] + "end: "
                                   + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.end)))  # fmt: skip

    # -- find out ---------------------------------------------------------------------------

    @Slot(int)
    def _on_find_out(self, node: int) -> None:
        dlg = self.find_out(None if node < 0 else node)
        if dlg is not None:
            dlg.show()

    def find_out(self, node: int | None) -> FindOutDialog | None:
        """The find-out window for a node (None: the cluster) over the range now shown."""
        if self.data is None:
            return None
        lo, hi = self.x_range()
        lo, hi = max(lo, self.data.start), min(hi, self.data.end)
        dlg = FindOutDialog(self.data, node, lo, hi, self)
        self.dialogs.append(dlg)
        return dlg

    # -- export -----------------------------------------------------------------------------

    def current_plot(self) -> pg.PlotWidget:
        return self.load_plot if self.tabs.currentIndex() == 0 else self.mem_plot

    def _export_dialog(self, kind: str) -> None:
        filters = {"png": "PNG image (*.png)", "svg": "SVG drawing (*.svg)", "csv": "CSV table (*.csv)"}
        path, _ = QFileDialog.getSaveFileName(self, f"Export as {kind.upper()}", f"analyzer.{kind}", filters[kind])
        if path:
            {"png": self.export_png, "svg": self.export_svg, "csv": self.export_csv}[kind](path)
            self.statusBar().showMessage(f"exported to {path}", 5000)

    def export_png(self, path: str) -> None:
        ImageExporter(self.current_plot().plotItem).export(path)

    def export_svg(self, path: str) -> None:
        """The plot as vector SVG, painted by Qt's own SVG generator: the curves of the view as
        paths (the "curves" way, made for the export), not the picture shown on screen.

        pyqtgraph 0.14's SVGExporter fails on every plot with PySide6 6.11 (it cannot parse the
        path data Qt now writes), so the view is rendered into a QSvgGenerator instead.
        """
        plot = self.current_plot()
        temporary: dict[str, pg.PlotCurveItem] = {}
        picture = self.pictures.get("load" if plot is self.load_plot else "memory")
        if picture is not None and self.data is not None:
            temporary = self._add_curves()
            self._draw_curves(plot, temporary)
            picture.hide()
        gen = QSvgGenerator()
        gen.setFileName(path)
        gen.setSize(plot.size())
        gen.setViewBox(plot.rect())
        gen.setTitle(self.windowTitle())
        painter = QPainter(gen)
        try:
            plot.render(painter)
        finally:
            painter.end()
            for item in temporary.values():  # from the plot each was added to (its item list too)
                for p in (self.load_plot, self.mem_plot):
                    if item in p.plotItem.items:
                        p.removeItem(item)
            if picture is not None:
                picture.show()

    def export_csv(self, path: str) -> int:
        """The samples of the shown nodes in the time range now shown; returns the row count.

        Columns as ``openmosixcollector --export csv`` (a subset), ordered by time then node.
        """
        if self.data is None:
            return 0
        lo, hi = self.x_range()
        shown = self.nodes.shown()
        parts = []
        for nid, a in sorted(self.data.loaded().items()):
            if nid not in shown:
                continue
            m = (a.times >= lo) & (a.times <= hi)
            parts.append((np.full(int(m.sum()), nid), a.times[m], a.load[m], a.mem[m], a.rmem[m], a.tmem[m]))
        with open(path, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(("time", "epoch", "node", "load", "mem", "rmem", "tmem"))
            if not parts:
                return 0
            cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
            order = np.lexsort((cols[0], cols[1]))
            for i in order:
                t = float(cols[1][i])
                w.writerow((iso(t), f"{t:.3f}", int(cols[0][i]), int(cols[2][i]), int(cols[3][i]),
                            int(cols[4][i]), int(cols[5][i])))  # fmt: skip
            return len(order)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        self._refresh_timer.stop()
        self._load_timer.stop()
        super().closeEvent(event)


# ---------------------------------------------------------------------------------------


def render_screenshots(directory: Path, path: str | None) -> list[Path]:
    """The load overview, memory overview and the cluster's find-out window as PNGs."""
    directory.mkdir(parents=True, exist_ok=True)
    win = AnalyzerWindow(path)
    win.resize(1200, 720)
    win.show()
    win.wait_loaded()
    shots = []
    for index, name in ((0, "analyzer-load.png"), (1, "analyzer-memory.png")):
        win.tabs.setCurrentIndex(index)
        QApplication.processEvents()
        out = directory / name
        win.grab().save(str(out))
        shots.append(out)
    dlg = win.find_out(None)
    if dlg is not None:
        dlg.show()
        QApplication.processEvents()
        out = directory / "analyzer-find-out.png"
        dlg.grab().save(str(out))
        shots.append(out)
        dlg.close()
    win.close()
    return shots


def run_window(path: str | None, screenshot: str | None) -> int:
    """Start the Qt application with the analyzer window (or only write screenshots)."""
    app = application("openmosixanalyzer", offscreen=bool(screenshot))
    if screenshot:
        for shot in render_screenshots(Path(screenshot), path):
            sys.stdout.write(f"{shot}\n")
        return 0

    win = AnalyzerWindow(path)
    win.resize(1200, 720)
    win.show()
    quitter = SignalQuitter(app)
    quitter.sig_quit.connect(win.close)
    try:
        return app.exec()
    finally:
        quitter.close()
