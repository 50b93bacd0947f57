"""L2 agent: this node's processes as ProcessInfo (from /proc plus the lock table), with ``cantmove``
the first real reason a process could not be moved (kernel thread, terminal, TCP, no CRIU, ...).
"""

from __future__ import annotations

import builtins
import ctypes
import logging
import os
import pwd
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from omview.agent import criu as criumod
from omview.agent.node import movable
from omview.agent.node.sampler import Scope, netns_key
from omview.model.cluster import ProcessInfo
from omview.model.procfs import PAGE_SIZE, ProcStat, children_map, read_stat, task_children

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
        if status.ok and status.path:
            # probe post-copy support now, at start in this worker, so that the first post-copy
            # migration does not run that criu check in its prepare phase (10-50 ms, cached after)
            criumod.lazy_supported(status.path)
            criumod.probe_inet_sockets(status.path)  # can it dump TCP/UDP sockets here (movable.socket_rule)
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


def _read_bytes(path: str, size: int = 4096, *, seq: bool = False) -> bytes | None:
    """The whole file, unbuffered, None when unreadable. Most /proc/PID files (stat, status, cmdline)
    hand out everything there is up to the size asked for, so a short read is the end and one read
    does; SEQ: a seq_file that gives about a page per read (children, net/tcp), read until empty."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = [os.read(fd, size)]
        while chunks[-1] and (seq or len(chunks[-1]) == size):
            chunks.append(os.read(fd, size))
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_text(path: str) -> str | None:
    raw = _read_bytes(path, 65536, seq=True)
    return None if raw is None else raw.decode("utf-8", "replace")


def real_uid(pid: int) -> int | None:
    """The real UID of a process (first field of Uid: in /proc/PID/status)."""
    raw = _read_bytes(f"/proc/{pid}/status", 8192)
    if raw is None:
        return None
    at = raw.find(b"\nUid:")
    if at < 0:
        return None
    try:
        return int(raw[at + 5 : raw.index(b"\t", at + 6)])
    except ValueError:
        return None


# --------------------------------------------------------------------------- connected TCP sockets
_NETLINK_SOCK_DIAG = 4  # linux/netlink.h
_SOCK_DIAG_BY_FAMILY = 20  # linux/sock_diag.h
_TCPDIAG_GETSOCK = 18  # linux/inet_diag.h: the request of the first inet_diag, for TCP of both families
_NLM_F_DUMP_REQUEST = 0x301  # NLM_F_REQUEST | NLM_F_ROOT | NLM_F_MATCH
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_CLONE_NEWNET = 0x40000000
_DIAG_STATES = sum(1 << int(s, 16) for s in _CONNECTED_TCP)
#: seconds /proc/PID/net/tcp stands in after sock_diag failed in a namespace, before trying again
DIAG_RETRY = 60.0


def _diag_dump(sock: socket.socket, seq: int, family: int | None = None) -> set[str]:
    """Inodes of the connected TCP sockets, from an inet_diag dump. FAMILY None: both address families
    in one walk of the kernel's TCP hash table (the compat request TCPDIAG_GETSOCK dumps AF_UNSPEC);
    else that family only (SOCK_DIAG_BY_FAMILY, one walk each). The walk visits every bucket of the
    established hash, whose size scales with the machine's memory (262,144 on a 23 GB host: ~1 ms of
    system time per walk), where reading /proc/net/tcp also formats every socket of the machine."""
    if family is None:
        # struct inet_diag_req: family, src_len, dst_len, ext, inet_diag_sockid (48 bytes, all zero but
        # the cookie INET_DIAG_NOCOOKIE), states, dbs
        kind_asked = _TCPDIAG_GETSOCK
        req = bytes(4) + bytes(40) + b"\xff" * 8 + struct.pack("=II", _DIAG_STATES, 0)
    else:
        # struct inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid
        kind_asked = _SOCK_DIAG_BY_FAMILY
        req = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, _DIAG_STATES) + bytes(40) + b"\xff" * 8
    sock.send(struct.pack("=IHHII", 16 + len(req), kind_asked, _NLM_F_DUMP_REQUEST, seq, 0) + req)
    out: set[str] = set()
    while True:
        data = sock.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            length, kind, _flags, got_seq, _port = struct.unpack_from("=IHHII", data, off)
            if length < 16:
                raise OSError(f"malformed sock_diag answer (message length {length})")
            if got_seq == seq:
                if kind == _NLMSG_DONE:
                    return out
                if kind == _NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + 16)[0]
                    raise OSError(err, f"sock_diag: {os.strerror(err)}")
                if kind == kind_asked and length >= 16 + 72:
                    # struct inet_diag_msg: 4 bytes, sockid (48), expires, rqueue, wqueue, uid, inode
                    inode = struct.unpack_from("=I", data, off + 16 + 68)[0]
                    if inode:  # 0: TIME_WAIT and other sockets no process holds
                        out.add(str(inode))
            off += (length + 3) & ~3


#: /proc/PID/net/snmp Tcp counters that move when a socket of the namespace enters or leaves a connected
#: state (connect, a handshake completed for a listener, a failed attempt, a reset, leaving ESTABLISHED)
_MARK_MIB = (b"ActiveOpens", b"PassiveOpens", b"AttemptFails", b"EstabResets", b"CurrEstab")


def tcp_mark(pid: int | str) -> tuple[bytes, ...] | None:
    """What moves in PID's network namespace when its set of connected TCP sockets may have changed:
    the _MARK_MIB counters, the namespace's count of sockets ("sockets: used") and of TCP sockets
    hashed and in TIME_WAIT (/proc/PID/net/sockstat; every move into or out of the hash table, TCP
    repair's included, moves "inuse"). Not the segment counters nor the buffer memory:
    traffic on connections that stay connected does not change the set. An accept() moves nothing (its
    connection was counted when the handshake completed; only then does it get an inode): the listing
    sees the new socket among the process's fds. None when unreadable. ~30 us, where a sock_diag dump
    walks the kernel's whole established hash."""
    snmp = _read_bytes(f"/proc/{pid}/net/snmp", 16384)
    sockstat = _read_bytes(f"/proc/{pid}/net/sockstat", 4096)
    if snmp is None or sockstat is None:
        return None
    tcp = [line.split() for line in snmp.split(b"\n") if line.startswith(b"Tcp:")]
    if len(tcp) != 2:
        return None
    counters = dict(zip(tcp[0], tcp[1], strict=False))
    out = [counters.get(name, b"?") for name in _MARK_MIB]
    for line in sockstat.split(b"\n"):
        if line.startswith((b"sockets:", b"TCP:")):
            words = line.split()
            # not "mem" (pages of buffers: moves with the traffic) nor "alloc" and "orphan": the
            # kernel counts those for the whole machine, so any socket made anywhere moved the mark
            # (tests/agent/test_procs_fresh.py saw it move in a namespace where nothing happened)
            for name in (b"mem", b"alloc", b"orphan"):
                if name in words:
                    at = words.index(name)
                    del words[at : at + 2]
            out.extend(words)
    return tuple(out)


def _proc_tcp(pid: int) -> set[str]:
    """The same from /proc/PID/net/tcp{,6} (the fallback: each read walks the whole hash table)."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        text = _read_text(f"/proc/{pid}/net/{table}")
        if not text:
            continue
        for line in text.splitlines()[1:]:
            parts = line.split()
            if len(parts) > 9 and parts[3] in _CONNECTED_TCP and parts[9] != "0":
                inodes.add(parts[9])
    return inodes


def _socket_in(pid: int) -> socket.socket:
    """A sock_diag socket inside PID's network namespace (setns in a short-lived thread; the socket
    stays in that namespace)."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            made.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_SOCK_DIAG))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            failed.append(exc)

    t = threading.Thread(target=enter, name="omview-netns", daemon=True)
    t.start()
    t.join(5)
    if not made:
        raise failed[0] if failed and isinstance(failed[0], OSError) else OSError("setns thread failed")
    return made[0]


