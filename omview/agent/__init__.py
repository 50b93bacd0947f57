"""L2 node agent (``omview-agent``): stdlib + omview.model only.

One asyncio loop per node serves the Unix socket, gossips load over UDP and samples /proc
every second. See docs/agent.md for the protocol, files, units and the gossip format.
"""

from __future__ import annotations
