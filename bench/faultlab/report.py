"""The campaign's summary: runs, faults by kind, outcomes, violations with their seeds (JSON or a table)."""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from typing import Any

from faultlab.campaign import Campaign, replay_command


def summary(camp: Campaign, seconds: float) -> dict[str, Any]:
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    viol: Counter[str] = Counter()
    for r in camp.runs:
        by_kind[r.kind][r.outcome] += 1
        for what, _ in r.violations:
            viol[what] += 1
    return {
        "cluster": camp.nodes.describe(), "seed": camp.ns.seed, "runs": len(camp.runs), "jobs": camp.jobs,
        "seconds": round(seconds, 1), "steps_checked": camp.steps,
        "faults": {k: sum(c.values()) for k, c in sorted(by_kind.items())},
        "outcomes": {k: dict(c) for k, c in sorted(by_kind.items())},
        "violations": dict(viol), "lost": viol["lost"], "duplicated": viol["duplicated"],
        "failed_runs": [{"run": r.index, "seed": r.seed, "kind": r.kind, "source": r.source, "target": r.target,
                         "method": r.method, "detail": r.detail, "violations": r.violations}
                        for r in camp.runs if r.violations],
    }  # fmt: skip


def print_summary(s: dict[str, Any], ns: argparse.Namespace) -> None:
    print(f"omview fault campaign: {s['cluster']}, seed {s['seed']}, {s['runs']} runs, {s['jobs']} jobs, "
          f"{s['seconds']:.0f} s ({s['steps_checked']} job steps checked)")  # fmt: skip
    outcomes = sorted({o for c in s["outcomes"].values() for o in c})
    print(f"{'fault':<15}{'runs':>5}  " + "  ".join(f"{o:>12}" for o in outcomes))
    for kind, c in s["outcomes"].items():
        print(f"{kind:<15}{s['faults'][kind]:>5}  " + "  ".join(f"{c.get(o, 0):>12}" for o in outcomes))
    total = Counter[str]()
    for c in s["outcomes"].values():
        total.update(c)
    print(f"{'all':<15}{s['runs']:>5}  " + "  ".join(f"{total.get(o, 0):>12}" for o in outcomes))
    v = s["violations"]
    others = ", ".join(f"{n} {k}" for k, n in sorted(v.items()) if k not in ("lost", "duplicated"))
    print(f"violations: {s['lost']} lost, {s['duplicated']} duplicated, {others or 'no other'}")
    for r in s["failed_runs"]:
        print(f"  run {r['run']} seed {r['seed']} {r['kind']}: {r['violations']}")
        print(f"    replay: {replay_command(ns, r['seed'], r['kind'])}")
