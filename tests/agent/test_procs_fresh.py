"""How fresh procs.list's cantmove is now that the listing keeps what it read between listings
(omview/agent/node/procs.py ProcessLister; docs/agent.md "How fresh cantmove is"): real processes that
open TCP connections, get a terminal or lose a file after they were listed, against the listing of
this machine's processes (scope "all") and of a real agent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from omview.agent.node import movable
from omview.agent.node import procs as procs_mod
from omview.agent.node.procs import RESCAN_EVERY, CriuProbe, ProcessLister, TcpTables, _proc_tcp, process_row
from omview.agent.node.sampler import Scope, netns_key
from omview.model.cluster import ProcessInfo
from omview.model.procfs import ProcStat, read_stat
from tests.support.agents import PY, Cluster, wait_for

#: a session leader that does what its stdin says, one line at a time, and answers "ok <detail>"
CHILD = r"""
import fcntl, os, socket, sys, termios
port = int(sys.argv[1])
path = sys.argv[2]
held = open(os.devnull, "rb")  # an fd a connection can take the place of (same number of fds)
spare = socket.socket()  # a socket the listing sees before it is connected
conns = []
kid = 0
f = None
for line in sys.stdin:
    cmd, detail = line.strip(), ""
    if cmd == "connect-new":
        conns.append(socket.create_connection(("127.0.0.1", port)))
    elif cmd == "connect-swap":
        s = socket.create_connection(("127.0.0.1", port))
        os.dup2(s.fileno(), held.fileno())
        s.close()
    elif cmd == "connect-spare":
        spare.connect(("127.0.0.1", port))
    elif cmd == "close":
        for c in conns:
            c.close()
        conns.clear()
    elif cmd == "tty":
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        detail = os.ttyname(slave)
    elif cmd == "open":
        f = open(path, "w")
    elif cmd == "fork":
        r, w = os.pipe()
        kid = os.fork()
        if kid == 0:  # the child connects when the parent's pipe says so
            os.close(w)
            os.read(r, 1)
            c = socket.create_connection(("127.0.0.1", port))
            os.read(r, 1)
            os._exit(0)
        os.close(r)
        detail = str(kid)
    elif cmd == "kid-connect":
        os.write(w, b"x")
    print("ok", detail, flush=True)
"""


def idle(pid: int) -> str:
    """The reason of a CHILD that holds nothing but its unconnected spare socket: "" where CRIU dumps
    TCP sockets, the socket rule where it cannot (Linux >= 6.16 with an older CRIU; the criu fixture's
    check probed it, see movable.socket_rule)."""
    return movable.socket_rule(pid)


class Child:
    """One CHILD process (its own session, no terminal) in this machine's process list."""

    def __init__(self, port: int, path: str) -> None:
        self.proc = subprocess.Popen([PY, "-c", CHILD, str(port), path], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     start_new_session=True)  # fmt: skip
        self.pid = self.proc.pid

    def do(self, cmd: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{cmd}\n".encode())
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().decode().split()
        assert answer[:1] == ["ok"], f"child did not do {cmd!r}: {answer}"
        return answer[1] if len(answer) > 1 else ""

    def stop(self) -> None:
        victims = movable.tree(self.pid)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)


@pytest.fixture(scope="module")
def criu() -> CriuProbe:
    probe = CriuProbe(None)
    status = probe.check()
    # CI runs as root with CRIU installed (scripts/install-criu.sh): the tree rules need it
    assert status.ok, f"CRIU does not work here ({status.detail}): the file rules are not reached"
    return probe


@pytest.fixture
def server() -> Iterator[socket.socket]:
    """A listening socket on loopback; connections to it stay in its accept queue (never accepted)."""
    s = socket.create_server(("127.0.0.1", 0), backlog=64)
    yield s
    s.close()


@pytest.fixture
def child(server: socket.socket) -> Iterator[Callable[[], Child]]:
    made: list[Child] = []
    tmp = tempfile.mkdtemp(prefix="omview-test-procs-")

    def make() -> Child:
        c = Child(server.getsockname()[1], os.path.join(tmp, f"file{len(made)}"))
        made.append(c)
        c.do("noop")  # started and reading its commands
        return c

    yield make
    for c in made:
        c.stop()
    for name in os.listdir(tmp):
        os.unlink(os.path.join(tmp, name))
    os.rmdir(tmp)


