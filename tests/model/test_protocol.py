"""Wire protocol: request validation and the fault each kind of bad line gets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omview.model import protocol
from omview.model.protocol import FaultCode, ProtocolError


def _code(line: bytes) -> FaultCode:
    with pytest.raises(ProtocolError) as info:
        protocol.parse_request(line)
    return info.value.code


def test_valid_request() -> None:
    req = protocol.parse_request(b'{"id": 3, "op": "flags.set", "args": {"block": true, "speed": 7609}}')
    assert (req.id, req.op, req.args) == (3, "flags.set", {"block": True, "speed": 7609})


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"not json", FaultCode.MALFORMED),
        (b"[1,2]", FaultCode.MALFORMED),
        (b'{"op": "ping"}', FaultCode.MALFORMED),
        (b'{"id": true, "op": "ping"}', FaultCode.MALFORMED),
        (b'{"id": 1}', FaultCode.MALFORMED),
        (b'{"id": 1, "op": "format.disk"}', FaultCode.UNKNOWN_OP),
        (b'{"id": 1, "op": "ping", "args": []}', FaultCode.BAD_ARGUMENT),
        (b'{"id": 1, "op": "flags.set", "args": {"block": 1}}', FaultCode.BAD_ARGUMENT),
        (b'{"id": 1, "op": "flags.set", "args": {"speed": true}}', FaultCode.BAD_ARGUMENT),
        (b'{"id": 1, "op": "flags.set", "args": {"speed": "fast"}}', FaultCode.BAD_ARGUMENT),
        (b'{"id": 1, "op": "proc.lock", "args": {"pid": 5}}', FaultCode.BAD_ARGUMENT),
        (b'{"id": 1, "op": "ping", "args": {"x": 1}}', FaultCode.BAD_ARGUMENT),
        (b"\xff\xfe", FaultCode.MALFORMED),
    ],
)
def test_bad_requests_get_the_right_fault(line: bytes, code: FaultCode) -> None:
    assert _code(line) == code


def test_too_large() -> None:
    assert _code(b" " * (protocol.MAX_LINE + 1)) == FaultCode.TOO_LARGE


def test_fault_keeps_request_id() -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.parse_request(b'{"id": "abc", "op": "nope"}')
    assert info.value.req_id == "abc"  # type: ignore[attr-defined]


def test_encoders_are_lines() -> None:
    line = protocol.fault(9, FaultCode.BUSY, "too many clients")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"id": 9, "error": {"code": 7, "name": "BUSY", "message": "too many clients"}}
    assert protocol.fault_name(999) == "FAULT_999"


@settings(deadline=None)  # the machine is shared; timing is not what is tested
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        protocol.parse_request(data)
    except ProtocolError as exc:
        assert isinstance(exc.code, FaultCode)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)


@settings(deadline=None)
@given(st.dictionaries(st.sampled_from(["id", "op", "args", "x"]), _json | st.sampled_from(list(protocol.OPS))))
def test_random_objects_validate_or_fault(obj: dict[str, object]) -> None:
    try:
        req = protocol.parse_request(json.dumps(obj).encode())
    except ProtocolError as exc:
        assert isinstance(exc.code, FaultCode)
    else:
        assert req.op in protocol.OPS
