"""Benchmark: openmosixanalyzer on a 12-hour, 256-node history at 1 s, next to numpy alone.

The history is written in the collector's rotated form (``node<ID>`` files of kind
"node-columns", the form every 12-hour history has once rotated; left uncompressed here so the
bench does not spend minutes in xz) by numpy from a random-walk model, plus a real ``cluster``
file of tick records and two checkpoints, all through ``omview.model.records``' encoders. It is
kept in --dir between runs. Each measurement runs in its own process so peak memory (ru_maxrss)
is its own:

  numpy    read every node's columns with numpy alone (frombuffer + cumsum): time, peak memory;
  window   AnalyzerWindow offscreen: time to the first painted view (first nodes drawn), time
           until every node is drawn, peak memory, then pan and zoom frame times (setXRange +
           a synchronous repaint of the load overview), median and max.

Targets (issue 10): first painted view <= 1 s, peak memory <= 500 MB, pan/zoom frames <= 16 ms
median and <= 33 ms max. Usage: python bench/analyzer.py [--nodes 256] [--hours 12] [--dir D]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from omview.model import records

START = 1_780_000_000.0
TARGET_FIRST = 1.0
TARGET_MB = 500.0
TARGET_MEDIAN_MS = 16.0
TARGET_MAX_MS = 33.0


def make_history(directory: Path, nodes: int, hours: float) -> None:
    """The rotated form of a 1 s history: cluster (ticks, checkpoints) + node-columns files."""
    n = int(hours * 3600)
    if (directory / "cluster").exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    hid = "bench-analyzer"
    with open(directory / "cluster", "wb") as f:
        f.write(records.encode_header("cluster", hid, START, 1.0))
        f.write(b"".join(records.tick_frame(t, START + t) for t in range(n)))
        for tick, label in ((n // 3, "job start"), (2 * n // 3, "job end")):
            f.write(records.json_frame(records.T_CHECKPOINT, {"tick": tick, "t": START + tick, "label": label}))
    rng = np.random.default_rng(1)
    ticks = np.arange(n, dtype=np.int64)
    for nid in range(1, nodes + 1):
        load = np.clip(np.cumsum(rng.integers(-3, 4, n)) + rng.integers(0, 150), 0, 400).astype(np.int64)
        tmem_k = int(rng.choice((4, 8, 16, 32))) << 20
        mem = np.clip(tmem_k * 3 // 4 + np.cumsum(rng.integers(-64, 65, n)) * 16, 0, tmem_k).astype(np.int64)
        cols = [ticks, load, mem, mem // 2, np.clip(load // 4, 0, 100), np.full(n, tmem_k),
                np.full(n, 15217), np.full(n, 8), np.ones(n, dtype=np.int64)]  # fmt: skip
        head = records.encode_header("node-columns", hid, START, 1.0, node=nid, columns=list(records.COLUMN_NAMES))
        body = bytearray(head)
        records.put_uvarint(body, n)
        for c in cols:
            body += np.diff(c, prepend=0).astype("<i8").tobytes()
        (directory / f"node{nid}").write_bytes(bytes(body))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_numpy(directory: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    total = 0
    arrays = []
    for path in sorted(directory.glob("node*")):
        buf = path.read_bytes()
        _meta, start = records.decode_header(buf, str(path))
        n, p = records.get_uvarint(buf, start)
        cols = np.frombuffer(buf, dtype="<i8", count=9 * n, offset=p).reshape(9, n).cumsum(axis=1)
        arrays.append(cols)
        total += n
    return {"seconds": time.perf_counter() - t0, "peak_mb": _peak_mb(), "samples": total}


def run_window(directory: Path, renderer: str) -> dict[str, float]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QEvent, QObject
    from PySide6.QtWidgets import QApplication

    from omview.analyzer.window import AnalyzerWindow

    class Paints(QObject):
        """Counts the paint events of a widget (the frame is over when one has been handled)."""

        count = 0

        def eventFilter(self, _obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt override)
            if event.type() == QEvent.Type.Paint:
                self.count += 1
            return False

    app = QApplication([])
    t0 = time.perf_counter()
    win = AnalyzerWindow(str(directory), renderer=renderer)
    win.resize(1400, 800)
    win.show()
    first = 0.0
    while not win.loaded:
        app.processEvents()
        if not first and win.data is not None and win.data.loaded():
            win.load_plot.repaint()
            first = time.perf_counter() - t0
    win.load_plot.repaint()
    all_drawn = time.perf_counter() - t0
    assert win.data is not None
    paints = Paints()
    win.load_plot.viewport().installEventFilter(paints)
    for _ in range(3):  # settle: nothing pending before the first frame
        app.processEvents()
    lo, hi = win.data.start, win.data.end
    frames: list[float] = []
    cpu: list[float] = []  # this process's CPU time: what a frame costs without the other sessions' load
    span = hi - lo
    views = [(lo + k * span / 40, lo + k * span / 40 + span / 2) for k in range(20)]  # pans
    views += [(lo + span / 2 - span / 2 ** (k / 4 + 1), lo + span / 2 + span / 2 ** (k / 4 + 1)) for k in range(20)]  # zooms
    for a, b in views:
        # an honest frame: from the range change to the end of the paint it causes, through the
        # event loop as a wheel or drag would go (the paint is a posted update request)
        before = paints.count
        f0, c0 = time.perf_counter(), time.process_time()
        win.load_plot.setXRange(a, b, padding=0)
        deadline = f0 + 5.0
        while paints.count == before and time.perf_counter() < deadline:
            app.processEvents()
        frames.append((time.perf_counter() - f0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        assert paints.count > before, "no paint after a range change"
    return {"first_paint_s": first, "all_drawn_s": all_drawn, "peak_mb": _peak_mb(),
            "frame_median_ms": statistics.median(frames), "frame_max_ms": max(frames),
            "cpu_median_ms": statistics.median(cpu), "cpu_max_ms": max(cpu),
            "nodes": len(win.data.loaded())}  # fmt: skip


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=256)
    p.add_argument("--hours", type=float, default=12.0)
    p.add_argument("--dir", default="/tmp/omview-bench-analyzer")
    p.add_argument("--renderers", default="raster,curves",
                   help="the analyzer's ways of drawing to measure, side by side (default: raster,curves)")  # fmt: skip
    p.add_argument("--part", help=argparse.SUPPRESS)
    a = p.parse_args()
    # named as a dated backup, which is what a 12-hour history is once the collector rotated it
    directory = Path(a.dir) / f"h{a.nodes}x{a.hours:g}" / "log-2026-05-28_20-26-40Z"
    if a.part:
        res = run_numpy(directory) if a.part == "numpy" else run_window(directory, a.part)
        print(json.dumps(res))
        return 0
    t0 = time.perf_counter()
    make_history(directory, a.nodes, a.hours)
    print(f"history {directory}: {a.nodes} nodes x {a.hours:g} h at 1 s ({time.perf_counter() - t0:.1f} s to make)")
    out = {}
    for part in ("numpy", *a.renderers.split(",")):
        proc = subprocess.run([sys.executable, __file__, "--nodes", str(a.nodes), "--hours", str(a.hours),
                               "--dir", a.dir, "--part", part], capture_output=True, text=True, check=True)  # fmt: skip
        out[part] = json.loads(proc.stdout.strip().splitlines()[-1])
    nm = out.pop("numpy")
    print(f"numpy alone   : {nm['samples'] / 1e6:.1f} M samples per metric read in {nm['seconds']:.2f} s, peak {nm['peak_mb']:.0f} MB")
    for name, w in out.items():
        print(f"analyzer ({name})")
        print(f"  first painted view {w['first_paint_s']:.2f} s (target <= {TARGET_FIRST:g} s) "
              f"{verdict(w['first_paint_s'] <= TARGET_FIRST)}; all {w['nodes']} nodes drawn {w['all_drawn_s']:.2f} s")
        print(f"  peak memory {w['peak_mb']:.0f} MB (target <= {TARGET_MB:g} MB) {verdict(w['peak_mb'] <= TARGET_MB)}")
        print(f"  pan/zoom frame median {w['frame_median_ms']:.1f} ms (target <= {TARGET_MEDIAN_MS:g}) "
              f"{verdict(w['frame_median_ms'] <= TARGET_MEDIAN_MS)}, max {w['frame_max_ms']:.1f} ms "
              f"(target <= {TARGET_MAX_MS:g}) {verdict(w['frame_max_ms'] <= TARGET_MAX_MS)}; "
              f"CPU time median {w['cpu_median_ms']:.1f} ms, max {w['cpu_max_ms']:.1f} ms")
    if "raster" in out and "curves" in out:
        r, c = out["raster"], out["curves"]
        print(f"raster vs curves: frame median {c['frame_median_ms'] / r['frame_median_ms']:.1f}x faster, "
              f"max {c['frame_max_ms'] / r['frame_max_ms']:.1f}x; CPU median {c['cpu_median_ms'] / r['cpu_median_ms']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
