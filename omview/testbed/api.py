"""Test tooling (root only): build, drive and tear down a local N-node cluster of network namespaces.

Each node = netns + veth on a private bridge + a "holder" process owning the node's UTS and mount
namespaces (hostname, private /run, own /etc/omview and /var/lib/omview) + its own sshd and agent.
With ``pid_ns`` every node also gets a PID namespace of its own (the holder is its init, /proc is
remounted), so PIDs are per node as on separate machines; by default all nodes share the host's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sysconfig
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omview.model.errors import OmviewError
from omview.model.procfs import alive, start_time, task_children

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = "/var/lib/omview-cluster/default"
#: The init of a node's own PID namespace (pid_ns): reap every orphan of the node, forever. Killing
#: it (SIGKILL from the host) ends every process of the node, as a machine's power switch would.
_REAPER_PY = "/usr/bin/python3"
_REAPER = (
    "import os, signal\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])\n"
    "while True:\n"
    "    try:\n"
    "        while os.waitpid(-1, os.WNOHANG)[0] > 0: pass\n"
    "    except ChildProcessError: pass\n"
    "    signal.sigwait([signal.SIGCHLD])\n"
)
#: Host-wide lock serialising subnet allocation and the clean-up of /run/netns between clusters.
GLOBAL_LOCK = "/run/lock/omview-cluster.lock"
#: Content of GLOBAL_LOCK while /run/mount exists only because one of our clusters made it.
RUN_MOUNT_MARK = "run-mount-created"
MAX_NODES = 200
DEFAULT_CPUS = 1
DEFAULT_MEMORY = 2 * 1024**3
AGENT_SOCKET = "/run/omview/agent.sock"
NODE_CONFIG = "/etc/omview/agent.toml"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Inside a node these host paths are covered by per-node mounts, so a state dir there would vanish.
_FORBIDDEN_STATE_ROOTS = ("/run", "/proc", "/sys", "/dev", "/etc/omview", "/var/lib/omview")


class ClusterError(OmviewError):
    """Building, using or removing the local test cluster failed; the message says what to do."""


# ------------------------------------------------------------------------------------------ names


@dataclass(frozen=True)
class Names:
    """Every host-visible name of one cluster, derived from its state dir (so a crash loses nothing)."""

    tag: str

    @classmethod
    def for_state(cls, state_dir: str | os.PathLike[str]) -> Names:
        real = os.path.realpath(os.fspath(state_dir))
        return cls(hashlib.sha256(real.encode()).hexdigest()[:6])

    @property
    def bridge(self) -> str:
        return f"omv{self.tag}br"

    @property
    def netns_prefix(self) -> str:
        return f"omv{self.tag}-n"

    @property
    def veth_prefix(self) -> str:
        return f"omv{self.tag}v"

    def netns(self, node: int) -> str:
        return f"{self.netns_prefix}{node}"

    def veth(self, node: int) -> str:
        # host end; the node end is always "eth0" (interface names are limited to 15 chars)
        return f"{self.veth_prefix}{node}"


# ------------------------------------------------------------------------------------------ processes


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    try:
        cp = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as e:
        raise ClusterError(f"{argv[0]} not found: run scripts/setup.sh to install it") from e
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from e
    if check and cp.returncode != 0:
        raise ClusterError(f"{' '.join(argv)} failed (exit {cp.returncode}): {cp.stderr.strip()}")
    return cp


#: Children we started in this process; kept so they can be reaped (no zombies, no ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(argv: Sequence[str], *, log_path: Path, env: dict[str, str], append: bool = False) -> int:
    mode = "ab" if append else "wb"
    with open(log_path, mode) as out:
        try:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, close_fds=True,
            )
        except FileNotFoundError as e:
            raise ClusterError(f"{argv[0]} not found: run scripts/setup.sh") from e
    _CHILDREN[proc.pid] = proc
    return proc.pid


#: A process started through `nsenter -p` (which forks) -> that nsenter, reaped with it.
_VIA: dict[int, int] = {}


def _reap(pid: int) -> None:
    via = _VIA.pop(pid, None)
    if via is not None:
        _reap(via)
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)


def _forked_child(parent: int, *, what: str, log_path: Path, timeout: float = 10.0) -> tuple[int, int | None]:
    """The process PARENT (`unshare --fork`, `nsenter -p`) forked to run the real program."""
    start = start_time(parent)
    deadline = time.monotonic() + timeout
    while True:
        kids = task_children(parent)
        if kids:
            _VIA[kids[0]] = parent
            return kids[0], start_time(kids[0])
        if not alive(parent, start):
            _reap(parent)
            raise ClusterError(f"{what} exited before it started:\n{_tail(log_path)}")
        if time.monotonic() >= deadline:
            _stop(parent, start, grace=0)
            raise ClusterError(f"{what} did not start in {timeout:.0f} s:\n{_tail(log_path)}")
        time.sleep(0.005)


def _wait_gone(pid: int, start: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        proc = _CHILDREN.get(pid)
        if proc is not None and proc.poll() is not None:
            _CHILDREN.pop(pid, None)
            return True
        if not alive(pid, start):
            _reap(pid)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _signal(pid: int | None, start: int | None, sig: int) -> bool:
    """Send SIG to PID only if it is still the very process we recorded."""
    if not alive(pid, start):
        return False
    assert pid is not None
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _stop(pid: int | None, start: int | None, *, grace: float) -> None:
    """SIGTERM, wait up to GRACE seconds, then SIGKILL (grace=0: SIGKILL at once)."""
    if not pid:
        return
    if grace > 0 and _signal(pid, start, signal.SIGTERM) and _wait_gone(pid, start, grace):
        return
    if _signal(pid, start, signal.SIGKILL):
        _wait_gone(pid, start, 5.0)
    else:
        _reap(pid)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"(no {path.name})"
    return "\n".join(text[-lines:]) if text else f"({path.name} is empty)"


# ------------------------------------------------------------------------------------------ host state


@contextlib.contextmanager
def _global_lock() -> Iterator[int]:
    os.makedirs(os.path.dirname(GLOBAL_LOCK), exist_ok=True)
    fd = os.open(GLOBAL_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _read_mark(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 100).decode(errors="replace").strip()


def _write_mark(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, text.encode())


def _netns_list() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _links() -> list[str]:
    out = _run(["ip", "-o", "link", "show"], check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


_ROUTE_TYPES = {"local", "broadcast", "unicast", "unreachable", "blackhole", "prohibit", "throw",
                "multicast", "anycast", "nat"}


def _used_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks on this host's interfaces and in its routing tables (to avoid a clash)."""
    nets: list[ipaddress.IPv4Network] = []
    for line in _run(["ip", "-4", "-o", "addr", "show"], check=False).stdout.splitlines():
        toks = line.split()
        if "inet" in toks:
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Interface(toks[toks.index("inet") + 1]).network)
    for line in _run(["ip", "-4", "route", "show", "table", "all"], check=False).stdout.splitlines():
        toks = [t for t in line.split() if t not in _ROUTE_TYPES]
        if toks and toks[0] != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Network(toks[0], strict=False))
    return nets


