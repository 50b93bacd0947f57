"""L2 agent: fault-injection hooks for the migration tests - files in STATE_DIR/faults/ whose content is
the parameter (docs/migration.md, "Fault injection").

Only an agent started in test mode (``test_mode = true`` in agent.toml, which the namespace test
cluster writes) honours them: on a shipping agent a stray file there must not stall, corrupt or
reshape a real migration, so it is ignored and the first one seen is logged.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

FAULT_DIR = "faults"
#: a pause hook without a number pauses this long; no pause lasts longer than MAX_PAUSE
DEFAULT_SECONDS = 5.0
MAX_PAUSE = 120.0


class FaultHooks:
    """The fault points of one agent; all off unless ENABLED (test mode)."""

    def __init__(self, state_dir: str, *, enabled: bool) -> None:
        self.dir = os.path.join(state_dir, FAULT_DIR)
        self.enabled = enabled
        self._told = False  # a shipping agent logs the first hook file it ignores, not every one

    def value(self, name: str) -> str | None:
        """The content of the hook file NAME (stripped) if it exists and hooks are on, else None."""
        path = os.path.join(self.dir, name)
        if not self.enabled:
            if not self._told and os.path.exists(path):
                self._told = True
                log.warning("ignored the fault hook %s: fault hooks work only in test mode (test_mode in "
                            "agent.toml, for test clusters only); further ones are ignored silently", path)  # fmt: skip
            return None
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError:
            return None

    def on(self, name: str) -> bool:
        return self.value(name) is not None

    def seconds(self, name: str) -> float | None:
        """A hook whose content is a number of seconds (empty: DEFAULT_SECONDS); None when off."""
        value = self.value(name)
        return None if value is None else float(value or DEFAULT_SECONDS)

    def number(self, name: str) -> int | None:
        """A hook whose content is a whole number (empty or not a number: 0); None when off."""
        value = self.value(name)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            return 0

    def pause(self, name: str) -> None:
        """A pause point: sleep as long as the hook NAME says (at most MAX_PAUSE)."""
        secs = self.seconds(name)
        if secs is not None:
            log.warning("fault hook %s: pausing %.1f s", name, secs)
            time.sleep(min(secs, MAX_PAUSE))

    def check_at_start(self) -> None:
        """Say at start what happens to hook files: loudly when they work, once when they are ignored."""
        if self.enabled:
            log.warning("TEST MODE: fault-injection hooks in %s are honoured (test_mode = true in agent.toml; "
                        "for test clusters only, never on a real cluster)", self.dir)  # fmt: skip
            return
        try:
            names = sorted(os.listdir(self.dir))
        except OSError:
            return
        if names:
            self._told = True
            log.warning("ignoring the fault hooks in %s (%s): fault hooks work only in test mode (test_mode "
                        "in agent.toml, for test clusters only)", self.dir, ", ".join(names[:5]))  # fmt: skip
