"""The one parser of a migration target (omview.model.target), shared by the CLI and the agent."""

from __future__ import annotations

import pytest

from omview.model.target import Target, TargetError, parse_target


@pytest.mark.parametrize(
    ("text", "expected", "wire"),
    [
        ("home", Target("home"), "home"),
        (" Best ", Target("best"), "best"),
        ("3", Target.to_node(3), "3"),
        ("0x10", Target.to_node(16), "16"),
    ],
)
def test_parse_target(text: str, expected: Target, wire: str) -> None:
    got = parse_target(text)
    assert got == expected and str(got) == wire and parse_target(str(got)) == got


@pytest.mark.parametrize("text", ["", "nowhere", "1.5", "node2"])
def test_bad_target_names_the_text(text: str) -> None:
    with pytest.raises(TargetError, match="is not a node ID, 'home' or 'best'") as info:
        parse_target(text)
    assert repr(text) in str(info.value)
