"""L2 agent: processes not started with mosrun - whether CRIU can move a process tree unchanged (the
local rules here, the target's `peer.proc.check` for PIDs and files there), and the facts a migration
needs to adopt a movable tree as a job (docs/migration.md, "Processes not started with mosrun").
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from omview.agent import criu as criumod
from omview.model.procfs import ProcStat, children_map, read_stat

#: fd targets CRIU recreates itself (no file by that path needed on the target)
_VIRTUAL = ("socket:", "pipe:", "anon_inode:", "/memfd:", "/dev/shm/omview-")
#: mapped "files" that are kernel objects, not paths
_PSEUDO_MAPS = ("[", "/memfd:", "/dev/zero", "/SYSV")


def nspid(pid: int) -> list[int]:
    """NSpid of /proc/PID/status: the PID in each namespace from the agent's down to the process's own."""
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    return []


def own_pidns_init(pid: int) -> bool:
    """PID is PID 1 of a PID namespace below the agent's: CRIU restores it with fresh global PIDs."""
    ids = nspid(pid)
    return len(ids) > 1 and ids[-1] == 1


def namespace_init(pid: int, my_ns: int | None) -> int | None:
    """The global PID of the init of PID's namespace when PID lives in a namespace below ours."""
    ns = criumod.pidns_of(pid)
    if ns is None or ns == my_ns:
        return None
    cur = pid
    for _ in range(64):  # bounded: nesting depth
        st = read_stat(cur)
        if st is None or criumod.pidns_of(st.ppid) != ns:
            return cur
        cur = st.ppid
    return cur


def tree(root: int, children: Mapping[int, list[int]] | None = None) -> list[int]:
    """ROOT and every process below it - what `criu dump -t ROOT` takes."""
    return [root, *criumod.descendants(root, children)]


class _Walk:
    """tree(ROOT) read as far as it is looked at: most reasons are found near the root, and a big tree
    (an sshd with many sessions) then costs a few reads instead of one per process. Same order."""

    def __init__(self, root: int, children: Mapping[int, list[int]]) -> None:
        self.children = children
        self.out = [root]
        self.seen = {root}
        self.todo = list(children.get(root, []))

    def _step(self) -> None:
        pid = self.todo.pop()
        self.out.append(pid)
        self.seen.add(pid)
        self.todo.extend(self.children.get(pid, []))

    def __iter__(self) -> Iterator[int]:
        i = 0
        while i < len(self.out) or self.todo:
            if i == len(self.out):
                self._step()
            yield self.out[i]
            i += 1

    def __contains__(self, pid: int) -> bool:
        while pid not in self.seen and self.todo:
            self._step()
        return pid in self.seen


