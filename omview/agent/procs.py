"""L2 agent: this node's processes as ProcessInfo (from /proc plus the lock table), with ``cantmove``
the first real reason a process could not be moved (kernel thread, terminal, TCP, no CRIU, ...).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import threading
from dataclasses import dataclass

from omview.agent import adopt
from omview.agent import criu as criumod
from omview.agent.sampler import PAGE_SIZE, ProcStat, Scope, netns_key, read_stat
from omview.model.cluster import ProcessInfo

log = logging.getLogger(__name__)

#: TCP states from include/net/tcp_states.h that are neither LISTEN (0A) nor CLOSE (07)
_CONNECTED_TCP = {"01", "02", "03", "04", "05", "06", "08", "09", "0B", "0C"}
CRIU_MISSING = "CRIU is not available on this node"


def criu_base() -> str:
    """Where scripts/install-criu.sh records the CRIU it installed ($OMVIEW_CRIU_BASE overrides)."""
    return os.environ.get("OMVIEW_CRIU_BASE", "/opt/omview/criu")


@dataclass(frozen=True)
class CriuStatus:
    """Result of looking for a working CRIU (cached: ``criu check`` takes a while)."""

    checked: bool
    ok: bool
    path: str | None
    detail: str
    version: str = ""  # what `criu --version` says, e.g. "4.1.1"

    def to_dict(self) -> dict[str, object]:
        return {"checked": self.checked, "ok": self.ok, "path": self.path, "detail": self.detail,
                "version": self.version}  # fmt: skip


def criu_version(path: str, timeout: float = 10.0) -> str:
    """The version a criu binary reports ("" when it does not say)."""
    try:
        res = subprocess.run([path, "--version"], stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=timeout, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in res.stdout.decode(errors="replace").splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return ""


class CriuProbe:
    """Finds CRIU (config key ``criu``, then the install script's criu-path file, then PATH)."""

    def __init__(self, configured: str | None) -> None:
        self.configured = configured
        self._status = CriuStatus(False, False, None, "criu check has not run yet")
        self._lock = threading.Lock()

    @property
    def status(self) -> CriuStatus:
        return self._status

    def locate(self) -> tuple[str | None, str]:
        if self.configured:
            return self.configured, "config key 'criu'"
        pathfile = os.path.join(criu_base(), "criu-path")
        try:
            with open(pathfile, encoding="utf-8") as fh:
                first = fh.readline().strip()
            if first:
                return first, pathfile
        except OSError:
            pass
        found = shutil.which("criu", path=os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin")
        return found, "PATH"

    def check(self, timeout: float = 60.0) -> CriuStatus:
        """Run ``criu check`` once (blocking; call from a worker thread)."""
        with self._lock:
            path, origin = self.locate()
            if path is None:
                status = CriuStatus(
                    True, False, None, f"no criu found (config key 'criu', {criu_base()}/criu-path, PATH)"
                )
            elif not os.access(path, os.X_OK):
                status = CriuStatus(True, False, path, f"{path} (from {origin}) is not an executable file")
            else:
                try:
                    res = subprocess.run(
                        [path, "check"],
                        stdin=subprocess.DEVNULL,
                        capture_output=True,
                        timeout=timeout,
                        check=False,
                    )
                    last = (res.stdout + res.stderr).decode(errors="replace").strip().splitlines()
                    tail = last[-1] if last else ""
                    version = criu_version(path)
                    if res.returncode == 0:
                        status = CriuStatus(True, True, path, tail or "criu check passed", version)
                    else:
                        status = CriuStatus(
                            True, False, path, f"'{path} check' failed (exit {res.returncode}): {tail}", version
                        )
                except subprocess.TimeoutExpired:
                    status = CriuStatus(True, False, path, f"'{path} check' did not finish in {timeout:g} s")
                except OSError as exc:
                    status = CriuStatus(True, False, path, f"cannot run {path}: {exc.strerror}")
            self._status = status
        log.info("CRIU: %s", status.detail if not status.ok else f"{status.path} works")
        return status


def tty_name(tty_nr: int) -> str:
    """Device name of a controlling terminal number from /proc/PID/stat."""
    major = (tty_nr >> 8) & 0xFFF
    minor = (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if 136 <= major <= 143:
        return f"/dev/pts/{(major - 136) * 256 + minor}"
    if major == 4:
        return f"/dev/tty{minor}" if minor < 64 else f"/dev/ttyS{minor - 64}"
    if major == 5:
        return {0: "/dev/tty", 1: "/dev/console", 2: "/dev/ptmx"}.get(minor, f"/dev/char/5:{minor}")
    return f"/dev/char/{major}:{minor}"


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return None


def real_uid(pid: int) -> int | None:
    """The real UID of a process (first field of Uid: in /proc/PID/status)."""
    text = _read_text(f"/proc/{pid}/status")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


class ProcessLister:
    """Builds ProcessInfo records; runs in the agent's worker thread."""

    def __init__(self, scope: Scope, criu: CriuProbe) -> None:
        self.scope = scope
        self.criu = criu
        self.agent_pid = os.getpid()
        self._users: dict[int, str] = {}
        self.agent_ns = criumod.pidns_of(self.agent_pid)
        #: filled by list(): movable-so-far roots outside a PID namespace of their own -> the PIDs and
        #: TIDs a target must have free (the caller asks a peer, see Agent.op_procs_list)
        self.pid_checks: dict[int, list[int]] = {}
        self._children: dict[int, list[int]] | None = None

    def user(self, uid: int) -> str:
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._users[uid] = name
        return name

    def _tcp_inodes(self, pid: int, cache: dict[tuple[int, int] | None, set[str]]) -> set[str]:
        """Socket inodes of connected TCP sockets in the process's network namespace."""
        ns = netns_key(pid)
        if ns in cache:
            return cache[ns]
        inodes: set[str] = set()
        for table in ("tcp", "tcp6"):
            text = _read_text(f"/proc/{pid}/net/{table}")
            if not text:
                continue
            for line in text.splitlines()[1:]:
                parts = line.split()
                if len(parts) > 9 and parts[3] in _CONNECTED_TCP and parts[9] != "0":
                    inodes.add(parts[9])
        cache[ns] = inodes
        return inodes

    def _has_tcp_connection(self, pid: int, cache: dict[tuple[int, int] | None, set[str]]) -> bool:
        connected = self._tcp_inodes(pid, cache)
        if not connected:
            return False
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return False
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in connected:
                return True
        return False

    def blocked(self, st: ProcStat, cache: dict[tuple[int, int] | None, set[str]]) -> str:
        """The reasons that concern one process by itself."""
        if st.kernel_thread or st.pid == 2 or st.ppid == 2:
            return "kernel thread"
        if st.pid == 1:
            return "system process (pid 1)"
        if st.pid == self.agent_pid:
            return "the omview agent itself"
        if st.tty_nr != 0:
            return f"attached to terminal {tty_name(st.tty_nr)}"
        if self._has_tcp_connection(st.pid, cache):
            return "open TCP connection"
        return ""

    def blocked_pid(self, pid: int, cache: dict[tuple[int, int] | None, set[str]]) -> str:
        st = read_stat(pid)
        return "" if st is None else self.blocked(st, cache)

    def cantmove(self, st: ProcStat, cache: dict[tuple[int, int] | None, set[str]]) -> str:
        """The first reason this process cannot migrate that can be seen here, or "" when none. The
        target's part (PIDs free there) is asked separately for the roots in pid_checks."""
        why = self.blocked(st, cache)
        if why:
            return why
        status = self.criu.status
        if not status.checked:
            return "CRIU check has not finished yet"
        if not status.ok:
            return CRIU_MISSING
        if self._children is None:
            self._children = adopt.children_map()
        f = adopt.facts(st.pid, my_ns=self.agent_ns, blocked=lambda p: self.blocked_pid(p, cache),
                        children=self._children, maps=False)  # fmt: skip
        if not f.reason and f.pids:
            self.pid_checks[st.pid] = f.pids
        return f.reason

    def info(
        self,
        st: ProcStat,
        *,
        node_id: int,
        cpu: dict[tuple[int, int], float],
        locks: frozenset[tuple[int, int]] | set[tuple[int, int]],
        cache: dict[tuple[int, int] | None, set[str]],
    ) -> ProcessInfo | None:
        uid = real_uid(st.pid)
        if uid is None:
            return None  # exited meanwhile
        raw = _read_text(f"/proc/{st.pid}/cmdline") or ""
        cmdline = tuple(a for a in raw.split("\0") if a) if raw else ()
        return ProcessInfo(
            pid=st.pid,
            ppid=st.ppid,
            uid=uid,
            user=self.user(uid),
            state=st.state,
            nice=st.nice,
            cpu=cpu.get(st.key, 0.0),
            rss=st.rss_pages * PAGE_SIZE,
            threads=st.threads,
            name=st.name,
            cmdline=cmdline,
            home=node_id,
            where=node_id,
            lock=st.key in locks,
            nmigs=0,
            cantmove=self.cantmove(st, cache),
            job="",
        )

    def list(
        self,
        *,
        node_id: int,
        cpu: dict[tuple[int, int], float],
        locks: frozenset[tuple[int, int]] | set[tuple[int, int]],
        pid: int | None = None,
    ) -> list[ProcessInfo]:
        """This node's processes (or the one with ``pid``, if it is on this node)."""
        cache: dict[tuple[int, int] | None, set[str]] = {}
        self.pid_checks = {}
        self._children = None
        pids = [pid] if pid is not None else sorted(self.scope.pids())
        out: list[ProcessInfo] = []
        for p in pids:
            if pid is not None and not self.scope.contains(p):
                continue
            st = read_stat(p)
            if st is None:
                continue
            info = self.info(st, node_id=node_id, cpu=cpu, locks=locks, cache=cache)
            if info is not None:
                out.append(info)
        return out
