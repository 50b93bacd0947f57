"""L2 agent: mosrun jobs - the job record (home node + home PID identity, where it runs, lock,
hints, output offsets, history), its persistent store, the shell-free launch argv and the job's
files (stdout, stderr and the exit status that jobinit writes).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from omview.agent.node.state import atomic_write
from omview.model.procfs import all_pids

log = logging.getLogger(__name__)

JOBS_FILE = "jobs.json"
JOBS_DIR = "jobs"
STREAMS = ("out", "err")
#: run hints accepted from mosrun (openMosix cpujob/iojob and the decay modes)
HINTS = ("cpujob", "iojob", "nodecay", "slowdecay", "fastdecay")
JOB_ID = re.compile(r"^([1-9][0-9]{0,4}):([1-9][0-9]{0,9})$")
#: biggest output chunk one relay or job.output reply carries
CHUNK = 256 * 1024


def parse_job_id(text: str) -> tuple[int, int] | None:
    """'3:4242' -> (3, 4242), None when it is not a job id."""
    m = JOB_ID.match(text.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def exit_code(status: str | None) -> int:
    """jobinit's 'exit N' / 'signal N' as a shell exit code (128+N for a signal)."""
    if not status:
        return 255
    kind, _, num = status.partition(" ")
    try:
        n = int(num)
    except ValueError:
        return 255
    return 128 + n if kind == "signal" else n


@dataclass
class Job:
    """One mosrun job, as its home agent and the agent hosting it record it."""

    id: str
    home: int
    home_pid: int
    argv: list[str]
    cwd: str
    uid: int
    gid: int
    where: int
    home_start: int = 0  # start time of the deputy, so a reused PID is never taken for it
    lock: bool = False
    hints: list[str] = field(default_factory=list)
    pid: int = 0  # global PID of the job's namespace init on the node that hosts it
    pid_start: int = 0
    nmigs: int = 0
    state: str = "running"  # running | exited | lost
    status: str | None = None  # "exit N" / "signal N" once it ended
    out_sent: int = 0  # bytes of stdout already relayed to the home node
    err_sent: int = 0
    exit_reported: bool = False  # the home node has the exit status
    created: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    #: not started with mosrun: adopted when it first migrated (home PID = its PID then; no deputy)
    adopted: bool = False
    #: home side: why the job was lost with the node that hosted it (omview.agent.jobs.hostwatch)
    lost: str = ""

    @property
    def dirname(self) -> str:
        return self.id.replace(":", "-")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def public(self) -> dict[str, Any]:
        """What job.list / job.status show (no environment, history trimmed)."""
        d = self.to_dict()
        d["history"] = self.history[-20:]
        d["exit_code"] = exit_code(self.status) if self.status else None
        return d


class JobStore:
    """The jobs this node knows (its own jobs wherever they run, and its guests), in jobs.json."""

    def __init__(self, state_dir: str) -> None:
        self.dir = state_dir
        self.jobs_dir = os.path.join(state_dir, JOBS_DIR)
        os.makedirs(self.jobs_dir, mode=0o755, exist_ok=True)
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self._load()

    def _load(self) -> None:
        path = os.path.join(self.dir, JOBS_FILE)
        try:
            with open(path, "rb") as fh:
                data = json.loads(fh.read())
            self.jobs = {d["id"]: Job.from_dict(d) for d in data["jobs"]}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = f"{path}.corrupt"
            log.error("job records %s unreadable (%s); moved to %s", path, exc, aside)
            os.replace(path, aside)

    def save(self) -> None:
        with self.lock:
            data = {"jobs": [j.to_dict() for j in self.jobs.values()]}
            atomic_write(os.path.join(self.dir, JOBS_FILE), json.dumps(data, indent=1).encode() + b"\n")

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)

    def put(self, job: Job) -> None:
        with self.lock:
            self.jobs[job.id] = job
            self.save()

    def remove(self, job_id: str) -> None:
        with self.lock:
            if self.jobs.pop(job_id, None) is not None:
                self.save()

    def all(self) -> list[Job]:
        with self.lock:
            return list(self.jobs.values())

    def empty(self) -> bool:
        """No job at all (without the lock: one read of a dict's size, for the event loop)."""
        return not self.jobs

    def job_dir(self, job: Job) -> str:
        return os.path.join(self.jobs_dir, job.dirname)

    def file(self, job: Job, name: str) -> str:
        return os.path.join(self.jobs_dir, job.dirname, name)


#: set_aside() names a leftover directory <dirname>.old-<seconds>[-n]
OLD_MARK = ".old-"


def set_aside(job_dir: str) -> None:
    """Move a leftover directory of an earlier job with the same id out of the way, under a name no
    other leftover has (two jobs of one deputy PID can end within the same second). The new job's
    record replaces the old one, so nothing reads it any more: prune_set_aside() removes it."""
    base = f"{job_dir}{OLD_MARK}{int(time.time())}"
    for n in range(1000):
        try:
            os.rename(job_dir, base if n == 0 else f"{base}-{n}")
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise FileExistsError(f"cannot set {job_dir} aside: 1000 leftovers of this second already")


def prune_set_aside(jobs_dir: str) -> int:
    """Remove the directories set_aside() left in JOBS_DIR once nothing uses them: jobinit wrote that
    job's exit status (its PID namespace is gone with it), or no process has its cwd or an open file
    there (one pass over /proc, only when some leftover has no status). Returns how many went.

    Called at the agent's start and whenever a job ends, so they never pile up: a client that starts
    job after job (the GUI, one connection) gets the same job id every time."""
    try:
        old = sorted(os.path.join(jobs_dir, n) for n in os.listdir(jobs_dir) if OLD_MARK in n)
    except OSError:
        return 0
    busy: set[str] | None = None
    removed = 0
    for path in old:
        if not os.path.isfile(os.path.join(path, "status")):
            if busy is None:
                busy = _dirs_in_use(jobs_dir)
            if path in busy:
                continue  # an orphan of that job still runs (killed, not yet gone)
        shutil.rmtree(path, ignore_errors=True)
        removed += not os.path.lexists(path)
    return removed


def _dirs_in_use(jobs_dir: str) -> set[str]:
    """The entries of JOBS_DIR some process has its cwd or an open file in."""
    prefix = jobs_dir.rstrip("/") + "/"
    out: set[str] = set()
    for pid in all_pids():
        try:
            links = [f"/proc/{pid}/cwd", *(f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd"))]
        except OSError:
            continue
        for link in links:
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if target.startswith(prefix):
                out.add(prefix + target[len(prefix) :].split("/", 1)[0])
    return out


def launch_argv(job: Job, job_dir: str, python: str = sys.executable) -> list[str]:
    """unshare + jobinit + the user's argv: no shell ever parses the command."""
    return [
        "unshare", "--pid", "--fork", python, "-I", "-m", "omview.agent.jobs.jobinit",
        "--out", os.path.join(job_dir, "out"), "--err", os.path.join(job_dir, "err"),
        "--status", os.path.join(job_dir, "status"), "--cwd", job.cwd,
        "--uid", str(job.uid), "--gid", str(job.gid), "--", *job.argv,
    ]  # fmt: skip


def read_chunk(path: str, offset: int, limit: int = CHUNK) -> bytes:
    """Up to LIMIT bytes of a job output file from OFFSET (empty when nothing new or no file)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(limit)
    except OSError:
        return b""


def read_status(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return text if re.fullmatch(r"(exit|signal) -?[0-9]+", text) else None


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
