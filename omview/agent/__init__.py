"""L2 node agent (``omview-agent``), stdlib + omview.model only: one asyncio loop per node serves
the Unix socket, gossips load over UDP and samples /proc every second (see docs/agent.md).
"""

from __future__ import annotations
