"""Starting the workload: the first thing ``sentinel run`` does after parsing.

Only the standard library and ``sentinel.core.kernel`` are imported here, so the
child runs before the monitor, exporters or dashboard are even loaded.
"""

from __future__ import annotations

import errno
import os
import signal
import sys

from sentinel.errors import EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, SpawnError

# CPython ignores SIGPIPE and SIGXFSZ at start-up (so writes raise instead of
# killing the interpreter). Ignored dispositions survive exec, so a workload
# would inherit them; they are set back to default in the child. What they
# were before CPython started cannot be known, so this matches what tini,
# dumb-init and subprocess(restore_signals=True) do. Every other ignored
# signal is passed on as Sentinel was given it, and handlers reset at exec.
_PYTHON_IGNORED = (signal.SIGPIPE, signal.SIGXFSZ)
# glibc's internal signals 32 and 33 are reset too: its posix_spawn would leave
# them ignored in the child (see kernel.spawnp). No glibc program can ignore
# them on purpose (sigaction() refuses them), so an ignored 32/33 that Sentinel
# was given is that same artefact, from a parent that used posix_spawn.
_SIGDEFAULT = (*_PYTHON_IGNORED, 32, 33)


class Child:
    """The spawned workload: its PID (also its process-group ID) and how it was started."""

    __slots__ = ("pid", "command", "tty_fd", "started_mono", "started_wall", "cwd")

    def __init__(self, pid: int, command: tuple[str, ...], tty_fd: int | None,
                 started_mono: float, started_wall: float, cwd: str | None = None) -> None:
        self.pid = pid
        # The directory it was started in (absolute), for restarts: Sentinel itself moves
        # to / after the first spawn so as not to pin it. None: unknown (inherited).
        self.cwd = cwd
        self.command = command
        self.tty_fd = tty_fd  # the controlling terminal the child was given, if any
        self.started_mono = started_mono
        self.started_wall = started_wall


def block_signals() -> set[int]:
    """Block every catchable signal in this thread; return the mask that was in force.

    From here on, signals wait in the pending set until the guardian reads
    them from a signalfd, so none is lost or fatal between spawn and the
    main loop. Threads started later inherit the block.
    """
    from sentinel.core.kernel import catchable_signals  # ctypes: a few ms, still before the spawn

    return set(signal.pthread_sigmask(signal.SIG_BLOCK, catchable_signals()))


def controlling_tty() -> int | None:
    """fd 0 when it is our controlling terminal and we are in its foreground, else ``None``.

    Then the child gets its own process group in our session and the
    terminal's foreground, so Ctrl-C/Ctrl-Z reach it as they would from a
    shell. Otherwise (no terminal: the usual container) it gets its own session.
    """
    try:
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            return 0
    except OSError:
        pass
    return None


def spawn(command: tuple[str, ...], original_mask: set[int], *,
          tty_fd: int | None = None, environ=None, cwd: str | None = None) -> Child:
    """Start ``command`` with the given environment, fds, cwd and signal mask.

    The child is the leader of a new session (or of a new process group on
    ``tty_fd``, which it then owns as foreground). Uses glibc's ``posix_spawnp``
    (``kernel.spawnp``; vfork semantics: fast, and exec errors come back as
    ``OSError`` in the parent); every signal Sentinel was given ignored stays
    ignored but CPython's SIGPIPE/SIGXFSZ and glibc's 32/33 (``_SIGDEFAULT``).
    Raises ``SpawnError`` with exit code 127 (not found) or 126 (not
    executable, or any other exec failure). ``cwd``: the directory the child
    starts in (a restart: the one the first run was started in, although
    Sentinel has moved to /); ``None`` inherits Sentinel's. The returned
    ``Child.cwd`` is ``cwd``, or Sentinel's directory at the spawn.
    """
    import time

    from sentinel.core import kernel

    env = os.environ if environ is None else environ
    try:
        # glibc's posix_spawnp through ctypes, not os.posix_spawnp: only so can
        # the child get SIG_DFL for glibc's internal signals 32 and 33.
        pid = kernel.spawnp(command[0], command, env, sigmask=original_mask,
                            sigdefault=_SIGDEFAULT, setsid=tty_fd is None,
                            pgroup=None if tty_fd is None else 0, cwd=cwd)
    except OSError as exc:
        raise _spawn_error(command[0], exc) from None
    started_mono, started_wall = time.monotonic(), time.time()
    if tty_fd is not None:
        try:
            # SIGTTOU is blocked, so a background process may do this too.
            os.tcsetpgrp(tty_fd, pid)
        except OSError:
            tty_fd = None
    if cwd is None:
        try:
            cwd = os.getcwd()
        except OSError:  # the directory was removed: restarts inherit /
            cwd = None
    return Child(pid, tuple(command), tty_fd, started_mono, started_wall, cwd)


def _spawn_error(name: str, exc: OSError) -> SpawnError:
    import shutil

    found = name if "/" in name else shutil.which(name)
    if exc.errno == errno.ENOENT:
        if found and os.path.isfile(found):
            # The file is there: what is missing is the interpreter on its #! line.
            return SpawnError(f"cannot run {name!r}: its interpreter (the #! line) was not "
                              "found; install it or fix the #! line", EXIT_NOT_FOUND)
        where = "no such file" if "/" in name else "not found in PATH"
        return SpawnError(f"cannot run {name!r}: {where}; check the command after '--' "
                          f"(PATH={os.environ.get('PATH', '')})", EXIT_NOT_FOUND)
    if exc.errno in (errno.EACCES, errno.EPERM):
        if os.path.isdir(name):
            return SpawnError(f"cannot run {name!r}: it is a directory; name the program "
                              "inside it", EXIT_NOT_EXECUTABLE)
        return SpawnError(f"cannot run {name!r}: it is not executable (permission denied); "
                          "chmod +x it or run it through its interpreter", EXIT_NOT_EXECUTABLE)
    if exc.errno == errno.ENOEXEC:
        return SpawnError(f"cannot run {name!r}: exec format error (no #! line, or built for "
                          "another machine); run it through its interpreter", EXIT_NOT_EXECUTABLE)
    return SpawnError(f"cannot run {name!r}: {exc.strerror}", EXIT_NOT_EXECUTABLE)


def prepare_parent(pdeathsig: int | None) -> tuple[bool, bool]:
    """Set up Sentinel itself before the spawn; return ``(pid1, subreaper)``.

    As PID 1 the kernel reparents every orphan to us. Otherwise we register
    as child subreaper (prctl), so orphaned grandchildren are still ours to
    reap. ``pdeathsig`` is delivered to us (and forwarded) if our parent dies.
    Call it after ``block_signals``.
    """
    from sentinel.core import kernel

    pid1 = os.getpid() == 1
    subreaper = False
    if not pid1:
        try:
            kernel.set_child_subreaper()
            subreaper = True
        except OSError as exc:
            sys.stderr.write(f"sentinel: warning: cannot become child subreaper ({exc}); "
                             "orphaned grandchildren will not be reaped by Sentinel\n")
    if pdeathsig:
        kernel.set_parent_death_signal(pdeathsig)
        if os.getppid() == 1 and not pid1:
            # The parent died before prctl took effect: deliver it ourselves. Signals
            # are blocked by now, so it waits in the signalfd and is forwarded. With
            # tgkill() (SI_TKILL), not kill(): SI_USER from our own PID is how the
            # kernel raises SIGPIPE for our own writes, which is never forwarded.
            signal.raise_signal(pdeathsig)
    return pid1, subreaper
