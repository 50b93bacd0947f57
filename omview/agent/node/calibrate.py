"""L2 agent: measure this CPU's openMosix ``speed`` with a short fixed CPython loop, counting only
the thread's CPU time; REFERENCE_RATE iterations per CPU-second score exactly STD_SPEED (10000).
"""

from __future__ import annotations

import time

from omview.model.cluster import STD_SPEED

#: Iterations per CPU-second of ``_chunk`` that score exactly STD_SPEED. Chosen so that one core
#: of the reference machine (AMD EPYC VM, CPython 3.11, 2024) scores about 10000, which keeps
#: "load 100 = one busy process" true on typical current hardware.
REFERENCE_RATE = 13_000_000.0
CHUNK = 40_000
MAX_SPEED = 10_000_000


def _chunk(n: int) -> int:
    x = 0
    for i in range(n):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x


def measure(budget: float = 0.25) -> int:
    """Speed of this CPU; runs for at most ``budget`` seconds (wall clock), best chunk wins."""
    best = 0.0
    start = time.perf_counter()
    rounds = 0
    while rounds < 3 or time.perf_counter() - start < budget:
        t0 = time.thread_time()
        _chunk(CHUNK)
        spent = time.thread_time() - t0
        if spent > 0:
            best = max(best, CHUNK / spent)
        rounds += 1
        if time.perf_counter() - start >= budget:
            break
    if best <= 0:
        return STD_SPEED
    return max(1, min(MAX_SPEED, round(STD_SPEED * best / REFERENCE_RATE)))