class TcpTables:
    """Connected TCP sockets per network namespace, by inode. One sock_diag netlink socket per namespace
    is kept (the agent's own always; others while processes of this node live there); where that is
    not possible, /proc/PID/net/tcp{,6} is read instead."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._own = netns_key("self")
        self._socks: dict[tuple[int, int], socket.socket] = {}
        #: namespaces where sock_diag failed -> until when /proc is read there instead
        self._no_diag: dict[tuple[int, int], float] = {}
        self._seq = 0
        #: one dump for both address families (each dump walks the whole hash table); False after
        #: the kernel refused it
        self._both = True
        #: namespace -> its tcp_mark() read just before its last dump, and that dump
        self._last: dict[tuple[int, int], tuple[tuple[bytes, ...], set[str]]] = {}

    def connected(self, ns: tuple[int, int] | None, pid: int, *, reuse: bool = False) -> set[str]:
        """Inodes of connected TCP sockets in network namespace NS (that of PID). REUSE: the last dump of
        NS when nothing in tcp_mark() moved since it was taken (the caller must not change the set)."""
        if ns is None or self._no_diag.get(ns, 0.0) > time.monotonic():
            return _proc_tcp(pid)
        with self._lock:
            try:
                sock = self._socks.get(ns)
                if sock is None:
                    if ns == self._own:
                        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                             _NETLINK_SOCK_DIAG)  # fmt: skip
                    else:
                        sock = _socket_in(pid)
                        if netns_key(pid) != ns:  # PID moved or ended meanwhile: not that namespace
                            sock.close()
                            return _proc_tcp(pid)
                    sock.settimeout(5.0)
                    self._socks[ns] = sock
                # read after the socket is made (it counts in "sockets: used") and before the dump (a
                # change while it runs moves the mark from the one kept with it)
                mark = tcp_mark("self" if ns == self._own else pid)
                if mark is not None and ns != self._own and netns_key(pid) != ns:
                    mark = None  # PID is not in NS (any more): its counters say nothing about NS
                last = self._last.get(ns)
                if reuse and mark is not None and last is not None and last[0] == mark:
                    return last[1]
                refused: OSError | None = None
                if self._both:
                    self._seq = (self._seq + 1) & 0x7FFFFFFF
                    try:
                        return self._keep(ns, mark, _diag_dump(sock, self._seq))
                    except OSError as exc:
                        if isinstance(exc, TimeoutError):
                            raise
                        refused = exc
                out: set[str] = set()
                for family in (socket.AF_INET, socket.AF_INET6):
                    self._seq = (self._seq + 1) & 0x7FFFFFFF
                    out |= _diag_dump(sock, self._seq, family)
                # a kernel without the compat request: one dump per family from now on
                if refused is not None:
                    log.info("sock_diag cannot dump both address families at once (%s): one dump each", refused)
                    self._both = False
                return self._keep(ns, mark, out)
            except OSError as exc:
                log.info("sock_diag in network namespace %s does not work (%s): reading /proc/net/tcp for "
                         "the next %.0f s", ns, exc, DIAG_RETRY)  # fmt: skip
                self._drop(ns)
                self._no_diag[ns] = time.monotonic() + DIAG_RETRY
        return _proc_tcp(pid)

    def _keep(self, ns: tuple[int, int], mark: tuple[bytes, ...] | None, inodes: set[str]) -> set[str]:
        if mark is None:
            self._last.pop(ns, None)
        else:
            self._last[ns] = (mark, inodes)
        return inodes

    def keep_only(self, used: set[tuple[int, int]]) -> None:
        """Close the sockets of namespaces no process of this node is in any more (each holds its
        namespace alive)."""
        with self._lock:
            for ns in [n for n in self._socks if n != self._own and n not in used]:
                self._drop(ns)
            self._no_diag = {n: t for n, t in self._no_diag.items() if n in used}

    def _drop(self, ns: tuple[int, int]) -> None:
        self._last.pop(ns, None)
        sock = self._socks.pop(ns, None)
        if sock is not None:
            sock.close()


_ROW_FIELDS = tuple(f.name for f in fields(ProcessInfo))


def process_row(p: ProcessInfo) -> dict[str, Any]:
    """p.to_dict() without dataclasses.asdict's recursive copies (~9 us a row here, most of the JSON): every
    field is a plain value but cmdline, a tuple sent as a list."""
    d = {name: getattr(p, name) for name in _ROW_FIELDS}
    d["cmdline"] = list(p.cmdline)
    return d


# --------------------------------------------------------------------------- the listing
#: a process's fds, cwd, root and program are read again at least every RESCAN_EVERY full listings even
#: when nothing hints at a change (docs/agent.md, "How fresh cantmove is")
RESCAN_EVERY = 8


@dataclass
class _Look:
    """What the listing keeps about one process (pid, start time) between listings."""

    fds: movable.FdLook
    netns: tuple[int, int] | None  # its network namespace when read (only when it has sockets)
    threads: int
    paths: str | None = None  # movable.path_rules() (cwd, root, program), read when first needed
    tids: list[int] | None = None  # read when first needed, kept while the thread count is the same


@dataclass(frozen=True)
class _Static:
    """What a listing keeps about one process (pid, start time) that seldom changes: its real uid and
    command line, with what they were read under (both change on exec, the uid also on setuid)."""

    uid: int
    cmdline: tuple[str, ...]
    mark: tuple[int, int] | None  # ProcStat.exec_mark when read
    name: str  # its comm when read (exec and prctl(PR_SET_NAME), which setproctitle uses, change it)


def read_static(st: ProcStat) -> _Static | None:
    """ST's real uid and command line, read now; None when it is gone."""
    uid = real_uid(st.pid)
    if uid is None:
        return None
    raw = _read_bytes(f"/proc/{st.pid}/cmdline") or b""
    return _Static(uid, tuple(a for a in raw.decode("utf-8", "replace").split("\0") if a), st.exec_mark, st.name)


