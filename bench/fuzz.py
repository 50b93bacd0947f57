"""Long fuzz run against one real agent (issue 13): hostile lines and every op with random arguments,
as root and as uid 65534; prints how many requests, the faults by code, and the agent's memory.

Run as root:  .venv/bin/python bench/fuzz.py [--requests 20000] [--seed N]

The CI test (tests/agent/test_agent_fuzz.py) asserts the same properties on fewer requests: every
line gets exactly one answer, a result or a fault other than INTERNAL, the connection stays, and
the agent's log holds no traceback. Here the run also shows that the agent's memory does not grow
with the number of bad requests. Exit status 1 when any property failed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omview.model.protocol import INT_MAX, OPS, FaultCode  # noqa: E402
from tests.support.agents import Cluster, RawConn, fault_code, make_base  # noqa: E402
from tests.support.asuser import NOBODY, connect_as  # noqa: E402

PID_MAX = 1 << 22
WORDS = ["1:1", "home", "best", "1", "0x1", "out", "err", "1-2-3-4", "*", "node", "", "/", "../x"]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Gen:
    """Random requests; every generator returns one line (without its newline)."""

    def __init__(self, rnd: random.Random) -> None:
        self.r = rnd

    def text(self) -> str:
        r = self.r
        if r.random() < 0.3:
            return r.choice(WORDS)
        # any code point, lone surrogates included (json.dumps escapes them as \udXXX)
        return "".join(
            chr(r.randrange(0x110000 if r.random() < 0.2 else 0x80)) for _ in range(r.randrange(12))
        )

    def number(self) -> int:
        r = self.r
        return r.choice([r.randrange(-5, 5), r.randrange(-(2**70), 2**70), 10 ** r.randrange(1, 4000),
                         2**63 - 1, 2**63, -(2**63) - 1])  # fmt: skip

    def value(self, depth: int = 0) -> Any:
        r = self.r
        kind = r.randrange(7 if depth < 3 else 5)
        if kind == 5:
            return [self.value(depth + 1) for _ in range(r.randrange(4))]
        if kind == 6:
            return {self.text(): self.value(depth + 1) for _ in range(r.randrange(4))}
        scalars = (
            lambda: None,
            lambda: r.random() < 0.5,
            self.number,
            lambda: r.uniform(-1e9, 1e9),
            self.text,
        )
        return scalars[kind]()

    def typed(self, types: tuple[type, ...]) -> Any:
        t = types[0]
        if t is bool:
            return self.r.random() < 0.5
        if t is int:
            return self.number()
        if t is str:
            return self.text()
        v = self.value()
        if t is list:
            return v if isinstance(v, list) else [v]
        return v if isinstance(v, dict) else {self.text(): v}

    def op_request(self, root: bool) -> bytes:
        r = self.r
        op = r.choice(sorted(OPS))
        spec = OPS[op]
        args = {n: self.typed(a.types) for n, a in spec.args.items() if a.required or r.random() < 0.5}
        if root:  # root may do anything: no real PIDs, no command but 'true'
            if op == "job.start":
                args["argv"] = ["true"]
            if op == "peer.proc.check":
                args["files"] = []
            pid = args.get("pid")
            if isinstance(pid, int) and 0 < pid <= INT_MAX:
                args["pid"] = PID_MAX + pid % (INT_MAX - PID_MAX)
        return json.dumps({"id": r.randrange(1 << 30), "op": op, "args": args}).encode()

    def hostile(self) -> bytes:
        r = self.r
        kind = r.randrange(4)
        if kind == 0:
            depth = r.choice([r.randrange(1, 1000), r.randrange(1000, 150_000)])
            opener, closer = r.choice([("[", "]"), ('{"a":', "}")])
            return f'{{"id":1,"op":"ping","args":{{"x":{opener * depth}0{closer * depth}}}}}'.encode()
        if kind == 1:
            return f'{{"id":{"7" * r.randrange(1, 6000)},"op":"ping"}}'.encode()
        if kind == 2:
            return json.dumps({"id": chr(r.randrange(0xD800, 0xE000)), "op": "ping"}).encode()
        return bytes(r.randrange(256) for _ in range(r.randrange(200))).replace(b"\n", b"")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (a non-root client is made with uid 65534)", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    gen = Gen(random.Random(seed))
    cl = Cluster(make_base(), 1)
    a = cl.agents[0].start()
    assert a.proc is not None
    failures: list[str] = []
    codes: collections.Counter[str] = collections.Counter()
    try:
        conns = {True: RawConn(a.socket, timeout=30), False: RawConn(a.socket, timeout=30,
                                                                     sock=connect_as(NOBODY, a.socket))}  # fmt: skip
        for c in conns.values():
            c.hello()
        before = rss_kib(a.proc.pid)
        t0 = time.monotonic()
        for i in range(args.requests):
            root = i % 2 == 0
            line = gen.hostile() if gen.r.random() < 0.3 else gen.op_request(root)
            conn = conns[root]
            try:
                conn.send(line + b"\n")
                reply = conn.reply()
            except (OSError, ValueError) as exc:
                failures.append(f"request {i} ({'root' if root else 'uid 65534'}): {exc!r}: {line[:120]!r}")
                break
            code = fault_code(reply)
            codes["result" if code is None else FaultCode(code).name] += 1
            if code == FaultCode.INTERNAL:
                failures.append(f"INTERNAL for {line[:200]!r}: {reply['error']['message']}")
        elapsed = time.monotonic() - t0
        after = rss_kib(a.proc.pid)
        for c in conns.values():
            c.close()
    finally:
        cl.stop()
    log = a.log()
    if "Traceback" in log:
        failures.append("the agent log holds a traceback")
    shutil.rmtree(cl.base, ignore_errors=True)
    total = sum(codes.values())
    print(f"seed {seed}: {total} requests in {elapsed:.1f} s ({total / elapsed:.0f}/s), half as root, "
          "half as uid 65534")  # fmt: skip
    for name, n in codes.most_common():
        print(f"  {name:20} {n:7}")
    print(f"agent memory (VmRSS): {before} KiB before, {after} KiB after ({after - before:+d} KiB)")
    for f in failures[:20]:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
