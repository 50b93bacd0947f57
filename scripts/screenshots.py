"""Render openmosixview and its dialogs to PNGs against real agents on loopback (no root needed).

    .venv/bin/python scripts/screenshots.py [/tmp/omview-shots] [--nodes 4] [--xcb]

Starts N real omview agents on 127.0.0.2.. in a temp dir, connects the GUI through their Unix
sockets, stops one agent so a red row shows, writes main-window.png, node-dialog.png and
all-nodes-dialog.png (as root also run-dialog.png and jobs.png: advanced execution and the jobs
view with a job's output), then stops every agent by PID. With --xcb it renders through an Xvfb
server it starts itself (DISPLAY :93) instead of the offscreen platform. For the SSH path use
``openmosixview --demo --screenshot DIR`` (root; the netns cluster).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default="/tmp/omview-shots")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--xcb", action="store_true", help="render under Xvfb :93 instead of offscreen")
    args = p.parse_args()
    xvfb = None
    if args.xcb:
        xvfb = subprocess.Popen(["Xvfb", ":93", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                                stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        os.environ.update(DISPLAY=":93", QT_QPA_PLATFORM="xcb")
    else:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtWidgets import QApplication

    from omview.gui.connect import UnixConnector
    from omview.gui.session import ClusterSession
    from omview.gui.settings import GuiSettings
    from omview.openmosixview.app import render_screenshots
    from tests.gui.real_agents import RealAgents

    app = QApplication([sys.argv[0]])
    app.setStyle("Fusion")
    tmp = Path(tempfile.mkdtemp(prefix="omvshot-", dir="/tmp"))
    agents = RealAgents(tmp, args.nodes)
    session = None
    try:
        agents.start()
        agents.kill(agents.addresses[-1])  # one dead node, to show the red lamp and its state
        session = ClusterSession(UnixConnector(agents.socket_of), agents.addresses[0], poll_interval=1.0,
                                 call_timeout=2.0, backoff=(1.0, 5.0))
        shots = render_screenshots(Path(args.out), session, GuiSettings(entry=agents.addresses[0]))
        want = 3
        if os.geteuid() == 0:  # jobs start in their own PID namespace (unshare): root only
            shots += render_jobs(app, Path(args.out), session, GuiSettings(entry=agents.addresses[0]))
            want += 2
        for shot in shots:
            sys.stdout.write(f"{shot}\n")
        return 0 if len(shots) == want else 1
    finally:
        if session is not None:
            session.stop()
        agents.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(5)


def render_jobs(app: Any, out: Path, session: Any, settings: Any) -> list[Path]:
    """run-dialog.png (advanced execution, "run on") and jobs.png (a finished job and its output)."""
    from omview.openmosixview.jobs import Mode
    from omview.openmosixview.window import MainWindow

    def wait(pred: Any, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not pred() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.02)

    window = MainWindow(session, settings, None)
    window.resize(1120, 640)
    window.show()
    wait(lambda: len(session.table) > 1, 20.0)
    dlg = window.open_run_dialog()
    dlg.program.setText("/usr/bin/python3")
    dlg.arguments.setText("-c 'import socket, sys; print(socket.gethostname(), sys.argv[1:]); "
                          "print(\"warning: demo\", file=sys.stderr); sys.exit(3)' 'an arg'")
    dlg.set_mode(Mode.RUNON)
    dlg.chooser.set_node(dlg.chooser.node_ids()[0])
    wait(lambda: False, 0.3)
    shots = [out / "run-dialog.png"]
    dlg.grab().save(str(shots[0]))
    keys = dlg.execute()
    dlg.set_mode(Mode.RUNHOME)
    dlg.arguments.setText("-c 'import time\nfor i in range(50): print(\"step\", i, flush=True); time.sleep(0.1)'")
    keys += dlg.execute()
    dlg.close()
    wait(lambda: not window.jobs.model.record(keys[0]).running, 30.0)
    wait(lambda: "step 5" in window.jobs_view.output_text() or False, 2.0)
    window.jobs_view.select(keys[0])
    wait(lambda: False, 0.5)
    shots.append(out / "jobs.png")
    window.grab().save(str(shots[1]))
    window.jobs.shutdown(timeout=10.0)
    window.close()
    return shots


if __name__ == "__main__":
    sys.exit(main())
