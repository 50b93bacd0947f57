"""Which of this node's PIDs are taken on another node, for procs.list's cantmove reasons.

procs.list never waits for a peer: it reads the last answer (and its age) and, when that answer is
old or does not cover the PIDs now wanted, asks the peer again in the background on the agent's job
pool. Opening a peer link (an SSH session and a bridge) under load took longer than a client waits
for a listing; a stopped or unreachable peer now costs a listing nothing."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

REFRESH_AFTER = 10.0  # seconds: an answer older than this is asked again (a collector lists every second)
STALE_AFTER = 30.0  # seconds: an answer older than this says its age in the reason
FORGET_AFTER = 120.0  # seconds: an answer older than this is no reason at all
RETRY_AFTER = 10.0  # seconds between attempts while the peer does not answer
ASK_TIMEOUT = 5.0  # seconds one background question may take


@dataclass(frozen=True)
class Answer:
    """One peer's answer: which of the PIDs asked are in use there, and when it was given."""

    at: float  # time.monotonic()
    node: int
    asked: frozenset[int]
    used: frozenset[int]


class PidCheck:
    """The cached answer of the node procs.list asks, refreshed off the caller's thread."""

    def __init__(self, ask: Callable[..., Any], pool: Executor, source: Callable[[], int]) -> None:
        self._ask = ask  # PeerLinks.call
        self._pool = pool
        self._source = source
        self._lock = threading.Lock()
        self._answer: Answer | None = None
        self._asking = False
        self._retry_at = 0.0

    def answer(self, node: int, wanted: frozenset[int]) -> Answer | None:
        """The last answer of NODE if it is not too old (it may not cover all of WANTED); starts a
        background question when the answer is missing, old or too narrow. Never blocks."""
        now = time.monotonic()
        with self._lock:
            ans = self._answer
            if ans is not None and (ans.node != node or now - ans.at > FORGET_AFTER):
                ans = None
            fresh = ans is not None and wanted <= ans.asked and now - ans.at < REFRESH_AFTER
            if not fresh and not self._asking and now >= self._retry_at:
                self._asking = True
                try:
                    self._pool.submit(self._refresh, node, wanted)
                except RuntimeError:  # the pool is shut down: the agent stops
                    self._asking = False
        return ans

    def _refresh(self, node: int, wanted: frozenset[int]) -> None:
        try:
            got = self._ask(node, "peer.proc.check", timeout=ASK_TIMEOUT, pids=sorted(wanted), files=[],
                            source=self._source())  # fmt: skip
            used = frozenset(int(x) for x in got["pids_used"]) if "pids_used" in got else _used_from_text(got)
        except Exception as exc:  # noqa: BLE001 - a peer that does not answer: keep the old answer, retry later
            log.info("cannot ask node %d which PIDs are in use (%s)", node, exc)
            with self._lock:
                self._asking = False
                self._retry_at = time.monotonic() + RETRY_AFTER
            return
        with self._lock:
            self._answer = Answer(time.monotonic(), node, wanted, used)
            self._asking = False


def _used_from_text(got: dict[str, Any]) -> frozenset[int]:
    """PIDs in use from an agent before pids_used (its problems' text, "pid N in use on node M")."""
    return frozenset(int(x.split()[1]) for x in got.get("problems", []) if x.startswith("pid "))


def reason(answer: Answer, pid_list: list[int], now: float) -> str:
    """The cantmove reason for a process whose PIDs are PID_LIST, or "" if none is taken."""
    clash = [x for x in pid_list if x in answer.used]
    if not clash:
        return ""
    age = now - answer.at
    text = f"pid {clash[0]} in use on node {answer.node}"
    return text if age < STALE_AFTER else f"{text} (node {answer.node} answered {age:.0f} s ago)"
