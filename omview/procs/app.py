"""openmosixprocs window: the composition root - command line, settings, connector, session, process box.

``openmosixprocs [--node N] [connection options of openmosixview] [--screenshot DIR]`` shows node
N's processes (default: the entry node's); ``--screenshot DIR`` renders the box, the migrator and the
guests window to PNGs and exits.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtWidgets import QApplication

from omview.gui.lifecycle import wait_until
from omview.gui.program import add_program_args, start_program
from omview.procs.window import ProcBox

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="openmosixprocs",
        description="The process box: one node's processes with the openMosix columns; migrate them.",
    )
    p.add_argument("--node", type=int, help="node ID whose processes to show (default: the entry node)")
    add_program_args(p, "openmosixprocs", "save PNGs of the windows to DIR and exit")
    return p


def render_screenshots(directory: Path, box: ProcBox) -> list[Path]:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    directory.mkdir(parents=True, exist_ok=True)
    box.show()
    box.start()
    wait_until(app, lambda: box.updates >= 2 and bool(box.session.table), 20.0)
    shots = [directory / "procs-box.png"]
    box.grab().save(str(shots[-1]))
    procs = box.model.processes()
    # the migrator of a job if there is one (the interesting case), else of the first movable process
    proc = next((p for p in procs if p.job and p.home == box.model.node_id), None) or next(
        (p for p in procs if not p.cantmove), procs[0] if procs else None)  # fmt: skip
    if proc is not None:
        migrator = box.open_migrator(proc)
        if migrator is not None:
            wait_until(app, lambda: migrator.status is not None and migrator.nodes.rowCount() > 0, 10.0)
            shots.append(directory / "procs-migrator.png")
            migrator.grab().save(str(shots[-1]))
            migrator.close()
    guests = box.open_guests()
    if guests is not None:
        if guests.guests():
            guests.select(guests.guests()[0].pid)
            wait_until(app, lambda: guests.details is not None, 10.0)
        shots.append(directory / "procs-guests.png")
        guests.grab().save(str(shots[-1]))
        guests.close()
    return shots


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = start_program("openmosixprocs", args)
    if isinstance(started, int):
        return started
    # the cluster table only (to find node N and, in the migrator, every node's load)
    session = started.table_session()
    box = ProcBox(session, args.node)

    def clean_up() -> None:
        box.close()
        session.stop(timeout=5.0)

    if args.screenshot:
        return started.screenshots(lambda: render_screenshots(Path(args.screenshot), box), clean_up)
    return started.run(box, box.start, lambda _sig: box.close(), lambda: session.stop(timeout=5.0))


if __name__ == "__main__":
    sys.exit(main())
