"""The campaign's job: `mosrun python3 bench/faultjob.py` on the home node, and the replay of its
step chain (every step's line chains the one before: nothing lost, repeated or restored wrong)."""

from __future__ import annotations

import os
from pathlib import Path

from faultjob import ballast, step

from faultlab.nodes import Nodes, Proc
from faultlab.scan import STATE

PY = "/usr/bin/python3"
JOB = str(Path(__file__).resolve().parents[1] / "faultjob.py")


class Chain:
    """Replays bench/faultjob.py's steps and checks the deputy's output against them, line by line."""

    def __init__(self, kib: int) -> None:
        self.buf = ballast(kib)
        self.h = "0" * 16
        self.next = 0
        self.ended = False
        self.partial = b""

    def feed(self, data: bytes) -> list[str]:
        """Check the complete lines in DATA (a partial last line waits); returns the problems."""
        problems: list[str] = []
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            parts = raw.decode(errors="replace").split()
            if self.ended:
                problems.append(f"output after the end line: {raw[:80]!r}")
            elif len(parts) == 4 and parts[0] == "step" and parts[1].isdigit():
                i = int(parts[1])
                if i != self.next:
                    what = "repeated" if i < self.next else "lost"
                    problems.append(f"step {i} after step {self.next - 1}: steps {what}")
                    return problems  # the replay cannot go on from a broken chain
                crc, self.h = step(i, self.h, self.buf)
                if parts[2] != f"{crc:08x}" or parts[3] != self.h:
                    problems.append(f"step {i}: state differs (crc {parts[2]} hash {parts[3]}, expected "
                                    f"{crc:08x} {self.h}): memory restored wrong")  # fmt: skip
                    return problems
                self.next += 1
            elif len(parts) == 3 and parts[0] == "end" and parts[1].isdigit():
                if int(parts[1]) != self.next or parts[2] != self.h:
                    problems.append(f"end line {raw!r} does not close the chain at step {self.next}")
                self.ended = True
            else:
                problems.append(f"unexpected output line {raw[:80]!r}")
        return problems


class Job:
    """One campaign job: `mosrun python3 faultjob.py` started on HOME; its deputy's output is checked."""

    def __init__(self, nodes: Nodes, home: int, work: str, number: int, *, interval: float, kib: int) -> None:
        self.nodes = nodes
        self.home = home
        self.out_path = os.path.join(work, f"job{number}.out")
        self.err_path = os.path.join(work, f"job{number}.err")
        with open(self.out_path, "wb") as out:
            self.deputy, self.home_pid = nodes.start_deputy(home, [PY, JOB, str(interval), str(kib)], out,
                                                            self.err_path)  # fmt: skip
        self.id = f"{home}:{self.home_pid}"
        self.dirname = f"{home}-{self.home_pid}"
        self.chain = Chain(kib)
        self.offset = 0
        self.problems: list[str] = []

    def marker(self) -> bytes:
        return f"/{STATE}/jobs/{self.dirname}/out".encode()

    def err_text(self, tail: int = 300) -> str:
        return Path(self.err_path).read_text(errors="replace")[-tail:]

    def check_output(self) -> int:
        """Feed the new output to the chain; returns the steps seen so far."""
        with open(self.out_path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        self.problems += self.chain.feed(data)
        return self.chain.next

    def copies(self, procs: dict[int, list[Proc]]) -> dict[int, list[Proc]]:
        """The job's namespace inits per node (a live copy each), with the program under it."""
        found: dict[int, list[Proc]] = {}
        mark = self.marker()
        for node, plist in procs.items():
            for p in plist:
                if b"omview.agent.jobs.jobinit" in p.cmdline and mark in p.cmdline and not p.cmdline.startswith(
                        b"unshare\0"):  # fmt: skip
                    found.setdefault(node, []).append(p)
        return found

    def programs(self, procs: dict[int, list[Proc]], inits: dict[int, list[Proc]]) -> dict[int, list[Proc]]:
        out: dict[int, list[Proc]] = {}
        for n, plist in procs.items():  # per node: PIDs of separate machines may be equal
            pids = {p.pid for p in inits.get(n, [])}
            if any(p.ppid in pids for p in plist):
                out[n] = [p for p in plist if p.ppid in pids and JOB.encode() in p.cmdline]
        return out
