"""L2 agent: checks of what the root-only peer.* requests carry (job records, migration descriptions,
news about jobs), before any of it reaches the job table, a path or a process.

protocol.OPS checks only the top-level argument types; these requests nest records. Only agents send
them, over root-only sockets, but a wrong one (a bug, an older agent, root typing by hand) must be
answered BAD_ARGUMENT, and never create files: ``peer.mig.prepare {"id": null}`` once made
``incoming/None`` and ``/dev/shm/omview-in-None``.
"""

from __future__ import annotations

import os
import re
from dataclasses import fields
from typing import Any

from omview.agent.jobs.table import HINTS, JOB_ID, STREAMS, Job
from omview.agent.server import OpFault
from omview.model.protocol import INT_MAX, FaultCode

#: what source.py names a migration: SOURCE-TARGET-MILLISECONDS-HOMEPID
MIG_ID = re.compile(r"^[1-9][0-9]{0,4}-[1-9][0-9]{0,4}-[0-9]{1,16}-[1-9][0-9]{0,9}$")
#: news a hosting node sends a job's home node (peer.job.update kind -> required and optional fields)
UPDATE_KINDS: dict[str, tuple[dict[str, tuple[type, ...]], dict[str, tuple[type, ...]]]] = {
    "output": ({"stream": (str,), "offset": (int,), "data": (str,)}, {"node": (int,)}),
    "exit": ({}, {"status": (str, type(None)), "node": (int,), "out_size": (int,), "err_size": (int,),
                  "exit_code": (int,)}),
    "moved": ({"where": (int,)}, {"nmigs": (int,), "record": (dict,)}),
    "started": ({}, {"node": (int,), "pid": (int,)}),
    "lock": ({"lock": (bool,)}, {}),
    "lost": ({}, {"status": (str, type(None)), "node": (int,)}),
    # the program of a job running elsewhere, from the node hosting it (jobs/awaystats.py)
    "stats": ({"state": (str,), "cpu": (int, float), "rss": (int,), "threads": (int,), "nice": (int,)},
              {"node": (int,)}),
}  # fmt: skip
#: the JSON types of Job's fields, from their annotations (a new field with a new kind of type
#: fails here at import, not silently at a peer's request)
_ANNOTATION_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "bool": (bool,), "float": (int, float), "list[str]": (list,),
    "str | None": (str, type(None)), "list[dict[str, Any]]": (list,),
}  # fmt: skip
_JOB_TYPES = {f.name: _ANNOTATION_TYPES[str(f.type)] for f in fields(Job)}
_JOB_REQUIRED = ("id", "home", "home_pid", "argv", "cwd", "uid", "gid", "where")


def bad(op: str, what: str) -> OpFault:
    return OpFault(FaultCode.BAD_ARGUMENT, f"{op}: {what}")


def _typed(value: Any, types: tuple[type, ...]) -> bool:
    # bool is an int in Python; JSON keeps them apart, and so do we
    return isinstance(value, types) and (not isinstance(value, bool) or bool in types)


def check_fields(op: str, what: str, data: dict[str, Any], required: dict[str, tuple[type, ...]],
                 optional: dict[str, tuple[type, ...]], *, low: int = 0) -> None:  # fmt: skip
    """DATA has the REQUIRED fields and each known field has its types, integers between LOW and
    INT_MAX (nested ones are not bounded by protocol.parse_request). Unknown fields are ignored, as
    Job.from_dict does: a newer agent may send more."""
    for name in required:
        if name not in data:
            raise bad(op, f"{what} lacks {name!r}")
    for name, value in data.items():
        types = required.get(name) or optional.get(name)
        if types is None:
            continue
        if not _typed(value, types):
            raise bad(op, f"{what} field {name!r} must be {'/'.join(t.__name__ for t in types)}")
        if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= INT_MAX:
            raise bad(op, f"{what} field {name!r} must be between {low} and {INT_MAX}")


