"""The fault campaign's job (bench/faults.py): a chain of steps whose every line proves the one before.

argv: INTERVAL KIB. Step I flips one byte of a KIB KiB ballast (so its memory changes, page by page),
takes the CRC-32 of the whole ballast and chains H = sha256(H_prev, I, CRC); it prints `step I CRC H`
every INTERVAL seconds. Anything lost, repeated or restored wrong (a page, a stale image, a copy rolled
back past a printed step) breaks the chain, which bench/faults.py replays line by line (`Chain`).
SIGTERM ends it after the current step with `end I H` and exit status 7. Standard library only: it
runs under the system python inside the nodes.
"""

from __future__ import annotations

import hashlib
import signal
import sys
import time
import zlib

SEED = b"omview fault campaign"
STRIDE = 4099  # a prime: the flipped bytes walk over every page of the ballast


def ballast(kib: int) -> bytearray:
    return bytearray(hashlib.shake_256(SEED).digest(kib << 10))


def step(i: int, prev: str, buf: bytearray) -> tuple[int, str]:
    """Advance BUF by step I; returns (crc, H)."""
    pos = (i * STRIDE) % len(buf)
    buf[pos] ^= (i & 0xFF) or 0x5A
    crc = zlib.crc32(buf)
    return crc, hashlib.sha256(f"{prev} {i} {crc:08x}".encode()).hexdigest()[:16]


def main() -> int:
    interval, kib = float(sys.argv[1]), int(sys.argv[2])
    buf = ballast(kib)
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    h, i = "0" * 16, 0
    while not stop:
        crc, h = step(i, h, buf)
        print(f"step {i} {crc:08x} {h}", flush=True)
        i += 1
        time.sleep(interval)
    print(f"end {i} {h}", flush=True)
    return 7


if __name__ == "__main__":
    sys.exit(main())
