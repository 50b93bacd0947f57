"""L4 GUI layer: a node agent's events (``events.subscribe``) streamed to the GUI thread through the
node's STREAM lane of omview/gui/links.py.

``event_stream`` is a STREAM-lane generator: it opens a bridge channel of its own on the node's one
connection (so events never mix with the lane's requests), subscribes to ``topics``, optionally
asks one request right after (``snapshot``: what happened before the subscription, e.g.
``migration.history``) and then reads events in short steps, handing each step's events to
``deliver`` as one frozen ``EventBatch``. A broken channel is reported (``EventBatch.error``),
then reopened after a growing pause, and the snapshot asked again, so the window can catch up.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from omview.gui.links import EXPECTED, Deliver, LaneContext, LinkState, classify
from omview.model.client import AgentClient

log = logging.getLogger(__name__)

#: seconds one step waits for events (the node's other streams wait that long at most)
STEP = 0.05
#: most events handed over in one batch (a burst is split, the GUI thread stays responsive)
MAX_BATCH = 500
#: (first, longest) pause in seconds before a broken subscription is reopened
RETRY = (0.5, 10.0)


@dataclass(frozen=True)
class EventBatch:
    """Events of one node's agent, in arrival order; ``snapshot`` set right after (re)subscribing."""

    address: str
    node: int  # the agent's node ID (0 before the first hello)
    events: tuple[tuple[str, Any], ...] = ()
    snapshot: Any = None
    subscribed: bool = False  # this batch opens a (new) subscription: earlier state may be stale
    error: LinkState | None = None  # the subscription broke (it is retried)


def event_stream(topics: Sequence[str], deliver: Deliver, stop: threading.Event,
                 snapshot: Callable[[AgentClient], Any] | None = None, *,
                 urgent: bool = False) -> Callable[[LaneContext], Iterator[float | None]]:  # fmt: skip
    """A STREAM-lane task (``Links.stream``): the node's events on ``topics`` (names or prefixes)
    until ``stop`` is set or the receiver is gone (``deliver(None)`` is asked between steps).
    ``urgent``: connect even while the node's link backs off (a user's action waits on it)."""

    def run(ctx: LaneContext) -> Iterator[float | None]:
        client: AgentClient | None = None
        failures = 0
        try:
            while not stop.is_set() and deliver(None):
                if client is None:
                    try:
                        channel = ctx.node.connect(urgent, open_channel=True)
                        assert channel is not None
                        client = AgentClient(channel, client_name="omview events", timeout=ctx.node.call_timeout)
                        client.call("events.subscribe", topics=list(topics))
                        first = snapshot(client) if snapshot is not None else None
                    except EXPECTED as exc:
                        if client is not None:
                            client.close()
                            client = None
                        failures += 1
                        deliver(EventBatch(ctx.address, 0, error=classify(exc)))
                        yield min(RETRY[1], RETRY[0] * 2 ** (failures - 1))
                        continue
                    failures = 0
                    deliver(EventBatch(ctx.address, client.node_id, snapshot=first, subscribed=True))
                got: list[tuple[str, Any]] = []
                deadline = time.monotonic() + STEP
                try:
                    while len(got) < MAX_BATCH:
                        # at least 1 ms: a zero timeout would make a socket non-blocking (not a timeout)
                        got.append(client.next_event(max(0.001, deadline - time.monotonic())))
                except TimeoutError:
                    pass
                except EXPECTED as exc:
                    log.info("events of %s: %s", ctx.address, exc)
                    client.close()
                    client = None
                    if got:
                        deliver(EventBatch(ctx.address, 0, tuple(got)))
                    deliver(EventBatch(ctx.address, 0, error=classify(exc)))
                    failures += 1
                    yield min(RETRY[1], RETRY[0] * 2 ** (failures - 1))
                    continue
                if got:
                    deliver(EventBatch(ctx.address, client.node_id, tuple(got)))
                yield None
        finally:
            if client is not None:
                with contextlib.suppress(OSError):
                    client.close()

    return run
