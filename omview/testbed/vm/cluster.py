"""Build, drive and tear down a cluster of QEMU VMs (root only): `omview-cluster up --vm`.

Each VM: QEMU microvm with Debian 12's kernel, a qcow2 overlay of the cached base image
(omview.testbed.vm.image), a tap on a private bridge, the project's checkout, venv and CRIU prefix
as read-only 9p shares at their host paths, its own files (keys, agent.toml, map) as a read-only
share and its logs as a writable one. omview/testbed/vm/guest_init.sh is its init. Host-visible
names derive from the state dir as for the namespace cluster (omview.testbed.api.Names), so
`down` finds everything even without vmcluster.json; a QEMU process is only ever signalled by the
PID and start time recorded when it was started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omview.model.procfs import alive, start_time
from omview.testbed.api import (
    _REAPER,
    SYSTEM_PATH,
    ClientFiles,
    ClusterError,
    Names,
    _global_lock,
    _links,
    _prepare_state_dir,
    _reap,
    _run,
    _spawn,
    _stop,
    _tail,
    _used_networks,
    _write_private,
    choose_subnet,
    write_client_files,
)
from omview.testbed.vm.image import DEFAULT_CACHE, Image, ensure_image

log = logging.getLogger(__name__)

STATE_FILE = "vmcluster.json"
MAX_VMS = 16
DEFAULT_VM_MEMORY_MB = 384
GUEST_INIT = Path(__file__).with_name("guest_init.sh")
CRIU_BASE = os.environ.get("OMVIEW_CRIU_BASE", "/opt/omview/criu")
QEMU = "qemu-system-x86_64"


def tap_name(names: Names, node: int) -> str:
    return f"omv{names.tag}t{node}"  # at most 15 characters, as every interface name


def is_vm_state(state_dir: str | os.PathLike[str]) -> bool:
    """STATE_DIR holds (or held, before a crash) a VM cluster rather than a namespace one."""
    state = Path(os.path.realpath(os.fspath(state_dir)))
    return (state / STATE_FILE).exists() or (state / "vm").is_dir()


@dataclass
class VmNode:
    """One VM, as recorded in STATE/vmcluster.json."""

    id: int
    name: str
    address: str
    tap: str
    mac: str
    dir: str
    qemu_pid: int | None = None
    qemu_start: int | None = None

    def qemu_alive(self) -> bool:
        return alive(self.qemu_pid, self.qemu_start)

    @property
    def serial_log(self) -> Path:
        return Path(self.dir) / "serial.log"


@dataclass
class VmCluster(ClientFiles):
    """A local VM cluster; create with VmCluster.up(), reattach with VmCluster.load()."""

    state_dir: Path
    tag: str
    bridge: str
    subnet: str
    bridge_address: str
    cpus_per_node: int
    mem_per_node: int
    vm_memory_mb: int
    accel: str  # "kvm" or "tcg"
    accel_reason: str
    agent_command: str
    image_dir: str
    agent: bool = True
    nodes: list[VmNode] = field(default_factory=list)
    created: float = 0.0
    build_s: float = 0.0  # seconds `up` spent building the base image (0: it was cached)
    boot_s: float = 0.0  # seconds from starting QEMU until every VM answered ssh with its agent up

    kind = "vm"

    # ---------------------------------------------------------------- paths
    @property
    def json_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def node(self, node: int | str) -> VmNode:
        """Look a VM up by ID (2), name ("node2") or address."""
        for n in self.nodes:
            if node in (n.id, n.name, n.address) or str(node) == str(n.id):
                return n
        raise ClusterError(f"no node {node!r} in {self.state_dir} (nodes: {', '.join(n.name for n in self.nodes)})")

    def agent_log(self, node: int | str) -> Path:
        """Host path of the VM's agent log (its /var/log/omview is a writable share)."""
        return Path(self.node(node).dir) / "log" / "agent.log"

    # ---------------------------------------------------------------- persistence
    def save(self) -> None:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        tmp = self.json_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.json_path)

    @classmethod
    def load(cls, state_dir: str | os.PathLike[str]) -> VmCluster:
        state = Path(os.path.realpath(os.fspath(state_dir)))
        path = state / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ClusterError(f"no VM cluster in {state} ({path} missing): start one with "
                               "`omview-cluster up --vm`") from None  # fmt: skip
        except (OSError, ValueError) as e:
            raise ClusterError(f"{path} is unreadable ({e}); `omview-cluster down --state {state}` cleans up") from e
        data["state_dir"] = state
        data["nodes"] = [VmNode(**n) for n in data.get("nodes", [])]
        return cls(**data)

    # ---------------------------------------------------------------- running things in a VM
    def ssh_argv(self, node: int | str, *command: str, tty: bool = False) -> list[str]:
        """argv to run COMMAND (one shell command line) on NODE over ssh with the cluster's config."""
        return ["ssh", "-F", str(self.ssh_config_path), *(["-t"] if tty else []), "--", self.node(node).name,
                *command]  # fmt: skip

    def exec_argv(self, node: int | str, argv: Sequence[str]) -> list[str]:
        """argv that runs ARGV in NODE (over ssh; the remote shell gets it quoted word by word)."""
        return self.ssh_argv(node, shlex.join(argv))

    def exec(self, node: int | str, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """subprocess.run(ARGV) in NODE; kwargs go to subprocess.run."""
        return subprocess.run(self.exec_argv(node, argv), **kwargs)

    def popen(self, node: int | str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """subprocess.Popen(ARGV) in NODE (the caller owns the local ssh process and reaps it)."""
        if not argv:
            return subprocess.Popen(self.ssh_argv(node, tty=True), **kwargs)
        return subprocess.Popen(self.exec_argv(node, argv), **kwargs)

    # ---------------------------------------------------------------- agents
    def _guest_ctl(self, node: int | str, action: str, timeout: float) -> subprocess.CompletedProcess[str]:
        argv = ["/bin/sh", str(GUEST_INIT), action]
        return self.exec(node, argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def agent_pid(self, node: int | str) -> int | None:
        """The PID (in the VM) of NODE's agent, None when it does not run or the VM does not answer."""
        try:
            cp = self._guest_ctl(node, "agent-pid", 30)
        except subprocess.TimeoutExpired:
            return None
        return int(cp.stdout) if cp.returncode == 0 and cp.stdout.strip().isdigit() else None

    def agent_start(self, node: int | str, *, timeout: float = 60.0) -> int:
        """Start NODE's agent and wait until its socket exists; returns its PID in the VM."""
        try:
            cp = self.exec(node, ["/bin/sh", str(GUEST_INIT), "agent-start", str(int(timeout * 10))],
                           capture_output=True, text=True, timeout=timeout + 30, stdin=subprocess.DEVNULL)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise ClusterError(f"agent start on {self.node(node).name} did not finish") from None
        if cp.returncode != 0 or not cp.stdout.strip().isdigit():
            raise ClusterError(f"agent on {self.node(node).name} did not start: {cp.stderr.strip()}")
        return int(cp.stdout)

    def agent_stop(self, node: int | str) -> None:
        """SIGTERM NODE's agent and wait (SIGKILL after 10 s)."""
        self._guest_ctl(node, "agent-stop", 60)

    def agent_kill(self, node: int | str) -> None:
        """SIGKILL NODE's agent (a crash: the socket file stays)."""
        self._guest_ctl(node, "agent-kill", 30)

    def agent_restart(self, node: int | str, *, timeout: float = 60.0) -> int:
        self.agent_stop(node)
        return self.agent_start(node, timeout=timeout)

    def kill_vm(self, node: int | str) -> None:
        """SIGKILL NODE's QEMU process (the machine dies at once, as on a power cut)."""
        n = self.node(node)
        _stop(n.qemu_pid, n.qemu_start, grace=0)
        _reap(n.qemu_pid or 0)

    def restart_vm(self, node: int | str, *, boot_timeout: float = 240.0) -> float:
        """Power NODE off (if it runs) and boot it again from a fresh overlay, as a machine that
        crashed and was reinstalled: nothing of its earlier run (jobs, images, logs' state) is left
        on its disk. Returns the seconds until it answered ssh with its agent up."""
        n = self.node(node)
        if n.qemu_alive():
            self.kill_vm(n.id)
        # the host's ssh master to the dead VM would hang every later exec until its keepalive gave up
        _run(["ssh", "-F", str(self.ssh_config_path), "-O", "exit", n.name], check=False, timeout=15)
        t0 = time.monotonic()
        self._boot_all(Image(Path(self.image_dir), kernel_version=""), boot_timeout, only=[n])
        self._ready_all(boot_timeout, fail=True, only=[n])
        return round(time.monotonic() - t0, 1)

    # ---------------------------------------------------------------- up / down
    @classmethod
    def up(
        cls,
        state_dir: str | os.PathLike[str],
        nodes: int,
        *,
        cpus_per_node: int = 1,
        mem_per_node: int = 2 * 1024**3,
        vm_memory_mb: int = DEFAULT_VM_MEMORY_MB,
        agent: bool = True,
        boot_timeout: float = 240.0,
        accel: str = "auto",
        cache: str = DEFAULT_CACHE,
    ) -> VmCluster:
        """Boot an N-VM cluster with its state in STATE_DIR; on any failure remove what was made."""
        if os.geteuid() != 0:
            raise ClusterError("omview-cluster up --vm needs root (bridge, taps, QEMU)")
        if not 1 <= nodes <= MAX_VMS:
            raise ClusterError(f"--nodes must be 1..{MAX_VMS} with --vm, not {nodes}")
        if shutil.which(QEMU) is None or shutil.which("qemu-img") is None:
            raise ClusterError(f"{QEMU} or qemu-img missing: run scripts/setup.sh (it installs the VM tools)")
        state = _prepare_state_dir(state_dir)
        names = Names.for_state(state)
        if (state / STATE_FILE).exists() or (state / "cluster.json").exists() or names.bridge in _links():
            raise ClusterError(f"a cluster is already up in {state} (or left over from a crash): "
                               f"run `omview-cluster down --state {state}` first")  # fmt: skip
        (state / "vm").mkdir(exist_ok=True)  # marks the state dir as a VM one from now on (down finds it)
        image, build_s = ensure_image(cache)
        chosen, reason = choose_accel(accel)
        cluster = cls(
            state_dir=state, tag=names.tag, bridge=names.bridge, subnet="", bridge_address="",
            cpus_per_node=cpus_per_node, mem_per_node=mem_per_node, vm_memory_mb=vm_memory_mb,
            accel=chosen, accel_reason=reason, image_dir=str(image.dir), agent=agent,
            agent_command=os.path.join(sysconfig.get_path("scripts"), "omview-agent"),
            created=time.time(), build_s=round(build_s, 1),
        )  # fmt: skip
        try:
            cluster._build(nodes, image, boot_timeout)
        except BaseException:
            log.info("VM cluster build failed, removing what was made in %s", state)
            with contextlib.suppress(Exception):
                vm_teardown(state)
            raise
        return cluster

    def _build(self, count: int, image: Image, boot_timeout: float) -> None:
        names = Names(self.tag)
        st = self.state_dir
        for f in ("known_hosts", "authorized_keys", "id_ed25519", "id_ed25519.pub"):
            with contextlib.suppress(FileNotFoundError):
                (st / f).unlink()
        shutil.rmtree(st / "nodes", ignore_errors=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"omview-cluster@{self.tag}",
              "-f", str(self.identity_path)])  # fmt: skip
        shutil.copyfile(st / "id_ed25519.pub", st / "authorized_keys")
        _write_private(self.key_path, secrets.token_hex(32) + "\n")
        with _global_lock():
            x = choose_subnet(self.tag, _used_networks())
            net = f"10.77.{x}"
            self.subnet, self.bridge_address = f"{net}.0/24", f"{net}.1"
            self.nodes = [
                VmNode(id=i, name=f"node{i}", address=f"{net}.{10 + i}", tap=tap_name(names, i),
                       mac=f"52:54:00:77:{x:02x}:{10 + i:02x}", dir=str(st / "nodes" / str(i)))
                for i in range(1, count + 1)
            ]  # fmt: skip
            self.save()  # early, so a crash from here on is cleaned up by the recorded names too
            _run(["ip", "link", "add", self.bridge, "type", "bridge", "mcast_snooping", "0"])
            _run(["ip", "addr", "add", f"{self.bridge_address}/24", "dev", self.bridge])
            _run(["ip", "link", "set", self.bridge, "up"])
            for n in self.nodes:
                _run(["ip", "tuntap", "add", "dev", n.tap, "mode", "tap"])
                _run(["ip", "link", "set", n.tap, "master", self.bridge, "up"])
        write_client_files(st, [(n.name, n.address) for n in self.nodes])
        with open(self.ssh_config_path, "a") as cfg:
            # an ssh login costs seconds of emulated key exchange: one master connection per VM,
            # shared by every exec (`down` ends them with `ssh -O exit`); keepalives end a master (and
            # every exec on it) to a VM that was killed within 30 s, not TCP's ~15 min (bench/faults.py
            # --vm: a request into the killed source VM hung for 430 s)
            cfg.write(f"Host *\n  ControlMaster auto\n  ControlPath {st}/ctl-%C\n  ControlPersist 600\n"
                      "  ServerAliveInterval 5\n  ServerAliveCountMax 6\n")
        for n in self.nodes:
            self._write_node_files(n, count)
        t0 = time.monotonic()
        self._boot_all(image, boot_timeout)
        if self.accel == "kvm" and not self._ready_all(min(boot_timeout, 90.0), fail=False):
            # KVM opened but could not run this kernel (e.g. a PVM host): software emulation instead
            for n in self.nodes:
                _stop(n.qemu_pid, n.qemu_start, grace=0)
            self.accel, self.accel_reason = "tcg", "a test boot with KVM did not reach userspace in time"
            t0 = time.monotonic()
            self._boot_all(image, boot_timeout)
        self._ready_all(boot_timeout, fail=True)
        self.boot_s = round(time.monotonic() - t0, 1)
        self.save()

    def _boot_all(self, image: Image, boot_timeout: float, *, only: list[VmNode] | None = None) -> None:
        for n in self.nodes if only is None else only:
            overlay = Path(n.dir) / "overlay.qcow2"
            with contextlib.suppress(FileNotFoundError):
                overlay.unlink()
            _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.base), str(overlay)])
            with contextlib.suppress(FileNotFoundError):
                n.serial_log.unlink()
            argv = self.qemu_argv(n, image)
            (Path(n.dir) / "qemu.cmdline").write_text(shlex.join(argv) + "\n")
            n.qemu_pid = _spawn(argv, log_path=Path(n.dir) / "qemu.out", env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"})
            n.qemu_start = start_time(n.qemu_pid)
            self.save()

    def _ready_all(self, timeout: float, *, fail: bool, only: list[VmNode] | None = None) -> bool:
        """Wait until every VM's init said "ready" (sshd up, agent up when asked for) and its sshd answers."""
        deadline = time.monotonic() + timeout
        pending = list(self.nodes if only is None else only)
        while pending:
            for n in list(pending):
                if not n.qemu_alive():
                    _reap(n.qemu_pid or 0)
                    raise ClusterError(f"VM {n.name} (QEMU PID {n.qemu_pid}) exited while booting:\n"
                                       f"{_tail(Path(n.dir) / 'qemu.out')}\n{_tail(n.serial_log, 15)}")  # fmt: skip
                if "omview-guest: ready" in _read(n.serial_log) and _tcp_answers(n.address, 22):
                    pending.remove(n)
            if pending and time.monotonic() >= deadline:
                if not fail:
                    return False
                n = pending[0]
                raise ClusterError(f"VM {n.name} not ready after {timeout:.0f} s ({self.accel}); its console:\n"
                                   f"{_tail(n.serial_log, 15)}")  # fmt: skip
            time.sleep(0.2)
        if fail:
            bad = [n.name for n in (self.nodes if only is None else only)
                   if "omview-guest: agent failed" in _read(n.serial_log)]  # fmt: skip
            if bad:
                raise ClusterError(f"agent did not start on {', '.join(bad)}: see {self.nodes[0].dir}/log/agent.log")
        return True

    def shares(self, n: VmNode) -> list[tuple[str, str, str, bool]]:
        """(tag, host path, guest path, read-only) of every 9p share of VM N."""
        repo = Path(__file__).resolve().parents[3]
        venv = Path(sys.prefix).resolve()
        out = [("omvsrc", str(repo), str(repo), True)]
        if repo not in venv.parents and venv != repo:
            out.append(("omvvenv", str(venv), str(venv), True))
        if os.path.isdir(CRIU_BASE):
            out.append(("omvcriu", CRIU_BASE, CRIU_BASE, True))
        out.append(("omvnode", str(Path(n.dir) / "guest"), "/mnt/omview-node", True))
        out.append(("omvlog", str(Path(n.dir) / "log"), "/var/log/omview", False))
        return out

    def qemu_argv(self, n: VmNode, image: Image) -> list[str]:
        accel = ["-accel", "kvm", "-cpu", "host"] if self.accel == "kvm" else \
            ["-accel", "tcg,thread=single,tb-size=128", "-cpu", "max"]  # fmt: skip
        shares = self.shares(n)
        cmdline = " ".join([
            "console=ttyS0", "quiet", "panic=-1", "mitigations=off",
            # without these, VMs booted side by side sometimes hang calibrating against the PIT
            f"tsc_early_khz={host_khz()}", "tsc=reliable",
            "omv9p=" + ",".join(f"{tag}:{guest}:{'ro' if ro else 'rw'}" for tag, _h, guest, ro in shares),
            f"omvinit={GUEST_INIT}",
        ])  # fmt: skip
        argv = [QEMU, "-name", f"omview-{n.name}", *accel, "-M", "microvm",
                "-global", "virtio-mmio.force-legacy=false", "-m", str(self.vm_memory_mb), "-smp", "1",
                "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-serial", f"file:{n.serial_log}",
                "-kernel", str(image.vmlinux), "-initrd", str(image.initrd), "-append", cmdline,
                "-drive", f"id=root,file={Path(n.dir) / 'overlay.qcow2'},format=qcow2,if=none,cache=unsafe",
                "-device", "virtio-blk-device,drive=root",
                "-drive", f"id=mods,file={image.modules},format=raw,if=none,readonly=on",
                "-device", "virtio-blk-device,drive=mods",
                "-netdev", f"tap,id=net0,ifname={n.tap},script=no,downscript=no",
                "-device", f"virtio-net-device,netdev=net0,mac={n.mac}"]  # fmt: skip
        for i, (tag, host, _guest, ro) in enumerate(shares):
            argv += ["-fsdev", f"local,id=fs{i},path={host},security_model=none{',readonly=on' if ro else ''}",
                     "-device", f"virtio-9p-device,fsdev=fs{i},mount_tag={tag}"]  # fmt: skip
        return argv

    def _write_node_files(self, n: VmNode, count: int) -> None:
        d = Path(n.dir)
        guest, logs = d / "guest", d / "log"
        for p in (d, guest, logs):
            p.mkdir(parents=True, exist_ok=True, mode=0o700)
        guest.chmod(0o755)
        hostkey = guest / "ssh_host_ed25519_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{n.name}@{self.tag}", "-f", str(hostkey)])
        pub = (guest / "ssh_host_ed25519_key.pub").read_text().split()
        with open(self.known_hosts_path, "a") as f:
            f.write(f"{n.name},{n.address} {pub[0]} {pub[1]}\n")
        venv_bin = Path(self.agent_command).parent
        (guest / "sshd_config").write_text("\n".join([
            f"# sshd of {n.name} (omview-cluster --vm {self.state_dir})",
            "Port 22", "HostKey /etc/ssh/ssh_host_ed25519_key", "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "AuthorizedKeysFile .ssh/authorized_keys", "MaxSessions 100",
            "MaxStartups 100:30:200", "PrintMotd no", "UseDNS no", "Subsystem sftp /usr/lib/openssh/sftp-server",
            f"SetEnv SHLVL=1 OMVIEW_NODE={n.id} PATH={venv_bin}:{SYSTEM_PATH}",
        ]) + "\n")  # fmt: skip
        # ssh inside a VM (the agents' peer links): the cluster's key and known hosts, by name or address
        lines = [f"# ssh in {n.name} (omview-cluster --vm)"]
        for m in self.nodes:
            lines += [f"Host {m.name}", f"  HostName {m.address}"]
        lines += ["Host *", "  User root", "  IdentityFile /root/.ssh/id_ed25519", "  IdentitiesOnly yes",
                  "  UserKnownHostsFile /etc/ssh/ssh_known_hosts", "  StrictHostKeyChecking yes",
                  "  BatchMode yes", "  CheckHostIP no", "  ConnectTimeout 30", "  LogLevel ERROR"]  # fmt: skip
        (guest / "ssh_config").write_text("\n".join(lines) + "\n")
        toml = [
            f"# agent of {n.name} (written by omview-cluster --vm)",
            f"node_id = {n.id}", f'address = "{n.address}"', 'interface = "eth0"',
            f"cpus = {self.cpus_per_node}", f"memory = {self.mem_per_node}", 'process_scope = "all"',
            'key_file = "/etc/omview/cluster.key"', "test_mode = true",
            'map_file = "/etc/omview/openmosix.map"', "discovery = false",
        ]  # fmt: skip
        (guest / "agent.toml").write_text("\n".join(toml) + "\n")
        (guest / "openmosix.map").write_text(
            f"# omview-cluster map: node IDs 1..{count} from {self.nodes[0].address}\n1 {self.nodes[0].address} {count}\n"
        )
        env = {"OMV_NAME": n.name, "OMV_ADDR": f"{n.address}/24", "OMV_GW": self.bridge_address,
               "OMV_AGENT": self.agent_command, "OMV_START_AGENT": "1" if self.agent else "0",
               "OMV_REAPER": _REAPER}  # fmt: skip
        (guest / "guest.env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
        _write_private(guest / "cluster.key", self.key_path.read_text())
        shutil.copyfile(self.identity_path, guest / "id_ed25519")
        (guest / "id_ed25519").chmod(0o600)
        # known_hosts is complete only once every node's key is in: written again by the last node
        for fname in ("authorized_keys", "known_hosts", "hosts"):
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(self.state_dir / fname, guest / fname)
        if n.id == count:
            for m in self.nodes:
                shutil.copyfile(self.known_hosts_path, Path(m.dir) / "guest" / "known_hosts")

    def down(self) -> None:
        vm_teardown(self.state_dir)

    def status(self) -> dict[str, Any]:
        """Plain dict for `status --json`: the recorded state plus liveness (asked over ssh)."""
        nodes = []
        for n in self.nodes:
            up = n.qemu_alive()
            ssh = up and _tcp_answers(n.address, 22)
            pid = self.agent_pid(n.id) if ssh else None
            nodes.append({"id": n.id, "name": n.name, "address": n.address, "tap": n.tap,
                          "qemu_pid": n.qemu_pid, "qemu_alive": up, "sshd_alive": ssh,
                          "agent_pid": pid, "agent_alive": pid is not None})  # fmt: skip
        return {
            "state_dir": str(self.state_dir), "kind": "vm", "accel": self.accel, "accel_reason": self.accel_reason,
            "bridge": self.bridge, "subnet": self.subnet, "ssh_config": str(self.ssh_config_path),
            "agent_command": self.agent_command, "image": self.image_dir, "vm_memory_mb": self.vm_memory_mb,
            "build_s": self.build_s, "boot_s": self.boot_s, "nodes": nodes,
        }  # fmt: skip


# ------------------------------------------------------------------------------------------ helpers


def choose_accel(want: str = "auto") -> tuple[str, str]:
    """("kvm" | "tcg", why). auto: KVM only where the CPU shows hardware virtualisation and /dev/kvm
    opens; the first boot then tests it (VmCluster._build falls back to TCG if it does not boot)."""
    if want == "tcg":
        return "tcg", "asked for (--accel tcg)"
    flags = ""
    with contextlib.suppress(OSError):
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    words = set(flags.split())
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
        kvm = True
    except OSError:
        kvm = False
    if kvm and words & {"vmx", "svm"}:
        return "kvm", "/dev/kvm opens and the CPU has vmx/svm"
    why = "no /dev/kvm" if not kvm else "/dev/kvm without vmx/svm (a PVM host: stock kernels do not run)"
    if want == "kvm":
        raise ClusterError(f"--accel kvm: {why}")
    return "tcg", why


def host_khz() -> int:
    """The host's TSC frequency in kHz (tsc_early_khz for the guests), from /proc/cpuinfo."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("cpu MHz"))
        return int(float(line.split(":")[1]) * 1000)
    return 2_000_000


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tcp_answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.0):
            return True
    except OSError:
        return False


def _recorded(state: Path) -> list[VmNode]:
    with contextlib.suppress(ClusterError, TypeError, KeyError):
        return VmCluster.load(state).nodes
    return []


def vm_teardown(state_dir: str | os.PathLike[str]) -> list[str]:
    """Kill every VM (by recorded PID and start time) and remove taps, bridge, overlays and
    vmcluster.json of the VM cluster in STATE_DIR. Idempotent; also after a crash."""
    if os.geteuid() != 0:
        raise ClusterError("omview-cluster down needs root")
    state = Path(os.path.realpath(os.path.abspath(os.fspath(state_dir))))
    names = Names.for_state(state)
    done: list[str] = []
    recorded = _recorded(state)
    cfg = state / "ssh_config"
    for n in recorded:  # the ssh master connections first (each is told to exit through its socket)
        if cfg.exists() and any(state.glob("ctl-*")):
            cp = _run(["ssh", "-F", str(cfg), "-O", "exit", n.name], check=False, timeout=15)
            if cp.returncode == 0:
                done.append(f"ssh master to {n.name}")
    for n in recorded:
        if n.qemu_alive():
            _stop(n.qemu_pid, n.qemu_start, grace=0)  # a VM keeps nothing we need: power off
            done.append(f"VM {n.name} (QEMU PID {n.qemu_pid})")
        _reap(n.qemu_pid or 0)
    # QEMU processes of this state dir that were not recorded (a crash between spawn and save)
    for pid, start in _unrecorded_qemus(state):
        _stop(pid, start, grace=0)
        done.append(f"QEMU PID {pid}")
    for link in _links():
        if link.startswith(f"omv{names.tag}t"):
            _run(["ip", "link", "del", link], check=False)
            done.append(f"tap {link}")
    if names.bridge in _links():
        _run(["ip", "link", "del", names.bridge], check=False)
        done.append(f"bridge {names.bridge}")
    for d in sorted((state / "nodes").glob("*")) if (state / "nodes").is_dir() else []:
        overlay = d / "overlay.qcow2"
        if overlay.exists():
            overlay.unlink()
            done.append(str(overlay))
    with contextlib.suppress(FileNotFoundError):
        (state / STATE_FILE).unlink()
        done.append(f"{state}/{STATE_FILE}")
    with contextlib.suppress(OSError):
        (state / "vm").rmdir()
    return done


def _unrecorded_qemus(state: Path) -> list[tuple[int, int | None]]:
    """QEMU processes whose command line names an overlay in STATE's node dirs."""
    found = []
    prefix = f"{state}/nodes/"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(QEMU.encode()) and any(prefix.encode() in a for a in args):
            found.append((int(entry), start_time(int(entry))))
    return found


def vm_leftovers(state_dir: str | os.PathLike[str]) -> list[str]:
    """Taps, bridge and QEMU processes of the VM cluster in STATE_DIR that still exist (for tests)."""
    state = Path(os.path.realpath(os.fspath(state_dir)))
    names = Names.for_state(state)
    found = [f"link {ln}" for ln in _links() if ln.startswith((f"omv{names.tag}t", names.bridge))]
    found += [f"QEMU PID {pid}" for pid, _s in _unrecorded_qemus(state)]
    return found
