"""migration.phase events (docs/agent.md, "Migration events") on the netns cluster: a running
migration announces each phase and the copy's progress, rate-limited, in the documented shape,
between the unchanged migration.started and migration.done."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from omview.testbed import Cluster
from tests.migration.helpers import COUNTER, PY, Deputy, all_up, client, migrate
from tests.migration.test_migration_faults import hook

pytestmark = pytest.mark.cluster

PHASE_KEYS = {"id", "job", "pid", "source", "target", "method", "phase", "bytes", "total_bytes", "elapsed_s"}


def test_a_migration_announces_its_phases(make_cluster: Callable[..., Cluster]) -> None:
    cluster = all_up(make_cluster(2))
    hook(cluster, 1, "method", "images")  # all of the job's memory is copied before it resumes
    hook(cluster, 1, "stall-transfer", "1.5")  # the copy takes a while: progress events come meanwhile
    dep = Deputy(cluster, 1, [PY, COUNTER, "100000", "0.05"])
    try:
        dep.wait_started()
        with client(cluster, 1) as events:
            events.call("events.subscribe", topics=["migration"])
            r = migrate(cluster, 1, dep.pid, 2)
            assert r.returncode == 0, r.stderr
            got: list[tuple[str, Any]] = []
            while not got or got[-1][0] not in ("migration.done", "migration.failed"):
                got.append(events.next_event(30))
    finally:
        dep.proc.kill()
        dep.proc.wait(10)
    names = [n for n, _ in got]
    assert names[0] == "migration.started" and names[-1] == "migration.done", got
    started, done = got[0][1], got[-1][1]
    assert started["result"] == "running" and done["result"] == "ok" and done["bytes"] > 0
    phases = [d for n, d in got if n == "migration.phase"]
    assert all(set(d) == PHASE_KEYS for d in phases), phases
    for d in phases:
        assert {k: d[k] for k in ("id", "job", "pid", "source", "target", "method")} == \
            {"id": started["id"], "job": dep.job, "pid": dep.pid, "source": 1, "target": 2, "method": "images"}
    order = [d["phase"] for d in phases]
    distinct = [p for i, p in enumerate(order) if i == 0 or order[i - 1] != p]
    assert distinct == ["checking", "dumping", "copying", "restoring"], order
    copying = [d for d in phases if d["phase"] == "copying"]
    total = copying[0]["total_bytes"]
    assert total == done["bytes"] and all(d["total_bytes"] == total for d in copying)
    sent = [d["bytes"] for d in copying]
    assert sent == sorted(sent) and sent[0] == 0 and sent[-1] == total, sent
    assert 0 < sent[1] < total or len(sent) == 2, sent  # the stall holds the copy after its first chunks
    # rate-limited: progress at most every 0.25 s (the last one, "all sent", may come sooner)
    times = [d["elapsed_s"] for d in copying]
    assert all(b - a >= 0.2 for a, b in zip(times[:-2], times[1:-1], strict=True)), times
    span = times[-1] - times[0]
    assert len(copying) <= 3 + 4 * span, (len(copying), span)
    assert [d["elapsed_s"] for d in phases] == sorted(d["elapsed_s"] for d in phases)
