"""L4 GUI layer: what every window of the suite shares - the node links (links.py, the only way
work leaves the GUI thread), cluster membership polling (session.py), connectors, connection
settings, prompts and errors. Windows live in their own packages (``omview.openmosixview``, later
``omview.procs``, ``omview.analyzer``, ``omview.migmon``); this package never imports them.

PySide6 is imported here first so that pyqtgraph, when a sub-window pulls it in, binds to PySide6.
Nothing Qt is *created* at import time.
"""

from __future__ import annotations

import PySide6.QtCore  # noqa: F401  (binding selection for pyqtgraph, see module docstring)
