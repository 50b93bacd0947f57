"""The overviews' decimation (omview.analyzer.overview), checked against brute force with numpy."""

from __future__ import annotations

import numpy as np
import pytest

from omview.analyzer.overview import LEVELS, Pyramid, segments, split_at, view_points
from tests.analyzer.walks import random_walks

T = 40_000


def _nodes(rng: np.random.Generator, rows: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return random_walks(rng, rows, T, 997)


def _raw(nodes: list[tuple[np.ndarray, np.ndarray]]):  # type: ignore[no-untyped-def]
    return lambda row: (nodes[row][0], lambda j0, j1: nodes[row][1][j0:j1])


def test_pyramid_levels_equal_brute_force_and_grow_incrementally() -> None:
    rng = np.random.default_rng(3)
    nodes = _nodes(rng, 4)
    full = Pyramid(4, T)
    grown = Pyramid(1, 100, exact=False)  # a live history: rows and ticks arrive over time
    for r, (tix, v) in enumerate(nodes):
        full.update(r, tix, v)
        for cut in (len(tix) // 3, 2 * len(tix) // 3, len(tix)):
            grown.reserve(r + 1, int(tix[cut - 1]) + 1)
            first = max(0, cut - len(tix) // 3)
            j = Pyramid.start_of(tix[:cut], first)  # as a refresh: only the samples it needs
            grown.update(r, tix[:cut], v[j:cut], first=first, offset=j)
    for k, b in enumerate(LEVELS):
        for r, (tix, v) in enumerate(nodes):
            blk = tix // b
            want_lo = np.full(full.mins[k].shape[1], np.nan, np.float32)
            want_hi = want_lo.copy()
            np.fmin.at(want_lo, blk, v.astype(np.float32))
            np.fmax.at(want_hi, blk, v.astype(np.float32))
            assert np.array_equal(full.mins[k][r], want_lo, equal_nan=True), (b, r)
            assert np.array_equal(full.maxs[k][r], want_hi, equal_nan=True), (b, r)
            n = full.mins[k].shape[1]
            assert np.array_equal(grown.mins[k][r, :n], want_lo, equal_nan=True), (b, r)


@pytest.mark.parametrize(("x0", "x1", "width"), [(0, T, 1300), (0, T, 37), (5000, 5600, 1300),
                                                 (5000, 9000, 700), (12345, 12400, 1300)])  # fmt: skip
def test_view_points_keep_every_rows_extremes(x0: float, x1: float, width: int) -> None:
    rng = np.random.default_rng(5)
    nodes = _nodes(rng, 3)
    pyr = Pyramid(3, T)
    for r, (tix, v) in enumerate(nodes):
        pyr.update(r, tix, v)
    times = 1e9 + np.arange(T, dtype=np.float64)
    x, y = view_points(pyr, _raw(nodes), np.arange(3), times, 1e9 + x0, 1e9 + x1, width)
    runs = np.split(y, np.flatnonzero(np.isnan(x)) + 1)[:-1]  # one NaN-terminated run per row
    assert len(runs) == 3
    assert len(x) <= 3 * (2 * width + 1) + 3 * 4  # at most a (min, max) pair per column and row
    for (tix, v), run in zip(nodes, runs, strict=True):
        t = times[tix]
        inside = v[(t >= 1e9 + x0) & (t <= 1e9 + x1)]
        # every sample's extremes are drawn; beyond each edge at most what lies within a column
        margin = (x1 - x0) / width * 2 + 1
        near = v[(t >= 1e9 + x0 - margin) & (t <= 1e9 + x1 + margin)]
        assert inside.max() <= np.nanmax(run) <= near.max()
        assert near.min() <= np.nanmin(run) <= inside.min()
    fin = np.isfinite(x)
    assert (np.diff(x[fin]) >= 0).sum() >= fin.sum() - 4  # x increases within each run


def test_view_points_break_at_a_backwards_clock_jump() -> None:
    times = np.concatenate((np.arange(100.0), np.arange(60.0, 160.0)))  # the clock stepped back 40 s
    assert segments(times) == [(0, 100), (100, 200)]
    tix = np.arange(200)
    pyr = Pyramid(1, 200)
    pyr.update(0, tix, tix)
    x, y = view_points(pyr, _raw([(tix, tix)]), np.arange(1), times, 0, 160, 1000)
    fin = np.isfinite(x)
    drawn = fin[:-1] & fin[1:]
    assert (x[1:][drawn] >= x[:-1][drawn]).all()  # never a line backwards in time
    assert sorted(y[np.isfinite(y)].tolist()) == list(range(200))  # all samples, as points


def test_split_at_cuts_exactly_at_the_threshold() -> None:
    x = np.array([0.0, 1, 2, 3, np.nan, 5, 6, 7])
    y = np.array([50.0, 100, 60, 80, np.nan, 10, 20, 90])
    bx, by, rx, ry = split_at(x, y, 75)
    assert np.nanmax(by) == 75 and np.nanmin(ry) == 75
    # the crossing points lie on the segments: 50 -> 100 crosses 75 at x = 0.5
    assert (0.5, 75.0) in zip(bx.tolist(), by.tolist(), strict=True)
    assert (0.5, 75.0) in zip(rx.tolist(), ry.tolist(), strict=True)
    assert {(1.0, 100.0), (3.0, 80.0), (7.0, 90.0)} <= set(zip(rx.tolist(), ry.tolist(), strict=True))
    assert {(0.0, 50.0), (2.0, 60.0), (5.0, 10.0), (6.0, 20.0)} <= set(zip(bx.tolist(), by.tolist(), strict=True))
    # nothing joins across the NaN between the two runs
    pairs = zip(bx[:-1], bx[1:], by[:-1], by[1:], strict=True)
    assert not any(a < 4 < b and np.isfinite(ya) and np.isfinite(yb) for a, b, ya, yb in pairs)
