"""L4 GUI layer: openmosixview's persistent settings (QSettings) and the legacy ~/.openMosixview.

Precedence: command line > QSettings (saved with Config > Save configuration) > defaults. The
original's /root/.openMosixview is read once: its last digit "1" meant "use ssh instead of rsh";
omview always uses SSH, so the import only records that it happened and warns about rsh.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings

from omview.gui.connect import SshSettings
from omview.transport.ssh import DEFAULT_AGENT_COMMAND

log = logging.getLogger(__name__)

ORGANISATION = "omview"
APPLICATION = "openmosixview"
LEGACY_FILE = Path("/root/.openMosixview")


@dataclass(frozen=True)
class GuiSettings:
    """Where openmosixview connects and how often it polls."""

    entry: str = "localhost"  # the node whose agent provides the cluster table
    user: str | None = None  # None: ssh config User, else root
    identity: str | None = None  # private key file; None: ssh config / ssh-agent / default keys
    known_hosts: str | None = None  # None: ssh config UserKnownHostsFile, else ~/.ssh/known_hosts
    ssh_config: str | None = None  # None: ~/.ssh/config
    agent_command: str = DEFAULT_AGENT_COMMAND
    poll_interval: float = 1.0
    direct_poll: bool = True
    connect_timeout: float = 5.0
    call_timeout: float = 5.0

    def ssh(self) -> SshSettings:
        return SshSettings(
            user=self.user,
            identity_files=(self.identity,) if self.identity else (),
            known_hosts=self.known_hosts,
            ssh_config=self.ssh_config,
            agent_command=self.agent_command,
            connect_timeout=self.connect_timeout,
        )

    def with_overrides(self, **values: Any) -> GuiSettings:
        """Replace only the values that were given (None means "not given")."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def _coerce(value: Any, default: Any) -> Any:
    """QSettings hands back strings from the ini backend; turn them into the field's type."""
    if value is None or value == "":
        return None if default is None else default
    if isinstance(default, bool):
        return value if isinstance(value, bool) else str(value).lower() in ("true", "1", "yes")
    if isinstance(default, float):
        return float(value)
    return str(value)


def load(store: QSettings) -> GuiSettings:
    base = GuiSettings()
    values: dict[str, Any] = {}
    for f in fields(GuiSettings):
        if store.contains(f"connection/{f.name}"):
            try:
                values[f.name] = _coerce(store.value(f"connection/{f.name}"), getattr(base, f.name))
            except ValueError:
                log.warning("ignoring bad saved setting connection/%s in %s", f.name, store.fileName())
    return replace(base, **values)


def save(store: QSettings, settings: GuiSettings) -> None:
    for f in fields(GuiSettings):
        value = getattr(settings, f.name)
        if value is None:
            store.remove(f"connection/{f.name}")
        else:
            store.setValue(f"connection/{f.name}", value)
    store.sync()


def import_legacy(store: QSettings, path: Path = LEGACY_FILE) -> str | None:
    """Read the original's config file once; returns a status message when something was read."""
    if store.value("legacy/imported", False, type=bool) or not path.is_file():
        return None
    try:
        content = path.read_text(errors="replace").strip()
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None
    store.setValue("legacy/imported", True)
    store.setValue("legacy/content", content)
    store.sync()
    if content.endswith("1"):
        return f"read {path}: it selects SSH, which openmosixview always uses"
    log.warning("%s asks for rsh (%r); rsh is not supported, openmosixview uses SSH", path, content)
    return f"read {path}: rsh is not supported any more, openmosixview uses SSH"