def job_id(op: str, text: str) -> str:
    if not JOB_ID.match(text):
        raise bad(op, f"{text!r} is not a job id (HOME:HOMEPID, e.g. 1:4242)")
    return text


def mig_id(op: str, value: Any) -> str:
    if not isinstance(value, str) or not MIG_ID.match(value):
        raise bad(op, f"{value!r} is not a migration id (SOURCE-TARGET-MS-HOMEPID)")
    return value


def job_record(op: str, data: Any) -> Job:
    """A job record as another agent sends it (peer.job.launch, peer.mig.restore)."""
    if not isinstance(data, dict):
        raise bad(op, "the job record must be an object")
    required = {name: _JOB_TYPES[name] for name in _JOB_REQUIRED}
    check_fields(op, "the job record", data, required, _JOB_TYPES)
    job_id(op, data["id"])
    argv, hints, cwd = data["argv"], data.get("hints", []), data["cwd"]
    if not argv or not all(isinstance(a, str) and "\0" not in a for a in argv) or not argv[0]:
        raise bad(op, "the job's argv must be a non-empty list of strings")
    if not all(isinstance(h, str) and h in HINTS for h in hints):
        raise bad(op, f"the job's hints must be among {', '.join(HINTS)}")
    if not os.path.isabs(cwd) or "\0" in cwd:
        raise bad(op, f"the job's cwd must be an absolute path, not {cwd!r}")
    if not all(isinstance(h, dict) for h in data.get("history", [])):
        raise bad(op, "the job's history must be a list of objects")
    return Job.from_dict(data)


def update(op: str, kind: str, data: dict[str, Any]) -> None:
    """peer.job.update: news of KIND with DATA."""
    if kind not in UPDATE_KINDS:
        raise bad(op, f"kind must be one of {', '.join(UPDATE_KINDS)}, not {kind!r}")
    required, optional = UPDATE_KINDS[kind]
    check_fields(op, f"{kind} news", data, required, optional)
    if kind == "output" and data["stream"] not in STREAMS:
        raise bad(op, f"stream must be one of {', '.join(STREAMS)}")


def migration(op: str, mig: dict[str, Any], *, restore: bool) -> Job | None:
    """peer.mig.prepare / restore: the migration description; the job record it carries (restore)."""
    mig_id(op, mig.get("id"))
    common: dict[str, tuple[type, ...]] = {"id": (str,), "method": (str,)}
    if restore:
        check_fields(op, "the migration", mig, {**common, "job": (dict,), "sums": (dict,)}, {"files": (list,)})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in mig["sums"].items()):
            raise bad(op, "the migration's sums must map names to strings")
        proc_check(op, [], mig.get("files", []))
        return job_record(op, mig["job"])
    check_fields(op, "the migration", mig, {**common, "job": (str,)},
                 {"uid": (int,), "bytes": (int,), "cpu_flags": (list,)})  # fmt: skip
    job_id(op, mig["job"])
    if not all(isinstance(f, str) for f in mig.get("cpu_flags", [])):
        raise bad(op, "the migration's cpu_flags must be a list of strings")
    return None


def proc_check(op: str, pids: list[Any], files: list[Any]) -> tuple[list[int], list[dict[str, Any]]]:
    """peer.proc.check: PIDs (positive integers) and files ({path, kind, size})."""
    if not all(_typed(p, (int,)) and 0 < p <= INT_MAX for p in pids):
        raise bad(op, "pids must be positive integers")
    for item in files:
        if not isinstance(item, dict):
            raise bad(op, "files must be objects {path, kind, size}")
        check_fields(op, "a file", item, {"path": (str,)},
                     {"kind": (str,), "size": (int,), "uid": (int,), "gid": (int,), "mode": (int,),
                      "access": (str,)}, low=-1)  # fmt: skip
        if not os.path.isabs(item["path"]) or "\0" in item["path"]:
            raise bad(op, f"a file's path must be absolute, not {item['path']!r}")
    return list(pids), list(files)
