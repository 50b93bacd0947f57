"""CLI layer: the classic openMosix command line (mosctl, showmap, setpe, mps, mosmon).

Each tool is one module with a ``main(argv) -> int`` entry point that talks to the agent on
this node through its Unix socket; ``_common`` holds exit codes, error reporting and JSON output.
"""

from __future__ import annotations
