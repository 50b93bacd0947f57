"""L0 model: the PID files of omview's daemons (the node agent, the collector), stdlib only.

One semantics for every daemon; what a PID file can say:

- **missing**: the daemon does not run.
- **stale**: it names a PID that is gone or has ended (a zombie), or a live process that is another
  program (the PID was reused: its command line is not the daemon's). The daemon does not run;
  ``PidFile.acquire`` replaces the file (and says why in ``replaced``), stop and status may remove it.
- **held**: it names a live process of the daemon. A process whose state cannot be read (its
  /proc/PID/stat is unreadable although the kernel says it exists) counts as live: not knowing
  is no proof that it is gone.
- **unusable**: the file cannot be read (permissions, I/O error, a directory) or holds no PID
  (empty, text, 0, negative), or the process it names cannot be told apart from the daemon (its
  command line is unreadable). ``PidFileError`` says which file and what is wrong. Such a file is
  never removed or replaced silently: it may belong to someone else, and taking it over could
  start a second daemon; the administrator decides.

The daemon writes its file atomically (a temporary file linked into place), so a reader never sees
a half-written PID file of a starting daemon, and a daemon killed while starting leaves none.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from omview.model.errors import OmviewError
from omview.model.procfs import read_stat

#: a command line -> "this is the daemon" (read from /proc/PID/cmdline, never matched by name)
IsDaemon = Callable[[list[str]], bool]


class PidFileError(OmviewError):
    """A PID file that cannot be used as it is; says which file and what is wrong."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(f"{message} (PID file {path})")
        self.path = path


class PidFileHeld(OmviewError):
    """A live daemon holds the PID file."""

    def __init__(self, pid: int, path: str) -> None:
        super().__init__(f"pid {pid} holds the PID file {path}")
        self.pid = pid
        self.path = path


def read_pid(path: str) -> int | None:
    """The PID the file names; None when there is no file. Raises PidFileError when it cannot be
    read or holds no PID."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(64)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PidFileError(f"cannot read it: {exc.strerror}", path) from None
    text = raw.strip()
    if not text.isdigit() or int(text) <= 0:
        raise PidFileError(f"it holds no PID ({raw[:20]!r}); remove it if the daemon does not run", path)
    return int(text)


def pid_alive(pid: int) -> bool:
    """A live process: it exists and has not ended (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists; it is just not ours
    st = read_stat(pid)
    return st is None or not st.ended  # unreadable: the kernel has just said it exists


def command_line(pid: int) -> list[str] | None:
    """The arguments of PID ([] for a kernel thread or a zombie), None when they cannot be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return None


def holder(path: str, is_daemon: IsDaemon, what: str) -> tuple[int | None, str]:
    """(the live daemon the file names, else None; why the file is stale, "" when it is missing or
    held). WHAT names the daemon in that reason ("an omview agent"). Raises PidFileError."""
    pid = read_pid(path)
    if pid is None:
        return None, ""
    if not pid_alive(pid):
        return None, f"pid {pid} is gone"
    args = command_line(pid)
    if args is None and pid_alive(pid):
        raise PidFileError(f"pid {pid} runs, but its command line cannot be read to tell whether it is {what}", path)
    if not args or not is_daemon(args):
        return None, f"pid {pid} is not {what}"
    return pid, ""


class PidFile:
    """The PID file a running daemon keeps: taken when missing or stale, removed at exit while it
    still names this process."""

    def __init__(self, path: str, is_daemon: IsDaemon, what: str) -> None:
        self.path = path
        self.is_daemon = is_daemon
        self.what = what
        self.replaced = ""  # why a stale file was replaced (for the log)
        self._mine = False

    def acquire(self) -> None:
        """Raises PidFileHeld when a live daemon holds the file, PidFileError when it cannot be taken."""
        me = os.getpid()
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise PidFileError(f"cannot create its directory: {exc.strerror}", self.path) from None
        tmp = os.path.join(directory, f".{os.path.basename(self.path)}.{me}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(f"{me}\n")
        except OSError as exc:
            raise PidFileError(f"cannot create it: {exc.strerror}", self.path) from None
        try:
            for _ in range(5):
                try:
                    os.link(tmp, self.path)  # fails when the file exists: only one daemon gets it
                except FileExistsError:
                    pid, why = holder(self.path, self.is_daemon, self.what)
                    if pid is not None and pid != me:
                        raise PidFileHeld(pid, self.path) from None
                    self.replaced = why or "it names this process"
                    try:
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        raise PidFileError(f"cannot remove the stale file: {exc.strerror}", self.path) from None
                    continue
                except OSError as exc:
                    raise PidFileError(f"cannot create it: {exc.strerror}", self.path) from None
                self._mine = True
                return
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise PidFileError("it keeps reappearing; is another instance starting right now?", self.path)

    def release(self) -> None:
        """Remove the file if it still names this process."""
        if self._mine:
            with contextlib.suppress(OSError, PidFileError):
                if read_pid(self.path) == os.getpid():
                    os.unlink(self.path)
        self._mine = False