def tids(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except (OSError, ValueError):
        return [pid]


def foreign_cwd(pid: int) -> bool:
    """PID's cwd is on a mount that is not in PID's mount namespace (e.g. a directory opened before a
    setns, as `nsenter --wd` does): CRIU's parasite mounts its private /proc under the cwd and fails
    with `mount failed (-22)`."""
    try:
        fd = os.open(f"/proc/{pid}/cwd", os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as fh:
            mnt = next((line.split()[1] for line in fh if line.startswith("mnt_id:")), "")
        with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="replace") as fh:
            ids = {line.split(None, 1)[0] for line in fh}
    except OSError:
        return False
    finally:
        os.close(fd)
    return bool(mnt) and mnt not in ids


@dataclass
class Facts:
    """What moving the tree rooted at ROOT needs; REASON is the first local obstacle ("" = none)."""

    root: int
    pids: list[int] = field(default_factory=list)  # the tree's global PIDs and TIDs
    ns_init: bool = False
    files: list[dict[str, Any]] = field(default_factory=list)  # path, kind (file/dir/other), size or -1
    reason: str = ""


@dataclass(frozen=True)
class FdLook:
    """One reading of a process's open fds: what the process list keeps between listings."""

    count: int  # st_size of /proc/PID/fd before the reading: the number of open fds (Linux >= 6.2, else 0)
    sockets: frozenset[str]  # inodes of its sockets (any kind; the caller matches them with TCP tables)
    deleted: str  # the reason for the first open file that was deleted, as facts() words it ("" = none)


def fd_count(pid: int) -> int | None:
    """How many fds PID has open (0 where the kernel does not say), None when it is gone/unreadable."""
    try:
        return os.stat(f"/proc/{pid}/fd").st_size
    except OSError:
        return None


def look_fds(pid: int) -> FdLook | None:
    """Read PID's fds once (readlink only): its sockets and the first deleted open file."""
    count = fd_count(pid)
    if count is None:
        return None
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    sockets: set[str] = set()
    deleted = ""
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            sockets.add(target[8:-1])
        elif not deleted and target.startswith("/") and not target.startswith(_VIRTUAL) \
                and target.endswith(" (deleted)"):  # fmt: skip
            deleted = _deleted_file(target)
    return FdLook(count, frozenset(sockets), deleted)


def _deleted_file(target: str) -> str:
    return f"open file {target[:-10]} was deleted (CRIU reopens files by path)"


def _fd_files(pid: int, files: dict[str, dict[str, Any]]) -> str:
    """Add PID's open files to FILES; returns a reason when one of them cannot be reopened by path."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return ""
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(_VIRTUAL) or not target.startswith("/"):
            continue
        if target.endswith(" (deleted)"):
            return _deleted_file(target)
        writing = True
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("flags:"):
                        writing = int(line.split()[1], 8) & 3 != 0
        _add(files, target, st, writing)
    return ""


def _add(files: dict[str, dict[str, Any]], path: str, st: os.stat_result, writing: bool) -> None:
    kind = "file" if stat.S_ISREG(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "other"
    # a file the tree writes to changes size while it runs: only its presence can be checked before the
    # freeze (CRIU's restore compares its size with the frozen one and the migration rolls back if not)
    size = st.st_size if kind == "file" and not writing else -1
    old = files.get(path)
    if old is None or (old["size"] >= 0 and size < 0):
        # owner and mode too: a restore (as root) must not open a file the job's owner could not
        access = "rw" if writing or (old is not None and old.get("access") == "rw") else "r"
        files[path] = {"path": path, "kind": kind, "size": size, "uid": st.st_uid, "gid": st.st_gid,
                       "mode": stat.S_IMODE(st.st_mode), "access": access}  # fmt: skip


def _map_files(pid: int, files: dict[str, dict[str, Any]]) -> str:
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) < 6:
                    continue
                path = parts[5].strip()
                if not path.startswith("/") or path.startswith(_PSEUDO_MAPS) or path in files:
                    continue
                if path.endswith(" (deleted)"):
                    return f"mapped file {path[:-10]} was deleted (CRIU reopens files by path)"
                with contextlib.suppress(OSError):
                    _add(files, path, os.stat(path), "w" in parts[1] and parts[1][3] == "s")
    return ""


def _session_outside(leader: int) -> str:
    return (f"session leader {leader} is outside its process tree (CRIU needs the whole session: start it "
            "with setsid)")  # fmt: skip


def _group_outside(leader: int) -> str:
    return f"process group leader {leader} is outside its process tree"


def path_rules(pid: int, files: dict[str, dict[str, Any]] | None = None) -> str:
    """The rules for PID's cwd, root and program (after its open and mapped files), then its owner
    (CRIU needs prlimit on it), SysV shared memory and TCP/UDP sockets CRIU cannot dump here: the
    first that fails as the reason ("" = none). Adds the paths to FILES when given."""
    for link in ("cwd", "root"):
        with contextlib.suppress(OSError):
            path = os.readlink(f"/proc/{pid}/{link}")
            if path.endswith(" (deleted)"):
                return f"its working directory {path[:-10]} was deleted"
            if files is not None:
                files.setdefault(path, {"path": path, "kind": "dir", "size": -1})
    if foreign_cwd(pid):
        return (f"working directory of {pid} is on a mount of another mount namespace (CRIU cannot "
                "dump it; cd into it from inside the namespace)")  # fmt: skip
    with contextlib.suppress(OSError):
        exe = os.readlink(f"/proc/{pid}/exe")
        if exe.endswith(" (deleted)"):
            return f"its program {exe[:-10]} was deleted"
        if files is not None:
            _add(files, exe, os.stat(f"/proc/{pid}/exe"), False)
    return _owner_rule(pid) or _sysv_rule(pid) or socket_rule(pid)


CAP_SYS_RESOURCE = 24


@functools.cache
def _agent_has_cap(bit: int) -> bool:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    return True  # unknown: let CRIU decide


def owner_reason(uid: int, gid: int) -> str:
    """Why CRIU cannot dump a process of UID/GID here, or "". Its dump reads every task's rlimits
    with prlimit(); the kernel allows that for another user's process only with CAP_SYS_RESOURCE
    (kernel/sys.c check_prlimit_permission), which some containers drop: then CRIU fails with
    "Can't get rlimit 0: Operation not permitted". Used for plain processes and for jobs."""
    if (uid, gid) == (os.getuid(), os.getgid()) or _agent_has_cap(CAP_SYS_RESOURCE):
        return ""
    return (f"it runs as uid {uid} and the agent lacks CAP_SYS_RESOURCE (CRIU reads its resource "
            "limits with prlimit(), which needs it for another user's process)")  # fmt: skip


def _owner_rule(pid: int) -> str:
    if _agent_has_cap(CAP_SYS_RESOURCE):
        return ""  # spares the stat
    try:
        st = os.stat(f"/proc/{pid}")  # owner = the process's effective uid and gid
    except OSError:
        return ""
    return owner_reason(st.st_uid, st.st_gid)


SYSV_SHM = "attached SysV shared memory (it belongs to the node's IPC namespace; CRIU cannot move it)"


def _shm_attached() -> bool:
    """Some SysV segment is attached (in the agent's IPC namespace, the nodes' usual one)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/sysvipc/shm", encoding="ascii") as fh:
            return any(int(line.split()[6]) > 0 for line in list(fh)[1:])
    return False


def _maps_sysv(pid: int) -> str:
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as fh:
            if any(" /SYSV" in line for line in fh):
                return SYSV_SHM
    return ""


def _sysv_rule(pid: int) -> str:
    """SysV shared memory belongs to the node's IPC namespace, not to the process: CRIU dumps it only
    with the whole namespace, so the dump fails. Maps are read only when some segment is attached."""
    return _maps_sysv(pid) if _shm_attached() else ""


#: socket protocols (xattr system.sockprotoname) CRIU dumps on every kernel
_LOCAL_SOCKETS = ("UNIX", "NETLINK")


def socket_rule(pid: int) -> str:
    """A TCP (listening, not yet connected), UDP or raw socket when this node's CRIU cannot dump one
    (criu.probe_inet_sockets: CRIU before the fix for Linux 6.16 fails on any of them). Connected TCP
    is the process list's own rule ("open TCP connection"). fds are read only when the probe said no."""
    trouble = criumod.inet_socket_trouble()
    if not trouble:
        return ""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return ""
    for fd in fds:
        path = f"/proc/{pid}/fd/{fd}"
        try:
            if not os.readlink(path).startswith("socket:"):
                continue
            proto = os.getxattr(path, "system.sockprotoname").rstrip(b"\0").decode("ascii", "replace")
        except OSError:
            continue
        if not proto.startswith(_LOCAL_SOCKETS):
            return (f"open {proto} socket (this node's CRIU cannot dump TCP/UDP sockets on Linux "
                    f"{os.uname().release}: {trouble})")  # fmt: skip
    return ""


def job_reason(uid: int, gid: int, pids: Iterable[int]) -> str:
    """Why a job whose tasks are PIDS (criu.job_tasks) cannot be dumped here ("" = none): its owner
    (owner_reason), SysV shared memory or a socket CRIU cannot dump in any of its tasks - what
    path_rules says of plain processes, for the job row of procs.list and the migration pre-flight."""
    why = owner_reason(uid, gid)
    if why:
        return why
    shm = _shm_attached()
    for pid in pids:
        why = (_maps_sysv(pid) if shm else "") or socket_rule(pid)
        if why:
            return why
    return ""


class Reader:
    """How facts() reads one process. This one reads /proc every time (a migration's pre-flight); the
    process list passes one that answers from what it keeps between listings (procs.ProcessLister)."""

    def namespace_init(self, pid: int, my_ns: int | None) -> int | None:
        return namespace_init(pid, my_ns)

    def own_pidns_init(self, pid: int) -> bool:
        return own_pidns_init(pid)

    def stat(self, pid: int) -> ProcStat | None:
        """PID's stat (the tree rules use ppid, pgrp, session, tty_nr), None when it is gone."""
        return read_stat(pid)

    def file_reason(self, pid: int) -> str:
        """The file rules without mapped files (the quick look): open files, cwd, root, program."""
        look = look_fds(pid)
        return (look.deleted if look is not None else "") or path_rules(pid)

    def tids(self, pid: int) -> list[int]:
        return tids(pid)

    def start_time(self, pid: int) -> int | None:
        """Field 22 of /proc/PID/stat (clock ticks after boot), None when PID does not exist."""
        st = self.stat(pid)
        return None if st is None else st.starttime

    def surely_outside(self, pid: int, root: int) -> bool:
        """PID cannot be in ROOT's tree: it does not exist, or it started before ROOT (a descendant is
        forked after its ancestor). Spares reading the tree when that alone decides the reason."""
        mine = self.start_time(root)
        if mine is None:
            return False
        theirs = self.start_time(pid)
        return theirs is None or theirs < mine


def facts(root: int, *, my_ns: int | None, blocked: Callable[[int], str],
          children: Mapping[int, list[int]] | None = None, maps: bool = True,
          reader: Reader | None = None) -> Facts:  # fmt: skip
    """Local eligibility of the tree rooted at ROOT. BLOCKED(pid) is the per-process check (kernel
    thread, agent, terminal, TCP...) that is applied to every process of the tree. CHILDREN: a
    procfs.children_map() (or a mapping that answers the same) to reuse. MAPS=False is the quick look of the
    process list: the same rules except mapped files, and no file list (f.files stays empty).
    READER: how processes are read (default: from /proc, every time)."""
    rd = reader or Reader()
    f = Facts(root)
    init = rd.namespace_init(root, my_ns)
    if init is not None and init != root:
        f.reason = (
            f"it runs inside the PID namespace of process {init} (migrate {init}, that namespace's init)"
        )
        return f
    f.ns_init = rd.own_pidns_init(root)
    # the root's own rules come first: when they decide, the tree below need not be read
    why = blocked(root)
    if why:
        f.reason = why
        return f
    ids = rd.stat(root)
    if ids is not None and ids.session != root and rd.surely_outside(ids.session, root):
        f.reason = _session_outside(ids.session)
        return f
    if ids is not None and ids.session == root and ids.pgrp != root and rd.surely_outside(ids.pgrp, root):
        f.reason = _group_outside(ids.pgrp)
        return f
    inside = _Walk(root, children if children is not None else children_map())
    for pid in inside:
        why = blocked(pid) if pid != root else ""
        if why:
            f.reason = f"its child {pid}: {why}"
            return f
        ids = rd.stat(pid)
        if ids is None:
            continue
        # CRIU (without --shell-job) restores sessions and groups only from leaders it dumped itself
        if ids.session not in inside:
            f.reason = _session_outside(ids.session)
            return f
        if ids.pgrp not in inside:
            f.reason = _group_outside(ids.pgrp)
            return f
    members = inside.out  # the whole tree by now
    if maps:
        files: dict[str, dict[str, Any]] = {}
        for pid in members:
            why = _fd_files(pid, files) or _map_files(pid, files) or path_rules(pid, files)
            if why:
                f.reason = why
                return f
        f.files = sorted(files.values(), key=lambda d: d["path"])
    else:
        for pid in members:
            why = rd.file_reason(pid)
            if why:
                f.reason = why
                return f
    if not f.ns_init:
        f.pids = sorted({t for pid in members for t in rd.tids(pid)})
    return f


def tree_files(root: int) -> list[dict[str, Any]]:
    """The files ROOT's tree has open or mapped, its cwds, roots and programs, with type, size, owner,
    mode and access (what check_here compares on the target). Read while the tree is frozen."""
    files: dict[str, dict[str, Any]] = {}
    for pid in (root, *criumod.descendants(root)):
        _fd_files(pid, files)
        _map_files(pid, files)
        path_rules(pid, files)
    return sorted(files.values(), key=lambda d: d["path"])


def _may_open(st: os.stat_result, uid: int, gids: set[int], item: dict[str, Any]) -> bool:
    """UID (in GIDS) may open ST as the job had it open (read, read-write; a directory: search)."""
    if uid == 0:
        return True
    bits = st.st_mode >> 6 if st.st_uid == uid else st.st_mode >> 3 if st.st_gid in gids else st.st_mode
    need = 1 if stat.S_ISDIR(st.st_mode) else 4 | (2 if item.get("access") == "rw" else 0)
    return bits & need == need


def _groups(uid: int, gid: int) -> set[int]:
    try:
        return set(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    except (KeyError, OSError):
        return {gid}


def pids_in_use(pids: list[int]) -> list[int]:
    """Those of PIDS that a process or thread of this node has."""
    return [pid for pid in pids if os.path.exists(f"/proc/{pid}")]


def check_here(node: int, pids: list[int], files: list[dict[str, Any]], source: int,
               owner: tuple[int, int] | None = None) -> list[str]:  # fmt: skip
    """The target's check (`peer.proc.check` before the freeze, the restore again just before CRIU
    reopens the files as root): PIDs taken here, files missing or different - another type or size,
    a path that is now a symbolic link or lies under one, another owner or mode, or (OWNER = the job's
    uid and gid) a file that user could not open here."""
    problems = [f"pid {pid} in use on node {node}" for pid in pids_in_use(pids)]
    gids = _groups(*owner) if owner is not None and owner[0] != 0 else set()
    for item in files:
        path = str(item.get("path", ""))
        try:
            st = os.stat(path)
        except OSError:
            problems.append(f"{path} does not exist on node {node}")
            continue
        # the source names files by their real path (readlink of /proc/PID/fd): a link on the way here
        # would make CRIU, which follows links, open another file
        if os.path.realpath(path) != path:
            problems.append(f"{path} is a symbolic link or lies under one on node {node} (not on node {source})")
            continue
        want = str(item.get("kind", "other"))
        have = "file" if stat.S_ISREG(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "other"
        if want != have:
            problems.append(f"{path} is not a {'directory' if want == 'dir' else want} on node {node}")
        elif want == "file" and int(item.get("size", -1)) >= 0 and st.st_size != int(item["size"]):
            problems.append(f"{path} has {st.st_size} bytes on node {node}, {item['size']} on node {source}")
        elif "uid" in item and (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (
            item["uid"], item.get("gid"), item.get("mode")
        ):
            problems.append(
                f"{path} has owner {st.st_uid}:{st.st_gid} mode {stat.S_IMODE(st.st_mode):o} on node {node}, "
                f"{item['uid']}:{item.get('gid')} mode {int(item.get('mode', 0)):o} on node {source}"
            )
        elif owner is not None and not _may_open(st, owner[0], gids, item):
            problems.append(f"user {owner[0]} may not open {path} on node {node}")
    return problems