def reasons(lister: ProcessLister, *, pid: int | None = None) -> dict[int, str]:
    return {p.pid: p.cantmove for p in lister.list(node_id=1, cpu={}, locks=set(), pid=pid)}


def established(pid: int) -> bool:
    """PID holds an ESTABLISHED IPv4 TCP socket (read from /proc directly, not by the code under test)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    rows = [line.split() for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]]
    return any(row[3] == "01" and row[9] in inodes for row in rows)


def fd_count(pid: int) -> int:
    return os.stat(f"/proc/{pid}/fd").st_size


def not_due(lister: ProcessLister, pid: int) -> None:
    """List until the next listing is not PID's turn to have its fds read anyway: what shows then
    was found by the rule under test, not by the periodic reading."""
    while (pid + lister.listing + 1) % RESCAN_EVERY == 0:
        reasons(lister)


@pytest.mark.parametrize("how", ["connect-new", "connect-swap", "connect-spare"])
def test_tcp_connection_shows_at_the_next_listing(criu: CriuProbe, child: Callable[[], Child], how: str) -> None:
    """A connection opened after the process was listed shows at the very next listing: with a new
    fd, in place of an fd it had (same fd count: found because nobody is known to hold the new
    connection), and on a socket the listing had seen unconnected."""
    lister = ProcessLister(Scope("all"), criu)
    c = child()
    for _ in range(3):
        assert reasons(lister)[c.pid] != "open TCP connection"
    not_due(lister, c.pid)
    before = fd_count(c.pid)
    c.do(how)
    if how != "connect-new" and before:  # Linux >= 6.2 counts fds: the swap really keeps the count
        assert fd_count(c.pid) == before
    assert reasons(lister)[c.pid] == "open TCP connection"
    assert reasons(lister)[c.pid] == "open TCP connection"


def test_closed_connection_is_gone_at_the_next_listing(criu: CriuProbe, child: Callable[[], Child]) -> None:
    lister = ProcessLister(Scope("all"), criu)
    c = child()
    c.do("connect-new")
    assert reasons(lister)[c.pid] == "open TCP connection"
    c.do("close")
    assert reasons(lister)[c.pid] == idle(c.pid)


def test_child_connection_names_the_child(criu: CriuProbe, child: Callable[[], Child]) -> None:
    lister = ProcessLister(Scope("all"), criu)
    c = child()
    kid = int(c.do("fork"))
    first = reasons(lister)
    assert first[c.pid] == idle(c.pid)  # nothing else keeps the tree from being checkpointed here
    assert first[kid] == f"session leader {c.pid} is outside its process tree (CRIU needs the whole session: " \
        "start it with setsid)"  # fmt: skip
    not_due(lister, kid)
    c.do("kid-connect")
    # connected, not only its socket made: between socket() and connect() the fd is already there
    wait_for(lambda: established(kid), 5, "the child to connect")
    now = reasons(lister)
    assert now[kid] == "open TCP connection"
    assert now[c.pid] == f"its child {kid}: open TCP connection"


def test_terminal_shows_at_the_next_listing(criu: CriuProbe, child: Callable[[], Child]) -> None:
    lister = ProcessLister(Scope("all"), criu)
    c = child()
    assert reasons(lister)[c.pid] == idle(c.pid)
    not_due(lister, c.pid)
    tty = c.do("tty")
    assert reasons(lister)[c.pid] == f"attached to terminal {tty}"


def test_deleted_file_within_rescan_every_listings(criu: CriuProbe, child: Callable[[], Child]) -> None:
    """File rules are re-read when the fd count changes and at least every RESCAN_EVERY listings;
    a one-process listing (procs.list pid=N, mps PID) reads everything afresh."""
    lister = ProcessLister(Scope("all"), criu)
    c = child()
    c.do("open")
    path = next(
        os.readlink(f"/proc/{c.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{c.pid}/fd")
        if os.readlink(f"/proc/{c.pid}/fd/{fd}").endswith("/file0")
    )  # fmt: skip
    assert reasons(lister)[c.pid] == idle(c.pid)
    os.unlink(path)
    want = f"open file {path} was deleted (CRIU reopens files by path)"
    assert RESCAN_EVERY <= 8  # the bound docs/agent.md promises
    seen = [reasons(lister)[c.pid] for _ in range(RESCAN_EVERY + 2)]
    first = seen.index(want)  # ValueError: never shown
    assert first < RESCAN_EVERY and set(seen[first:]) == {want}, seen
    other = child()
    other.do("open")
    reasons(lister)
    os.unlink(path[: -len("file0")] + "file1")
    assert reasons(lister, pid=other.pid)[other.pid] == want.replace("/file0", "/file1")


def _reference(lister: ProcessLister, pid: int) -> str | None:
    """cantmove as a migration's pre-flight reads it: everything from /proc, nothing kept."""
    st = read_stat(pid)
    if st is None:
        return None
    cache: dict[tuple[int, int] | None, set[str]] = {}
    why = lister.blocked(st, cache)
    if why:
        return why
    f = movable.facts(pid, my_ns=lister.agent_ns, blocked=lambda p: lister.blocked_pid(p, cache), maps=False)
    return f.reason


