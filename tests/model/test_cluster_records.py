"""ProcessInfo's wire form: what an agent sends decodes to the same record (the fast path for an
agent's rows), and rows of older or newer agents (fields missing or added) still decode."""

from __future__ import annotations

import json
from dataclasses import replace

from omview.model.cluster import ProcessInfo

P = ProcessInfo(pid=42, ppid=1, uid=1000, user="alice", state="R", nice=5, cpu=12.5, rss=1 << 20, threads=3,
                name="python3", cmdline=("python3", "x.py"), home=1, where=2, lock=True, nmigs=1,
                cantmove="open TCP connection", job="1:42", helper_of=0)  # fmt: skip


def test_an_agents_row_decodes_to_the_same_frozen_record() -> None:
    got = ProcessInfo.from_dict(json.loads(json.dumps(P.to_dict())))
    assert got == P and hash(got) == hash(P) and type(got.cmdline) is tuple
    assert replace(got, pid=7).pid == 7 and got.pid == 42
    try:
        got.pid = 3  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("a decoded ProcessInfo must stay frozen")


def test_rows_with_fields_missing_or_added_still_decode() -> None:
    older = P.to_dict()
    del older["helper_of"], older["job"]
    assert ProcessInfo.from_dict(older) == replace(P, job="", helper_of=0)
    newer = dict(P.to_dict(), some_future_field=1)
    assert ProcessInfo.from_dict(newer) == P
