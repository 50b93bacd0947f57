"""L0 model: host names that may reach an ssh command line (issue 13, defect 10).

ssh reads any argument that starts with '-' as an option, so a "host" such as
``-oProxyCommand=...`` would run a command. Every place that puts a host on an ssh command line
checks it here and also writes ``--`` before it: the check gives a clear error, the ``--`` keeps
ssh from reading options even if a check were missed.
"""

from __future__ import annotations

import re

# [user@]host: a DNS name, an IPv4 address or an IPv6 address (bare, or in brackets, with an
# optional %zone); ssh_config aliases use the same characters. Never a leading '-'.
_HOST = re.compile(
    r"(?:[A-Za-z0-9_][A-Za-z0-9._-]{0,63}@)?(?:[A-Za-z0-9_][A-Za-z0-9._-]*|\[?[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?\]?)"
)
MAX_HOST = 253


class HostError(ValueError):
    """The text is not a host name or address ssh may be given (the message names the text)."""


def check_host(text: str) -> str:
    """TEXT if it is a host name, address or ssh_config alias (with an optional user@), else HostError."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_HOST or not _HOST.fullmatch(text):
        raise HostError(
            f"{text!r} is not a host name or address (letters, digits, '.', '-', '_', ':' and an"
            " optional user@; it must not start with '-')"
        )
    return text
