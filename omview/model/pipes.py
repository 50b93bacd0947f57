"""L0 Unix manners for every command: end quietly when the reader of stdout has gone.

``cmd | head`` closes the pipe after a few lines; Python then raises BrokenPipeError on the
next write or at the final flush and prints a traceback or ``Exception ignored ... [Errno 32]``.
C tools die of SIGPIPE instead. Restoring SIGPIPE's default would also kill a client silently
when its *agent socket* breaks, so entry points catch the error, check that stdout is the
broken one and exit with 141 (128 + SIGPIPE, what a shell reports for a C tool in a pipe).
"""

from __future__ import annotations

import functools
import os
import select
import signal
import sys
from collections.abc import Callable
from typing import ParamSpec

#: Exit status after the reader of stdout went away: the shell's code for death by SIGPIPE.
EXIT_CLOSED_PIPE = 128 + signal.SIGPIPE

P = ParamSpec("P")


def stdout_closed() -> bool:
    """True if nobody reads stdout any more (a pipe or socket whose other end is closed)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    # a pipe whose read end is closed reports POLLERR; a socket whose peer left, POLLHUP
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))


def discard_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's last flush of stdout cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _flush() -> None:
    if sys.stdout is not None:
        sys.stdout.flush()


def quiet_pipe(main: Callable[P, int]) -> Callable[P, int]:
    """Wrap an entry point: a closed stdout ends it with EXIT_CLOSED_PIPE and no message.

    Output is flushed inside the wrapper (also before argparse's --help exit), so the error
    cannot surface later at interpreter exit. A BrokenPipeError that is not stdout's (a socket)
    is re-raised: that is a real failure and must not be hidden.
    """

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            try:
                code = main(*args, **kwargs)
            except SystemExit:
                _flush()
                raise
            _flush()
            return code
        except BrokenPipeError:
            if not stdout_closed():
                raise
            discard_stdout()
            return EXIT_CLOSED_PIPE

    return wrapper
