"""L0 model: where a migration goes - ``home``, ``best`` or a node ID - parsed in one place for the CLI
(``migrate PID NODE|home|best``) and the agent (``proc.migrate``, forwarded requests, the balancer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

HOME: Final = "home"
BEST: Final = "best"


class TargetError(ValueError):
    """The text is not a node ID, 'home' or 'best' (the message says so, naming the text)."""


@dataclass(frozen=True)
class Target:
    """A parsed migration target: KIND home/best, or node with NODE set."""

    kind: Literal["home", "best", "node"]
    node: int = 0

    @classmethod
    def to_node(cls, node: int) -> Target:
        return cls("node", node)

    @property
    def is_home(self) -> bool:
        return self.kind == HOME

    @property
    def is_best(self) -> bool:
        return self.kind == BEST

    def __str__(self) -> str:
        """The wire form: 'home', 'best' or the node ID in decimal (what parse_target reads back)."""
        return str(self.node) if self.kind == "node" else self.kind


def parse_target(text: str) -> Target:
    """``home``, ``best`` (any case, surrounding blanks ignored) or a node ID (decimal, 0x.. hex)."""
    word = text.strip().lower()
    if word == HOME:
        return Target(HOME)
    if word == BEST:
        return Target(BEST)
    try:
        return Target.to_node(int(word, 0))
    except ValueError:
        raise TargetError(f"target {text!r} is not a node ID, 'home' or 'best'") from None
