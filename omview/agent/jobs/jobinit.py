"""L2 agent: PID 1 of a mosrun job's own PID namespace (stdlib only, no omview imports).

Started by the agent as ``unshare --pid --fork <python> -m omview.agent.jobs.jobinit --out F --err F
--status F -- ARGV...``. It becomes its own session leader, points its own stdio and the job's at
the job's files (never at unshare's log, which grows when unshare dies), forks the real job,
forwards signals to every process of the namespace (a pid-namespace init ignores signals it has no
handler for, so without this `kill` would do nothing), and exits with the job's status after
writing it to the status file so any agent - even one restarted meanwhile - can read it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys

#: signals passed on to the job (SIGKILL/SIGSTOP cannot be caught; SIGCHLD is ours)
FORWARDED = (
    signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2,
    signal.SIGALRM, signal.SIGWINCH, signal.SIGCONT, signal.SIGTSTP, signal.SIGPWR,
)  # fmt: skip


def status_text(wait_status: int) -> str:
    """'exit N' or 'signal N' for a waitpid status (what the deputy turns into its exit code)."""
    if os.WIFSIGNALED(wait_status):
        return f"signal {os.WTERMSIG(wait_status)}"
    return f"exit {os.waitstatus_to_exitcode(wait_status)}"


def write_status(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="omview-jobinit")
    p.add_argument("--out", required=True)
    p.add_argument("--err", required=True)
    p.add_argument("--status", required=True)
    p.add_argument("--cwd", default="/")
    p.add_argument("--uid", type=int, default=-1)
    p.add_argument("--gid", type=int, default=-1)
    p.add_argument("argv", nargs=argparse.REMAINDER)
    ns = p.parse_args(argv)
    if ns.argv and ns.argv[0] == "--":
        ns.argv = ns.argv[1:]
    if not ns.argv:
        p.error("no command given after --")
    return ns


def _child(ns: argparse.Namespace, out: int, err: int) -> None:
    """In the forked child: become the job (never returns)."""
    try:
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED):
            signal.signal(sig, signal.SIG_DFL)  # Python ignores SIGPIPE/SIGXFSZ; exec keeps "ignored"
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        os.chdir(ns.cwd)
        if ns.gid >= 0:
            os.setgroups([])
            os.setgid(ns.gid)
        if ns.uid >= 0:
            os.setuid(ns.uid)
        os.execvp(ns.argv[0], ns.argv)
    except OSError as exc:
        os.write(2, f"mosrun: cannot run {ns.argv[0]!r}: {exc.strerror}\n".encode())
        os._exit(127)


def main(argv: list[str] | None = None) -> None:
    ns = _parse(sys.argv[1:] if argv is None else argv)
    # our cwd may be a directory of another mount namespace (nsenter --wd opens it before setns);
    # CRIU's parasite then cannot mount its private /proc there (EINVAL), so take one of ours
    os.chdir("/")
    with contextlib.suppress(OSError):
        os.setsid()  # the session leader must be inside the pid namespace, or CRIU refuses to dump
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    out = os.open(ns.out, flags, 0o644)
    err = os.open(ns.err, flags, 0o644)
    null = os.open(os.devnull, os.O_RDWR)
    # our own stdio: /dev/null and the job's files, nothing that outlives a migration badly
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(null)
    if ns.uid >= 0:
        with contextlib.suppress(OSError):
            os.fchown(out, ns.uid, ns.gid)
            os.fchown(err, ns.uid, ns.gid)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])  # unshare --fork leaves INT/TERM blocked
    pid = os.fork()
    if pid == 0:
        _child(ns, out, err)
    os.close(out)
    os.close(err)

    def forward(signum: int, _frame: object) -> None:
        # kill(-1) from a namespace init reaches every other process of the namespace, like a
        # terminal signalling its foreground process group
        with contextlib.suppress(OSError):
            os.kill(-1, signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    while True:
        try:
            got, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:
            write_status(ns.status, "exit 0")
            os._exit(0)
        if got == pid:
            text = status_text(wait_status)
            write_status(ns.status, text)
            # other processes of the namespace die with us (the kernel kills them when init exits)
            code = os.waitstatus_to_exitcode(wait_status)
            os._exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
