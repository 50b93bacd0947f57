"""The invariants after every run: exactly one live copy of the job on one node, not stopped; its
step chain continuous; the deputy's view (job.status on the home node and on the hosting node)
matching the copy; no leftover images, tmpfs image directories, job-directory copies, temporary
files or criu processes. A whole machine killed as the job's host may take the job with it: then
the home deputy must say so (exit 137, "the job is lost") and no copy may be left anywhere."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from faultlab.inject import Call, Run
from faultlab.job import Job
from faultlab.nodes import Nodes, Proc
from omview.model.errors import OmviewError

SETTLE = 90.0  # after a run, how long the job may take to be running once, visibly, everywhere
#: after a host machine was killed and booted again: the home node learns only once it answers
SETTLE_MACHINE = 300.0
LOST_WITH_NODE = "lost with its VM"


class Checker:
    def __init__(self, nodes: Nodes) -> None:
        self.nodes = nodes
        self.reported: set[str] = set()  # a leftover is one violation, in the run that made it
        self.home_pids: set[int] = set()

    def check(self, run: Run, job: Job, calls: list[Call], t0: float) -> None:
        """Wait (bounded) for the job to settle, then check every invariant; record the outcome."""
        host_died = run.machine != 0 and run.machine == run.source
        deadline = time.monotonic() + (SETTLE_MACHINE if run.machine else SETTLE)
        seen_before = job.check_output()
        last: dict[str, Any] = {}
        while True:
            procs = self.nodes.processes()
            inits = job.copies(procs)
            n_copies = sum(len(v) for v in inits.values())
            stopped = [p.pid for ps in inits.values() for p in ps if p.state in "Tt"]
            progs = job.programs(procs, inits)
            stopped += [p.pid for ps in progs.values() for p in ps if p.state in "Tt"]
            status = self._status(job)
            steps = job.check_output()
            last = {"inits": {n: [p.pid for p in ps] for n, ps in inits.items()},
                    "programs": {n: [p.pid for p in ps] for n, ps in progs.items()}, "stopped": stopped,
                    "status": status, "steps": steps}  # fmt: skip
            ok = (n_copies == 1 and not stopped and sum(len(v) for v in progs.values()) == 1
                  and set(progs) == set(inits) and status.get("where") in inits and status.get("state") == "running"
                  and steps > seen_before)  # fmt: skip
            if ok and self._hosting_agrees(job, next(iter(inits)), inits):
                break
            if host_died and n_copies == 0 and job.deputy.poll() is not None:
                break  # the deputy ended: lost with the machine (checked below)
            if job.problems or (job.deputy.poll() is not None and not host_died) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        n_copies = sum(len(v) for v in last["inits"].values())
        if job.problems:
            run.violations.append(("chain", "; ".join(job.problems[:3])))
        if host_died and n_copies == 0:
            self._lost_with_machine(run, job, last)
            return
        if job.deputy.poll() is not None:
            run.violations.append(("deputy", f"the deputy exited {job.deputy.returncode}: {job.err_text()}"))
        if n_copies == 0:
            run.violations.append(("lost", f"no live copy of {job.id} on any node ({last})"))
        elif n_copies > 1:
            run.violations.append(("duplicated", f"{n_copies} live copies of {job.id}: {last['inits']}"))
        elif last["stopped"]:
            run.violations.append(("stopped", f"the copy is stopped: {last}"))
        elif last["steps"] <= seen_before:
            run.violations.append(("stalled", f"no new step within the settle time: {last}"))
        elif last["status"].get("where") not in last["inits"] or last["status"].get("state") != "running":
            run.violations.append(("view", f"home node says {last['status']}, the copy is on "
                                           f"{list(last['inits'])}"))  # fmt: skip
        elif not self._hosting_agrees(job, next(iter(last["inits"])), None):
            run.violations.append(("view", f"the hosting node's record does not match its copy: {last}"))
        where = next(iter(last["inits"])) if n_copies == 1 else None
        if not run.violations:
            self.leftovers(run, job, where)
        run.outcome = self.outcome(run, job.id, calls, where, t0)

    def _lost_with_machine(self, run: Run, job: Job, last: dict[str, Any]) -> None:
        """The job's host machine died before the target committed: the documented outcome is a lost
        job the home deputy reports (docs/cluster.md), never a copy restored from half a migration."""
        try:
            rc = job.deputy.wait(30)
        except Exception:
            rc = None
        if rc != 137 or "the job is lost" not in job.err_text(2000):
            run.violations.append(("deputy", f"job {job.id} went with VM {run.machine}, but the deputy exited "
                                              f"{rc}: {job.err_text()}"))  # fmt: skip
        elif last["status"].get("state") != "lost":
            run.violations.append(("view", f"home node says {last['status']} of a job lost with its VM"))
        if not run.violations:
            self.leftovers(run, None, None)
        run.outcome = LOST_WITH_NODE

    def _status(self, job: Job) -> dict[str, Any]:
        try:
            return dict(self.nodes.call(job.home, "job.status", timeout=20, job=job.id))
        except (OmviewError, OSError) as exc:
            return {"error": str(exc)}

    def _hosting_agrees(self, job: Job, node: int, inits: dict[int, list[Proc]] | None) -> bool:
        """The node the copy is on has the job running there, with that init's PID."""
        if inits is None:
            inits = job.copies(self.nodes.processes())
        try:
            st = self.nodes.call(node, "job.status", timeout=20, job=job.id)
        except (OmviewError, OSError):
            return False
        return bool(st.get("where") == node and st.get("state") == "running"
                    and st.get("pid") in [p.pid for p in inits.get(node, [])])  # fmt: skip

    def leftovers(self, run: Run, job: Job | None, where: int | None, ids: list[int] | None = None,
                  wait: float = 15.0) -> None:  # fmt: skip
        """Images, tmpfs image directories, job-directory copies, temporary files and criu processes
        that outlived the migrations (logs and fence markers are kept on purpose: docs/migration.md)."""
        deadline = time.monotonic() + wait
        while True:
            found = self._find(job, where, ids or self.nodes.ids)
            if not found or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        for what in found:
            if what not in self.reported:
                self.reported.add(what)
                run.violations.append(("leftover", what))

    def _find(self, job: Job | None, where: int | None, ids: list[int]) -> list[str]:
        found: list[str] = []
        ours = tuple(f"-{pid}" for pid in self.home_pids)
        shm: set[str] = set()
        for n in ids:
            st = self.nodes.state(n)
            shm |= {e for e in st.get("shm", []) if e.startswith(("omview-in-", "omview-out-")) and e.endswith(ours)}
            for sub in ("mig", "incoming"):
                for entry, inner in st.get(sub, {}).items():
                    for name, is_dir in inner:
                        if name == "images" or is_dir or name.endswith(".tmp"):
                            found.append(f"node {n}: {sub}/{entry}/{name}")
            for name in st.get("jobs", []):
                if ".stale-" in name or name.endswith(".tmp"):
                    found.append(f"node {n}: jobs/{name}")
                elif job is not None and name == job.dirname and n != where:
                    found.append(f"node {n}: jobs/{name} of a job that does not run there")
            found += [f"node {n}: {e}" for e in st.get("var", []) if e.endswith(".tmp")]
        found += [f"/dev/shm/{e}" for e in sorted(shm)]
        for n, plist in self.nodes.processes().items():
            if n in ids:
                found += [f"node {n}: criu process {p.pid} ({p.cmdline[:60]!r})" for p in plist
                          if p.cmdline.split(b"\0")[0].rsplit(b"/", 1)[-1] == b"criu"]  # fmt: skip
        return found

    def outcome(self, run: Run, job_id: str, calls: list[Call], where: int | None, t0: float) -> str:
        if where is None:
            return "violation"
        if where != run.source:
            return "moved"
        if any(c.code == "LOST" for c in calls):
            return "client lost, stayed"
        if any(c.result for c in calls):
            return "moved back"  # concurrent: one moved it away, the other brought it back?
        dumped = False
        since = time.time() - (time.monotonic() - t0) - 1
        with contextlib.suppress(OmviewError, OSError):
            hist = self.nodes.call(run.source, "migration.history", timeout=20, limit=10)["migrations"]
            dumped = any(rec.get("job") == job_id and rec.get("started", 0) >= since
                         and "CRIU logs kept" in str(rec.get("error")) for rec in hist)  # fmt: skip
        return "rolled back" if dumped else "refused"
