"""Benchmark: openmosixcollector's bytes per node-sample and CPU for a synthetic 256-node cluster.

Runs the real collector loop (omview.collector.daemon.Collector + HistoryWriter, real files)
fed by omview.collector.synthetic.SyntheticSource in wire mode (rows are JSON-decoded as the
agent client does). One run prints, side by side:

  A  real time, 1 s interval, --seconds long: collector CPU (thread CPU time, the synthetic
     model's own generation cost subtracted) and the bytes of the live files so far;
  B  the same model for --simulated-hours on a fake clock: steady-state live bytes per
     node-sample, then the history is rotated and compressed: bytes per node-sample after.

Usage: python bench/collector.py [--nodes 256] [--seconds 30] [--simulated-hours 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

from omview.collector.daemon import Collector
from omview.collector.synthetic import SyntheticSource
from omview.collector.writer import HistoryWriter, compress_history
from omview.model import records

TARGET_LIVE = 8.0
TARGET_ROTATED = 2.0
TARGET_CPU = 2.0  # percent of one core


class FakeClock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = time.time()

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, s: float) -> None:
        self.mono += s
        self.wall += s


def sizes(directory: str) -> tuple[int, int]:
    """(bytes of the sample files cluster + node*, bytes of the procs file)."""
    samples = procs = 0
    for name, path in records.history_files(directory).items():
        size = os.path.getsize(path)
        if name == records.PROCS_FILE:
            procs += size
        else:
            samples += size
    return samples, procs


def node_samples(directory: str) -> int:
    h = records.History.open(directory)
    return sum(len(h.series(n)) for n in h.node_ids())


def verdict(value: float, target: float) -> str:
    return f"{value / target:5.2f}x target ({'ok' if value <= target else 'OVER'})"


def run_realtime(base: str, nodes: int, seconds: float) -> dict[str, float]:
    src = SyntheticSource(nodes, seed=7, wire=True)
    writer = HistoryWriter(os.path.join(base, "realtime"), interval=1.0)
    col = Collector(src, writer, interval=1.0)
    col.start()
    end = time.monotonic() + seconds

    def wait(t: float) -> None:
        time.sleep(max(0.0, min(t, end - time.monotonic())))
        if time.monotonic() >= end:
            col.flags.stop = True

    # one-time costs (file headers, each node's first key frame) are paid in the first tick;
    # the steady-state figure counts what later ticks append
    col.step()
    first_bytes = sizes(writer.logdir)[0]
    first_samples = nodes
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = time.thread_time()
    wall0 = time.monotonic()
    col.run(wait)
    wall = time.monotonic() - wall0
    cpu = time.thread_time() - cpu0 - src.model_cpu
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    col.close()
    samples, procs = sizes(writer.logdir)
    n = node_samples(writer.logdir)
    return {
        "wall": wall,
        "ticks": col.ticks,
        "cpu": cpu,
        "model_cpu": src.model_cpu,
        "proc_cpu": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
        "cpu_pct": 100.0 * cpu / wall,
        "bytes": samples,
        "procs_bytes": procs,
        "node_samples": n,
        "steady": (samples - first_bytes) / max(1, n - first_samples),
    }


def run_simulated(base: str, nodes: int, hours: float) -> dict[str, float]:
    clock = FakeClock()
    src = SyntheticSource(nodes, seed=7, wire=False)
    logdir = os.path.join(base, "simulated")
    writer = HistoryWriter(logdir, interval=1.0)
    col = Collector(src, writer, interval=1.0, clock=clock, rotate_every=10 * 24 * 3600.0)
    col.start()
    ticks = int(hours * 3600)
    cpu0 = time.thread_time()

    def wait(t: float) -> None:
        clock.advance(t)
        if col.ticks >= ticks:
            col.flags.stop = True

    col.run(wait)
    cpu = time.thread_time() - cpu0 - src.model_cpu
    samples, procs = sizes(logdir)
    n = node_samples(logdir)
    t0 = time.perf_counter()
    h = records.History.open(logdir)
    for nid in h.node_ids():
        h.series(nid)
    read_s = time.perf_counter() - t0
    backup = col.rotate()
    col.close()
    t0 = time.thread_time()
    compress_history(backup)
    compress_cpu = time.thread_time() - t0
    rsamples, rprocs = sizes(backup)
    rn = node_samples(backup)
    assert rn == n, (rn, n)
    return {
        "ticks": col.ticks,
        "cpu_per_tick": cpu / max(1, col.ticks),
        "bytes": samples,
        "procs_bytes": procs,
        "node_samples": n,
        "read_s": read_s,
        "rot_bytes": rsamples,
        "rot_procs_bytes": rprocs,
        "compress_cpu": compress_cpu,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the real-time run")
    ap.add_argument("--simulated-hours", type=float, default=1.0, help="length of the fake-clock run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary history directories")
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix="omview-bench-collector-", dir="/var/tmp")
    try:
        print(f"openmosixcollector benchmark: {a.nodes} synthetic nodes, 1 s interval, files in {base}")
        print(
            "  synthetic model: rows refreshed by gossip with p=0.5/s, 30% busy nodes, ~150 local processes"
        )
        rt = run_realtime(base, a.nodes, a.seconds)
        sim = run_simulated(base, a.nodes, a.simulated_hours)
        live_rt = rt["bytes"] / max(1, rt["node_samples"])
        live = sim["bytes"] / max(1, sim["node_samples"])
        rot = sim["rot_bytes"] / max(1, sim["node_samples"])
        print()
        print(f"A real time {rt['wall']:.1f} s, {rt['ticks']} ticks, {rt['node_samples']} node-samples")
        print(
            f"  collector CPU (after the first tick) {rt['cpu']:.3f} s = {rt['cpu_pct']:.2f}% of one core   "
            f"{verdict(rt['cpu_pct'], TARGET_CPU)}"
        )
        print(
            f"    (whole process {rt['proc_cpu']:.3f} s incl. the synthetic model's {rt['model_cpu']:.3f} s,"
            " which stands in for the agent and is not counted)"
        )
        print(
            f"  live bytes/node-sample   {rt['steady']:.2f} B after the first tick   {verdict(rt['steady'], TARGET_LIVE)}"
        )
        print(
            f"    ({live_rt:.2f} B counting the file headers and first key frames of a {rt['wall']:.0f} s history)"
        )
        print(f"  process history          {rt['procs_bytes']} B in {rt['ticks']} ticks")
        print(
            f"B fake clock {a.simulated_hours:g} h, {sim['ticks']} ticks, {sim['node_samples']} node-samples"
        )
        print(f"  live bytes/node-sample   {live:.2f} B   {verdict(live, TARGET_LIVE)}")
        print(f"  rotated (xz) bytes/node-sample {rot:.2f} B   {verdict(rot, TARGET_ROTATED)}")
        print(
            f"  process history          {sim['procs_bytes'] / 1e6:.2f} MB live -> "
            f"{sim['rot_procs_bytes'] / 1e6:.2f} MB rotated"
        )
        print(f"  collector CPU per tick   {sim['cpu_per_tick'] * 1000:.2f} ms (no wire decoding)")
        amort = 100.0 * sim["compress_cpu"] / max(1, sim["ticks"])
        print(f"  reading all nodes back   {sim['read_s']:.2f} s (live files)")
        print(
            f"  compressing at rotation  {sim['compress_cpu']:.2f} s CPU = {amort:.2f}% of a core amortised;"
            f" with A: {rt['cpu_pct'] + amort:.2f}%   {verdict(rt['cpu_pct'] + amort, TARGET_CPU)}"
        )
        ok = (
            rt["cpu_pct"] + amort <= TARGET_CPU
            and max(live, rt["steady"]) <= TARGET_LIVE
            and rot <= TARGET_ROTATED
        )
        print()
        print("all targets met" if ok else "SOME TARGETS MISSED")
        return 0 if ok else 1
    finally:
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
