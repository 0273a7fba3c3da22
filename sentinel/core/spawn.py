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
          tty_fd: int | None = None, environ=None, cwd: str | None = None,
          stdout_fd: int | None = None, stderr_fd: int | None = None,
          user: tuple[int, int, tuple[int, ...]] | None = None) -> Child:
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

    ``environ``: the child's whole environment (a mapping; ``None``: Sentinel's).
    ``stdout_fd``/``stderr_fd``: fds (close-on-exec, as ``OutputRelay.write_fd``
    is) that become the child's fd 1/2; ``None`` inherits Sentinel's. ``user``:
    ``(uid, gid, supplementary gids)`` to run as (Sentinel must be root); the
    command is then started through ``_USER_SHIM`` (see there; not when ``user``
    is Sentinel's own credentials: then it is spawned as without), so its exec
    errors are not raised here: the program exits 127/126 after one line
    ``sentinel: cannot run 'x': ...`` on its stderr, as ``sentinel run`` would.
    With ``user``, HOME, USER and LOGNAME are the user's (from the passwd
    database) unless ``environ`` gives them a value of its own, i.e. one that
    differs from Sentinel's environment (the program's ``env:`` set them).
    """
    import time

    from sentinel.core import kernel

    env = os.environ if environ is None else environ
    file, argv = command[0], command
    if user is not None and not _is_own(user):
        file, argv, env = _through_user_shim(command, env, user)
    try:
        # glibc's posix_spawnp through ctypes, not os.posix_spawnp: only so can
        # the child get SIG_DFL for glibc's internal signals 32 and 33.
        pid = kernel.spawnp(file, argv, env, sigmask=original_mask,
                            sigdefault=_SIGDEFAULT, setsid=tty_fd is None,
                            pgroup=None if tty_fd is None else 0, cwd=cwd,
                            stdout_fd=stdout_fd, stderr_fd=stderr_fd)
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


# Running a program as another user. posix_spawn(3) has no attribute to change
# credentials, and fork() in a threaded Python (Sentinel has its loop, relay and
# exporter threads) is unsafe: the child could deadlock on a lock another thread
# held (CPython warns of it since 3.12). So the child is spawned as this small
# exec shim, `python -I -S -c _USER_SHIM UID GID GROUPS LC_CTYPE CMD...`, which
# drops to the user and execs the command: one interpreter start (10-20 ms), only
# for programs that have a `user`. It inherits the signal mask and dispositions
# the spawn gave (Python's start-up leaves the mask alone); CPython's start-up
# ignores SIGPIPE/SIGXFSZ again, so the shim sets them back to SIG_DFL, and its
# SIGINT handler is reset by the exec itself. CPython's locale coercion (PEP 538)
# may add LC_CTYPE to its environment: the shim is told what it was (argv[4],
# "=VALUE" or "" for unset) and puts it back. -I -S: no site, no user paths, no
# PYTHON* variables read (they are still passed on to the command). Everything the
# shim needs is imported before setuid: the user may not be able to read the stdlib. Everything the
# shim needs is imported before setuid: the user may not be able to read the stdlib.
_USER_SHIM = """\
import os, signal, sys
import warnings  # os.execvpe imports it lazily; after setuid the stdlib may be unreadable
uid, gid, groups, lc, *cmd = sys.argv[1:]
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
if lc:
    os.environ['LC_CTYPE'] = lc[1:]
else:
    os.environ.pop('LC_CTYPE', None)
# Where the command is, as root sees it (for the error message only): execvp answers
# EACCES for a command that is nowhere when a PATH entry cannot be searched by the user.
name = cmd[0]
if '/' in name:
    found = name if os.path.exists(name) else None
else:
    found = next((p for p in (os.path.join(d or '.', name) for d in
                  os.environ.get('PATH', os.defpath).split(':')) if os.path.isfile(p)), None)
try:
    os.setgroups([int(g) for g in groups.split(',') if g])
    os.setgid(int(gid))
    os.setuid(int(uid))
except OSError as e:
    sys.stderr.write('sentinel: cannot run %r as uid %s gid %s: %s; run Sentinel as root '
                     'or remove the user\\n' % (cmd[0], uid, gid, e.strerror))
    os._exit(126)
try:
    os.execvpe(cmd[0], cmd, os.environ)
except OSError as e:
    name, code = cmd[0], 126
    if found is None:
        code, why = 127, ('no such file' if '/' in name else 'not found in PATH') + \\
            '; check the command (PATH=%s)' % os.environ.get('PATH', '')
    elif e.errno == 2:
        code, why = 127, 'its interpreter (the #! line) was not found; install it or fix the #! line'
    elif os.path.isdir(found):
        why = 'it is a directory; name the program inside it'
    elif e.errno in (1, 13):
        why = 'permission denied for uid %s; make it (and its directories) readable and executable by that user' % uid
    elif e.errno == 8:
        why = 'exec format error (no #! line, or built for another machine); run it through its interpreter'
    else:
        why = e.strerror
    sys.stderr.write('sentinel: cannot run %r: %s\\n' % (name, why))
    os._exit(code)
"""


def _is_own(user: tuple[int, int, tuple[int, ...]]) -> bool:
    """True when ``user`` is Sentinel's own credentials: nothing to change, no shim (a
    non-root Sentinel could not setgroups() anyway)."""
    uid, gid, groups = user
    return (uid == os.geteuid() and gid == os.getegid()
            and set(groups) | {gid} == set(os.getgroups()) | {os.getegid()})


def _through_user_shim(command, env, user):
    """``(file, argv, env)`` that start ``command`` as ``user`` through ``_USER_SHIM``."""
    import pwd

    uid, gid, groups = user
    env = dict(env)
    try:
        entry = pwd.getpwuid(uid)
        own = {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name}
    except KeyError:  # a bare uid without a passwd entry
        own = {"HOME": "/", "USER": None, "LOGNAME": None}
    for key, value in own.items():
        if key in env and env[key] != os.environ.get(key):
            continue  # the program's own value: kept
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    lc = "=" + env["LC_CTYPE"] if "LC_CTYPE" in env else ""
    argv = (sys.executable, "-I", "-S", "-c", _USER_SHIM, str(uid), str(gid),
            ",".join(str(g) for g in groups), lc, *command)
    return sys.executable, argv, env


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
