"""What one node holds, read where the node's files are (run inside a VM as a script, or called on
the host with a namespace node's root): its live processes, and the migration state on its disk
that the leftover check looks at. Standard library only: in a VM it runs under the guest's python3.

    python3 scan.py procs          -> JSON [[pid, ppid, state, cmdline-hex], ...]
    python3 scan.py state ROOT     -> JSON of state(ROOT)
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

STATE = "var/lib/omview"  # the agent's state dir, relative to a node's root


def procs(proc: str = "/proc") -> list[tuple[int, int, str, bytes]]:
    """(pid, ppid, state, cmdline) of every live process under PROC (zombies left out)."""
    out = []
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as fh:
                stat = fh.read()
            with open(f"{proc}/{name}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        rest = stat[stat.rfind(b")") + 2 :].split()
        if len(rest) < 2 or rest[0] in (b"Z", b"X"):
            continue
        out.append((int(name), int(rest[1]), rest[0].decode(), cmd))
    return out


def state(root: str) -> dict[str, Any]:
    """The entries of ROOT's /dev/shm, of var/lib/omview, of its jobs dir, and of each migration's dir
    in mig/ and incoming/ (name, is a real directory), as the leftover check needs them."""
    var = os.path.join(root, STATE)

    def names(path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except OSError:
            return []

    def dirs(sub: str) -> dict[str, list[tuple[str, bool]]]:
        out: dict[str, list[tuple[str, bool]]] = {}
        try:
            entries = list(os.scandir(os.path.join(var, sub)))
        except OSError:
            return out
        for entry in entries:
            inner = []
            for name in names(entry.path):
                p = os.path.join(entry.path, name)
                inner.append((name, os.path.isdir(p) and not os.path.islink(p)))
            out[entry.name] = inner
        return out

    return {"shm": names(os.path.join(root, "dev/shm")), "var": names(var), "jobs": names(os.path.join(var, "jobs")),
            "mig": dirs("mig"), "incoming": dirs("incoming")}  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1] == "procs":
        print(json.dumps([[p, pp, st, cmd.hex()] for p, pp, st, cmd in procs()]))
    else:
        print(json.dumps(state(sys.argv[2])))
