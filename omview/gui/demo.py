"""L4 GUI layer: ``--demo`` of the window programs - bring up (or reattach to) the local netns demo
cluster (omview.testbed, root only) and the settings that reach it over SSH.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from omview.gui.settings import GuiSettings

log = logging.getLogger(__name__)

DEMO_STATE_DIR = "/var/lib/omview-cluster/demo"
DEMO_NODES = 4


def add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", action="store_true", help=f"bring up the local demo cluster ({DEMO_NODES} nodes, root)")
    p.add_argument("--demo-state", default=DEMO_STATE_DIR, help="state dir of the demo cluster")
    p.add_argument("--demo-nodes", type=int, default=DEMO_NODES, help="nodes of a new demo cluster")
    p.add_argument("--keep-demo", action="store_true", help="leave the demo cluster running on exit")


def start_demo(args: argparse.Namespace) -> tuple[object, GuiSettings, bool]:
    """Bring up (or reattach to) the demo cluster; returns (cluster, settings, we_started_it)."""
    from omview.testbed import Cluster  # root-only tooling; imported only for --demo

    state = Path(args.demo_state)
    if (state / "cluster.json").exists():
        cluster = Cluster.load(state)
        started = False
    else:
        log.info("bringing up a %d-node demo cluster in %s", args.demo_nodes, state)
        cluster = Cluster.up(state, args.demo_nodes)
        started = True
    settings = GuiSettings(
        entry=cluster.nodes[0].address,
        user="root",
        identity=str(cluster.identity_path),
        known_hosts=str(cluster.known_hosts_path),
        ssh_config=str(cluster.ssh_config_path),
        agent_command=cluster.agent_command,
    )
    return cluster, settings, started
