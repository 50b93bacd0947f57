"""L5 analyzer, Qt-free: what the overviews draw - every node's curve at the view's resolution.

A pan or zoom must cost little however long the history and however many nodes: the
window draws one curve item per colour (all shown nodes in one path, NaN between nodes) from
at most two points (min, max) per pixel column and node. ``Pyramid`` keeps, per quantity,
the min and max of every node over blocks of 8, 32, 128, ... 8192 ticks of the history's tick
axis (dense: one row per node, NaN where a node has no sample), computed once as nodes load
and extended as the live history grows. ``view_points`` picks the coarsest level whose block
fits in a pixel column, reduces it to the columns with ``fmin/fmax.reduceat`` across all rows
at once and returns flat x/y arrays; zoomed in to a few samples per column it uses the samples
themselves. ``red_segments`` cuts the parts above 75 out of the load's points as one
connected path (a ``connect`` array). Nothing here loops over samples in Python.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Ticks per block of each stored level (each 4 times the previous one: a pixel column then
#: spans 1 to 4 blocks, so reducing a view to columns touches few values).
LEVELS = (8, 32, 128, 512, 2048, 8192)

#: (row, j0, j1) -> the node's tick indices and values (float) of its samples j0..j1
RawSource = Callable[[int], tuple[np.ndarray, Callable[[int, int], np.ndarray]]]


class Pyramid:
    """Min and max of every node's values over blocks of LEVELS ticks (float32, NaN = no sample)."""

    def __init__(self, rows: int, ticks: int, *, exact: bool = True) -> None:
        self.exact = exact
        self.rows = 0
        self.ticks = 0
        self.mins: list[np.ndarray] = [np.empty((0, 0), np.float32) for _ in LEVELS]
        self.maxs: list[np.ndarray] = [np.empty((0, 0), np.float32) for _ in LEVELS]
        self.reserve(rows, ticks)

    def reserve(self, rows: int, ticks: int) -> None:
        """Room for ``rows`` nodes and ``ticks`` ticks (not exact: a live history grows in 1.5x steps)."""
        self.rows, self.ticks = max(self.rows, rows), max(self.ticks, ticks)
        have_r, have_t = self.mins[0].shape[0], self.mins[0].shape[1] * LEVELS[0]
        if rows <= have_r and ticks <= have_t:
            return
        new_r, new_t = max(rows, have_r), max(ticks, have_t)
        if not self.exact:
            new_r = max(new_r, have_r * 3 // 2) if rows > have_r else new_r
            new_t = max(new_t, have_t * 3 // 2 + 4096) if ticks > have_t else new_t
        for k, b in enumerate(LEVELS):
            for arrs in (self.mins, self.maxs):
                grown = np.full((new_r, -(-new_t // b)), np.nan, np.float32)
                old = arrs[k]
                grown[: old.shape[0], : old.shape[1]] = old
                arrs[k] = grown

    @staticmethod
    def start_of(tix: np.ndarray, first: int) -> int:
        """The first sample ``update(..., first)`` reads: the start of sample first's block."""
        if first >= len(tix):
            return len(tix)
        return int(np.searchsorted(tix, int(tix[first]) // LEVELS[0] * LEVELS[0]))

    def update(self, row: int, tix: np.ndarray, values: np.ndarray, first: int = 0, offset: int = 0) -> None:
        """Recompute the node's blocks from its sample ``first`` on (all of them: 0).

        ``tix`` are the samples' tick indices (increasing), ``values[i - offset]`` the value of
        sample i (a refresh passes only the samples from ``start_of(tix, first)`` on).
        """
        if first >= len(tix):
            return
        k0 = int(tix[first]) // LEVELS[0]
        j = self.start_of(tix, first)
        assert offset <= j
        t, v = tix[j:], values[j - offset :].astype(np.float32)
        blk = t // LEVELS[0]
        pos = np.concatenate(([0], np.flatnonzero(blk[1:] != blk[:-1]) + 1))
        lo, hi = self.mins[0][row], self.maxs[0][row]
        lo[k0:] = np.nan
        hi[k0:] = np.nan
        lo[blk[pos]] = np.minimum.reduceat(v, pos)
        hi[blk[pos]] = np.maximum.reduceat(v, pos)
        for k in range(1, len(LEVELS)):
            f = LEVELS[k] // LEVELS[k - 1]
            k1 = k0 * LEVELS[0] // LEVELS[k]
            for arrs, red in ((self.mins, np.fmin), (self.maxs, np.fmax)):
                src = arrs[k - 1][row, k1 * f :]
                pad = -len(src) % f
                if pad:
                    src = np.concatenate((src, np.full(pad, np.nan, np.float32)))
                dst = arrs[k][row, k1:]
                dst[:] = red.reduce(src.reshape(-1, f), axis=1)[: len(dst)]

    def top(self, rows: np.ndarray | slice) -> float:
        """The largest value of those rows (0 if none): the y range's top."""
        m = self.maxs[-1][rows]
        return float(np.nanmax(m)) if m.size and not np.isnan(m).all() else 0.0


def segments(times: np.ndarray) -> list[tuple[int, int]]:
    """Tick ranges over which the times increase (a backwards clock jump starts a new one)."""
    cuts = (np.flatnonzero(times[1:] < times[:-1]) + 1).tolist()
    bounds = [0, *cuts, len(times)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _dense(raw: RawSource, rows: np.ndarray, i0: int, i1: int) -> np.ndarray:
    """The samples of ticks i0..i1 of the given rows as a (rows, ticks) array, NaN = no sample."""
    out = np.full((len(rows), i1 - i0), np.nan, np.float32)
    for r, row in enumerate(rows.tolist()):
        tix, values = raw(row)
        j0, j1 = np.searchsorted(tix, (i0, i1))
        if j1 > j0:
            out[r, tix[j0:j1] - i0] = values(int(j0), int(j1))
    return out


def view_points(
    pyr: Pyramid,
    raw: RawSource,
    rows: np.ndarray,
    times: np.ndarray,
    x0: float,
    x1: float,
    width: int,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Flat (x, y) of the given rows over the view [x0, x1] at ``width`` pixel columns.

    Each row becomes one run of points, NaN after it (draw with ``connect="finite"``): the
    samples themselves when at most 2 fall in a column, else a (min, max) pair per column from
    the coarsest pyramid level whose blocks fit. Points inside a flat stretch are dropped
    (a constant tmem is two points, not thousands). y is multiplied by ``scale``.
    """
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    if not len(rows) or x1 <= x0 or width < 1:
        return np.empty(0), np.empty(0)
    for ts, te in segments(times):
        seg = times[ts:te]
        i0 = ts + max(int(np.searchsorted(seg, x0, "left")) - 1, 0)  # one sample beyond each edge
        i1 = ts + min(int(np.searchsorted(seg, x1, "right")) + 1, te - ts)
        if i1 <= i0:
            continue
        n = i1 - i0
        cols = max(1, min(width, int(width * (min(times[i1 - 1], x1) - max(times[i0], x0)) / (x1 - x0)) + 1))
        s = n / cols
        if s <= 2:
            x = times[i0:i1]
            y = _dense(raw, rows, i0, i1)
        else:
            b = max((lv for lv in LEVELS if lv <= s), default=1)
            edges = i0 + (np.arange(cols + 1) * n) // cols
            if b == 1:
                lo = hi = _dense(raw, rows, i0, i1)
                idx = edges[:-1] - i0
            else:
                k = LEVELS.index(b)
                kb = edges // b
                kend = (i1 - 1) // b + 1
                lo = pyr.mins[k][:, kb[0] : kend][rows]
                hi = pyr.maxs[k][:, kb[0] : kend][rows]
                idx = kb[:-1] - kb[0]
            mins = np.fmin.reduceat(lo, idx, axis=1)
            maxs = np.fmax.reduceat(hi, idx, axis=1)
            y = np.stack((mins, maxs), axis=2).reshape(len(rows), 2 * cols)
            x = np.repeat(times[(edges[:-1] + edges[1:]) // 2], 2)
        # flat stretches: keep their ends only
        keep = np.ones(y.shape, bool)
        if y.shape[1] > 2:
            keep[:, 1:-1] = ~((y[:, 1:-1] == y[:, :-2]) & (y[:, 1:-1] == y[:, 2:]))
        keep = np.concatenate((keep, np.ones((len(rows), 1), bool)), axis=1)
        yy = np.concatenate((y, np.full((len(rows), 1), np.nan, np.float32)), axis=1)
        xx = np.broadcast_to(np.append(x, np.nan), yy.shape)
        xs.append(xx[keep])
        ys.append(yy[keep].astype(np.float64) * scale)
    if not xs:
        return np.empty(0), np.empty(0)
    return np.concatenate(xs), np.concatenate(ys)


def _compact(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop what a ``connect="finite"`` path would not draw: NaN runs (one NaN kept as a break)
    and lone points between two breaks."""
    fin = np.isfinite(y)
    prev = np.concatenate(([False], fin[:-1]))
    nxt = np.concatenate((fin[1:], [False]))
    keep = (fin & (prev | nxt)) | (~fin & prev)
    return x[keep], y[keep]


def split_at(x: np.ndarray, y: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut a flat NaN-separated point list at ``threshold``: (x, y) of the parts at or below it
    and (x, y) of the parts at or above it, both NaN-separated for ``connect="finite"``.

    Where a segment crosses the threshold a point on it at exactly the threshold is inserted,
    so the two paths meet there; together they hold about as many points as the input, so
    the black and the red line of the load overview cost one path's painting, not two.
    """
    if len(y) < 2:
        return np.empty(0), np.empty(0), np.empty(0), np.empty(0)
    above = y > threshold
    fin = np.isfinite(y)
    cross = np.flatnonzero(fin[:-1] & fin[1:] & (above[:-1] != above[1:]))
    y0, y1 = y[cross], y[cross + 1]
    xc = x[cross] + (threshold - y0) / (y1 - y0) * (x[cross + 1] - x[cross])
    xm = np.insert(x, cross + 1, xc)
    ym = np.insert(y, cross + 1, np.full(len(cross), threshold))
    low = np.where(ym > threshold, np.nan, ym)
    high = np.where(ym < threshold, np.nan, ym)
    bx, by = _compact(xm, low)
    rx, ry = _compact(xm, high)
    return bx, by, rx, ry


def as_connected(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A NaN-separated point list as (x, y, connect) without the NaNs: ``connect[i]`` joins
    point i to i+1. pyqtgraph builds such a path in one vectorised step, where ``"finite"``
    would loop over the runs in Python (thousands of them in a 256-node view)."""
    fin = np.isfinite(y)
    idx = np.flatnonzero(fin)
    connect = np.zeros(len(idx), bool)
    connect[:-1] = idx[1:] == idx[:-1] + 1
    return x[idx], y[idx], connect
