"""Sentinel's own file-descriptor limit (RLIMIT_NOFILE), raised for itself only.

The tree probe keeps descriptors open between samples (``sentinel.probes.tree``),
so a workload with thousands of processes or threads could otherwise use up
Sentinel's soft limit (1024 by default, as Docker and most distributions
give it) and stop sampling. After the first spawn Sentinel raises its soft
limit to the hard one (``raise_soft``); every later spawn (a restart) runs
inside ``as_given()``, which lowers the soft limit to the one Sentinel was
given for the duration of ``posix_spawn``, so the workload always starts
with the limits Sentinel was started with. posix_spawn has no rlimit
attribute, hence the lowering in the parent: descriptors already open above
the lowered limit stay valid (the limit only applies to new ones), and for
those few microseconds another thread of Sentinel's opening a descriptor
above the given soft limit gets EMFILE, which each of them already handles.

Standard library only (``resource``); see ``getrlimit(2)``, ``/proc/sys/fs/nr_open``.
"""

from __future__ import annotations

import contextlib
import resource

_given: tuple[int, int] | None = None  # (soft, hard) as Sentinel was started


def limits() -> tuple[int, int]:
    """``(soft, hard)`` RLIMIT_NOFILE of Sentinel now (``resource.RLIM_INFINITY`` = -1 for none)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def given() -> tuple[int, int]:
    """``(soft, hard)`` as Sentinel was started (before ``raise_soft``)."""
    return _given if _given is not None else limits()


def _nr_open() -> int:
    # The kernel refuses a soft limit above fs.nr_open (EPERM), also when the
    # hard limit is RLIM_INFINITY.
    try:
        with open("/proc/sys/fs/nr_open", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20


def raise_soft() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one (capped at fs.nr_open); remember the
    limits Sentinel was given. Returns the ``(soft, hard)`` now in force. Never raises:
    where the kernel refuses, the limits stay as they were."""
    global _given
    soft, hard = limits()
    if _given is None:
        _given = (soft, hard)
    target = _nr_open() if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            pass
    return limits()


@contextlib.contextmanager
def as_given():
    """Within the block the soft limit is the one Sentinel was given (for a spawn);
    afterwards it is what it was. Nothing changes if ``raise_soft`` was never called."""
    if _given is None:
        yield
        return
    now = limits()
    lowered = False
    if now[0] != _given[0]:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (_given[0], now[1]))
            lowered = True
        except (OSError, ValueError):
            pass
    try:
        yield
    finally:
        if lowered:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, now)
            except (OSError, ValueError):
                pass
