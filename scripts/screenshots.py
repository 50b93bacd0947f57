"""Render openmosixview and its dialogs to PNGs against real agents on loopback (no root needed).

    .venv/bin/python scripts/screenshots.py [/tmp/omview-shots] [--nodes 4] [--xcb]

Starts N real omview agents on 127.0.0.2.. in a temp dir, connects the GUI through their Unix
sockets, stops one agent so a red row shows, writes main-window.png, node-dialog.png and
all-nodes-dialog.png, then stops every agent by PID. With --xcb it renders through an Xvfb
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

    from omview.app import render_screenshots
    from omview.gui.connect import UnixConnector
    from omview.gui.session import ClusterSession
    from omview.gui.settings import GuiSettings
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
        for shot in shots:
            sys.stdout.write(f"{shot}\n")
        return 0 if len(shots) == 3 else 1
    finally:
        if session is not None:
            session.stop()
        agents.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(5)


if __name__ == "__main__":
    sys.exit(main())
