"""Synthetic per-node series for the overview and raster tests: random walks on a tick grid."""

from __future__ import annotations

import numpy as np


def random_walks(rng: np.random.Generator, rows: int, ticks: int, gap_step: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row: increasing tick indices below TICKS (row r misses GAP_STEP * r of them) and a random
    walk of values from 100, never below 0."""
    out = []
    for r in range(rows):
        tix = np.sort(rng.choice(ticks, ticks - gap_step * r, replace=False))
        out.append((tix, np.clip(np.cumsum(rng.integers(-9, 10, len(tix))) + 100, 0, None)))
    return out