def test_listing_matches_fresh_reads(criu: CriuProbe, child: Callable[[], Child]) -> None:
    """Every reason the listing gives from what it kept is the one a fresh reading gives, also after
    the processes changed between listings."""
    lister = ProcessLister(Scope("all"), criu)
    kids = [child() for _ in range(6)]
    reasons(lister)
    kids[0].do("connect-new")
    kids[1].do("tty")
    kids[2].do("connect-swap")
    kids[3].do("fork")
    kids[4].do("open")
    for _ in range(2):
        listed = reasons(lister)
        for c in kids:
            for pid in movable.tree(c.pid):
                assert listed[pid] == _reference(lister, pid), pid
        checks = dict(lister.pid_checks)
        for c in (kids[3], kids[5]):  # movable so far: the PIDs and TIDs a target must have free
            if idle(c.pid):
                assert c.pid not in checks  # not movable: the target is not asked
                continue
            assert checks[c.pid] == sorted({t for p in movable.tree(c.pid) for t in movable.tids(p)})


def test_process_row_is_to_dict(criu: CriuProbe) -> None:
    lister = ProcessLister(Scope("all"), criu)
    rows = lister.list(node_id=3, cpu={}, locks=set())
    assert rows
    for p in rows:
        assert process_row(p) == p.to_dict()
        assert list(process_row(p)) == list(p.to_dict())


def test_netns_scope_lists_what_scope_lists(criu: CriuProbe) -> None:
    """The listing compares network namespaces by readlink: the same processes as Scope.pids()."""
    outside = subprocess.Popen(["unshare", "--net", "sleep", "60"], stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: Path(f"/proc/{outside.pid}/comm").read_text().strip() == "sleep", 10, "unshare to exec")
        lister = ProcessLister(Scope("netns"), criu)
        mine = lister._pids()
        scoped = set(Scope("netns").pids())
        assert os.getpid() in mine and outside.pid not in mine and outside.pid not in scoped
        assert mine == sorted(mine)
        # processes start and end meanwhile on a shared machine: compare the long-lived ones
        stable = set(mine) & set(lister._pids())
        assert stable <= scoped | {p for p in stable if not os.path.exists(f"/proc/{p}")}
    finally:
        outside.kill()
        outside.wait(10)


def test_agent_shows_new_connection_on_the_next_listing(
    cluster_factory: Callable[..., Cluster], child: Callable[[], Child]
) -> None:
    """The same through a real agent: procs.list polled, the process connects, the next listing says so."""
    cluster = cluster_factory(1).start()
    c = child()
    with cluster.agents[0].client() as client:
        def row() -> str:
            return next(str(r["cantmove"]) for r in client.call("procs.list") if r["pid"] == c.pid)

        for _ in range(3):
            assert row() != "open TCP connection"
        c.do("connect-swap")
        assert row() == "open TCP connection"


