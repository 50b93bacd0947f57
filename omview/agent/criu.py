"""L2 agent: CRIU plumbing for migration - argv builders, bounded runs that kill their whole process
tree on timeout, image checksums, and /proc helpers to find, stop and resume a job's task tree.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence

#: a truncated image makes `criu restore` spin forever (feasibility §2.3): every run is bounded
DUMP_TIMEOUT = 120.0
RESTORE_TIMEOUT = 120.0
LOG_NAMES = ("dump.log", "restore.log")


def dump_argv(criu: str, pid: int, images: str, *, extra: Sequence[str] = ()) -> list[str]:
    """Dump the tree rooted at PID (the job's namespace init), leaving it stopped for a rollback."""
    return [criu, "dump", "-t", str(pid), "-D", images, "--leave-stopped", "-o", "dump.log", *extra]


def restore_argv(criu: str, images: str, pidfile: str, *, extra: Sequence[str] = ()) -> list[str]:
    """Restore detached (-d); the new global PID of the tree's root lands in PIDFILE."""
    return [criu, "restore", "-D", images, "-d", "--pidfile", pidfile, "-o", "restore.log", *extra]


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
        return int(raw[raw.rindex(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def descendants(root: int) -> list[int]:
    """Every process below ROOT (children first found, then theirs), ROOT excluded."""
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        pp = _ppid(pid)
        if pp is not None:
            children.setdefault(pp, []).append(pid)
    out: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def kill_tree(root: int) -> list[int]:
    """SIGKILL ROOT and everything below it (collected first, so reparenting cannot hide one)."""
    victims = [root, *descendants(root)]
    for pid in victims:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return victims


def pidns_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def namespace_tasks(init: int) -> list[int]:
    """Processes in the PID namespace whose init is INIT (the job's whole tree)."""
    ns = pidns_of(init)
    if ns is None:
        return []
    return [p for p in all_pids() if pidns_of(p) == ns]


def resume(pids: Iterable[int]) -> int:
    """SIGCONT every task (a dump with --leave-stopped leaves them all stopped); returns how many."""
    n = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
            n += 1
    return n


def proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
        return raw[raw.rindex(b")") + 2 :].split()[0].decode()
    except (OSError, ValueError, IndexError):
        return None


def run_bounded(argv: Sequence[str], *, timeout: float, cwd: str = "/") -> tuple[int, float, str]:
    """Run ARGV; on timeout SIGKILL it and every process below it. Returns (rc, seconds, output).

    rc is -9 after a timeout. The caller keeps CRIU's own -o log in the image directory.
    """
    t0 = time.monotonic()
    proc = subprocess.Popen(
        list(argv), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, _ = proc.communicate()
        return -9, time.monotonic() - t0, (out or b"").decode(errors="replace")
    return proc.returncode, time.monotonic() - t0, (out or b"").decode(errors="replace")


def checksums(directory: str, *, skip: Iterable[str] = LOG_NAMES) -> dict[str, str]:
    """sha256 of every regular file in DIRECTORY (flat, as CRIU writes images), logs excluded."""
    sums: dict[str, str] = {}
    skipped = set(skip)
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name in skipped or not os.path.isfile(path):
            continue
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        sums[name] = h.hexdigest()
    return sums


def verify(directory: str, expected: dict[str, str]) -> list[str]:
    """Problems found comparing DIRECTORY with the source's checksums (empty list: intact)."""
    try:
        got = checksums(directory)
    except OSError as exc:
        return [f"cannot read the images: {exc}"]
    problems = [f"{n} missing" for n in sorted(set(expected) - set(got))]
    problems += [f"{n} unexpected" for n in sorted(set(got) - set(expected))]
    problems += [f"{n} differs (sha256)" for n in sorted(set(got) & set(expected)) if got[n] != expected[n]]
    return problems


def image_bytes(directory: str) -> int:
    total = 0
    for name in os.listdir(directory):
        with contextlib.suppress(OSError):
            total += os.path.getsize(os.path.join(directory, name))
    return total


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags a dumped process may rely on (first processor's 'flags' line)."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def log_tail(path: str, lines: int = 6) -> str:
    """The last Error lines of a CRIU log (what a failure message should quote)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read().splitlines()
    except OSError:
        return ""
    errors = [ln.strip() for ln in text if "Error" in ln and "RLIMIT_NOFILE" not in ln]
    return " | ".join((errors or [ln.strip() for ln in text])[-lines:])
