"""L4 GUI support (no Qt): bring a remote collector's history here, for the analyzer and history.

openmosixanalyzer and openmosixhistory read history files. When the collector runs on a node
the GUI reaches over SSH, its history directory is on that node: ``fetch_history`` runs one
``tar`` there on an exec channel of the node link's one connection (a lane of
``omview.gui.links`` calls it; nothing here opens a connection or a thread) and writes the
history's files - ``cluster``, ``procs``, ``node<ID>`` and their ``.xz`` forms, nothing else -
into a cache directory on this machine, which the programs then open like any history. Each
file is replaced by a rename, so an analyzer that already shows the cached copy sees the new
files on its next refresh (the reader takes a replaced file for a rotation and reopens).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tarfile
from pathlib import Path

from omview.gui.node_exec import CommandRunner
from omview.model.errors import OmviewError

#: The files a history consists of (docs/collector.md, "Directory layout").
HISTORY_FILE = re.compile(r"(cluster|procs|node[0-9]+)(\.xz)?")
#: Seconds the copy may take (a 12-hour history of many nodes is tens of MB).
FETCH_TIMEOUT = 600.0


class FetchError(OmviewError):
    """The history could not be copied; the message says from where and why."""


def cache_root() -> Path:
    """Where copies of remote histories are kept: $XDG_CACHE_HOME/omview/histories."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "omview" / "histories"


def cache_dir(address: str, logdir: str, root: Path | None = None) -> Path:
    """The local copy of ``logdir`` of node ``address`` (one directory per node and history)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", address).strip(".") or "node"
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(logdir.rstrip("/"))).strip(".") or "history"
    return (root or cache_root()) / safe / name


def fetch_history(runner: CommandRunner, logdir: str, dest: Path, timeout: float = FETCH_TIMEOUT) -> int:
    """Copy the history in ``logdir`` on the runner's node into ``dest``; returns the file count.

    Only regular files named like history files are written (a tar from a node is not trusted
    with paths); files of an earlier copy that the node no longer has are removed.
    """
    argv = ["tar", "-C", logdir, "-cf", "-", "--exclude=collector.log", "--exclude=.collector.lock", "."]
    status, out, err = runner.run_bytes(argv, timeout)
    # GNU tar exits 1 when a file grew while it was read: a live history does; readers cope
    if status not in (0, 1) or not out:
        reason = err.strip().splitlines()[-1] if err.strip() else f"tar exit status {status}"
        raise FetchError(f"cannot read the history {logdir} on {runner.describe()}: {reason}")
    written: set[str] = set()
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(out), mode="r:") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if not member.isreg() or not HISTORY_FILE.fullmatch(name):
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                tmp = dest / f".{name}.part"
                tmp.write_bytes(src.read())
                os.replace(tmp, dest / name)
                written.add(name)
        if "cluster" not in written and "cluster.xz" not in written:
            raise FetchError(f"{logdir} on {runner.describe()} holds no collector history (no cluster file)")
        for old in dest.iterdir():
            if HISTORY_FILE.fullmatch(old.name) and old.name not in written:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()
    except (OSError, tarfile.TarError) as exc:
        raise FetchError(f"copying the history {logdir} from {runner.describe()} to {dest}: {exc}") from exc
    return len(written)