class _Children(Mapping[int, list[int]]):
    """PID -> its child processes, read from /proc/PID/task/TID/children when first asked (only the
    trees the listing looks at are read, not every process of the machine)."""

    def __init__(self, stat_of: Callable[[int], ProcStat | None]) -> None:
        self._stat_of = stat_of
        self._known: dict[int, list[int]] = {}

    def __getitem__(self, pid: int) -> list[int]:
        kids = self._known.get(pid)
        if kids is None:
            kids = self._known[pid] = self._read(pid)
        return kids

    def _read(self, pid: int) -> list[int]:
        s = self._stat_of(pid)
        if s is None:
            return []
        tasks = [str(pid)]
        if s.threads > 1:  # a child belongs to the thread that forked it
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                return []
        out: list[int] = []
        for tid in tasks:
            out.extend(task_children(pid, int(tid)))
        return sorted(out)  # the order procfs.children_map() has: which child a reason names depends on it

    def __iter__(self) -> Iterator[int]:
        return iter(self._known)

    def __len__(self) -> int:
        return len(self._known)


class _Listing(movable.Reader):
    """One procs.list: the processes' stat read once, the TCP tables read once per namespace, and the
    facts() reader that answers from the lister's caches (movable.Reader reads /proc every time)."""

    def __init__(self, lister: ProcessLister, stats: dict[int, ProcStat], fresh: bool) -> None:
        self.lister = lister
        self.stats = stats
        self.in_scope = set(stats)
        self.fresh = fresh  # a one-process listing: read everything again, keep nothing stale
        self.tables: dict[tuple[int, int] | None, set[str]] = {}
        self.scanned: set[tuple[int, int]] = set()  # (pid, start) whose fds this listing read
        self.looks: dict[tuple[int, int], _Look | None] = {}  # this listing's look at what it checked
        self.why: dict[int, str] = {}  # blocked() of this listing
        self._children: Mapping[int, list[int]] | None = None
        # a namespace's last TCP dump may stand in when nothing in its counters moved (TcpTables), but
        # not in a one-process listing, not at every RESCAN_EVERY-th listing (what the counters cannot
        # see: an accept() while another socket closed, with the same number of fds, shows at the
        # latest then), and not where a process read now holds a socket no listing had seen
        self.reuse = not fresh and lister.listing % RESCAN_EVERY != 0
        self.dirty: set[tuple[int, int] | None] = set()

    @property
    def children(self) -> Mapping[int, list[int]]:
        if self._children is None:
            self._children = _Children(self.stat_of) if self.lister.children_files else children_map()
        return self._children

    def stat_of(self, pid: int) -> ProcStat | None:
        s = self.stats.get(pid)
        if s is None:  # a tree member outside this node's scope (e.g. another network namespace)
            s = read_stat(pid)
            if s is not None:
                self.stats[pid] = s
        return s

    # --- fds and TCP
    def look(self, st: ProcStat, *, again: bool = False) -> _Look | None:
        """What the process's fds show: kept from an earlier listing while its fd count is the same and
        its turn to be read again has not come; read now otherwise (AGAIN: read now unless this listing
        already did)."""
        key = st.key
        if key in self.looks and not (again and key not in self.scanned):
            return self.looks[key]
        lister = self.lister
        old = lister.looks.get(key)
        if (old is not None and not again and not self.fresh
                and (st.pid + lister.listing) % RESCAN_EVERY != 0  # staggered: 1/RESCAN_EVERY each time
                and movable.fd_count(st.pid) == old.fds.count):  # fmt: skip
            if old.threads != st.threads:
                old.tids, old.threads = None, st.threads
            self.looks[key] = old
            return old
        self.scanned.add(key)
        fds = movable.look_fds(st.pid)
        if fds is None:
            lister.looks.pop(key, None)
            self.looks[key] = None
            return None
        netns = None
        if fds.sockets:
            # Scope.pids() has just compared the namespace of a "netns"-scoped node's processes
            here = lister.scope.scope == "netns" and st.pid in self.in_scope and not self.fresh
            netns = lister.scope.own_netns if here else netns_key(st.pid)
        new = self.looks[key] = _Look(fds, netns, st.threads)
        if fds.sockets - lister.sockets_seen:  # e.g. accept(): a new connection of a known listener
            self.dirty.add(netns)
        if not self.fresh:  # a one-process listing keeps nothing (only full listings prune)
            lister.looks[key] = new
        return new

    def connected(self, ns: tuple[int, int] | None, pid: int) -> set[str]:
        got = self.tables.get(ns)
        if got is None:
            reuse = self.reuse and ns not in self.dirty
            got = self.tables[ns] = self.lister.tables.connected(ns, pid, reuse=reuse)
        return got

    def tcp(self, st: ProcStat) -> bool:
        look = self.look(st)
        if look is None or not look.fds.sockets:
            return False
        return not look.fds.sockets.isdisjoint(self.connected(look.netns, st.pid))

    def own_reason(self, st: ProcStat) -> str:
        """The reasons of blocked() that need nothing but the stat line."""
        if st.kernel_thread or st.pid == 2 or st.ppid == 2:
            return "kernel thread"
        if st.pid == 1:
            return "system process (pid 1)"
        if st.pid == self.lister.agent_pid:
            return "the omview agent itself"
        if st.tty_nr != 0:
            return f"attached to terminal {tty_name(st.tty_nr)}"
        return ""

    def blocked(self, st: ProcStat) -> str:
        """ProcessLister.blocked() from this listing's reads (once per process and listing: a tree's
        root and its members are asked again for every root above them)."""
        why = self.why.get(st.pid)
        if why is None:
            why = self.why[st.pid] = self.own_reason(st) or ("open TCP connection" if self.tcp(st) else "")
        return why

    def blocked_pid(self, pid: int) -> str:
        s = self.stat_of(pid)
        return "" if s is None else self.blocked(s)

    def find_new_connections(self) -> None:
        """A connection none of the processes looked at is known to hold is new since their fds were
        read: read the fds of every process again (once), so that it shows at once. What still belongs
        to nobody (the kernel's own sockets, processes of other nodes) is remembered as such."""
        lister = self.lister
        own = lister.scope.own_netns
        holders = {k: lk for k, lk in self.looks.items() if lk is not None}
        spaces = {lk.netns for lk in holders.values() if lk.fds.sockets} | {own}
        pid_of = {lk.netns: k[0] for k, lk in holders.items() if lk.fds.sockets}
        for ns in spaces:
            self.connected(ns, pid_of.get(ns, os.getpid()))
        known = {s for lk in holders.values() for s in lk.fds.sockets}
        if any(conn - known - lister.orphans.get(ns, set()) for ns, conn in self.tables.items()):
            for key in [k for k in holders if k not in self.scanned]:
                s = self.stats.get(key[0])
                if s is not None and s.key == key:
                    self.look(s, again=True)
            holders = {k: lk for k, lk in self.looks.items() if lk is not None}
            known = {s for lk in holders.values() for s in lk.fds.sockets}
            for k, lk in holders.items():  # a namespace that showed up in the second reading
                if lk.fds.sockets and lk.netns not in self.tables:
                    self.connected(lk.netns, k[0])
        lister.orphans = {ns: conn - known for ns, conn in self.tables.items()}
        lister.tables.keep_only({ns for ns in self.tables if ns is not None})

    # --- movable.Reader, from the caches
    def namespace_init(self, pid: int, my_ns: int | None) -> int | None:
        return self._pidns(pid, my_ns)[0]

    def own_pidns_init(self, pid: int) -> bool:
        return self._pidns(pid, self.lister.agent_ns)[1]

    def _pidns(self, pid: int, my_ns: int | None) -> tuple[int | None, bool]:
        # a process never changes its PID namespace and that namespace's init never changes (when the
        # init ends, the kernel ends the whole namespace): kept for the process's lifetime
        s = self.stat_of(pid)
        key = s.key if s is not None else None
        if self.fresh or key is None:
            return movable.namespace_init(pid, my_ns), movable.own_pidns_init(pid)
        got = self.lister.pidns.get(key)
        if got is None:
            got = self.lister.pidns[key] = (movable.namespace_init(pid, my_ns), movable.own_pidns_init(pid))
        self.lister.pidns_seen.add(key)
        return got

    def stat(self, pid: int) -> ProcStat | None:
        return self.stat_of(pid)

    def start_time(self, pid: int) -> int | None:
        s = self.stat_of(pid)
        return None if s is None else s.starttime

    def file_reason(self, pid: int) -> str:
        s = self.stat_of(pid)
        look = self.look(s) if s is not None else None
        if look is None:
            return super().file_reason(pid)
        if look.fds.deleted:
            return look.fds.deleted
        if look.paths is None:
            look.paths = movable.path_rules(pid)
        return look.paths

    def tids(self, pid: int) -> list[int]:
        s = self.stat_of(pid)
        look = self.look(s) if s is not None else None
        if look is None:
            return movable.tids(pid)
        if look.tids is None:
            look.tids = movable.tids(pid)
        return look.tids


