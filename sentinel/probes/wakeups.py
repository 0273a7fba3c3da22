"""Kernel wake-ups: hints that make the sampler sample at once instead of at its next tick.

Sources, each a kernel fd (issue 9, "The kernel's side"):

- ``MemoryEventsWatch``: a v2 cgroup's ``memory.events``; kernfs raises
  POLLPRI|POLLERR when a counter changes (``high``, ``max``, ``oom``,
  ``oom_kill``: mm/memcontrol.c ``memcg_memory_event`` → ``cgroup_file_notify``),
  and the event stays raised until the file is read again from offset 0;
- ``PressureTrigger``: a PSI trigger on ``/proc/pressure/memory`` (or a
  cgroup's ``memory.pressure``), POLLPRI when the stall passes its threshold
  within its window (Documentation/accounting/psi.rst). A hint and a metric,
  not a reaction path: here it woke 1.5–2 s after pressure began;
- ``UsageThreshold`` / ``OomNotify``: cgroup v1 eventfds registered through
  ``cgroup.event_control`` (Documentation/admin-guide/cgroup-v1/memory.rst
  §9, §10), readable when usage crosses the threshold (exact, within the
  kernel's ~128-page event batch) or when the group hits OOM. Needs a
  writable cgroupfs (privileged); a pod's read-only one gives EROFS.

``Wakeups`` owns one ``select.epoll`` holding them. asyncio's ``add_reader``
watches POLLIN only and PSI triggers and kernfs files signal POLLPRI, so the
epoll fd itself goes to ``loop.add_reader``: it is readable whenever one of
its fds has an event. Idle, it costs nothing: no timer, no thread, no read.

Hand-written on purpose: psutil and the standard library read PSI averages
but register no triggers, and no maintained library wraps kernfs POLLPRI or
v1 event_control; these are a few syscalls each.
"""

from __future__ import annotations

import errno
import os
import select
from dataclasses import dataclass, field

POLL_PRI = select.EPOLLPRI | select.EPOLLERR
POLL_IN = select.EPOLLIN

MEMORY_EVENTS_WAKE = ("high", "max", "oom", "oom_kill")

# Unprivileged PSI trigger windows (kernel/sched/psi.c psi_trigger_create,
# Linux 6.6+): without CAP_SYS_RESOURCE the window must be a multiple of 2 s
# (EINVAL otherwise). Root in a default container lacks that capability.
PSI_UNPRIVILEGED_WINDOW_US = 2_000_000
PSI_WINDOW_MAX_US = 10_000_000


@dataclass(frozen=True)
class Wakeup:
    """One wake-up: which source (``kind``, ``path``) and why.

    ``kind`` is ``"memory.events"``, ``"pressure"``, ``"usage_threshold"`` or
    ``"oom_control"``; ``rose`` holds, for ``memory.events`` and
    ``oom_control``, each counter that rose and by how much (events).
    """

    kind: str
    path: str
    reason: str
    rose: dict[str, int] = field(default_factory=dict)


def _unavailable(what: str, path: str, exc: OSError) -> str:
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"{what} unavailable: {path} is not writable ({exc.strerror}); "
                "a read-only cgroupfs (the default in a pod) allows none, a privileged one does")
    if exc.errno == errno.ENOENT:
        return f"{what} unavailable: {path} does not exist"
    return f"{what} unavailable: {path}: {exc.strerror}"


# --- memory.events (cgroup v2) ---------------------------------------------

def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse a cgroup flat-keyed file (``memory.events``, ``memory.oom_control``): ``{key: int}``.

    Lines are ``<key> <integer>``; others (empty, non-numeric) are skipped.
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


class MemoryEventsWatch:
    """Watch a v2 cgroup's ``memory.events`` (``path``) for ``high``/``max``/``oom``/``oom_kill``.

    Opens the file at once (``OSError`` if it cannot: ENOENT without a
    memory controller) and keeps the counters as a baseline. ``ready()``
    re-reads from offset 0 (which re-arms kernfs's POLLPRI) and returns a
    ``Wakeup`` whose ``rose`` says which of the four counters rose and by how
    much, or ``None`` if none of them did (``low`` alone does not wake).
    ``counters`` holds the latest figures (events, since the group was created).
    """

    kind = "memory.events"
    events = POLL_PRI

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.counters = self._read()

    def _read(self) -> dict[str, int]:
        os.lseek(self.fd, 0, os.SEEK_SET)
        return parse_flat_keyed(os.read(self.fd, 4096).decode("ascii", "replace"))

    def ready(self, _events: int = 0) -> Wakeup | None:
        before, self.counters = self.counters, self._read()
        rose = {k: self.counters.get(k, 0) - before.get(k, 0) for k in MEMORY_EVENTS_WAKE
                if self.counters.get(k, 0) > before.get(k, 0)}
        if not rose:
            return None
        return Wakeup(self.kind, self.path,
                      ", ".join(f"{k} +{n}" for k, n in rose.items()), rose)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --- PSI ---------------------------------------------------------------------