def _inode(s: socket.socket) -> str:
    return str(os.fstat(s.fileno()).st_ino)


#: in a network namespace of its own: a connected pair on loopback; prints the two inodes, then waits
NETNS_PAIR = r"""
import os, socket, sys, time
srv = socket.create_server(("127.0.0.1", 0))
c = socket.create_connection(srv.getsockname())
a, _ = srv.accept()
print(os.fstat(c.fileno()).st_ino, os.fstat(a.fileno()).st_ino, os.fstat(srv.fileno()).st_ino, flush=True)
time.sleep(60)
"""


def test_tcp_tables_sock_diag_matches_proc_net_tcp(criu: CriuProbe) -> None:
    """The sock_diag tables (own namespace, and another one through setns) hold what /proc/PID/net/tcp{,6}
    says; a listening socket is in neither; and a listing of scope "all" sees the other namespace's
    connection."""
    srv4 = socket.create_server(("127.0.0.1", 0))
    srv6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
    c4 = socket.create_connection(srv4.getsockname())
    c6 = socket.create_connection(srv6.getsockname()[:2])
    a4, _ = srv4.accept()
    a6, _ = srv6.accept()
    other = subprocess.Popen(["unshare", "--net", "sh", "-c", f"ip link set lo up && exec {PY} -c '{NETNS_PAIR}'"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert other.stdout is not None
        theirs = other.stdout.readline().decode().split()
        assert len(theirs) == 3, theirs
        tables = TcpTables()
        mine = {_inode(s) for s in (c4, c6, a4, a6)}
        for pid, connected, listening in ((os.getpid(), mine, {_inode(srv4), _inode(srv6)}),
                                          (other.pid, set(theirs[:2]), {theirs[2]})):  # fmt: skip
            ns = netns_key(pid)
            diag = tables.connected(ns, pid)
            proc = _proc_tcp(pid)
            assert connected <= diag and connected <= proc, (pid, connected, diag, proc)
            assert not listening & (diag | proc)
        assert not set(theirs) & tables.connected(netns_key("self"), os.getpid())
        assert netns_key(other.pid) in tables._socks  # a sock_diag socket inside the other namespace
        assert reasons(ProcessLister(Scope("all"), criu))[other.pid] == "open TCP connection"
    finally:
        other.kill()
        other.wait(10)
        for s in (c4, c6, a4, a6, srv4, srv6):
            s.close()


#: waits for a line on stdin, then does what it says: "exec" (the same program, another command line)
#: or "setuid" (to nobody, without exec); prints "ok" when done (after exec: when running again)
CHANGER = r"""
import os, sys, time
if sys.argv[1:] == ["after-exec"]:
    print("ok", flush=True)
    time.sleep(60)
    sys.exit(0)
print("ok", flush=True)
cmd = sys.stdin.readline().strip()
if cmd == "exec":
    os.execv(sys.executable, [sys.executable, "-c", "CODE = " + repr(CODE) + "\n" + CODE, "after-exec"])
elif cmd == "setuid":
    os.setresuid(65534, 65534, 65534)
    print("ok", flush=True)
    time.sleep(60)
"""


class Changer:
    """A process that runs exec (same program, so the same name) or setuid when told."""

    def __init__(self) -> None:
        code = "CODE = " + repr(CHANGER) + "\n" + CHANGER  # CODE: what it runs again after exec
        self.proc = subprocess.Popen([PY, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        self.pid = self.proc.pid
        self._answer()

    def _answer(self) -> None:
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().split() == [b"ok"]

    def do(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{cmd}\n".encode())
        self.proc.stdin.flush()
        self._answer()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def changer() -> Iterator[Changer]:
    c = Changer()
    yield c
    c.stop()


def rows(lister: ProcessLister) -> dict[int, ProcessInfo]:
    return {p.pid: p for p in lister.list(node_id=1, cpu={}, locks=set())}


def test_command_line_after_exec_shows_at_the_next_listing(criu: CriuProbe, changer: Changer) -> None:
    """The listing keeps a process's command line and uid, but an exec (here of the same program, so
    the name stays the same) moves the arguments (ProcStat.exec_mark): the next listing reads them."""
    lister = ProcessLister(Scope("all"), criu)
    for _ in range(2):
        assert rows(lister)[changer.pid].cmdline[-1] != "after-exec"
    not_due(lister, changer.pid)
    name = rows(lister)[changer.pid].name
    changer.do("exec")
    now = rows(lister)[changer.pid]
    assert now.name == name and now.cmdline[-1] == "after-exec", now


def test_setuid_without_exec_within_rescan_every_listings(criu: CriuProbe, changer: Changer) -> None:
    """A setuid changes neither the name nor exec_mark: the uid is read again at the process's staggered
    turn (within RESCAN_EVERY listings); a one-process listing reads it at once."""
    lister = ProcessLister(Scope("all"), criu)
    assert rows(lister)[changer.pid].uid == 0
    changer.do("setuid")
    assert lister.list(node_id=1, cpu={}, locks=set(), pid=changer.pid)[0].uid == 65534
    seen = [rows(lister)[changer.pid].uid for _ in range(RESCAN_EVERY + 1)]
    first = seen.index(65534)
    assert first < RESCAN_EVERY and set(seen[first:]) == {65534}, seen


def test_steady_listing_reads_status_and_cmdline_once_per_turn(
    criu: CriuProbe, child: Callable[[], Child], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What listing 5,000 processes a second costs (bench/procs.py): /proc/PID/status and cmdline of a
    process that changed nothing are read once per RESCAN_EVERY listings, not every time."""
    c = child()
    lister = ProcessLister(Scope("all"), criu)
    reasons(lister)
    read: list[int] = []
    real = procs_mod.read_static

    def counted(st: ProcStat) -> object:
        if st.pid == c.pid:
            read.append(lister.listing)
        return real(st)

    monkeypatch.setattr(procs_mod, "read_static", counted)
    for _ in range(2 * RESCAN_EVERY):
        assert reasons(lister)[c.pid] == idle(c.pid)
    assert len(read) == 2, read
    assert all((c.pid + n) % RESCAN_EVERY == 0 for n in read), read


def test_one_dump_holds_both_address_families() -> None:
    """The dump of both families at once (one walk of the kernel's hash table) is what the two dumps of
    one family each give, IPv4 and IPv6 connections alike."""
    srv4 = socket.create_server(("127.0.0.1", 0))
    srv6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
    c4 = socket.create_connection(srv4.getsockname())
    c6 = socket.create_connection(srv6.getsockname()[:2])
    a6, _ = srv6.accept()
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, procs_mod._NETLINK_SOCK_DIAG)
    try:
        sock.settimeout(5.0)
        both = procs_mod._diag_dump(sock, 1)
        each = procs_mod._diag_dump(sock, 2, socket.AF_INET) | procs_mod._diag_dump(sock, 3, socket.AF_INET6)
        assert {_inode(s) for s in (c4, c6, a6)} <= both
        # the machine's other connections come and go between the dumps: compare ours and the sizes
        assert both & {_inode(s) for s in (c4, c6, a6)} == each & {_inode(s) for s in (c4, c6, a6)}
        assert abs(len(both) - len(each)) < 50, (len(both), len(each))
    finally:
        for s in (sock, c4, c6, a6, srv4, srv6):
            s.close()


#: in a network namespace of its own: a listener; prints its port, then "accept"s when told
NETNS_SERVER = r"""
import socket, sys
srv = socket.create_server(("127.0.0.1", 0), backlog=8)
print(srv.getsockname()[1], flush=True)
conns = []
for line in sys.stdin:
    if line.strip() == "accept":
        conns.append(srv.accept()[0])
    print("ok", flush=True)
"""

#: run in the server's namespace: connects to it; told "reset", closes with a RST (SO_LINGER 0)
NETNS_CLIENT = r"""
import socket, struct, sys, time
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("ok", flush=True)
sys.stdin.readline()
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
c.close()
print("ok", flush=True)
time.sleep(60)
"""


class Quiet:
    """A listener in a network namespace of its own (no other traffic there) and its clients."""

    def __init__(self) -> None:
        self.server = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", f"ip link set lo up && exec {PY} -c '{NETNS_SERVER}'"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip
        self.clients: list[subprocess.Popen[bytes]] = []
        assert self.server.stdout is not None
        self.port = int(self.server.stdout.readline())
        self.pid = self.server.pid
        self.ns = netns_key(self.pid)

    @staticmethod
    def _say(proc: subprocess.Popen[bytes], line: str | None) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        if line is not None:
            proc.stdin.write(f"{line}\n".encode())
            proc.stdin.flush()
        assert proc.stdout.readline().split() == [b"ok"]

    def accept(self) -> None:
        self._say(self.server, "accept")

    def connect(self) -> subprocess.Popen[bytes]:
        c = subprocess.Popen(["nsenter", f"--net=/proc/{self.pid}/ns/net", PY, "-c", NETNS_CLIENT, str(self.port)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip
        self.clients.append(c)
        self._say(c, None)
        return c

    def reset(self, client: subprocess.Popen[bytes]) -> None:
        self._say(client, "reset")

    def stop(self) -> None:
        for p in [*self.clients, self.server]:
            p.kill()
            p.wait(10)


@pytest.fixture
def quiet() -> Iterator[Quiet]:
    q = Quiet()
    yield q
    q.stop()


def test_tcp_tables_reuse_a_dump_until_a_connection_changes(quiet: Quiet) -> None:
    """With reuse, a namespace's last dump stands in while its TCP counters stand still; a connection
    made or reset there is in the next answer. An accept() moves no counter (the connection was
    counted when its handshake completed; the listing sees the new socket among the process's fds)."""
    tables = TcpTables()
    first = tables.connected(quiet.ns, quiet.pid, reuse=True)
    assert tables.connected(quiet.ns, quiet.pid, reuse=True) is first  # nothing happened there
    assert tables.connected(quiet.ns, quiet.pid) is not first  # without reuse: a dump
    client = quiet.connect()
    pending = tables.connected(quiet.ns, quiet.pid, reuse=True)
    assert len(pending) == len(first) + 1  # the client's end (the server's is not accepted: no inode)
    quiet.accept()
    accepted = tables.connected(quiet.ns, quiet.pid)
    assert len(accepted) == len(first) + 2 and pending < accepted
    assert tables.connected(quiet.ns, quiet.pid, reuse=True) is accepted
    quiet.reset(client)
    assert tables.connected(quiet.ns, quiet.pid, reuse=True) == first  # loopback: the RST is in before "ok"


def test_listing_dumps_a_quiet_namespace_once_per_rescan(
    criu: CriuProbe, quiet: Quiet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a listing a second costs: a network namespace where no connection changes is dumped (a walk
    of the kernel's whole TCP hash table) at every RESCAN_EVERY-th listing, not every time; a connection
    accepted (new socket among the process's fds) or reset (counters) still shows at the next listing."""
    lister = ProcessLister(Scope("all"), criu)
    assert reasons(lister)[quiet.pid] != "open TCP connection"
    dumps: list[int] = []
    real = procs_mod._diag_dump

    def counted(sock: socket.socket, seq: int, family: int | None = None) -> set[str]:
        if sock is lister.tables._socks.get(quiet.ns):
            dumps.append(lister.listing)
        return real(sock, seq, family)

    monkeypatch.setattr(procs_mod, "_diag_dump", counted)
    for _ in range(2 * RESCAN_EVERY):
        assert reasons(lister)[quiet.pid] != "open TCP connection"
    assert len(dumps) == 2 and all(n % RESCAN_EVERY == 0 for n in dumps), dumps
    client = quiet.connect()
    assert reasons(lister)[client.pid] == "open TCP connection"  # a connect moves the counters
    assert reasons(lister)[quiet.pid] != "open TCP connection"  # still in its accept queue
    while (lister.listing + 1) % RESCAN_EVERY == 0:  # the next listing is not one that dumps anyway
        reasons(lister)
    quiet.accept()
    assert reasons(lister)[quiet.pid] == "open TCP connection"
    quiet.reset(client)
    while (lister.listing + 1) % RESCAN_EVERY == 0:
        reasons(lister)
    assert reasons(lister)[quiet.pid] != "open TCP connection"  # loopback: the RST is in before "ok"
