"""Test job: a multi-threaded parent and a child joined by a pipe, all counting together.

Two threads of the parent add to shared counters; the child reads numbers from the pipe and echoes
`child N` to stdout; the parent prints `parent N threads=A,B`. N lines each, then status 0.
"""

from __future__ import annotations

import os
import sys
import threading
import time

n = int(sys.argv[1])
counts = [0, 0]


def spin(k: int) -> None:
    while True:
        counts[k] += 1
        time.sleep(0.01)


for k in (0, 1):
    threading.Thread(target=spin, args=(k,), daemon=True).start()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(w)
    with os.fdopen(r) as fh:
        for line in fh:
            print(f"child {line.strip()}", flush=True)
    os._exit(0)
os.close(r)
with os.fdopen(w, "w") as out:
    for i in range(n):
        print(f"parent {i} threads={counts[0]},{counts[1]}", flush=True)
        out.write(f"{i}\n")
        out.flush()
        time.sleep(0.1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
