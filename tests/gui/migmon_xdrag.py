"""Run by tests/gui/test_migmon.py under Xvfb: openmosixmigmon's window on the xcb platform, and a drag
of one square onto a node's penguin made of real X pointer events (the XTEST extension through
libX11/libXtst, what xdotool does), so the X server, not Qt, delivers press, motion and release.

    python migmon_xdrag.py SSH_CONFIG AGENT_COMMAND ENTRY KEY NODE

Prints one JSON line: the platform, the node the drop was on, and the node the square landed on.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time
from collections.abc import Callable

from PySide6.QtCore import QPoint
from PySide6.QtWidgets import QApplication

from omview.gui.connect import SshConnector, SshSettings
from omview.gui.lifecycle import wait_until
from omview.gui.session import ClusterSession
from omview.migmon.window import MigmonWindow


class XTest:
    """Fake pointer input on the X server of $DISPLAY."""

    def __init__(self) -> None:
        self.x11 = ctypes.CDLL("libX11.so.6")
        self.xtst = ctypes.CDLL("libXtst.so.6")
        self.x11.XOpenDisplay.restype = ctypes.c_void_p
        self.x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        self.x11.XFlush.argtypes = [ctypes.c_void_p]
        self.x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        self.xtst.XTestFakeMotionEvent.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                                   ctypes.c_ulong]  # fmt: skip
        self.xtst.XTestFakeButtonEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
        self.dpy = self.x11.XOpenDisplay(None)
        if not self.dpy:
            raise SystemExit("cannot open the X display")

    def move(self, p: QPoint) -> None:
        self.xtst.XTestFakeMotionEvent(self.dpy, -1, p.x(), p.y(), 0)
        self.x11.XFlush(self.dpy)

    def button(self, down: bool) -> None:
        self.xtst.XTestFakeButtonEvent(self.dpy, 1, 1 if down else 0, 0)
        self.x11.XFlush(self.dpy)

    def close(self) -> None:
        self.x11.XCloseDisplay(self.dpy)


def main() -> int:
    ssh_config, agent_command, entry, key_s, node_s = sys.argv[1:6]
    key, node = int(key_s), int(node_s)
    app = QApplication([sys.argv[0]])
    connector = SshConnector(SshSettings(ssh_config=ssh_config, agent_command=agent_command))
    session = ClusterSession(connector, entry, poll_interval=0.5, direct_poll=False, call_timeout=10.0)
    w = MigmonWindow(session)
    dropped: list[int] = []
    w.view.sig_dropped.connect(lambda _k, n: dropped.append(n))
    w.resize(900, 760)
    w.move(0, 0)
    w.show()
    w.start()
    result: dict[str, object] = {"platform": app.platformName(), "dropped_on": None, "landed": None}
    xt = XTest()
    try:
        ok = wait_until(app, lambda: key in w.state.marks and node in w.scene.nodes and not w.scene.animating
                        and w.scene.square_pos(key) is not None and entry in w.subscribed, 30.0)  # fmt: skip
        if not ok:
            raise SystemExit(f"the square of {key} was not drawn: {w.messages}")
        wait_until(app, lambda: False, 0.5)  # the window is mapped and settled

        def glob(scene_pos: object) -> QPoint:
            return w.view.viewport().mapToGlobal(w.view.mapFromScene(scene_pos))  # type: ignore[arg-type]

        start = glob(w.scene.square_pos(key))
        end = glob(w.scene.nodes[node].pos())
        pause: Callable[[], bool] = lambda: wait_until(app, lambda: False, 0.03)  # noqa: E731
        xt.move(start)
        pause()
        xt.button(True)
        pause()
        for i in range(1, 16):
            xt.move(start + (end - start) * (i / 15))
            pause()
        xt.button(False)
        wait_until(app, lambda: bool(dropped), 5.0)
        result["dropped_on"] = dropped[0] if dropped else None
        deadline = time.monotonic() + 90
        wait_until(app, lambda: w.state.marks[key].where == node and not w.scene.animating
                   and key not in w.scene.held, max(0.0, deadline - time.monotonic()))  # fmt: skip
        result["landed"] = w.state.marks[key].where if key in w.state.marks else None
        result["messages"] = w.messages[-3:]
    finally:
        xt.close()
        w.close()
        session.stop(timeout=10.0)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
