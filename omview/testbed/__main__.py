"""CLI `omview-cluster`: a thin layer over omview.testbed.api (up, down, status, exec, agent)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from omview.model.pipes import quiet_pipe
from omview.testbed.api import DEFAULT_STATE_DIR, Cluster, ClusterError, parse_size, teardown
from omview.testbed.vm import VmCluster, is_vm_state, vm_teardown


def _state(args: argparse.Namespace) -> str:
    return args.state or args.global_state or os.environ.get("OMVIEW_CLUSTER_STATE") or DEFAULT_STATE_DIR


def _load(state: str) -> Cluster | VmCluster:
    return VmCluster.load(state) if is_vm_state(state) else Cluster.load(state)


def _cmd_up(args: argparse.Namespace) -> int:
    if args.vm:
        return _up_vm(args)
    cluster = Cluster.up(
        _state(args), args.nodes, cpus_per_node=args.cpus_per_node, mem_per_node=args.mem_per_node,
        discovery=args.discovery, agent=not args.no_agent, agent_timeout=args.agent_timeout,
        pid_ns=args.pid_ns,
    )
    print(f"cluster up: {len(cluster.nodes)} nodes on {cluster.bridge} {cluster.subnet}, state {cluster.state_dir}")
    for n in cluster.nodes:
        agent = f"agent {n.agent_pid}" if n.agent_pid else "no agent"
        print(f"  {n.name:8} {n.address:15} netns {n.netns}  sshd {n.sshd_pid}  {agent}")
    print(f"ssh: ssh -F {cluster.ssh_config_path} node1 hostname")
    return 0


def _up_vm(args: argparse.Namespace) -> int:
    if args.discovery or args.pid_ns:
        raise ClusterError("--discovery and --pid-ns are namespace cluster options (every VM has its own PIDs)")
    vm = VmCluster.up(
        _state(args), args.nodes, cpus_per_node=args.cpus_per_node, mem_per_node=args.mem_per_node,
        vm_memory_mb=args.vm_memory, agent=not args.no_agent, boot_timeout=args.boot_timeout, accel=args.accel,
    )  # fmt: skip
    built = f"image built in {vm.build_s:.0f} s, " if vm.build_s else ""
    print(f"cluster up: {len(vm.nodes)} VMs ({vm.accel}: {vm.accel_reason}) on {vm.bridge} {vm.subnet}, "
          f"{built}booted in {vm.boot_s:.1f} s, state {vm.state_dir}")  # fmt: skip
    for n in vm.nodes:
        print(f"  {n.name:8} {n.address:15} tap {n.tap}  QEMU {n.qemu_pid}")
    print(f"ssh: ssh -F {vm.ssh_config_path} node1 hostname")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    state = _state(args)
    done = vm_teardown(state) if is_vm_state(state) else teardown(state)
    print(f"cluster down ({_state(args)}): " + (", ".join(done) if done else "nothing was left"))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    status = _load(_state(args)).status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    if status.get("kind") == "vm":
        return _print_vm_status(status)
    print(f"state {status['state_dir']}  bridge {status['bridge']}  subnet {status['subnet']}")
    print(f"{'node':8} {'address':15} {'netns':16} {'holder':>14} {'sshd':>14} {'agent':>14}")

    def pid(p: int | None, alive: bool) -> str:
        return "-" if not p else f"{p}{'' if alive else ' (dead)'}"

    for n in status["nodes"]:
        print(f"{n['name']:8} {n['address']:15} {n['netns']:16} {pid(n['holder_pid'], n['holder_alive']):>14} "
              f"{pid(n['sshd_pid'], n['sshd_alive']):>14} {pid(n['agent_pid'], n['agent_alive']):>14}")
    return 0


def _print_vm_status(status: dict[str, Any]) -> int:
    print(f"state {status['state_dir']}  VMs ({status['accel']}: {status['accel_reason']})  "
          f"bridge {status['bridge']}  subnet {status['subnet']}")  # fmt: skip
    print(f"{'node':8} {'address':15} {'tap':14} {'QEMU':>14} {'sshd':>6} {'agent (in VM)':>14}")
    for n in status["nodes"]:
        qemu = f"{n['qemu_pid']}{'' if n['qemu_alive'] else ' (dead)'}"
        agent = str(n["agent_pid"]) if n["agent_alive"] else "-"
        print(f"{n['name']:8} {n['address']:15} {n['tap']:14} {qemu:>14} {'up' if n['sshd_alive'] else 'down':>6} "
              f"{agent:>14}")  # fmt: skip
    return 0


def _cmd_exec(args: argparse.Namespace) -> int:
    argv = list(args.command)
    if argv and argv[0] == "--":
        argv.pop(0)
    if not argv:
        argv = ["/bin/bash", "-i"]
    cluster = _load(_state(args))
    proc = cluster.popen(args.node, [] if isinstance(cluster, VmCluster) and not args.command else argv)
    while True:
        try:
            rc = proc.wait()
            break
        except KeyboardInterrupt:
            continue  # Ctrl-C reached the command in the node too; its exit status decides
    return 128 - rc if rc < 0 else rc


def _cmd_agent(args: argparse.Namespace) -> int:
    cluster = _load(_state(args))
    node = cluster.node(args.node)
    if args.action == "start":
        print(f"agent on {node.name} started, PID {cluster.agent_start(node.id)}")
    elif args.action == "stop":
        cluster.agent_stop(node.id)
        print(f"agent on {node.name} stopped")
    elif args.action == "kill":
        cluster.agent_kill(node.id)
        print(f"agent on {node.name} killed")
    else:
        print(f"agent on {node.name} restarted, PID {cluster.agent_restart(node.id)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="omview-cluster",
        description="Build and drive a local multi-node omview cluster of network namespaces (root only).",
    )
    p.add_argument("--state", dest="global_state", metavar="DIR",
                   help=f"state dir of the cluster (default $OMVIEW_CLUSTER_STATE or {DEFAULT_STATE_DIR})")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument("--state", metavar="DIR", help="state dir of the cluster")

    up = sub.add_parser("up", parents=[state], help="build N nodes (netns, sshd, agent)")
    up.add_argument("--nodes", "-n", type=int, required=True, help="number of nodes (IDs 1..N)")
    up.add_argument("--cpus-per-node", type=int, default=1, metavar="C", help="CPUs each agent reports (1)")
    up.add_argument("--mem-per-node", type=_size, default=2 * 1024**3, metavar="BYTES",
                    help="memory each agent reports, bytes or with K/M/G suffix (2G)")
    up.add_argument("--discovery", action="store_true", help="no map file: agents find each other by multicast")
    up.add_argument("--pid-ns", action="store_true",
                    help="give every node a PID namespace of its own (PIDs per node, as on separate machines)")
    up.add_argument("--no-agent", action="store_true", help="do not start agents (sshd only)")
    up.add_argument("--agent-timeout", type=float, default=30.0, metavar="S",
                    help="seconds to wait for each agent's socket (30)")
    up.add_argument("--vm", action="store_true",
                    help="QEMU virtual machines instead of namespaces: own kernel, root, PIDs (docs/cluster.md)")
    up.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto",
                    help="with --vm: KVM, software emulation, or KVM only if it boots (auto)")
    up.add_argument("--vm-memory", type=int, default=384, metavar="MB", help="with --vm: memory of each VM (384)")
    up.add_argument("--boot-timeout", type=float, default=240.0, metavar="S",
                    help="with --vm: seconds to wait for every VM's sshd and agent (240)")
    up.set_defaults(func=_cmd_up)

    down = sub.add_parser("down", parents=[state], help="remove everything `up` made (also after a crash)")
    down.set_defaults(func=_cmd_down)

    status = sub.add_parser("status", parents=[state], help="list nodes and their processes")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_cmd_status)

    ex = sub.add_parser("exec", parents=[state], help="run a command inside a node: exec NODE -- CMD...")
    ex.add_argument("node", help="node ID, name or address")
    ex.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments (default: a shell)")
    ex.set_defaults(func=_cmd_exec)

    ag = sub.add_parser("agent", parents=[state], help="start, stop (SIGTERM), kill (SIGKILL) or restart an agent")
    ag.add_argument("node", help="node ID, name or address")
    ag.add_argument("action", choices=["start", "stop", "kill", "restart"])
    ag.set_defaults(func=_cmd_agent)
    return p


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ClusterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


@quiet_pipe
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="omview-cluster: %(message)s")
    try:
        return int(args.func(args))
    except ClusterError as e:
        print(f"omview-cluster: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("omview-cluster: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
