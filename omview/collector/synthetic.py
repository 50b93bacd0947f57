"""L3 collector: a synthetic cluster that drives the collector in tests and the benchmark.

It stands in for the agent, not for the collector: every call produces the next second of a
plausible cluster (gossip-refreshed node rows, a busy/idle mix, nodes going down and coming
back, a process list with churn). With ``wire=True`` rows pass through the agent's JSON wire
form and are decoded as AgentClient does, so the collector pays the real decoding cost.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from omview.collector.source import SourceUnavailable
from omview.model.cluster import NodeInfo, ProcessInfo

_GIB = 1 << 30
_KIB = 1 << 10


class SyntheticSource:
    """A deterministic (seeded) cluster of ``n`` nodes; one call of nodes() = one second.

    Model (documented in docs/collector.md, section "Benchmark"): each node's row is refreshed
    by gossip with probability ``fresh`` per second (otherwise the collector's agent still has
    the previous row); a refreshed busy node changes load, utilisation and memory, an idle one
    mostly only its free memory. Every ``churn`` seconds on average a node goes down for a
    while and comes back.
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int = 1,
        busy: float = 0.3,
        fresh: float = 0.5,
        churn: float = 600.0,
        procs: int = 150,
        wire: bool = False,
        local_id: int = 1,
    ) -> None:
        self.rng = random.Random(seed)
        self.wire = wire
        self.local_id = local_id
        self.fresh = fresh
        self.churn = churn
        self.step = 0
        self.model_cpu = 0.0  # thread CPU seconds spent generating data (the "agent's" share)
        self.unavailable = False  # tests flip this to simulate a dead agent
        self.absent: set[int] = set()  # node IDs missing from the table (node left)
        self._events: list[tuple[str, Any]] = []
        self.rows: dict[int, dict[str, Any]] = {}
        self._busy: dict[int, bool] = {}
        self._down_until: dict[int, int] = {}
        for i in range(n):
            nid = i + 1
            cpus = self.rng.choice((2, 4, 8, 16))
            tmem = self.rng.choice((4, 8, 16, 32, 64)) * _GIB
            self._busy[nid] = self.rng.random() < busy
            self.rows[nid] = {
                "id": nid,
                "address": f"10.77.{nid >> 8}.{nid & 255}",
                "status": "up",
                "hostname": f"node{nid:03d}",
                "load": 0,
                "speed": self.rng.choice((10000, 12500, 15217, 20000)),
                "cpus": cpus,
                "tmem": tmem,
                "mem": tmem * 3 // 4,
                "rmem": tmem // 2,
                "util": 0,
                "age": 0.0,
                "block": False,
                "quiet": False,
                "stay": False,
                "protocol": 1,
                "version": "0.1.0",
            }
        self._procs: dict[int, dict[str, Any]] = {}
        self._next_pid = 300
        for _ in range(procs):
            self._spawn()

    # -- model --------------------------------------------------------------------------

    def _spawn(self) -> None:
        pid = self._next_pid
        self._next_pid += self.rng.randint(1, 7)
        name = self.rng.choice(("bash", "sshd", "x-pvmpov", "python3", "make", "cc1", "sleep", "crond"))
        busy = name in ("x-pvmpov", "cc1", "python3") and self.rng.random() < 0.5
        self._procs[pid] = {
            "pid": pid,
            "ppid": 1,
            "uid": 1000,
            "user": "alice",
            "state": "R" if busy else "S",
            "nice": 0,
            "cpu": 97.0 if busy else 0.0,
            "rss": self.rng.randint(1, 400) * 1024 * _KIB // 4,
            "threads": 1,
            "name": name,
            "cmdline": [f"/usr/bin/{name}", f"--job={pid}"],
            "home": self.local_id,
            "where": self.local_id,
            "lock": False,
            "nmigs": 0,
            "cantmove": "",
            "job": "",
        }

    def _advance(self) -> None:
        rng = self.rng
        self.step += 1
        for nid, row in self.rows.items():
            until = self._down_until.get(nid)
            if until is not None:
                if self.step >= until:
                    del self._down_until[nid]
                    row["status"] = "up"
                    self._events.append(("node.up", {"node": nid}))
                continue
            if self.churn and rng.random() < 1.0 / self.churn / max(1, len(self.rows)) * 4:
                self._down_until[nid] = self.step + rng.randint(10, 120)
                row["status"] = "down"
                self._events.append(("node.down", {"node": nid}))
                continue
            if rng.random() >= self.fresh:
                continue  # no fresh gossip about this node this second
            if self._busy[nid]:
                cap = row["cpus"] * 100
                row["load"] = max(
                    0, min(cap * 2, row["load"] + rng.randint(-15, 15) + (60 if row["load"] < 50 else 0))
                )
                row["util"] = max(
                    0, min(100, row["util"] + rng.randint(-4, 4) + (20 if row["util"] < 40 else 0))
                )
                row["mem"] = max(0, row["mem"] + rng.randint(-64, 64) * 16 * _KIB)
                row["rmem"] = max(0, row["rmem"] + rng.randint(-64, 64) * 16 * _KIB)
                if rng.random() < 0.002:
                    self._busy[nid] = False
            else:
                if row["load"]:
                    row["load"] = row["load"] * 9 // 10
                if row["util"]:
                    row["util"] = row["util"] * 4 // 5
                if rng.random() < 0.3:
                    row["rmem"] = max(0, row["rmem"] + rng.randint(-8, 8) * 4 * _KIB)
                if rng.random() < 0.001:
                    self._busy[nid] = True
        # the local process list: a few busy ones change, a little churn
        for p in self._procs.values():
            if p["state"] == "R":
                p["cpu"] = float(max(0, min(100, round(p["cpu"]) + rng.randint(-3, 3))))
        if rng.random() < 0.05:
            self._spawn()
        if rng.random() < 0.05 and len(self._procs) > 20:
            victim = rng.choice(list(self._procs))
            del self._procs[victim]
        if rng.random() < 0.01:
            p = rng.choice(list(self._procs.values()))
            if not p["lock"]:
                p["where"] = rng.randint(1, len(self.rows))
                p["nmigs"] += 1
                # shaped like the agent's migration record (docs/agent.md) so the metrics see one;
                # the numbers derive from the process, not the rng, to keep seeded runs unchanged
                self._events.append(
                    (
                        "migration.done",
                        {
                            "pid": p["pid"],
                            "to": p["where"],
                            "source": self.local_id,
                            "target": p["where"],
                            "result": "ok",
                            "reason": "balance",
                            "bytes": p["rss"],
                            "frozen_s": round(0.01 + p["rss"] / 2e10, 3),
                            "total_s": round(0.2 + p["rss"] / 2e8, 3),
                        },
                    )
                )

    # -- Source -------------------------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        if self.unavailable:
            raise SourceUnavailable("synthetic agent switched off")
        t0 = time.thread_time()
        self._advance()
        rows = [r for nid, r in self.rows.items() if nid not in self.absent]
        if self.wire:
            data = json.dumps({"id": 2, "result": rows}, separators=(",", ":")).encode()
            self.model_cpu += time.thread_time() - t0
            # what AgentClient.call + nodes() do with the reply line
            return [NodeInfo.from_dict(d) for d in json.loads(data)["result"]]
        out = [NodeInfo.from_dict(r) for r in rows]
        self.model_cpu += time.thread_time() - t0
        return out

    def processes(self) -> list[ProcessInfo]:
        if self.unavailable:
            raise SourceUnavailable("synthetic agent switched off")
        t0 = time.thread_time()
        rows = list(self._procs.values())
        if self.wire:
            data = json.dumps({"id": 3, "result": rows}, separators=(",", ":")).encode()
            self.model_cpu += time.thread_time() - t0
            return [ProcessInfo.from_dict(d) for d in json.loads(data)["result"]]
        out = [ProcessInfo.from_dict(r) for r in rows]
        self.model_cpu += time.thread_time() - t0
        return out

    def events(self) -> list[tuple[str, Any]]:
        out, self._events = self._events, []
        return out

    def close(self) -> None:
        pass
