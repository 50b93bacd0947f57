"""L5 analyzer, Qt-free: the overviews as pictures - every shown node's line rasterised with numpy.

A frame of the load overview at 256 nodes is ~300 000 line points when drawn as paths, and Qt
spends most of a frame building and stroking them (docs/analyzer.md, "Benchmark"). Here the
picture is computed instead: per pixel column and node the span (min..max) the node's line
covers in that column, then the pixels those spans cover, counted for all nodes at once with a
difference array (+1 at a span's top row, -1 below its bottom row) and a cumulative sum down
each column. The window paints the result as one image (``raster_item.RasterItem``).

``column_spans`` takes the spans from the samples themselves when a column holds few of them
(the line's value at each column border, interpolated, plus the samples inside: exact), else
from the coarsest ``overview.Pyramid`` level whose blocks fit in a column (every block that
touches the column: a superset of the column's samples, at most a block wider), then joins
neighbouring columns whose spans do not meet halfway, as the line between them would.
Nothing loops over samples or columns in Python; one loop over the shown nodes reads the
samples when zoomed in.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np

from omview.analyzer.overview import LEVELS, Pyramid, RawSource, segments

#: Up to this many samples per pixel column the spans come from the samples themselves...
DENSE_SAMPLES = 4.0
#: ... as long as that reads at most this many samples per column (all shown nodes); beyond,
#: the pyramid's finest blocks (8 ticks) are used even if they are wider than a column: then a
#: column shows the range of the blocks it touches (a superset of its samples' range). With
#: 256 nodes shown that is the case from 1.6 to 8 samples per column, where 256 overlapping
#: lines hide the difference; reading 1.3 M samples would take ~25 ms of a frame. (Per column,
#: not per view, and from the stretch's mean interval: a strip of new columns after a pan is
#: computed the same way as the whole view.)
DENSE_PER_COLUMN = 400

#: One picture's spans: (lo, hi), each (nodes, columns) float32, NaN where a node draws nothing.
Spans = tuple[np.ndarray, np.ndarray]


def dense(raw: RawSource, rows: np.ndarray, i0: int, i1: int) -> np.ndarray:
    """The samples of ticks i0..i1 of the given rows as a (rows, ticks) float32 array, NaN = no sample."""
    out = np.full((len(rows), i1 - i0), np.nan, np.float32)
    for r, row in enumerate(rows.tolist()):
        tix, values = raw(row)
        j0, j1 = (int(j) for j in np.searchsorted(tix, np.array((i0, i1), tix.dtype)))
        if j1 <= j0:
            continue
        if int(tix[j1 - 1]) - int(tix[j0]) == j1 - j0 - 1:  # no tick missing: a slice, not a scatter
            a = int(tix[j0]) - i0
            out[r, a : a + j1 - j0] = values(j0, j1)
        else:
            out[r, tix[j0:j1] - i0] = values(j0, j1)
    return out


def column_spans(
    pyr: Pyramid, raw: RawSource, rows: np.ndarray, times: np.ndarray, x0: float, x1: float, width: int
) -> list[Spans]:
    """The spans of the given rows' lines in ``width`` columns over [x0, x1], one pair per
    increasing stretch of the clock (a backwards clock jump starts another, drawn on top)."""
    out: list[Spans] = []
    if not len(rows) or x1 <= x0 or width < 1:
        return out
    borders = x0 + np.arange(width + 1) * ((x1 - x0) / width)
    for ts, te in segments(times):
        seg = times[ts:te]
        if seg[-1] < x0 or seg[0] > x1:
            continue
        e = ts + np.searchsorted(seg, borders, "left")  # column c holds ticks e[c]..e[c+1]
        # samples per column at the stretch's mean interval
        s = (x1 - x0) / width * (len(seg) - 1) / (seg[-1] - seg[0]) if len(seg) > 1 and seg[-1] > seg[0] else 0.0
        if s <= 1 or (s <= DENSE_SAMPLES and s * len(rows) <= DENSE_PER_COLUMN):
            out.append(_dense_spans(raw, rows, times, ts, te, borders, e))
        else:
            out.append(_pyramid_spans(pyr, rows, e, s, te))
    return out


def range_reduce(mins: np.ndarray, maxs: np.ndarray, first: np.ndarray, last: np.ndarray) -> Spans:
    """The min of ``mins[:, first[c] .. last[c]]`` and the max of ``maxs[...]`` (inclusive,
    first <= last) for every c, NaN
    ignored: a sparse table (the min/max of 1, 2, 4, ... neighbours) and two gathers per power
    of two, since ``reduceat`` costs a loop per row and range (~4 ms at 256 nodes x 1300 columns)."""
    # table level j covers 2**j neighbours; two of them cover a range of up to 2**(j+1), so a
    # range of 1 or 2 needs no table at all (most columns, when the level fits the view)
    length = last - first + 1
    j = np.maximum(np.ceil(np.log2(np.maximum(length, 1))).astype(np.intp) - 1, 0)
    lo_t, hi_t = mins, maxs
    lo = np.empty((mins.shape[0], len(first)), mins.dtype)
    hi = np.empty_like(lo)
    for level in range(int(j.max()) + 1 if len(j) else 0):
        if level:
            h = 1 << (level - 1)  # table[level][i] reduces m[i .. i + 2**level - 1]
            lo_t = np.fmin(lo_t[:, :-h], lo_t[:, h:])
            hi_t = np.fmax(hi_t[:, :-h], hi_t[:, h:])
        sel = np.flatnonzero(j == level)
        if not len(sel):
            continue
        a, b = first[sel], last[sel] - (1 << level) + 1
        # np.take, not m[:, idx]: that gives Fortran-ordered arrays, slow in all that follows
        if len(sel) == len(first):
            np.fmin(np.take(lo_t, a, axis=1), np.take(lo_t, b, axis=1), out=lo)
            np.fmax(np.take(hi_t, a, axis=1), np.take(hi_t, b, axis=1), out=hi)
        else:
            lo[:, sel] = np.fmin(np.take(lo_t, a, axis=1), np.take(lo_t, b, axis=1))
            hi[:, sel] = np.fmax(np.take(hi_t, a, axis=1), np.take(hi_t, b, axis=1))
    return lo, hi


def _dense_spans(
    raw: RawSource, rows: np.ndarray, times: np.ndarray, ts: int, te: int, borders: np.ndarray, e: np.ndarray
) -> Spans:
    """Exact spans: the line's values at both borders of each column and the samples inside."""
    i0, i1 = max(int(e[0]) - 1, ts), min(int(e[-1]) + 1, te)  # one sample beyond each edge
    d = dense(raw, rows, i0, i1)
    n = i1 - i0
    width = len(borders) - 1
    # the line's value at each border: between the samples on either side, NaN outside the stretch
    # or next to a missing sample (the line is broken there)
    inside = (borders >= times[i0]) & (borders <= times[i1 - 1])
    f = np.interp(borders, times[i0:i1], np.arange(n, dtype=np.float64))
    fl = np.clip(np.floor(f).astype(np.intp), 0, max(n - 2, 0))
    fr = (f - fl).astype(np.float32)
    left, right = np.take(d, fl, axis=1), np.take(d, np.minimum(fl + 1, n - 1), axis=1)
    at = np.where(fr > 0, left * (1 - fr) + right * fr, left)
    at[:, ~inside] = np.nan
    lo = np.fmin(at[:, :-1], at[:, 1:])
    hi = np.fmax(at[:, :-1], at[:, 1:])
    # the samples inside each column
    a, b = np.asarray(e[:-1]) - i0, np.asarray(e[1:]) - i0
    full = np.flatnonzero(b > a)
    if len(full):
        cmin, cmax = range_reduce(d, d, a[full], b[full] - 1)
        if len(full) == width:
            np.fmin(lo, cmin, out=lo)
            np.fmax(hi, cmax, out=hi)
        else:
            lo[:, full] = np.fmin(np.take(lo, full, axis=1), cmin)
            hi[:, full] = np.fmax(np.take(hi, full, axis=1), cmax)
    assert lo.shape == (len(rows), width)
    return lo, hi


