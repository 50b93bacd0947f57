"""L2 agent: persistent state in ``state_dir`` (flags, process locks, the setpe map) as JSON written
atomically; a file the agent cannot understand is moved aside and the defaults are used.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import replace
from typing import Any

from omview.model.cluster import Flags
from omview.model.errors import ConfigError
from omview.model.mapfile import MapEntry

log = logging.getLogger(__name__)

FLAGS_FILE = "flags.json"
LOCKS_FILE = "locks.json"
MAP_FILE = "map.json"

BOOL_FLAGS = ("stay", "lstay", "block", "quiet")
#: name -> (lowest, highest) accepted value
INT_FLAGS = {
    "speed": (1, 10_000_000),
    "decay_interval": (1, 3600),
    "slow_decay": (0, 1000),
    "fast_decay": (0, 1000),
}


class FlagError(ValueError):
    """A flag value out of range or of the wrong type."""


def validate_flag(name: str, value: object) -> bool | int:
    """Check one flag value; raises FlagError with a message fit for the user."""
    if name in BOOL_FLAGS:
        if not isinstance(value, bool):
            raise FlagError(f"{name} must be true or false, got {value!r}")
        return value
    if name in INT_FLAGS:
        lo, hi = INT_FLAGS[name]
        if not isinstance(value, int) or isinstance(value, bool):
            raise FlagError(f"{name} must be an integer {lo}..{hi}, got {value!r}")
        if not lo <= value <= hi:
            unit = {"decay_interval": " seconds", "slow_decay": " per mille", "fast_decay": " per mille"}.get(
                name, ""
            )
            raise FlagError(f"{name} must be {lo}..{hi}{unit}, got {value}")
        return value
    raise FlagError(f"unknown flag {name!r} (flags: {', '.join(BOOL_FLAGS + tuple(INT_FLAGS))})")


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def kernel_boot_id() -> str:
    """Changes on every reboot; process start times are only meaningful within one boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


class StateStore:
    """Reads and writes the agent's persistent files."""

    def __init__(self, state_dir: str) -> None:
        self.dir = state_dir
        try:
            os.makedirs(state_dir, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the state directory: {exc.strerror}", path=state_dir) from None
        if not os.access(state_dir, os.W_OK):
            raise ConfigError("the state directory is not writable by the agent", path=state_dir)

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _read(self, name: str) -> Any | None:
        path = self._path(name)
        try:
            with open(path, "rb") as fh:
                return json.loads(fh.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._set_aside(name, f"unreadable: {exc}")
            return None

    def _set_aside(self, name: str, why: str) -> None:
        path = self._path(name)
        aside = f"{path}.corrupt-{int(time.time())}"
        log.error("state file %s is %s; moved it to %s and using defaults", path, why, aside)
        try:
            os.replace(path, aside)
        except OSError as exc:
            log.error("cannot move %s aside: %s", path, exc)

    def _write(self, name: str, obj: Any) -> None:
        atomic_write(self._path(name), json.dumps(obj, indent=1, sort_keys=True).encode() + b"\n")

    # flags ---------------------------------------------------------------------------------

    def load_flags(self) -> Flags | None:
        """The persisted flags, or None when there are none (first start)."""
        data = self._read(FLAGS_FILE)
        if data is None:
            return None
        if not isinstance(data, dict):
            self._set_aside(FLAGS_FILE, "not a JSON object")
            return None
        flags = Flags()
        try:
            for name, value in data.items():
                if name in BOOL_FLAGS or name in INT_FLAGS:
                    checked: dict[str, Any] = {name: validate_flag(name, value)}
                    flags = replace(flags, **checked)
        except FlagError as exc:
            self._set_aside(FLAGS_FILE, f"invalid ({exc})")
            return None
        return flags

    def save_flags(self, flags: Flags) -> None:
        self._write(FLAGS_FILE, flags.to_dict())

    # process locks -------------------------------------------------------------------------

    def load_locks(self) -> set[tuple[int, int]]:
        """Locked processes as (pid, start time in clock ticks), for this kernel boot only."""
        data = self._read(LOCKS_FILE)
        if data is None:
            return set()
        try:
            if data.get("boot_id") != kernel_boot_id():
                log.info(
                    "process locks in %s are from an earlier boot; forgetting them", self._path(LOCKS_FILE)
                )
                return set()
            return {(int(p), int(s)) for p, s in data["locks"]}
        except (AttributeError, KeyError, TypeError, ValueError):
            self._set_aside(LOCKS_FILE, "not in the expected format")
            return set()

    def save_locks(self, locks: set[tuple[int, int]]) -> None:
        self._write(LOCKS_FILE, {"boot_id": kernel_boot_id(), "locks": sorted([p, s] for p, s in locks)})

    # the map set with setpe -w ---------------------------------------------------------------

    def load_map(self) -> tuple[list[MapEntry], str] | None:
        data = self._read(MAP_FILE)
        if data is None:
            return None
        try:
            entries = [MapEntry.from_dict(e) for e in data["entries"]]
            return entries, str(data.get("source", "map.set"))
        except (ConfigError, KeyError, TypeError, AttributeError):
            self._set_aside(MAP_FILE, "not in the expected format")
            return None

    def save_map(self, entries: list[MapEntry], source: str) -> None:
        self._write(MAP_FILE, {"entries": [e.to_dict() for e in entries], "source": source})

    def clear_map(self) -> None:
        try:
            os.unlink(self._path(MAP_FILE))
        except FileNotFoundError:
            pass
