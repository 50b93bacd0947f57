"""agent/peers/pidcheck.py by itself: the reason text with the answer's age, and answer() returning at
once while the question hangs on the pool (a peer that does not answer yet, here a call held on an
Event; the real peer is in tests/migration/test_procs_pid_check.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from omview.agent.peers import pidcheck
from omview.agent.peers.pidcheck import Answer, PidCheck


def test_reason_names_the_first_taken_pid_and_an_old_answers_age() -> None:
    ans = Answer(at=100.0, node=2, asked=frozenset({5, 6, 7}), used=frozenset({6, 7}))
    assert pidcheck.reason(ans, [5, 6, 7], 101.0) == "pid 6 in use on node 2"
    assert pidcheck.reason(ans, [5], 101.0) == ""
    assert pidcheck.reason(ans, [7], 100.0 + 42.2) == "pid 7 in use on node 2 (node 2 answered 42 s ago)"


def test_answer_never_waits_for_the_question() -> None:
    release = threading.Event()
    asked: list[dict[str, Any]] = []

    def ask(node: int, op: str, **args: Any) -> dict[str, Any]:
        asked.append({"node": node, "op": op, **args})
        release.wait(10)
        return {"problems": ["pid 11 in use", "pid 12 in use", "file /x missing"], "pids_used": [11, 12]}

    with ThreadPoolExecutor(2) as pool:
        check = PidCheck(ask, pool, lambda: 1)
        t0 = time.monotonic()
        assert check.answer(2, frozenset({10, 11, 12})) is None  # nothing yet; the question is asked
        assert check.answer(2, frozenset({10, 11, 12})) is None  # one question at a time
        assert time.monotonic() - t0 < 1.0
        release.set()
        deadline = time.monotonic() + 10
        while (got := check.answer(2, frozenset({10, 11, 12}))) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got is not None and got.used == frozenset({11, 12}) and got.node == 2
        assert len(asked) == 1 and asked[0]["pids"] == [10, 11, 12] and asked[0]["source"] == 1
        # a fresh answer that covers the PIDs wanted: no new question
        assert check.answer(2, frozenset({11})) == got and len(asked) == 1
        # a PID it was not asked about: the old answer now, a new question in the background
        assert check.answer(2, frozenset({10, 13})) == got
        deadline = time.monotonic() + 10
        while len(asked) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert asked[1]["pids"] == [10, 13]
        # another node to ask (the cluster changed): node 2's answer is not its answer
        assert check.answer(3, frozenset({10})) is None


def test_an_agent_without_pids_used_is_read_from_its_problems() -> None:
    """A peer of the previous release answers only the text; a mixed cluster keeps its reasons."""
    got = {"problems": ["node 2 blocks arriving processes", "pid 11 in use on node 2", "/x does not exist"]}
    assert pidcheck._used_from_text(got) == frozenset({11})
