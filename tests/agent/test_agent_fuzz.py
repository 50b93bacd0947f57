"""Fuzz the agent socket with hypothesis: every bad line gets the right fault, nobody else notices.

Thousands of malformed requests go down one connection to a real agent; each must be answered
with exactly one fault of the expected code, and a second client must be served afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omview.model import protocol
from omview.model.protocol import MAX_LINE, OPS, FaultCode
from tests.support.agents import Cluster, RawConn, fault_code, make_base

FUZZ = settings(
    max_examples=600,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
valid_ids = st.integers(min_value=-(2**53), max_value=2**53) | st.text(max_size=12)
bad_ids = st.none() | st.booleans() | st.floats(allow_nan=False) | st.lists(json_scalars, max_size=2)
ops = st.sampled_from(sorted(OPS))
ops_with_args = st.sampled_from(sorted(op for op, spec in OPS.items() if spec.args))
ops_with_required = st.sampled_from(
    sorted(op for op, spec in OPS.items() if any(a.required for a in spec.args.values()))
)


@pytest.fixture(scope="module")
def fuzz_agent() -> Iterator[Any]:
    import shutil

    cl = Cluster(make_base(), 1)
    a = cl.agents[0].start()
    conn = RawConn(a.socket, timeout=10)
    conn.hello()
    try:
        yield a, conn
    finally:
        conn.close()
        cl.stop()
        shutil.rmtree(cl.base, ignore_errors=True)


def send_json(conn: RawConn, obj: Any) -> dict[str, Any]:
    conn.send(json.dumps(obj).encode() + b"\n")  # ensure_ascii: lone surrogates stay escaped
    return conn.reply()


def wrong_value_for(types: tuple[type, ...]) -> st.SearchStrategy[Any]:
    """JSON values that are not of the argument's type (bools are never ints, and vice versa)."""

    def bad(v: Any) -> bool:
        return isinstance(v, bool) != (bool in types) or not isinstance(v, types)

    return json_values.filter(bad)


@FUZZ
@given(raw=st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")))
def test_random_bytes(fuzz_agent: Any, raw: bytes) -> None:
    _, conn = fuzz_agent
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "op" in obj:
        return  # astronomically unlikely; a real request is not a fuzz case
    conn.send(raw + b"\n")
    r = conn.reply()
    assert fault_code(r) == FaultCode.MALFORMED, (raw, r)
    assert r["id"] is None


@FUZZ
@given(value=json_values.filter(lambda v: not isinstance(v, dict)))
def test_json_that_is_not_an_object(fuzz_agent: Any, value: Any) -> None:
    _, conn = fuzz_agent
    r = send_json(conn, value)
    assert fault_code(r) == FaultCode.MALFORMED, (value, r)


@FUZZ
@given(req_id=bad_ids, op=ops, extra=st.dictionaries(st.sampled_from(["args", "x"]), json_values, max_size=2))
def test_missing_or_bad_id(fuzz_agent: Any, req_id: Any, op: str, extra: dict[str, Any]) -> None:
    _, conn = fuzz_agent
    msg = {"op": op, **extra}
    if req_id is not None:
        msg["id"] = req_id
    r = send_json(conn, msg)
    assert fault_code(r) == FaultCode.MALFORMED and r["id"] is None, (msg, r)


@FUZZ
@given(req_id=valid_ids, op=json_values.filter(lambda v: not isinstance(v, str)))
def test_op_not_a_string(fuzz_agent: Any, req_id: Any, op: Any) -> None:
    _, conn = fuzz_agent
    r = send_json(conn, {"id": req_id, "op": op})
    assert fault_code(r) == FaultCode.MALFORMED and r["id"] == req_id, r


@FUZZ
@given(req_id=valid_ids, op=st.text(max_size=30).filter(lambda s: s not in OPS), args=json_values)
def test_unknown_op(fuzz_agent: Any, req_id: Any, op: str, args: Any) -> None:
    _, conn = fuzz_agent
    r = send_json(conn, {"id": req_id, "op": op, "args": args})
    assert fault_code(r) == FaultCode.UNKNOWN_OP and r["id"] == req_id, r


@FUZZ
@given(req_id=valid_ids, op=ops, args=json_values.filter(lambda v: not isinstance(v, dict)))
def test_args_not_an_object(fuzz_agent: Any, req_id: Any, op: str, args: Any) -> None:
    _, conn = fuzz_agent
    r = send_json(conn, {"id": req_id, "op": op, "args": args})
    assert fault_code(r) == FaultCode.BAD_ARGUMENT and r["id"] == req_id, r


@FUZZ
@given(req_id=valid_ids, op=ops, name=st.text(min_size=1, max_size=15), value=json_values)
def test_unknown_argument(fuzz_agent: Any, req_id: Any, op: str, name: str, value: Any) -> None:
    if name in OPS[op].args:
        return
    _, conn = fuzz_agent
    r = send_json(conn, {"id": req_id, "op": op, "args": {name: value}})
    assert fault_code(r) == FaultCode.BAD_ARGUMENT and r["id"] == req_id, r
    assert repr(name) in r["error"]["message"]


@FUZZ
@given(req_id=valid_ids, op=ops_with_args, data=st.data())
def test_wrong_argument_type(fuzz_agent: Any, req_id: Any, op: str, data: st.DataObject) -> None:
    _, conn = fuzz_agent
    name = data.draw(st.sampled_from(sorted(OPS[op].args)))
    value = data.draw(wrong_value_for(OPS[op].args[name].types))
    r = send_json(conn, {"id": req_id, "op": op, "args": {name: value}})
    assert fault_code(r) == FaultCode.BAD_ARGUMENT and r["id"] == req_id, (op, name, value, r)


@FUZZ
@given(req_id=valid_ids, op=ops_with_required)
def test_missing_required_argument(fuzz_agent: Any, req_id: Any, op: str) -> None:
    _, conn = fuzz_agent
    r = send_json(conn, {"id": req_id, "op": op, "args": {}})
    assert fault_code(r) == FaultCode.BAD_ARGUMENT and "missing argument" in r["error"]["message"], r


def test_after_fuzzing_agent_still_serves_everyone(fuzz_agent: Any) -> None:
    a, conn = fuzz_agent
    # a few huge lines on the fuzzed connection too
    for size in (MAX_LINE + 1, MAX_LINE + 70_000, 3 * MAX_LINE):
        conn.send(b"z" * size + b"\n")
        assert fault_code(conn.reply()) == FaultCode.TOO_LARGE
    assert conn.request(1, "ping")["result"]["pong"] is True
    other = RawConn(a.socket)
    try:
        other.hello()
        assert other.request(2, "node.info")["result"]["id"] == 1
    finally:
        other.close()
    with a.client() as c:
        stats = c.call("node.stats")["server"]
        assert stats["faults"] > 4000 and stats["internal_errors"] == 0
        assert c.flags().block is False
    assert a.running
    assert protocol.PROTOCOL_VERSION == 1
