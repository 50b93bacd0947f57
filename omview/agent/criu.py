"""L2 agent: CRIU plumbing for migration - argv builders, bounded runs that kill their whole process
tree on timeout, image checksums, and /proc helpers to find, stop and resume a job's task tree.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from omview.model.procfs import all_pids, children_map, start_time

log = logging.getLogger(__name__)

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


def descendants(root: int, children: Mapping[int, list[int]] | None = None) -> list[int]:
    """Every process below ROOT (children first found, then theirs), ROOT excluded. CHILDREN: a
    procfs.children_map() (or a mapping that answers the same) to reuse for several roots."""
    if children is None:
        children = children_map()
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


def own_pidns() -> int | None:
    """The PID namespace of the calling process (the agent's)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def job_tasks(root: int) -> list[int]:
    """Every task of the job whose root is ROOT: its whole PID namespace when ROOT is the init of a
    namespace below ours (mosrun jobs, adopted namespace inits), else ROOT and its descendants (a
    plain process tree adopted in the agent's own namespace, restored with its PIDs unchanged)."""
    if root <= 0:
        return []
    ns = pidns_of(root)
    if ns is None:
        return []
    if ns != own_pidns():
        return namespace_tasks(root)
    return [root, *descendants(root)]


def resume(pids: Iterable[int]) -> int:
    """SIGCONT every task (a dump with --leave-stopped leaves them all stopped); returns how many."""
    n = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
            n += 1
    return n


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


# ---------------------------------------------------------------------------------- post-copy

def lazy_dump_argv(criu: str, pid: int, images: str, ps_fd: int) -> list[str]:
    """Dump the tree's state but serve its memory on demand over the connected socket PS_FD; -v3
    because "Starting lazy pages server" (the metadata is complete) is an info line."""
    return [criu, "dump", "-t", str(pid), "-D", images, "--leave-stopped", "--lazy-pages",
            "--ps-socket", str(ps_fd), "-o", "dump.log", "-v3"]  # fmt: skip


def lazy_pages_argv(criu: str, images: str, ps_fd: int, status_fd: int) -> list[str]:
    """The target's page daemon: pulls the pages from the source over PS_FD (also ahead of faults)."""
    return [criu, "lazy-pages", "--page-server", "--ps-socket", str(ps_fd), "-D", images,
            "-o", "lazy.log", "--status-fd", str(status_fd)]  # fmt: skip


LAZY_READY = b"Starting lazy pages server"
_uffd_cache: dict[str, bool] = {}
_uffd_lock = threading.Lock()


def lazy_supported(criu: str) -> bool:
    """`criu check --feature uffd-noncoop` (cached per binary): post-copy needs userfaultfd."""
    with _uffd_lock:
        if criu not in _uffd_cache:
            try:
                res = subprocess.run([criu, "check", "--feature", "uffd-noncoop"], capture_output=True,
                                     timeout=30, stdin=subprocess.DEVNULL, cwd="/")  # fmt: skip
                _uffd_cache[criu] = res.returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                _uffd_cache[criu] = False
        return _uffd_cache[criu]


# CRIU before the fix for Linux 6.16 (checkpoint-restore/criu#2705) reads SO_PASSCRED and SO_PASSSEC
# of every socket it dumps; since 6.16 the kernel answers EOPNOTSUPP for anything but AF_UNIX,
# AF_NETLINK and AF_BLUETOOTH, and the dump of a tree holding a TCP or UDP socket - a listening one
# too - fails ("Can't get 1:16 opt: Operation not supported"). Probed once per binary, by a real
# dump of a process holding a TCP socket, and only on a kernel that restricts the option.
_inet_cache: dict[str, str] = {}
_inet_lock = threading.Lock()
_PROBE_CHILD = ("import os, socket, time; s = socket.socket(); os.write(1, b'ok'); os.close(1); "
                "time.sleep(60)")  # fmt: skip


def _kernel_restricts_passcred() -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.getsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED)
        except OSError:
            return True
    return False


def probe_inet_sockets(criu: str, timeout: float = 30.0) -> str:
    """Why CRIU at path CRIU cannot dump a TCP/UDP socket on this kernel ("" = it can). Blocking
    (a worker thread); cached per binary. inet_socket_trouble() gives the answer afterwards."""
    import sys
    import tempfile

    with _inet_lock:
        if criu in _inet_cache:
            return _inet_cache[criu]
        why = ""
        if _kernel_restricts_passcred():
            images = tempfile.mkdtemp(prefix="omview-criu-probe-")
            child = subprocess.Popen([sys.executable, "-c", _PROBE_CHILD], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd="/",
                                     start_new_session=True)  # fmt: skip
            try:
                assert child.stdout is not None
                if child.stdout.read(2) == b"ok":
                    res = subprocess.run(dump_argv(criu, child.pid, images), stdin=subprocess.DEVNULL,
                                         capture_output=True, timeout=timeout, cwd="/")  # fmt: skip
                    error = _first_error(os.path.join(images, "dump.log"))
                    # only a failure in CRIU's socket code says something about sockets; any other
                    # (this process's limits, ...) leaves the question open: the dump itself will tell
                    if res.returncode != 0 and "sockets" in error:
                        why = error.split("): ", 1)[-1].strip()
                    elif res.returncode != 0:
                        log.info("CRIU socket probe inconclusive (exit %d: %s)", res.returncode, error)
            except (OSError, subprocess.TimeoutExpired) as exc:
                why = f"the probe did not finish: {exc}"
            finally:
                child.kill()
                child.wait()
                if child.stdout is not None:
                    child.stdout.close()
                subprocess.run(["rm", "-rf", "--", images], check=False)
        _inet_cache[criu] = why
    if why:
        log.warning("CRIU %s cannot dump TCP/UDP sockets on this kernel (%s): processes holding one "
                    "are shown as not movable", criu, why)  # fmt: skip
    return why


