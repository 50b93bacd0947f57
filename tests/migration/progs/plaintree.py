"""Test program, not a mosrun job: a parent and a child joined by a pipe, counting into files.

argv: DIR. Writes DIR/pids ("PARENT CHILD", PIDs as seen in its own PID namespace), then every 0.1 s
the parent appends N to DIR/parent and sends N down the pipe; the child appends what it reads to
DIR/child and exits when the pipe closes (the parent ended). Runs until killed.
"""

from __future__ import annotations

import os
import sys
import time

d = sys.argv[1]
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.close(w)
    with os.fdopen(r) as fh, open(os.path.join(d, "child"), "a", buffering=1) as out:
        for line in fh:
            out.write(line)
    os._exit(0)
os.close(r)
tmp = os.path.join(d, "pids.tmp")
with open(tmp, "w") as fh:
    fh.write(f"{os.getpid()} {child}\n")
os.replace(tmp, os.path.join(d, "pids"))
n = 0
with os.fdopen(w, "w", buffering=1) as pipe, open(os.path.join(d, "parent"), "a", buffering=1) as out:
    while True:
        out.write(f"{n}\n")
        pipe.write(f"{n}\n")
        n += 1
        time.sleep(0.1)