def _pyramid_spans(pyr: Pyramid, rows: np.ndarray, e: np.ndarray, s: float, te: int) -> Spans:
    """Spans from the pyramid: every block touching a column, then gaps between columns closed."""
    b = max((lv for lv in LEVELS if lv <= s), default=LEVELS[0])
    k = LEVELS.index(b)
    first_blk = np.minimum(e[:-1], te - 1) // b  # the block holding each column's first tick
    last_tick = np.minimum(np.maximum(e[1:], e[:-1] + 1) - 1, te - 1)
    last_blk = last_tick // b  # ... and its last tick (the first's where a column is empty)
    k0 = int(first_blk[0])
    blocks = slice(k0, int(last_blk[-1]) + 1)
    if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows):  # consecutive rows (all shown): a view
        lo_b = pyr.mins[k][int(rows[0]) : int(rows[-1]) + 1, blocks]
        hi_b = pyr.maxs[k][int(rows[0]) : int(rows[-1]) + 1, blocks]
    else:
        lo_b = np.take(pyr.mins[k][:, blocks], rows, axis=0)
        hi_b = np.take(pyr.maxs[k][:, blocks], rows, axis=0)
    lo, hi = range_reduce(lo_b, hi_b, first_blk - k0, last_blk - k0)
    empty = e[1:] <= e[:-1]
    lo[:, empty] = np.nan
    hi[:, empty] = np.nan
    return join_columns(lo, hi)