def read_pressure(path: str = "/proc/pressure/memory") -> dict[str, dict[str, float]]:
    """Parse a PSI file: ``{"some": {...}, "full": {...}}``.

    Each line is ``some|full avg10=.. avg60=.. avg300=.. total=..``; the
    averages are percentages of wall time stalled (0–100) over 10/60/300 s,
    ``total`` the stall time in microseconds since boot, returned here as
    ``total_seconds`` (a float, for ``_seconds_total`` metrics). ``full`` is
    missing on old kernels' cpu file. Raises ``OSError`` if the file cannot
    be read (no PSI: ``psi=0`` on the kernel command line gives EOPNOTSUPP).
    Source: kernel/sched/psi.c ``psi_show``; ~2.6 µs a read here.
    """
    with open(path, "rb") as f:
        text = f.read().decode("ascii", "replace")
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind not in ("some", "full"):
            continue
        figures: dict[str, float] = {}
        for item in rest.split():
            key, _, value = item.partition("=")
            try:
                number = float(value)
            except ValueError:
                continue
            if key == "total":
                figures["total_seconds"] = number / 1e6
            elif key in ("avg10", "avg60", "avg300"):
                figures[key] = number
        out[kind] = figures
    return out


class PressureTrigger:
    """A PSI trigger: wake when tasks stall ``stall_us`` µs within a ``window_us`` µs window.

    ``path`` is ``/proc/pressure/memory`` or a cgroup's ``memory.pressure``;
    ``level`` is ``"some"`` (at least one task stalled) or ``"full"``. The
    file is opened O_RDWR|O_NONBLOCK and ``"<level> <stall> <window>\\0"``
    written (Documentation/accounting/psi.rst). Without CAP_SYS_RESOURCE a
    window that is not a multiple of 2 s gives EINVAL: the trigger is then
    registered with the window rounded up to a multiple of 2 s (stall scaled
    to keep its share) and ``note`` says so once, for the caller to log.
    When no trigger can be registered (EACCES/EROFS on a read-only cgroupfs,
    ENOENT/EOPNOTSUPP without PSI, EINVAL twice) ``fd`` is -1 and
    ``unavailable`` holds the reason. Never raises.
    """

    kind = "pressure"
    events = POLL_PRI

    def __init__(self, path: str = "/proc/pressure/memory", stall_us: int = 150_000,
                 window_us: int = 1_000_000, level: str = "some") -> None:
        self.path, self.level = path, level
        self.stall_us, self.window_us = stall_us, window_us
        self.fd = -1
        self.note: str | None = None
        self.unavailable: str | None = None
        try:
            self.fd = self._register(stall_us, window_us)
            return
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                self.unavailable = _unavailable("PSI trigger", path, exc)
                return
            first = exc
        window = max(PSI_UNPRIVILEGED_WINDOW_US,
                     -(-window_us // PSI_UNPRIVILEGED_WINDOW_US) * PSI_UNPRIVILEGED_WINDOW_US)
        window = min(window, PSI_WINDOW_MAX_US)
        stall = min(window, stall_us * window // max(window_us, 1))
        try:
            self.fd = self._register(stall, window)
        except OSError as exc:
            self.unavailable = (f"PSI trigger unavailable: {path} refused "
                                f"'{level} {stall_us} {window_us}' ({first.strerror}) and "
                                f"'{level} {stall} {window}' ({exc.strerror})")
            return
        self.stall_us, self.window_us = stall, window
        self.note = (f"PSI trigger window {window_us / 1e6:g} s refused by {path} "
                     f"({first.strerror}: without CAP_SYS_RESOURCE windows must be multiples "
                     f"of 2 s); using {stall / 1e6:g} s of stall in {window / 1e6:g} s")

    def _register(self, stall_us: int, window_us: int) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            os.write(fd, f"{self.level} {stall_us} {window_us}\0".encode())
        except OSError:
            os.close(fd)
            raise
        return fd

    def ready(self, _events: int = 0) -> Wakeup:
        return Wakeup(self.kind, self.path,
                      f"{self.level} memory stall over {self.stall_us / 1e6:g} s "
                      f"in {self.window_us / 1e6:g} s")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --- cgroup v1 event_control --------------------------------------------------

class _EventControl:
    """An eventfd registered in a v1 memory cgroup's ``cgroup.event_control``.

    ``fd`` is -1 and ``unavailable`` the reason when registration failed
    (EROFS/EACCES: read-only cgroupfs; ENOENT: not a v1 memory group).
    The kernel drops the registration when the eventfd is closed.
    """

    events = POLL_IN
    kind = ""
    target = ""

    def __init__(self, cgroup_dir: str) -> None:
        self.cgroup_dir = cgroup_dir
        self.path = os.path.join(cgroup_dir, self.target)
        self.fd = -1
        self.unavailable: str | None = None
        self._owner: Wakeups | None = None

    def _register(self, argument: str = "") -> int:
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            tfd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                cfd = os.open(os.path.join(self.cgroup_dir, "cgroup.event_control"),
                              os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(cfd, f"{efd} {tfd}{argument}".encode())
                finally:
                    os.close(cfd)
            finally:
                os.close(tfd)  # the kernel holds its own reference to the file
        except OSError:
            os.close(efd)
            raise
        return efd

    def _drain(self) -> int:
        try:
            return os.eventfd_read(self.fd)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class UsageThreshold(_EventControl):
    """Wake when a v1 memory group's ``memory.usage_in_bytes`` crosses ``threshold_bytes``.

    The kernel signals a crossing in either direction (mm/memcontrol-v1.c
    ``__mem_cgroup_threshold``), checked every ~128 charged pages, so it
    wakes within about 512 KiB of the threshold. ``rearm(bytes)`` moves it
    (a new limit): a new eventfd is registered before the old one is closed,
    so no crossing is missed; an attached ``Wakeups`` follows the new fd.
    """

    kind = "usage_threshold"
    target = "memory.usage_in_bytes"

    def __init__(self, cgroup_dir: str, threshold_bytes: int) -> None:
        super().__init__(cgroup_dir)
        self.threshold_bytes = threshold_bytes
        try:
            self.fd = self._register(f" {int(threshold_bytes)}")
        except OSError as exc:
            self.unavailable = _unavailable("cgroup v1 usage threshold", self.cgroup_dir
                                            + "/cgroup.event_control", exc)

    def rearm(self, threshold_bytes: int) -> str | None:
        """Register at ``threshold_bytes`` instead; an error text (the old stays), or ``None``."""
        try:
            new = self.register_at(threshold_bytes)
        except OSError as exc:
            return self.why(exc)
        self.adopt(new, threshold_bytes)
        return None

    def register_at(self, threshold_bytes: int) -> int:
        """A new eventfd registered at ``threshold_bytes`` (not yet in use: ``adopt``).
        Blocks in the kernel's ``synchronize_rcu()`` (~5 ms): safe to call from a helper
        thread, as it touches nothing of this object. Raises ``OSError``."""
        return self._register(f" {int(threshold_bytes)}")

    def why(self, exc: OSError) -> str:
        """The one-line reason a registration failed."""
        return _unavailable("cgroup v1 usage threshold", self.cgroup_dir
                            + "/cgroup.event_control", exc)

    def adopt(self, new: int, threshold_bytes: int) -> None:
        """Use ``new`` (from ``register_at``) from now on; the old eventfd is closed (the
        kernel drops its registration). On the loop's thread."""
        old, self.fd, self.threshold_bytes = self.fd, new, threshold_bytes
        if self._owner is not None:
            self._owner._replace_fd(self, old)
        if old >= 0:
            os.close(old)

    def ready(self, _events: int = 0) -> Wakeup | None:
        if not self._drain():
            return None
        return Wakeup(self.kind, self.path,
                      f"memory.usage_in_bytes crossed {self.threshold_bytes} bytes")


class OomNotify(_EventControl):
    """Wake when a v1 memory group hits its limit and its OOM handling runs.

    Registered on ``memory.oom_control`` through ``cgroup.event_control``.

    ``rose`` carries ``oom_kill`` (how many tasks the kernel killed since
    the last wake-up) read from ``memory.oom_control`` at wake-up.
    """

    kind = "oom_control"
    target = "memory.oom_control"

    def __init__(self, cgroup_dir: str) -> None:
        super().__init__(cgroup_dir)
        self.oom_kill = 0
        try:
            self.fd = self._register()
            self.oom_kill = self._oom_kill()
        except OSError as exc:
            self.close()
            self.unavailable = _unavailable("cgroup v1 OOM notification", self.cgroup_dir
                                            + "/cgroup.event_control", exc)

    def _oom_kill(self) -> int:
        with open(self.path, "rb") as f:
            return parse_flat_keyed(f.read().decode("ascii", "replace")).get("oom_kill", 0)

    def ready(self, _events: int = 0) -> Wakeup | None:
        if not self._drain():
            return None
        before = self.oom_kill
        try:
            self.oom_kill = self._oom_kill()
        except OSError:
            pass  # the group is going away: the wake-up itself is the news
        rose = {"oom_kill": self.oom_kill - before} if self.oom_kill > before else {}
        return Wakeup(self.kind, self.path, "memory cgroup OOM", rose)


# --- the epoll that owns them --------------------------------------------------

class Wakeups:
    """One ``select.epoll`` holding every source's fd; readiness reaches a callback in the loop.

    ``add(source)`` registers a source (its ``fd`` with its ``events``) and
    returns ``None``, or the reason it cannot (the source's own
    ``unavailable``; EPERM from epoll for a file that cannot be polled, such
    as a regular file); ``attach(loop, callback)`` puts the epoll fd in the
    asyncio loop with ``loop.add_reader``; on readiness every ready fd is
    drained with ``epoll.poll(0)``, its source re-reads its file and
    ``callback(Wakeup)`` is called for each wake-up. A source whose read
    fails is dropped (its error becomes a ``Wakeup`` with ``kind`` ``"error"``),
    never raised into the loop. ``close()`` detaches and closes everything.

    A PSI trigger's event is consumed by the first poll that sees it
    (kernel/sched/psi.c ``psi_trigger_poll``: ``cmpxchg(&t->event, 1, 0)``),
    and the loop's own poll of the epoll fd is such a poll, so our
    ``poll(0)`` may find nothing: a readiness with no fd ready is reported
    as a wake-up of each PSI trigger (kernfs and eventfd readiness lasts
    until read, so only PSI can be lost that way). A spurious hint costs one
    early sample.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._sources: dict[int, object] = {}
        self._loop = None
        self._callback = None
        self._last_ready = 0  # how many fds the last poll() found ready

    @property
    def sources(self) -> list:
        return list(self._sources.values())

    def add(self, source) -> str | None:
        reason = getattr(source, "unavailable", None)
        if reason is not None or source.fd < 0:
            return reason or f"{source.kind}: no fd"
        try:
            self._epoll.register(source.fd, source.events)
        except OSError as exc:
            return f"{source.kind} on {source.path} cannot be polled: {exc.strerror}"
        self._sources[source.fd] = source
        if hasattr(source, "_owner"):
            source._owner = self
        return None

    def _replace_fd(self, source, old_fd: int) -> None:
        if self._sources.pop(old_fd, None) is not None:
            try:
                self._epoll.unregister(old_fd)
            except OSError:
                pass
        self._epoll.register(source.fd, source.events)
        self._sources[source.fd] = source

    def attach(self, loop, callback) -> None:
        """Call ``callback(Wakeup)`` from ``loop`` whenever a source has an event."""
        self._loop, self._callback = loop, callback
        loop.add_reader(self._epoll.fileno(), self._on_readable)

    def poll(self) -> list[Wakeup]:
        """Drain every ready fd now, without blocking; the wake-ups found."""
        out: list[Wakeup] = []
        ready = self._epoll.poll(0)
        self._last_ready = len(ready)
        for fd, events in ready:
            source = self._sources.get(fd)
            if source is None:
                continue
            try:
                wake = source.ready(events)
            except OSError as exc:
                self._drop(source)
                out.append(Wakeup("error", source.path,
                                  f"{source.kind} dropped: {exc.strerror or exc}"))
                continue
            if wake is not None:
                out.append(wake)
        return out

    def _on_readable(self) -> None:
        wakes = self.poll()
        if not wakes and not self._last_ready:
            # No fd ready at all: the loop's poll consumed a PSI event (see the class
            # docstring). A ready fd that woke nothing (memory.events' ``low``) is no PSI.
            wakes = [s.ready() for s in self._sources.values() if isinstance(s, PressureTrigger)]
        for wake in wakes:
            self._callback(wake)

    def remove(self, source) -> None:
        """Stop polling ``source`` and close it (its owner gave it up)."""
        self._drop(source)

    def _drop(self, source) -> None:
        self._sources.pop(source.fd, None)
        try:
            self._epoll.unregister(source.fd)
        except OSError:
            pass
        source.close()

    def close(self) -> None:
        if self._loop is not None and not self._epoll.closed:
            self._loop.remove_reader(self._epoll.fileno())
            self._loop = None
        for source in list(self._sources.values()):
            source.close()
        self._sources.clear()
        self._epoll.close()
