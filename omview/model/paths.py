"""L0 model: where omview keeps things on a node (overridable by environment for tests)."""

from __future__ import annotations

import os

DEFAULT_SOCKET = "/run/omview/agent.sock"
DEFAULT_CONFIG_DIR = "/etc/omview"
DEFAULT_STATE_DIR = "/var/lib/omview"


def socket_path() -> str:
    """The agent's Unix socket ($OMVIEW_SOCKET overrides)."""
    return os.environ.get("OMVIEW_SOCKET", DEFAULT_SOCKET)


def config_dir() -> str:
    """Directory of agent.toml and cluster.key ($OMVIEW_CONFIG_DIR overrides)."""
    return os.environ.get("OMVIEW_CONFIG_DIR", DEFAULT_CONFIG_DIR)


def state_dir() -> str:
    """Persistent agent state: flags, locks, map ($OMVIEW_STATE_DIR overrides)."""
    return os.environ.get("OMVIEW_STATE_DIR", DEFAULT_STATE_DIR)
