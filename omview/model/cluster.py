"""L0 model: what a node, its admin flags and its processes look like (stdlib only).

These frozen dataclasses are what crosses every boundary: agent -> wire -> client -> GUI
thread. ``to_dict``/``from_dict`` are the JSON form used on the wire and in files.

Units (the openMosix conventions, documented in the README):
  speed   integer; STD_SPEED (10000) is the reference CPU, bigger is faster
  load    integer; 0 = idle, 100 = one reference-speed CPU kept fully busy
  memory  bytes (tmem total, mem available as omview believes, rmem free as Linux believes)
  util    percent of the node's CPU capacity in use, 0..100
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

#: The yardstick: a node of this speed running one CPU-bound process has load 100.
STD_SPEED = 10000
#: openMosix defaults for the decay parameters (per mille kept each decay interval).
DEFAULT_SLOW_DECAY = 975
DEFAULT_FAST_DECAY = 926
DEFAULT_DECAY_INTERVAL = 1
#: Node IDs are 16 bit, like openMosix (autodiscovery uses the low 16 bits of the IPv4 address).
MIN_NODE_ID = 1
MAX_NODE_ID = 65535

T = TypeVar("T")


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a dataclass from a dict, ignoring keys a newer peer may have added."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


def valid_node_id(node_id: object) -> bool:
    """True for an int in the openMosix node-ID range (1..65535)."""
    return isinstance(node_id, int) and not isinstance(node_id, bool) and MIN_NODE_ID <= node_id <= MAX_NODE_ID


@dataclass(frozen=True)
class Flags:
    """A node's admin switches, with openMosix names and meanings."""

    stay: bool = False  # no automatic migration away from this node
    lstay: bool = False  # local processes stay home
    block: bool = False  # refuse arriving guest processes
    quiet: bool = False  # stop exchanging load information
    speed: int = STD_SPEED
    decay_interval: int = DEFAULT_DECAY_INTERVAL  # seconds
    slow_decay: int = DEFAULT_SLOW_DECAY  # per mille
    fast_decay: int = DEFAULT_FAST_DECAY  # per mille

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Flags:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class NodeInfo:
    """One row of the cluster table (what /proc/hpc/nodes/<id>/ held)."""

    id: int
    address: str
    status: str  # "up" or "down"
    hostname: str = ""
    load: int = 0
    speed: int = STD_SPEED
    cpus: int = 1
    tmem: int = 0
    mem: int = 0
    rmem: int = 0
    util: int = 0
    #: seconds since this node's information was fresh at the node that reports it
    age: float = 0.0
    block: bool = False
    quiet: bool = False
    stay: bool = False
    protocol: int = 1
    version: str = ""

    @property
    def up(self) -> bool:
        return self.status == "up"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeInfo:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class ProcessInfo:
    """One process as the agent lists it, with the openMosix per-process fields."""

    pid: int
    ppid: int
    uid: int
    user: str
    state: str  # one letter, as in /proc/<pid>/stat
    nice: int
    cpu: float  # percent of one CPU over the last sample interval
    rss: int  # bytes
    threads: int
    name: str
    cmdline: tuple[str, ...]
    home: int  # node ID of the home node
    where: int  # node ID the process runs on now
    lock: bool = False
    nmigs: int = 0
    cantmove: str = ""  # empty when migratable, else the reason
    job: str = ""  # cluster job id (home:homepid) for mosrun jobs, else empty
    #: for the plumbing of a mosrun job (unshare, jobinit, the program under its deputy): the PID of the
    #: row that stands for the job; 0 for every other process (procs.list omits helpers unless asked)
    helper_of: int = 0
    #: a job whose program runs on another node shows the state, CPU, memory, threads and nice that
    #: node reports: 0.0 while its reports are current (and for every process measured here), else
    #: the age in seconds of the last report shown (the node is down or slow), or -1.0 when it has
    #: not reported yet (the values are the home node's record's)
    stats_age: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cmdline"] = list(self.cmdline)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessInfo:
        if data.keys() == _PROC_FIELDS:
            # an agent's row has every field and nothing else: fill the instance directly. A client
            # decodes 5,000 rows a second, and the frozen dataclass's __init__ (object.__setattr__ per
            # field) was most of that (bench/procs.py)
            obj = object.__new__(cls)
            obj.__dict__.update(data)
            obj.__dict__["cmdline"] = tuple(data["cmdline"])
            return obj
        d = dict(data)
        d["cmdline"] = tuple(d.get("cmdline", ()))
        return _from_dict(cls, d)


_PROC_FIELDS = frozenset(f.name for f in fields(ProcessInfo))
#: the column order of a process table (procs.list with ``table: true``)
PROC_COLUMNS = tuple(f.name for f in fields(ProcessInfo))


def proc_table(procs: list[ProcessInfo]) -> dict[str, Any]:
    """Processes as one table: the field names once, then a list of values per process. Less than
    half the JSON of a list of dicts, and a client decodes it in less than half the time: the GIL is
    held for the whole ``json.loads`` of a reply, and with 5,000 rows a second that stalled the GUI
    thread while a lane thread decoded (bench/procs.py)."""
    cols = PROC_COLUMNS
    cmd = cols.index("cmdline")
    rows = []
    for p in procs:
        row = [getattr(p, name) for name in cols]
        row[cmd] = list(p.cmdline)
        rows.append(row)
    return {"fields": list(cols), "rows": rows}


def procs_from_table(table: dict[str, Any]) -> list[ProcessInfo]:
    """The processes of a proc_table() (fields a newer agent added are ignored, as by from_dict)."""
    names = table["fields"]
    rows = table["rows"]
    if tuple(names) != PROC_COLUMNS:
        return [ProcessInfo.from_dict(dict(zip(names, row, strict=True))) for row in rows]
    new = object.__new__
    out = []
    for row in rows:
        obj = new(ProcessInfo)
        d = obj.__dict__
        d.update(zip(names, row, strict=True))  # the same direct fill as from_dict, for the same reason
        d["cmdline"] = tuple(d["cmdline"])
        out.append(obj)
    return out
