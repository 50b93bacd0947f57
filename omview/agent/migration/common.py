"""L2 agent: what both ends of a migration share - its error, the agent's Env, the wire constants,
the state-file marker and the image directories (in a tmpfs when there is room, plain otherwise).

How a migration goes: docs/migration.md; the source side is migration/source.py, the target side
migration/target.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omview.agent.jobs.run import JobError
from omview.agent.migration.faults import FaultHooks
from omview.model.cluster import NodeInfo

MIG_DIR = "mig"
INCOMING_DIR = "incoming"
TRANSFER_TIMEOUT = 600.0
#: the longest a post-copy may take to move every page once the job runs on the target
PAGES_TIMEOUT = 600.0
METHOD_IMAGES = "images"
METHOD_LAZY = "lazy"
STREAM_SOCKET = "mig.sock"
#: images go to a tmpfs when it and the memory have room for them (plus these margins)
TMPFS = "/dev/shm"
TMPFS_MARGIN = 64 << 20
MEM_MARGIN = 512 << 20


class MigrationError(JobError):
    """A migration was refused or failed; the job kept running where it was (message says why)."""


@dataclass(frozen=True)
class Env:
    """What both sides need from the agent (all callables are thread-safe)."""

    state_dir: str
    node_id: Callable[[], int]
    nodes: Callable[[], dict[int, NodeInfo]]  # the latest cluster table snapshot, self included
    blocked: Callable[[], bool]
    criu: Callable[[], str | None]  # path of a working criu, None when CRIU does not work here
    publish: Callable[[str, dict[str, Any]], None]
    faults: FaultHooks


def mark(path: str, text: str) -> None:
    """Write a small state file atomically. No fsync: these guard against a crashed *process*; a
    crashed host takes the stopped or restored job down with it anyway, and fsyncs cost milliseconds
    while the job is frozen."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError:
        # a full disk fails the write (or its flush at close): no half-written .tmp stays behind
        # (bench/faults.py, fill-target seeds 19, 37, 38 under load)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _mem_available() -> int:
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return 0


def image_dir(link: str, name: str, need: int) -> str:
    """Make LINK the directory for NEED bytes of images: a fresh directory in the tmpfs (LINK is then a
    symlink to it) when the tmpfs and the memory have room, else a plain directory. Returns where."""
    try:
        st = os.statvfs(TMPFS)
        room = st.f_bavail * st.f_frsize >= need + TMPFS_MARGIN and _mem_available() >= need + MEM_MARGIN
    except OSError:
        room = False
    if room:
        real = os.path.join(TMPFS, name)
        os.makedirs(real, mode=0o700)
        os.symlink(real, link)
        return real
    os.makedirs(link, mode=0o700, exist_ok=True)
    return link


def remove_images(link: str) -> None:
    """Remove an image directory made by image_dir (the tmpfs copy too)."""
    if os.path.islink(link):
        real = os.path.realpath(link)
        if real.startswith(TMPFS + "/omview-"):
            shutil.rmtree(real, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(link)
    else:
        shutil.rmtree(link, ignore_errors=True)


def drop_images(link: str, keep_dir: str) -> None:
    """A failed or aborted migration: keep CRIU's logs in KEEP_DIR, free the images (tmpfs memory)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(link):
            if name.endswith(".log"):
                shutil.copy(os.path.join(link, name), os.path.join(keep_dir, name))
    remove_images(link)


def remove_tree(path: str) -> None:
    """rmtree PATH, including tmpfs image directories its 'images' symlink points to."""
    remove_images(os.path.join(path, "images"))
    shutil.rmtree(path, ignore_errors=True)
