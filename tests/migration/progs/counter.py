"""Test job: prints `count I HOSTNAME` every INTERVAL seconds N times, then exits with status 7.

argv: N [INTERVAL] [BALLAST_MB]. Random ballast makes the memory image that big; "done" goes to stderr.
"""

from __future__ import annotations

import os
import sys
import time

n = int(sys.argv[1])
interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
ballast = bytearray(os.urandom(int(sys.argv[3]) << 20)) if len(sys.argv) > 3 else bytearray()
for i in range(n):
    print(f"count {i} {os.uname().nodename}", flush=True)
    time.sleep(interval)
print("done", file=sys.stderr, flush=True)
sys.exit(7)
