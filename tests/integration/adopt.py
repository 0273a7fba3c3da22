"""Make the test process a child subreaper for one test, so that what a Sentinel
leaves behind when it exits (a process it gave up on) is reparented to the test,
not to this machine's PID 1 (which does not reap), and the test can reap it."""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def _set_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


@contextmanager
def adopting():
    """While inside, orphans of the test's descendants come to the test process."""
    _set_subreaper(True)
    try:
        yield
    finally:
        _set_subreaper(False)


def reap(pid: int) -> int | None:
    """Wait for ``pid`` if it is the test's child now (an adopted orphan); its exit code
    as ``waitpid`` reports it (128+N for signal N), or ``None`` if it is not ours."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
        else 128 + os.WTERMSIG(status)


def reap_adopted() -> list[int]:
    """Reap every child of the test that has exited (adopted orphans turned zombies);
    call it once the test's own subprocesses are waited for. Returns their PIDs."""
    out = []
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        if pid == 0:
            return out
        out.append(pid)