def inet_socket_trouble() -> str:
    """The probe's answer for the CRIU probed last ("" = TCP/UDP sockets dump, or not probed yet)."""
    with _inet_lock:
        return next(reversed(_inet_cache.values()), "")


def _first_error(path: str) -> str:
    """The first Error line of a CRIU log about sockets, else the first other one (the RLIMIT_NOFILE
    complaint is not fatal, log_tail leaves it out too)."""
    errors = []
    with contextlib.suppress(OSError):
        with open(path, encoding="utf-8", errors="replace") as fh:
            # "(00.1) Error (criu/sockets.c:628): sockets: Can't get 1:16 opt: ..."
            errors = [ln[ln.index("Error (") :].strip() for ln in fh if "Error (" in ln and "RLIMIT_NOFILE" not in ln]
    return next((e for e in errors if "sockets" in e), errors[0] if errors else "")


# The page-serving side of post-copy tees page pipes into pipes it grows past fs.pipe-max-size
# (1 MiB). That needs CAP_SYS_RESOURCE; a sandbox whose bounding set lacks it gets "tee: 65536:
# Operation not permitted" (feasibility §2.7). So, only when a test pipe shows the need, the limit
# is raised while a post-copy runs and put back after; holders are shared host-wide (nodes of a
# test cluster share one kernel) under a lock in /dev/shm.
PIPE_MAX_FILE = "/proc/sys/fs/pipe-max-size"
LAZY_PIPE_SIZE = 64 << 20
LEASE_DIR = "/dev/shm"
LEASE_LOCK = "omview-pipe-max-size.lock"
LEASE_FILE = "omview-pipe-max-size.json"
F_SETPIPE_SZ = 1031


def big_pipes_allowed(size: int = LAZY_PIPE_SIZE) -> bool:
    """Can this process grow a pipe to SIZE? (False: no CAP_SYS_RESOURCE and the limit is lower.)"""
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, size)
        return True
    except OSError:
        return False
    finally:
        os.close(r)
        os.close(w)


def _read_int(path: str) -> int:
    with open(path, encoding="ascii") as fh:
        return int(fh.read().strip())


def _write_int(path: str, value: int) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(f"{value}\n")


@contextlib.contextmanager
def _lease_state() -> Iterator[dict[str, Any]]:
    fd = os.open(os.path.join(LEASE_DIR, LEASE_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = os.path.join(LEASE_DIR, LEASE_FILE)
        try:
            with open(path, encoding="utf-8") as fh:
                state = json.load(fh)
        except (OSError, ValueError):
            state = {}
        before = json.dumps(state, sort_keys=True)
        yield state
        if json.dumps(state, sort_keys=True) != before:
            if state.get("holders"):
                with open(path + ".tmp", "w", encoding="utf-8") as fh:
                    json.dump(state, fh)
                os.replace(path + ".tmp", path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
    finally:
        os.close(fd)


def _settle(state: dict[str, Any]) -> None:
    """Drop holders whose processes are all gone; with none left, put the original limit back."""
    holders = [h for h in state.get("holders", []) if any(start_time(p) == s for p, s in h.get("pids", []))]
    state["holders"] = holders
    if not holders and "original" in state:
        with contextlib.suppress(OSError, ValueError):
            if _read_int(PIPE_MAX_FILE) != int(state["original"]):
                _write_int(PIPE_MAX_FILE, int(state["original"]))
                log.info("fs.pipe-max-size back to %d", int(state["original"]))
        state.clear()


def pipe_lease_acquire(token: str, size: int = LAZY_PIPE_SIZE) -> bool:
    """Make pipes of SIZE possible for this post-copy; True when the host limit had to be raised
    (then pipe_lease_release(token) must follow). Raises OSError when it cannot be raised."""
    if big_pipes_allowed(size):
        return False
    with _lease_state() as state:
        _settle(state)
        current = _read_int(PIPE_MAX_FILE)
        state.setdefault("original", current)
        if current < size:
            _write_int(PIPE_MAX_FILE, size)
            log.warning("raised fs.pipe-max-size %d -> %d for post-copy (no CAP_SYS_RESOURCE here)", current,
                        size)  # fmt: skip
        state.setdefault("holders", []).append({"token": token, "pids": [[os.getpid(), start_time(os.getpid())]]})
    return True


def pipe_lease_add_pid(token: str, pid: int) -> None:
    """Also count PID (the serving criu) as holding TOKEN's lease, so it outlives a crashed agent."""
    with _lease_state() as state:
        for h in state.get("holders", []):
            if h.get("token") == token:
                h["pids"].append([pid, start_time(pid)])


def pipe_lease_release(token: str) -> None:
    with _lease_state() as state:
        state["holders"] = [h for h in state.get("holders", []) if h.get("token") != token]
        _settle(state)


def pipe_lease_settle() -> None:
    """Agent start: put the limit back if a crashed agent left it raised with nobody using it."""
    if not os.path.exists(os.path.join(LEASE_DIR, LEASE_FILE)):
        return
    with contextlib.suppress(OSError):
        with _lease_state() as state:
            _settle(state)
