"""The overviews' pictures (omview.analyzer.raster), checked against brute force with numpy."""

from __future__ import annotations

import numpy as np
import pytest

from omview.analyzer.overview import Pyramid
from omview.analyzer.raster import column_spans, coverage, join_columns, picture, range_reduce, row_values
from tests.analyzer.walks import random_walks

T = 20_000
X0 = 1e9


def _nodes(rng: np.random.Generator, rows: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return random_walks(rng, rows, T, 97)


def _setup(rows: int = 3):  # type: ignore[no-untyped-def]
    nodes = _nodes(np.random.default_rng(7), rows)
    pyr = Pyramid(rows, T)
    for r, (tix, v) in enumerate(nodes):
        pyr.update(r, tix, v)
    raw = lambda row: (nodes[row][0], lambda j0, j1: nodes[row][1][j0:j1])  # noqa: E731
    return nodes, pyr, raw, X0 + np.arange(T, dtype=np.float64)


def _line_span(t: np.ndarray, v: np.ndarray, a: float, b: float) -> tuple[float, float]:
    """Brute force: the range of the polyline through (t, v) over [a, b] (broken at missing ticks)."""
    vals = list(v[(t >= a) & (t <= b)].astype(float))
    for x in (a, b):  # the line's value at the borders, where it exists (consecutive ticks)
        j = int(np.searchsorted(t, x, "right"))
        if 0 < j < len(t) and t[j] - t[j - 1] == 1:
            vals.append(float(np.interp(x, t[j - 1 : j + 1], v[j - 1 : j + 1])))
    return (min(vals), max(vals)) if vals else (np.nan, np.nan)


@pytest.mark.parametrize(("x0", "x1", "width"), [(5000, 5600, 1300), (5000, 8000, 900), (12345, 12400, 700)])
def test_zoomed_in_spans_are_the_lines_exact_range(x0: float, x1: float, width: int) -> None:
    nodes, pyr, raw, times = _setup()
    (lo, hi), = column_spans(pyr, raw, np.arange(3), times, X0 + x0, X0 + x1, width)  # fmt: skip
    assert lo.shape == hi.shape == (3, width)
    dx = (x1 - x0) / width
    for r, (tix, v) in enumerate(nodes):
        t = times[tix]
        for c in range(0, width, 7):
            want = _line_span(t, v, X0 + x0 + c * dx, X0 + x0 + (c + 1) * dx)
            if np.isnan(want[0]):
                assert np.isnan(lo[r, c]) or lo[r, c] <= hi[r, c]
                continue
            assert lo[r, c] == pytest.approx(want[0], abs=1e-3), (r, c)
            assert hi[r, c] == pytest.approx(want[1], abs=1e-3), (r, c)


@pytest.mark.parametrize(("x0", "x1", "width"), [(0, T, 1300), (0, T, 37), (3000, 15000, 700), (100, 9000, 1000)])
def test_zoomed_out_spans_hold_every_sample_and_little_more(x0: float, x1: float, width: int) -> None:
    nodes, pyr, raw, times = _setup()
    (lo, hi), = column_spans(pyr, raw, np.arange(3), times, X0 + x0, X0 + x1, width)  # fmt: skip
    dx = (x1 - x0) / width
    for r, (tix, v) in enumerate(nodes):
        t = times[tix] - X0
        col = np.floor((t - x0) / dx).astype(int)
        inside = (col >= 0) & (col < width)
        # every sample lies in its column's span: no peak is lost at any zoom
        assert (lo[r, col[inside]] <= v[inside]).all() and (hi[r, col[inside]] >= v[inside]).all()
        assert np.nanmax(hi[r]) == v[inside].max() or np.nanmax(hi[r]) <= v.max()
        # ... and a span holds no value beyond the samples of its column widened by a block and
        # by half the gap to its neighbours (what the line between them crosses)
        for c in range(0, width, max(1, width // 50)):
            near = v[(t >= x0 + (c - 1) * dx - 2048) & (t < x0 + (c + 2) * dx + 2048)]
            assert near.min() <= lo[r, c] and hi[r, c] <= near.max()


def test_backwards_clock_jump_gives_two_stretches() -> None:
    times = np.concatenate((np.arange(100.0), np.arange(60.0, 160.0)))  # the clock stepped back 40 s
    tix = np.arange(200)
    v = np.concatenate((np.full(100, 10.0), np.full(100, 90.0)))
    pyr = Pyramid(1, 200)
    pyr.update(0, tix, v)
    spans = column_spans(pyr, lambda _r: (tix, lambda j0, j1: v[j0:j1]), np.arange(1), times, 0, 160, 160)
    assert len(spans) == 2
    (lo1, hi1), (lo2, hi2) = spans
    # each stretch drawn on its own, never joined across the jump: no span from 10 to 90
    assert np.nanmax(hi1) == 10 and np.nanmin(lo2) == 90
    assert np.isfinite(lo1[0, 70]) and np.isfinite(lo2[0, 70])  # both over the repeated minute
    assert np.isnan(lo1[0, 120]) and np.isnan(lo2[0, 20])


def test_range_reduce_and_join_columns() -> None:
    rng = np.random.default_rng(1)
    m = rng.random((4, 300)).astype(np.float32)
    m[1, 17] = np.nan
    first = np.sort(rng.integers(0, 290, 120))
    last = first + rng.integers(0, 10, 120)
    lo, hi = range_reduce(m, m, first, last)
    for c in range(120):
        seg = m[:, first[c] : last[c] + 1]
        assert np.array_equal(lo[:, c], np.nanmin(seg, axis=1)) and np.array_equal(hi[:, c], np.nanmax(seg, axis=1))
    lo, hi = join_columns(np.array([[0.0, 10, np.nan, 4]]), np.array([[2.0, 12, np.nan, 6]]))
    # 0..2 then 10..12: each column reaches halfway to the other (6 and 6); NaN stays NaN
    assert lo.tolist()[0][:2] == [0.0, 6.0] and hi.tolist()[0][:2] == [6.0, 12.0]
    assert np.isnan(lo[0, 2]) and lo[0, 3] == 4


def test_coverage_and_picture_against_brute_force() -> None:
    rng = np.random.default_rng(2)
    w, h, y0, y1 = 50, 40, 0.0, 100.0
    lo = rng.uniform(-20, 110, (6, w)).astype(np.float32)
    hi = lo + rng.uniform(0, 30, (6, w)).astype(np.float32)
    lo[2, 5:9] = hi[2, 5:9] = np.nan  # nothing drawn there
    mask = coverage([(lo, hi)], y0, y1, h)
    assert mask.shape == (w, h)
    edges = y1 - np.arange(h + 1) * (y1 - y0) / h  # row r shows [edges[r + 1], edges[r])
    want = np.zeros((w, h), bool)
    for r in range(6):
        for c in range(w):
            if np.isnan(lo[r, c]) or hi[r, c] < y0 or lo[r, c] > y1:
                continue
            rows = np.flatnonzero((edges[1:] <= hi[r, c]) & (edges[:-1] >= lo[r, c]))
            rows = rows if len(rows) else [min(int((y1 - lo[r, c]) / (y1 - y0) * h), h - 1)]
            want[c, rows] = True
            want[c, min(max(int((y1 - hi[r, c]) / (y1 - y0) * h), 0), h - 1)] = True
            want[c, min(max(int((y1 - lo[r, c]) / (y1 - y0) * h), 0), h - 1)] = True
    assert np.array_equal(mask, want)
    codes = np.where(row_values(y0, y1, h) > 75, 2, 1).astype(np.uint8)
    pic = picture([(mask, codes[None, :])], w, h)
    assert pic.shape == (h, w) and pic.dtype == np.uint8
    assert set(np.unique(pic[: h // 4][mask.T[: h // 4]]).tolist()) <= {2}  # the top quarter is above 75: red
    assert set(np.unique(pic[h // 2 :][mask.T[h // 2 :]]).tolist()) <= {1}  # the lower half black
    assert (pic[~mask.T] == 0).all()
    assert not coverage([(lo[:0], hi[:0])], y0, y1, h).any()  # no node shown: nothing drawn