class ProcessLister:
    """Builds ProcessInfo records; runs in the agent's worker thread.

    What a listing reads again every time: /proc/PID/stat (state, terminal, sessions...), status (uid),
    cmdline, the fd count and the connected TCP sockets. A process's fds, cwd, root and program are
    read again when its fd count changed, when a connection nobody is known to hold appears, and at
    least every RESCAN_EVERY listings (docs/agent.md, "How fresh cantmove is")."""

    def __init__(self, scope: Scope, criu: CriuProbe) -> None:
        self.scope = scope
        self.criu = criu
        self.agent_pid = os.getpid()
        self._users: dict[int, str] = {}
        self._passwd: tuple[int, int] | None = None
        self.agent_ns = criumod.pidns_of(self.agent_pid)
        #: filled by list(): movable-so-far roots outside a PID namespace of their own -> the PIDs and
        #: TIDs a target must have free (the caller asks a peer, see Agent.op_procs_list)
        self.pid_checks: dict[int, list[int]] = {}
        self.tables = TcpTables()
        self.listing = 0  # full listings so far
        self.looks: dict[tuple[int, int], _Look] = {}
        self.statics: dict[tuple[int, int], _Static] = {}
        self.orphans: dict[tuple[int, int] | None, set[str]] = {}
        self.sockets_seen: set[str] = set()  # the sockets of self.looks after the last full listing
        self.pidns: dict[tuple[int, int], tuple[int | None, bool]] = {}
        self.pidns_seen: set[tuple[int, int]] = set()
        self.children_files = os.path.exists(f"/proc/self/task/{threading.get_native_id()}/children")
        self._lock = threading.Lock()

    def user(self, uid: int) -> str:
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._users[uid] = name
        return name

    def _users_fresh(self) -> None:
        """Forget the user names when /etc/passwd changed (a user added or renamed)."""
        try:
            st = os.stat("/etc/passwd")
            mark: tuple[int, int] | None = (st.st_mtime_ns, st.st_ino)
        except OSError:
            mark = None
        if mark != self._passwd:
            self._passwd = mark
            self._users.clear()

    # --- the fresh checks (a migration's pre-flight calls these from another thread)
    def _tcp_inodes(self, pid: int, cache: dict[tuple[int, int] | None, set[str]]) -> set[str]:
        """Socket inodes of connected TCP sockets in the process's network namespace."""
        ns = netns_key(pid)
        if ns not in cache:
            cache[ns] = self.tables.connected(ns, pid)
        return cache[ns]

    def _has_tcp_connection(self, pid: int, cache: dict[tuple[int, int] | None, set[str]]) -> bool:
        look = movable.look_fds(pid)
        if look is None or not look.sockets:
            return False
        return not look.sockets.isdisjoint(self._tcp_inodes(pid, cache))

    def blocked(self, st: ProcStat, cache: dict[tuple[int, int] | None, set[str]]) -> str:
        """The reasons that concern one process by itself (read now, nothing kept)."""
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

    # --- the listing
    def _pids(self) -> list[int]:
        """Scope.pids(), sorted."""
        return sorted(self.scope.pids())

    def _static(self, st: ProcStat, fresh: bool) -> _Static | None:
        """ST's uid and command line: kept from an earlier listing while it has run no exec (same
        exec_mark) and kept its name, and its staggered turn to be read again has not come (a setuid
        without exec shows within RESCAN_EVERY listings); read now otherwise."""
        key = st.key
        old = None if fresh else self.statics.get(key)
        if (old is not None and old.mark is not None and old.mark == st.exec_mark and old.name == st.name
                and (st.pid + self.listing) % RESCAN_EVERY != 0):  # fmt: skip
            return old
        new = read_static(st)
        if new is not None and not fresh:
            self.statics[key] = new
        return new

    def _cantmove(self, run: _Listing, st: ProcStat) -> str:
        """The first reason this process cannot migrate that can be seen here, or "" when none. The
        target's part (PIDs free there) is asked separately for the roots in pid_checks."""
        why = run.blocked(st)
        if why:
            return why
        status = self.criu.status
        if not status.checked:
            return "CRIU check has not finished yet"
        if not status.ok:
            return CRIU_MISSING
        f = movable.facts(st.pid, my_ns=self.agent_ns, blocked=run.blocked_pid, children=run.children,
                        maps=False, reader=run)  # fmt: skip
        if not f.reason and f.pids:
            self.pid_checks[st.pid] = f.pids
        return f.reason

    def list(
        self,
        *,
        node_id: int,
        cpu: dict[tuple[int, int], float],
        locks: frozenset[tuple[int, int]] | set[tuple[int, int]],
        pid: int | None = None,
    ) -> list[ProcessInfo]:
        """This node's processes (or the one with ``pid``, if it is on this node)."""
        with self._lock:
            return self._list(node_id, cpu, locks, pid)

    def _list(
        self,
        node_id: int,
        cpu: dict[tuple[int, int], float],
        locks: frozenset[tuple[int, int]] | set[tuple[int, int]],
        pid: int | None,
    ) -> builtins.list[ProcessInfo]:  # `list` here would be the method above
        self.pid_checks = {}
        if pid is not None:
            pids = [pid] if self.scope.contains(pid) else []
        else:
            self.listing += 1
            pids = self._pids()
        self._users_fresh()
        stats: dict[int, ProcStat] = {}
        for p in pids:
            s = read_stat(p)
            if s is not None:
                stats[p] = s
        run = _Listing(self, dict(stats), fresh=pid is not None)
        if pid is None:
            # read (or validate) the fds of every process whose TCP state counts before any reason is
            # decided, so that new connections are found before they are needed
            for s in stats.values():
                if not run.own_reason(s):
                    run.look(s)
            run.find_new_connections()
        out: list[ProcessInfo] = []
        fresh = pid is not None
        for p, st in stats.items():
            static = self._static(st, fresh)
            if static is None:
                continue  # exited meanwhile
            out.append(ProcessInfo(
                pid=p, ppid=st.ppid, uid=static.uid, user=self.user(static.uid), state=st.state, nice=st.nice,
                cpu=cpu.get(st.key, 0.0), rss=st.rss_pages * PAGE_SIZE, threads=st.threads, name=st.name,
                cmdline=static.cmdline, home=node_id, where=node_id, lock=st.key in locks, nmigs=0,
                cantmove=self._cantmove(run, st), job="",
            ))  # fmt: skip
        if pid is None:
            # forget what belongs to processes that ended (or were not looked at: read afresh later)
            self.looks = {k: v for k, v in self.looks.items() if run.looks.get(k) is not None}
            self.sockets_seen = {s for lk in self.looks.values() for s in lk.fds.sockets}
            if len(self.statics) > len(stats):
                live = {s.key for s in stats.values()}
                self.statics = {k: v for k, v in self.statics.items() if k in live}
            self.pidns = {k: v for k, v in self.pidns.items() if k in self.pidns_seen}
            self.pidns_seen = set()
        return out
