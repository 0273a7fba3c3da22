"""The memory-probe contract: what a probe returns and how it reports what it could not read.

One seam between the supervisor and every way of measuring (the process-tree walk in
``sentinel.probes.tree``, the cgroup reader in ``sentinel.probes.cgroup``, an
event-driven probe later). The error model is psutil's, applied at this edge: a process
that is *gone* (ENOENT/ESRCH on its /proc files) is skipped and is not an error; one
whose file is *denied* (EACCES/EPERM) or otherwise *unreadable* (EISDIR, EMFILE, a
garbled line) is named in ``MemorySample.unreadable`` with the figure and the reason,
and its figure is never silently 0. A denied file of one process never hides its
subtree: its children are still walked.

This module is layer 1 (probes): it imports nothing from ``sentinel.core``; the core
re-exports ``MemorySample`` from ``sentinel.core.state``.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

# Reasons in ``Unreadable.reason`` and in a probe's ``errors`` keys: the OSError's
# errno name (EACCES, EPERM, EISDIR, EMFILE...), or one of these for a file that was
# read but held no usable figure.
REASON_EMPTY = "empty"
REASON_GARBAGE = "garbage"  # not a number where one was expected
REASON_NEGATIVE = "negative"
REASON_HUGE = "huge"  # beyond 2^63-1, what the kernel's counters hold
REASON_MISSING = "missing"  # the file or its line is absent on a live process/cgroup
DENIED = ("EACCES", "EPERM")


class Unreadable(NamedTuple):
    """One figure of one process that could not be read: ``pid`` (0 for a cgroup file),
    ``figure`` (a name from ``sentinel.probes.figures``, e.g. ``"rss_bytes"``) and
    ``reason`` (an errno name such as ``"EACCES"``, or ``"empty"``/``"garbage"``...)."""

    pid: int
    figure: str
    reason: str


def os_error_reason(exc: BaseException) -> str:
    """The reason word for an exception met while reading: the errno's name
    (``EACCES``), else the exception's type name (``ValueError``)."""
    if isinstance(exc, OSError) and exc.errno in errno.errorcode:
        return errno.errorcode[exc.errno]
    return type(exc).__name__


@dataclass(frozen=True)
class MemorySample:
    """One reading of the workload's memory.

    ``measure_bytes`` is the figure compared with the limit (per
    ``Settings.measure``). ``rss_bytes`` is the sum of resident set sizes over
    the tree (``/proc/<pid>/statm`` field 2 x page size). ``pss_bytes`` and
    ``uss_bytes`` come from ``/proc/<pid>/smaps_rollup`` (``smaps`` before Linux
    4.14) and are ``None`` unless that measure is in use, or when a process's
    figures could not be read (named in ``unreadable``; never reported as 0). The
    ``cgroup_*`` figures come from the workload's cgroup (v2 ``memory.current``,
    ``memory.max``, ``memory.high``, ``memory.stat``, ``memory.events``; v1
    ``memory.usage_in_bytes``, ``memory.limit_in_bytes``, ``memory.stat``,
    ``memory.oom_control``; see ``sentinel.probes.figures``) and are ``None``
    where no cgroup memory controller is visible or the file could not be read.
    ``unreadable`` lists ``Unreadable(pid, figure, reason)`` for each figure that a
    live process (or the cgroup, pid 0) did not give.
    """

    at_mono: float
    measure_bytes: int
    rss_bytes: int
    processes: tuple[tuple[int, int], ...]  # (pid, rss_bytes), the root first
    duration_seconds: float  # what taking this sample cost
    pss_bytes: int | None = None
    uss_bytes: int | None = None
    cgroup_memory_current_bytes: int | None = None
    cgroup_memory_max_bytes: int | None = None
    cgroup_working_set_bytes: int | None = None
    cgroup_memory_high_bytes: int | None = None
    cgroup_inactive_file_bytes: int | None = None
    cgroup_oom_kills: int | None = None  # the kernel's oom_kill counter, a count
    unreadable: tuple[Unreadable, ...] = ()

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(pid for pid, _ in self.processes)


@runtime_checkable
class MemoryProbe(Protocol):
    """What the supervisor asks of a probe.

    ``sample()`` returns a ``MemorySample`` and never raises for a vanished,
    denied or unreadable process: those are skipped or named in
    ``MemorySample.unreadable``. ``errors`` counts failed reads by
    ``(probe, reason)``, e.g. ``("statm", "EACCES")``, for
    ``sentinel_probe_errors_total``. ``close()`` releases kept descriptors; the
    probe may be sampled again afterwards (it reopens them).
    """

    errors: dict[tuple[str, str], int]

    def sample(self) -> MemorySample: ...

    def close(self) -> None: ...