def join_columns(lo: np.ndarray, hi: np.ndarray) -> Spans:
    """Close the gap between neighbouring columns whose spans do not meet: the line from one to
    the other crosses it, so each column reaches halfway (min/max spans hold no order in time)."""
    if lo.shape[1] < 2:
        return lo, hi
    lo2, hi2 = lo.copy(), hi.copy()
    mid = np.empty_like(lo[:, 1:])
    with np.errstate(invalid="ignore"):
        # towards the column on the left and on the right; NaN neighbours change nothing (fmin)
        for out, a, b, red in ((lo2[:, 1:], lo[:, 1:], hi[:, :-1], np.fmin), (lo2[:, :-1], lo[:, :-1], hi[:, 1:], np.fmin),
                               (hi2[:, 1:], hi[:, 1:], lo[:, :-1], np.fmax), (hi2[:, :-1], hi[:, :-1], lo[:, 1:], np.fmax)):  # fmt: skip
            np.add(a, b, out=mid)
            mid *= 0.5
            red(out, mid, out=out)
    return lo2, hi2


def coverage(spans: list[Spans], y0: float, y1: float, height: int) -> np.ndarray:
    """Which pixels the spans cover, as a (columns, height) mask - transposed: row 0 of the
    picture (the top, y1) is ``mask[:, 0]``; ``picture`` turns it upright.

    Pixel row r shows the values [y1 - (r + 1) * dy, y1 - r * dy); a span covers every row it
    touches, at least one. Counted with a difference array (+1 at a span's top row, -1 under its
    bottom row; a span drawing nothing adds both to a spare row) summed along each column. The
    columns are the array's rows because numpy sums along the contiguous axis ~8x faster.
    """
    width = spans[0][0].shape[1] if spans else 0
    if not spans or y1 <= y0 or height < 1:
        return np.zeros((width, max(height, 0)), bool)
    scale = height / (y1 - y0)
    stride = height + 2
    size = width * stride
    base = (np.arange(width) * stride).astype(np.int32)[None, :]
    counts: np.ndarray | None = None
    for lo, hi in spans:
        with np.errstate(invalid="ignore"):
            off = ~((hi >= y0) & (lo <= y1))  # NaN or outside the y range
            top = np.clip((y1 - hi) * scale, 0, height - 1).astype(np.int32)
            below = np.clip((y1 - lo) * scale, 0, height - 1).astype(np.int32)
        below += 1
        np.copyto(top, height + 1, where=off)
        np.copyto(below, height + 1, where=off)
        top += base
        below += base
        add = np.bincount(top.ravel(order="K"), minlength=size)
        if counts is None:
            counts = add
        else:
            counts += add
        counts -= np.bincount(below.ravel(order="K"), minlength=size)
    assert counts is not None
    return np.cumsum(counts.reshape(width, stride)[:, :height], axis=1) > 0


def row_values(y0: float, y1: float, height: int) -> np.ndarray:
    """The value at the middle of each pixel row, top row first."""
    return y1 - (np.arange(height) + 0.5) * ((y1 - y0) / max(height, 1))


def picture(layers: list[tuple[np.ndarray, np.ndarray | int]], width: int, height: int) -> np.ndarray:
    """An upright (height, width) picture of colour indices (uint8, 0 = nothing) from layers of
    (``coverage`` mask, index), the last on top.

    ``index`` is one value or an array broadcastable to the transposed (width, height) picture:
    ``codes[None, :]`` one per pixel row (red above 75), ``codes[:, None]`` one per column (a
    dashed line). The window shows it as an indexed image with a colour table.
    """
    out: np.ndarray | None = None
    for mask, index in layers:
        if mask.shape != (width, height):
            continue
        if out is None:  # the bottom layer: a product, not a masked copy
            out = mask.view(np.uint8) * np.asarray(index, np.uint8)
        else:
            np.copyto(out, np.asarray(index, np.uint8), where=mask)
    if out is None:
        return np.zeros((height, width), np.uint8)
    return np.ascontiguousarray(np.broadcast_to(out, (width, height)).T)


def keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse instead of unmapping it (once per process).

    A frame allocates a few numpy temporaries of 1-8 MB; above glibc's mmap threshold each is
    mapped and unmapped every frame, and touching fresh pages costs ~3 ms per 2.6 MB array on
    this VM - more than the arithmetic. Raising the threshold keeps them in the heap.
    """
    global _KEPT
    if _KEPT:
        return
    _KEPT = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


_KEPT = False
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
