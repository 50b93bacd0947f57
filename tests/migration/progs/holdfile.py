"""Test job: opens PATH once, then prints `count I HOSTNAME FIRST-LINE-OF-PATH` every INTERVAL seconds
N times, reading through the descriptor it opened (pread), then exits with status 7.

argv: PATH N [INTERVAL]
"""

from __future__ import annotations

import os
import sys
import time

fd = os.open(sys.argv[1], os.O_RDONLY)
n = int(sys.argv[2])
interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
for i in range(n):
    first = os.pread(fd, 64, 0).decode(errors="replace").split("\n")[0]
    print(f"count {i} {os.uname().nodename} {first}", flush=True)
    time.sleep(interval)
sys.exit(7)
