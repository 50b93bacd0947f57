"""L4 GUI layer: the shared Qt pieces of openmosixview (session, item models, dialogs, prompts).

PySide6 is imported here first so that pyqtgraph, when a sub-window pulls it in, binds to PySide6.
Nothing Qt is *created* at import time.
"""

from __future__ import annotations

import PySide6.QtCore  # noqa: F401  (binding selection for pyqtgraph, see module docstring)