def choose_subnet(tag: str, used: Sequence[ipaddress.IPv4Network]) -> int:
    """Pick X for 10.77.X.0/24: start at a value derived from TAG, skip anything overlapping USED.

    Very wide routes (shorter than /16, e.g. a 10.0.0.0/8 VPN route) do not count: our /24 on the
    bridge is more specific and wins.
    """
    start = int(tag, 16) % 256
    for i in range(256):
        x = (start + i) % 256
        cand = ipaddress.IPv4Network(f"10.77.{x}.0/24")
        if not any(cand.overlaps(n) and n.prefixlen >= 16 for n in used):
            return x
    raise ClusterError("no free 10.77.X.0/24 subnet left on this host; run `omview-cluster down` on old clusters")


def _is_mountpoint(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def _cleanup_host_traces(fd: int) -> None:
    """Remove what `ip netns` leaves in /run once no namespace at all is left (caller holds the lock)."""
    if _netns_list() or (os.path.isdir("/run/netns") and os.listdir("/run/netns")):
        return
    run_mount_before = os.path.exists("/run/mount")  # umount(8) itself may create it (libmount utab)
    if os.path.isdir("/run/netns"):
        # `ip netns add` bind-mounts /run/netns onto itself (same device, so os.path.ismount misses it)
        for _ in range(5):
            if not _is_mountpoint("/run/netns"):
                break
            _run(["umount", "/run/netns"], check=False)
        with contextlib.suppress(OSError):
            os.rmdir("/run/netns")
    if _read_mark(fd) == RUN_MOUNT_MARK or not run_mount_before:
        if os.path.isdir("/run/mount"):
            shutil.rmtree("/run/mount", ignore_errors=True)
        _write_mark(fd, "")


# ------------------------------------------------------------------------------------------ model


@dataclass
class Node:
    """One simulated node, as recorded in STATE/cluster.json."""

    id: int
    name: str
    address: str
    netns: str
    veth: str
    dir: str
    holder_pid: int | None = None  # with pid_ns: the init of the node's PID namespace
    holder_start: int | None = None
    sshd_pid: int | None = None
    sshd_start: int | None = None
    agent_pid: int | None = None
    agent_start: int | None = None

    def holder_alive(self) -> bool:
        return alive(self.holder_pid, self.holder_start)

    def sshd_alive(self) -> bool:
        return alive(self.sshd_pid, self.sshd_start)

    def agent_alive(self) -> bool:
        return alive(self.agent_pid, self.agent_start)


class ClientFiles:
    """Where a cluster's state directory keeps what a client needs: ssh config, known hosts,
    identity and cluster key (the same layout for the namespace and the VM cluster)."""

    state_dir: Path

    @property
    def ssh_config_path(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def known_hosts_path(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def identity_path(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def key_path(self) -> Path:
        """The shared cluster HMAC key (a copy is each node's /etc/omview/cluster.key)."""
        return self.state_dir / "cluster.key"


@dataclass
class Cluster(ClientFiles):
    """A local netns cluster; create with Cluster.up(), reattach with Cluster.load()."""

    state_dir: Path
    tag: str
    bridge: str
    subnet: str
    bridge_address: str
    cpus_per_node: int
    mem_per_node: int
    discovery: bool
    agent_command: str
    nodes: list[Node] = field(default_factory=list)
    created: float = 0.0
    pid_ns: bool = False  # every node has a PID namespace of its own

    # ---------------------------------------------------------------- paths
    @property
    def json_path(self) -> Path:
        return self.state_dir / "cluster.json"

    def node(self, node: int | str) -> Node:
        """Look a node up by ID (2), name ("node2") or address."""
        for n in self.nodes:
            if node in (n.id, n.name, n.address) or str(node) == str(n.id):
                return n
        raise ClusterError(f"no node {node!r} in {self.state_dir} (nodes: {', '.join(n.name for n in self.nodes)})")

    def agent_log(self, node: int | str) -> Path:
        return Path(self.node(node).dir) / "agent.log"

    def agent_socket(self, node: int | str) -> str:
        """Host-side path of the node's agent socket (through the holder's view of its mounts)."""
        return f"/proc/{self._holder(node).holder_pid}/root{AGENT_SOCKET}"

    def ssh_argv(self, node: int | str, *command: str) -> list[str]:
        """argv to run COMMAND on NODE over real ssh with this cluster's strict client config."""
        return ["ssh", "-F", str(self.ssh_config_path), "--", self.node(node).name, *command]

    # ---------------------------------------------------------------- persistence
    def save(self) -> None:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["names"] = {"bridge": self.bridge, "netns_prefix": Names(self.tag).netns_prefix,
                         "veth_prefix": Names(self.tag).veth_prefix}
        tmp = self.json_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.json_path)

    @classmethod
    def load(cls, state_dir: str | os.PathLike[str]) -> Cluster:
        """Reattach to the cluster recorded in STATE_DIR/cluster.json."""
        state = Path(os.path.realpath(os.fspath(state_dir)))
        path = state / "cluster.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ClusterError(f"no cluster in {state} ({path} missing): start one with `omview-cluster up`") from None
        except (OSError, ValueError) as e:
            raise ClusterError(f"{path} is unreadable ({e}); `omview-cluster down --state {state}` cleans up") from e
        data.pop("names", None)
        data["state_dir"] = state
        data["nodes"] = [Node(**n) for n in data.get("nodes", [])]
        return cls(**data)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write of cluster.json between processes (agent start/stop)."""
        fd = os.open(self.state_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            fresh = Cluster.load(self.state_dir)
            self.nodes = fresh.nodes
            yield
            self.save()
        finally:
            os.close(fd)

    # ---------------------------------------------------------------- running things in a node
    def _holder(self, node: int | str) -> Node:
        n = self.node(node)
        if not n.holder_alive():
            raise ClusterError(
                f"{n.name} is not running (holder PID {n.holder_pid} is gone); "
                f"`omview-cluster down --state {self.state_dir}` then `up` again"
            )
        return n

    def node_env(self, node: int | str, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a command in NODE: like a login there (node-default omview paths)."""
        n = self.node(node)
        env = dict(os.environ if base is None else base)
        for var in ("OMVIEW_SOCKET", "OMVIEW_CONFIG_DIR", "OMVIEW_STATE_DIR"):
            env.pop(var, None)
        env["OMVIEW_NODE"] = str(n.id)
        env.setdefault("HOME", "/root")
        env["PATH"] = f"{Path(self.agent_command).parent}:{SYSTEM_PATH}"
        return env

    def exec_argv(self, node: int | str, argv: Sequence[str]) -> list[str]:
        """argv that runs ARGV inside NODE's net, UTS and mount (and PID, with pid_ns) namespaces.

        With pid_ns nsenter forks: the PID of the started process is that of nsenter, whose child
        runs ARGV (its PID inside the node is what the node's agent and tools see)."""
        n = self._holder(node)
        return ["nsenter", "-t", str(n.holder_pid), "-n", "-u", "-m", *(["-p"] if self.pid_ns else []), *argv]

    def exec(self, node: int | str, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """subprocess.run(ARGV) inside NODE; kwargs go to subprocess.run (env is adjusted, see node_env)."""
        kwargs["env"] = self.node_env(node, kwargs.get("env"))
        return subprocess.run(self.exec_argv(node, argv), **kwargs)

    def popen(self, node: int | str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """subprocess.Popen(ARGV) inside NODE (the caller owns and reaps the process)."""
        kwargs["env"] = self.node_env(node, kwargs.get("env"))
        return subprocess.Popen(self.exec_argv(node, argv), **kwargs)

    # ---------------------------------------------------------------- agents
    def agent_start(self, node: int | str, *, timeout: float = 30.0) -> int:
        """Start NODE's agent and wait until its socket accepts connections; returns its PID."""
        with self._locked():
            n = self.node(node)
            if n.agent_alive():
                raise ClusterError(f"agent on {n.name} already runs (PID {n.agent_pid}); stop it first")
            pid, start = self._start_agent(n)
            self._await_agent(n, pid, start, timeout)
            n.agent_pid, n.agent_start = pid, start
        return pid

    def agent_stop(self, node: int | str, *, timeout: float = 10.0) -> None:
        """SIGTERM NODE's agent and wait (SIGKILL after TIMEOUT)."""
        self._agent_end(node, grace=timeout)

    def agent_kill(self, node: int | str) -> None:
        """SIGKILL NODE's agent (simulates a crash: the socket file stays behind)."""
        self._agent_end(node, grace=0)

    def agent_restart(self, node: int | str, *, timeout: float = 30.0) -> int:
        self.agent_stop(node)
        return self.agent_start(node, timeout=timeout)

    def _agent_end(self, node: int | str, *, grace: float) -> None:
        with self._locked():
            n = self.node(node)
            _stop(n.agent_pid, n.agent_start, grace=grace)
            n.agent_pid = n.agent_start = None

    def _start_agent(self, n: Node) -> tuple[int, int | None]:
        """Spawn NODE's agent (not waiting for it); returns PID and start time."""
        if not os.access(self.agent_command, os.X_OK):
            raise ClusterError(f"agent command {self.agent_command} missing: run scripts/setup.sh")
        self._holder(n.id)
        sock = Path(self.agent_socket(n.id))
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()  # a stale socket of a killed agent would fake readiness
        logp = Path(n.dir) / "agent.log"
        with open(logp, "a") as f:
            f.write(f"--- omview-cluster: agent start {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        # --wd=/ is an nsenter option (it precedes the program): a cwd of ours may not exist in the node
        argv = self.exec_argv(n.id, ["--wd=/", self.agent_command, "run", "--config", NODE_CONFIG])
        return self._spawn_in(n, argv, log_path=logp, env=self.node_env(n.id), append=True, what="agent")

    def _spawn_in(self, n: Node, argv: Sequence[str], *, log_path: Path, env: dict[str, str],
                  what: str, append: bool = False) -> tuple[int, int | None]:  # fmt: skip
        """Spawn a daemon inside node N; returns the PID (and start time) to signal it by."""
        pid = _spawn(argv, log_path=log_path, env=env, append=append)
        if self.pid_ns:
            return _forked_child(pid, what=f"{what} of {n.name}", log_path=log_path)
        return pid, start_time(pid)

    def _await_agent(self, n: Node, pid: int, start: int | None, timeout: float) -> None:
        """Wait until the agent PID listens on its socket; on failure stop it and say why."""
        sock = Path(self.agent_socket(n.id))
        logp = Path(n.dir) / "agent.log"
        deadline = time.monotonic() + timeout
        while True:
            if not alive(pid, start):
                _reap(pid)
                raise ClusterError(f"agent on node {n.id} did not start (it exited):\n{_tail(logp)}")
            if _socket_accepts(sock):
                return
            if time.monotonic() >= deadline:
                _stop(pid, start, grace=2.0)
                raise ClusterError(
                    f"agent on node {n.id} did not start ({AGENT_SOCKET} not ready after {timeout:.0f} s):\n"
                    f"{_tail(logp)}"
                )
            time.sleep(0.05)

    # ---------------------------------------------------------------- up / down
    @classmethod
    def up(
        cls,
        state_dir: str | os.PathLike[str],
        nodes: int,
        *,
        cpus_per_node: int = DEFAULT_CPUS,
        mem_per_node: int = DEFAULT_MEMORY,
        discovery: bool = False,
        agent: bool = True,
        agent_timeout: float = 30.0,
        pid_ns: bool = False,
    ) -> Cluster:
        """Build an N-node cluster with its state in STATE_DIR; on any failure remove what was made."""
        if os.geteuid() != 0:
            raise ClusterError("omview-cluster needs root (network namespaces, veth, bridge, sshd)")
        if not 1 <= nodes <= MAX_NODES:
            raise ClusterError(f"--nodes must be 1..{MAX_NODES}, not {nodes}")
        if cpus_per_node < 1:
            raise ClusterError(f"--cpus-per-node must be at least 1, not {cpus_per_node}")
        if mem_per_node < 16 * 1024**2:
            raise ClusterError(f"--mem-per-node must be at least 16 MiB, not {mem_per_node} bytes")
        state = _prepare_state_dir(state_dir)
        names = Names.for_state(state)
        if (state / "cluster.json").exists() or any(ns.startswith(names.netns_prefix) for ns in _netns_list()) \
                or names.bridge in _links():
            raise ClusterError(
                f"a cluster is already up in {state} (or left over from a crash): "
                f"run `omview-cluster down --state {state}` first"
            )
        agent_command = os.path.join(sysconfig.get_path("scripts"), "omview-agent")
        cluster = cls(
            state_dir=state, tag=names.tag, bridge=names.bridge, subnet="", bridge_address="",
            cpus_per_node=cpus_per_node, mem_per_node=mem_per_node, discovery=discovery,
            agent_command=agent_command, created=time.time(), pid_ns=pid_ns,
        )
        try:
            cluster._build(nodes, agent=agent, agent_timeout=agent_timeout)
        except BaseException:
            log.info("cluster build failed, removing what was made in %s", state)
            with contextlib.suppress(Exception):
                teardown(state)
            raise
        return cluster

    def _build(self, count: int, *, agent: bool, agent_timeout: float) -> None:
        names = Names(self.tag)
        st = self.state_dir
        for f in ("cluster.json", "known_hosts", "authorized_keys", "id_ed25519", "id_ed25519.pub"):
            with contextlib.suppress(FileNotFoundError):
                (st / f).unlink()
        shutil.rmtree(st / "nodes", ignore_errors=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"omview-cluster@{self.tag}",
              "-f", str(self.identity_path)])
        shutil.copyfile(st / "id_ed25519.pub", st / "authorized_keys")
        _write_private(self.key_path, secrets.token_hex(32) + "\n")

        with _global_lock() as lockfd:
            x = choose_subnet(self.tag, _used_networks())
            net = f"10.77.{x}"
            self.subnet, self.bridge_address = f"{net}.0/24", f"{net}.1"
            self.nodes = [
                Node(id=i, name=f"node{i}", address=f"{net}.{10 + i}", netns=names.netns(i),
                     veth=names.veth(i), dir=str(st / "nodes" / str(i)))
                for i in range(1, count + 1)
            ]
            self.save()  # early, so a crash from here on is cleaned up by the recorded names too
            if not os.path.exists("/run/mount"):  # our mount/umount calls will create it
                _write_mark(lockfd, RUN_MOUNT_MARK)
            _run(["ip", "link", "add", self.bridge, "type", "bridge", "mcast_snooping", "0"])
            _run(["ip", "addr", "add", f"{self.bridge_address}/24", "dev", self.bridge])
            _run(["ip", "link", "set", self.bridge, "up"])
            for n in self.nodes:
                self._make_netns(n)
        self._write_client_files()
        for n in self.nodes:
            self._write_node_files(n, count)
        for n in self.nodes:
            n.holder_pid, n.holder_start = self._start_holder(n)
            self.save()
        for n in self.nodes:
            n.sshd_pid, n.sshd_start = self._start_sshd(n)
            self.save()
        for n in self.nodes:
            _wait_tcp(n, 22, 15.0)
        if agent:
            # start all, then wait: Python start-up of N agents overlaps
            for n in self.nodes:
                n.agent_pid, n.agent_start = self._start_agent(n)
                self.save()
            for n in self.nodes:
                assert n.agent_pid
                self._await_agent(n, n.agent_pid, n.agent_start, agent_timeout)

    def _make_netns(self, n: Node) -> None:
        ns = n.netns
        _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", n.veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        _run(["ip", "link", "set", n.veth, "master", self.bridge, "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{n.address}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        # a default route lets the agent find "the default-route interface" as on a real node
        _run(["ip", "-n", ns, "route", "add", "default", "via", self.bridge_address])

    def _write_client_files(self) -> None:
        write_client_files(self.state_dir, [(n.name, n.address) for n in self.nodes])

    def _write_node_files(self, n: Node, count: int) -> None:
        d = Path(n.dir)
        etc, var = d / "etc-omview", d / "var-lib-omview"
        for p in (d, etc, var):
            p.mkdir(parents=True, exist_ok=True, mode=0o700)
        etc.chmod(0o755)
        var.chmod(0o755)
        hostkey = d / "ssh_host_ed25519_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{n.name}@{self.tag}", "-f", str(hostkey)])
        pub = (d / "ssh_host_ed25519_key.pub").read_text().split()
        with open(self.known_hosts_path, "a") as f:
            f.write(f"{n.name},{n.address} {pub[0]} {pub[1]}\n")
        venv_bin = Path(self.agent_command).parent
        (d / "sshd_config").write_text("\n".join([
            f"# sshd of {n.name} (omview-cluster {self.state_dir})",
            f"ListenAddress {n.address}", "Port 22", f"HostKey {hostkey}", "PidFile none",
            "PermitRootLogin prohibit-password", "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", f"AuthorizedKeysFile {self.state_dir}/authorized_keys",
            # the state dir may live under /tmp (mode 1777), which StrictModes would reject
            "StrictModes no", "MaxSessions 100", "MaxStartups 100:30:200", "PrintMotd no", "UseDNS no",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            # SHLVL=1 makes bash skip root's (possibly heavy) .bashrc for ssh commands
            f"SetEnv SHLVL=1 OMVIEW_NODE={n.id} PATH={venv_bin}:{SYSTEM_PATH}",
        ]) + "\n")
        toml = [
            f"# agent of {n.name} (written by omview-cluster)",
            f"node_id = {n.id}", f'address = "{n.address}"', 'interface = "eth0"',
            f"cpus = {self.cpus_per_node}", f"memory = {self.mem_per_node}", 'process_scope = "netns"',
            'key_file = "/etc/omview/cluster.key"', "test_mode = true",  # the migration tests' fault hooks
        ]
        if self.discovery:
            toml.append("discovery = true")
        else:
            toml += ['map_file = "/etc/omview/openmosix.map"', "discovery = false"]
            (etc / "openmosix.map").write_text(
                f"# omview-cluster map: node IDs 1..{count} from {self.nodes[0].address}\n"
                f"1 {self.nodes[0].address} {count}\n"
            )
        (etc / "agent.toml").write_text("\n".join(toml) + "\n")
        _write_private(etc / "cluster.key", self.key_path.read_text())

    def _start_holder(self, n: Node) -> tuple[int, int | None]:
        """Start the process owning NODE's namespaces (with pid_ns: the init of its PID namespace);
        returns its PID and start time."""
        for state_dir in ("/etc/omview", "/var/lib/omview"):
            os.makedirs(state_dir, exist_ok=True)
        d = Path(n.dir)
        ready = d / "holder.ready"
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        script = (
            "set -e\n"
            'hostname "$1"\n'
            "mount -t tmpfs -o mode=755,size=64m omview-run /run\n"
            "mkdir -m 755 /run/sshd /run/omview\n"
            'mount --bind "$2" /etc/omview\n'
            'mount --bind "$3" /var/lib/omview\n'
            # `ssh node3` inside a node uses the cluster's keys and known_hosts; names resolve
            'mount --bind "$4" /etc/ssh/ssh_config\n'
            'mount --bind "$5" /etc/hosts\n'
            'touch "$6"\n'
            # as a PID namespace's init it must reap the orphans of the node, as init does
            + (f"exec {_REAPER_PY} -c '{_REAPER}'\n" if self.pid_ns else "exec sleep infinity\n")
        )
        unshare = ["unshare", "--uts", "--mount", "--propagation", "private"]
        if self.pid_ns:
            # --kill-child: if the unshare is killed, so is the node's init (and with it the node)
            unshare += ["--pid", "--fork", "--mount-proc", "--kill-child"]
        argv = ["ip", "netns", "exec", n.netns, *unshare,
                "/bin/sh", "-c", script, "holder", n.name, str(d / "etc-omview"), str(d / "var-lib-omview"),
                str(self.ssh_config_path), str(self.state_dir / "hosts"), str(ready)]  # fmt: skip
        logp = d / "holder.log"
        pid = _spawn(argv, log_path=logp, env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"})
        start = start_time(pid)
        if self.pid_ns:  # the holder is the child `unshare --fork` made (reaped with it, see _VIA)
            pid, start = _forked_child(pid, what=f"holder of {n.name}", log_path=logp)
        deadline = time.monotonic() + 15.0
        # ip, unshare and sh all exec, so PID ends as `sleep` (or the reaper) once every mount is in place
        want = "python3" if self.pid_ns else "sleep"
        while True:
            if not alive(pid, start):
                _reap(pid)
                raise ClusterError(f"holder of {n.name} failed:\n{_tail(logp)}")
            try:
                if ready.exists() and Path(f"/proc/{pid}/comm").read_text().strip() == want:
                    return pid, start
            except OSError:
                pass
            if time.monotonic() >= deadline:
                _stop(pid, start, grace=0)  # with pid_ns: the node's init, and every process with it
                raise ClusterError(f"holder of {n.name} did not get ready in 15 s:\n{_tail(logp)}")
            time.sleep(0.01)

    def _start_sshd(self, n: Node) -> tuple[int, int | None]:
        d = Path(n.dir)
        argv = self.exec_argv(n.id, ["--wd=/", "/usr/sbin/sshd", "-D", "-f", str(d / "sshd_config"),
                                     "-E", str(d / "sshd.log")])
        return self._spawn_in(n, argv, log_path=d / "sshd.out", env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"},
                              what="sshd")  # fmt: skip

    def down(self) -> None:
        teardown(self.state_dir)

    def status(self) -> dict[str, Any]:
        """Plain dict for `status --json`: the recorded state plus liveness of every process."""
        return {
            "state_dir": str(self.state_dir), "bridge": self.bridge, "subnet": self.subnet,
            "ssh_config": str(self.ssh_config_path), "agent_command": self.agent_command,
            "nodes": [
                {"id": n.id, "name": n.name, "address": n.address, "netns": n.netns,
                 "holder_pid": n.holder_pid, "holder_alive": n.holder_alive(),
                 "sshd_pid": n.sshd_pid, "sshd_alive": n.sshd_alive(),
                 "agent_pid": n.agent_pid, "agent_alive": n.agent_alive()}
                for n in self.nodes
            ],
        }


# ------------------------------------------------------------------------------------------ helpers


def _prepare_state_dir(state_dir: str | os.PathLike[str]) -> Path:
    raw = os.fspath(state_dir)
    if not os.path.isabs(raw):
        raw = os.path.abspath(raw)
    state = Path(os.path.realpath(raw))
    for root in _FORBIDDEN_STATE_ROOTS:
        if state == Path(root) or Path(root) in state.parents:
            raise ClusterError(
                f"state dir {state} is under {root}, which each node covers with its own mount; "
                f"use another directory (default {DEFAULT_STATE_DIR})"
            )
    if any(c.isspace() for c in str(state)):
        raise ClusterError(f"state dir {state!r} contains white space, which sshd_config cannot carry")
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = state.stat()
    if st.st_uid != 0:
        raise ClusterError(f"state dir {state} is owned by uid {st.st_uid}, not root; use a root-owned directory")
    return state


def write_client_files(state: Path, nodes: Sequence[tuple[str, str]]) -> None:
    """STATE/ssh_config (strict: the cluster's key and known_hosts only) and STATE/hosts for NODES,
    a list of (name, address); shared by the namespace and the VM cluster."""
    lines = [f"# omview-cluster {state}: use with ssh -F {state / 'ssh_config'}"]
    for name, address in nodes:
        lines += [f"Host {name}", f"  HostName {address}"]
    lines += [
        "Host *", "  User root", f"  IdentityFile {state / 'id_ed25519'}", "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {state / 'known_hosts'}", "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes", "  BatchMode yes", "  CheckHostIP no", "  ConnectTimeout 10",
        "  LogLevel ERROR",
    ]
    (state / "ssh_config").write_text("\n".join(lines) + "\n")
    hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    hosts += [f"{address} {name}" for name, address in nodes]
    (state / "hosts").write_text("\n".join(hosts) + "\n")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def _socket_accepts(path: Path) -> bool:
    try:
        if not stat.S_ISSOCK(path.stat().st_mode):
            return False
    except OSError:
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _wait_tcp(n: Node, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not n.sshd_alive():
            _reap(n.sshd_pid or 0)
            raise ClusterError(f"sshd of {n.name} exited:\n{_tail(Path(n.dir) / 'sshd.log')}\n"
                               f"{_tail(Path(n.dir) / 'sshd.out')}")
        try:
            with socket.create_connection((n.address, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise ClusterError(f"sshd of {n.name} does not answer on {n.address}:{port} after "
                                   f"{timeout:.0f} s:\n{_tail(Path(n.dir) / 'sshd.log')}") from None
            time.sleep(0.05)


def teardown(state_dir: str | os.PathLike[str]) -> list[str]:
    """Remove every process, namespace, link and host trace of the cluster in STATE_DIR.

    Works from cluster.json when it is there and otherwise from the names derived from the state
    dir, so it also cleans up after a crash. Idempotent. Returns what it removed (for the CLI).
    """
    if os.geteuid() != 0:
        raise ClusterError("omview-cluster down needs root")
    state = Path(os.path.realpath(os.path.abspath(os.fspath(state_dir))))
    names = Names.for_state(state)
    done: list[str] = []
    recorded: list[Node] = []
    with contextlib.suppress(ClusterError, TypeError, KeyError):
        recorded = Cluster.load(state).nodes
    netns = sorted({n.netns for n in recorded} | {ns for ns in _netns_list() if ns.startswith(names.netns_prefix)})

    # Agents first and gently (they may want to leave their state tidy), then everything else hard.
    for n in recorded:
        if n.agent_alive():
            _stop(n.agent_pid, n.agent_start, grace=3.0)
            done.append(f"agent {n.name} (PID {n.agent_pid})")
    for n in recorded:
        for what, pid, start in (("sshd", n.sshd_pid, n.sshd_start), ("holder", n.holder_pid, n.holder_start)):
            if alive(pid, start):
                _stop(pid, start, grace=0)
                done.append(f"{what} {n.name} (PID {pid})")
    existing = set(_netns_list())
    for ns in netns:
        if ns not in existing:
            continue
        for _ in range(20):
            out = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
            pids = [int(p) for p in out if p.isdigit()]
            if not pids:
                break
            for pid in pids:
                start = start_time(pid)
                if _signal(pid, start, signal.SIGKILL):
                    done.append(f"process {pid} in {ns}")
            for pid in pids:
                _wait_gone(pid, None, 2.0)
        else:
            raise ClusterError(f"processes in netns {ns} do not die: {' '.join(out)}")
        _run(["ip", "netns", "del", ns], check=False)
        done.append(f"netns {ns}")
    links = _links()
    for link in links:
        if link.startswith(names.veth_prefix):
            _run(["ip", "link", "del", link], check=False)
            done.append(f"veth {link}")
    if names.bridge in links:
        _run(["ip", "link", "del", names.bridge], check=False)
        done.append(f"bridge {names.bridge}")
    with _global_lock() as fd:
        _cleanup_host_traces(fd)
    for n in recorded:
        done += _drop_migration_leftovers(Path(n.dir) / "var-lib-omview")
    for n in recorded:
        _reap(n.holder_pid or 0)
        _reap(n.sshd_pid or 0)
    with contextlib.suppress(FileNotFoundError):
        (state / "cluster.json").unlink()
        done.append(f"{state}/cluster.json")
    return done


def _drop_migration_leftovers(var: Path) -> list[str]:
    """A node's unfinished migrations (its agent is gone now): the arrivals in incoming/<id> (a restart
    would abort them anyway) and the image directories in the host's /dev/shm that its incoming/<id>
    and mig/<id> link to (omview-in-<id>, omview-out-<id>), which no other node's agent would ever
    remove. mig/<id> stays: it holds the CRIU logs of failed migrations."""
    done: list[str] = []
    for sub, prefix in (("incoming", "/dev/shm/omview-in-"), ("mig", "/dev/shm/omview-out-")):
        with contextlib.suppress(OSError):
            for entry in sorted((var / sub).iterdir()):
                images = entry / "images"
                if images.is_symlink():
                    real = os.path.realpath(images)
                    if real.startswith(prefix) and os.path.isdir(real):
                        shutil.rmtree(real, ignore_errors=True)
                        done.append(real)
                if sub == "incoming" and entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                    done.append(str(entry))
    return done


def leftovers(state_dir: str | os.PathLike[str]) -> list[str]:
    """Names of netns and links of the cluster in STATE_DIR that still exist (for tests)."""
    names = Names.for_state(state_dir)
    found = [f"netns {ns}" for ns in _netns_list() if ns.startswith(names.netns_prefix)]
    found += [f"link {ln}" for ln in _links() if ln.startswith((names.veth_prefix, names.bridge))]
    return found


def parse_size(text: str) -> int:
    """'2147483648', '2G', '512M', '1.5GiB' -> bytes (binary units)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    if t and t[-1] in "KMGT":
        mult = 1024 ** ("KMGT".index(t[-1]) + 1)
        t = t[:-1]
    try:
        value = float(t)
    except ValueError:
        raise ClusterError(f"bad size {text!r}: use bytes or a K/M/G/T suffix, e.g. 2G") from None
    if value <= 0:
        raise ClusterError(f"bad size {text!r}: must be positive")
    return int(value * mult)
