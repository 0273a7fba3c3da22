"""The workload's cgroup memory controller: discovery (v1, v2, hybrid) and cheap reads.

Discovery (``discover``): the process's line in ``/proc/<pid>/cgroup`` gives its
cgroup path (``0::/path`` on v2, ``N:memory:/path`` on v1), and
``/proc/self/mountinfo`` gives where that hierarchy is mounted here. The directory is
the mount point plus the path *minus the mount's root field*: with a private cgroup
namespace the path is ``/`` and the root ``/``; with the host's (podman's default on
v1, Docker ``--cgroupns=host``) the mount's root is the container's own group, e.g.
``/libpod_parent/libpod-abc``, and the path repeats it. A path outside the mount's
root (the kernel shows ``/../x`` for a cgroup outside our namespace) is not visible.
On hybrid hosts the memory controller is on v1 while a cgroup2 hierarchy without it
sits at ``/sys/fs/cgroup/unified``: the v1 memory line wins whenever its hierarchy is
mounted. ``cgroup_root`` (``--cgroup-root``) replaces the mount point, for unusual
mounts and fixture trees; it may also be the cgroup's directory itself, but never a
hierarchy's root group (whose usage is the whole host's; see ``_under_cgroup_root``).
Limits (``CgroupMemory.limits``) are the kernel's effective ones: the lowest of the
group's and its visible ancestors' (``limit_source`` says which group).

Reads (``CgroupMemory.read``): descriptors kept open and read with ``pread`` at
offset 0 (cgroupfs regenerates the file on each read at 0), as the tree probe does
for ``statm``: about 1 us for ``memory.current``, 17-21 us for ``memory.stat``. A
missing file or an odd value (empty, garbage, negative, beyond 2^63-1) never raises:
that field of the reading is ``None`` and the reason is counted in ``errors``. The
limit words ``max`` (v2) and v1's "unlimited" (``PAGE_COUNTER_MAX`` pages, about
2^63 rounded down to a page) are ``None`` without an error.

Written by hand rather than with psutil: psutil reads no cgroup files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sentinel.errors import UsageError
from sentinel.probes.contract import (
    REASON_EMPTY, REASON_GARBAGE, REASON_HUGE, REASON_MISSING, REASON_NEGATIVE, os_error_reason,
)

MAX_COUNTER = 2**63 - 1
# cgroup v1 shows "no limit" as PAGE_COUNTER_MAX pages in bytes: 9223372036854771712 with
# 4 KiB pages (LONG_MAX rounded down to a page). Anything this large is unlimited.
V1_UNLIMITED_FLOOR = 2**62
# limit_source when v1's hierarchical limit comes from a group not visible here.
ANCESTOR_NOT_VISIBLE = "an ancestor cgroup not visible here"
# --max-rss auto: the share of the container's limit when none is given.
DEFAULT_AUTO_SHARE = 0.90

_FILES = {
    2: {"current": "memory.current", "max": "memory.max", "high": "memory.high",
        "stat": "memory.stat", "events": "memory.events"},
    1: {"current": "memory.usage_in_bytes", "max": "memory.limit_in_bytes",
        "stat": "memory.stat", "events": "memory.oom_control"},
}
# Which figure (sentinel.probes.figures) each file gives, for MemorySample.unreadable.
FIGURE_OF_FILE = {
    "memory.current": "cgroup_memory_current_bytes",
    "memory.usage_in_bytes": "cgroup_memory_current_bytes",
    "memory.max": "cgroup_memory_max_bytes", "memory.limit_in_bytes": "cgroup_memory_max_bytes",
    "memory.high": "cgroup_memory_high_bytes", "memory.stat": "cgroup_inactive_file_bytes",
    "memory.events": "cgroup_oom_kills", "memory.oom_control": "cgroup_oom_kills",
}
# The memory.stat key of the inactive page cache (v1: hierarchical, children included).
_INACTIVE_FILE = {2: b"inactive_file", 1: b"total_inactive_file"}


@dataclass(frozen=True)
class Mount:
    """One line of ``/proc/self/mountinfo`` (see proc(5)): ``root`` is the path of
    the mounted directory inside its file system (for a cgroupfs: inside the
    hierarchy), ``mount_point`` where it is seen here."""

    root: str
    mount_point: str
    options: tuple[str, ...]  # per-mount options (rw/ro, nosuid...)
    fstype: str
    super_options: tuple[str, ...]  # per-superblock options (v1: the controllers)

    @property
    def read_only(self) -> bool:
        return "ro" in self.options or "ro" in self.super_options


def _unescape(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040...).
    if "\\" not in text:
        return text
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts of a ``mountinfo`` text, in order; malformed lines
    are skipped."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6 or len(tail) < 2 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append(Mount(root=_unescape(fields[3]), mount_point=_unescape(fields[4]),
                            options=tuple(fields[5].split(",")), fstype=tail[0],
                            super_options=tuple(tail[2].split(",")) if len(tail) > 2 else ()))
    return mounts


def parse_proc_cgroup(text: str) -> tuple[str | None, str | None]:
    """``(v1 memory path, v2 path)`` from a ``/proc/<pid>/cgroup`` text; each ``None``
    when its line is absent."""
    v1 = v2 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        if hier == "0" and controllers == "":
            v2 = path.strip()
        elif "memory" in controllers.split(","):
            v1 = path.strip()
    return v1, v2


def relative_to_root(path: str, root: str) -> str | None:
    """``path`` (from /proc/<pid>/cgroup) made relative to the mount's ``root``, e.g.
    ``("/kubepods/pod1/ctr", "/kubepods/pod1")`` -> ``"ctr"``; ``""`` for the root
    itself; ``None`` when the path is outside it (not visible through this mount)."""
    if ".." in path.split("/"):
        return None  # outside our cgroup namespace: the kernel shows /../x
    path = "/" + path.strip("/")
    root = "/" + root.strip("/")
    if root == "/":
        return path.lstrip("/")
    if path == root:
        return ""
    if path.startswith(root + "/"):
        return path[len(root) + 1:]
    return None


@dataclass(frozen=True)
class CgroupReading:
    """One read of the cgroup, sizes in bytes; each field ``None`` when unknown or,
    for ``limit_bytes``/``high_bytes``, unlimited.

    ``current_bytes``: v2 ``memory.current`` / v1 ``memory.usage_in_bytes``.
    ``limit_bytes``: v2 ``memory.max`` / v1 ``memory.limit_in_bytes``.
    ``high_bytes``: v2 ``memory.high`` (v1 has none). ``inactive_file_bytes``: v2
    ``memory.stat inactive_file`` / v1 ``total_inactive_file``.
    ``working_set_bytes``: current - inactive_file, floored at 0 (the kubelet's).
    ``oom_kills``: v2 ``memory.events oom_kill`` / v1 ``memory.oom_control oom_kill``.
    ``events``: every counter of v2 ``memory.events`` (low, high, max, oom, oom_kill,
    oom_group_kill) or of v1 ``memory.oom_control`` (oom_kill_disable, under_oom,
    oom_kill). ``unreadable``: ``(file, reason)`` for each file that gave nothing.
    """

    current_bytes: int | None
    limit_bytes: int | None
    high_bytes: int | None
    inactive_file_bytes: int | None
    working_set_bytes: int | None
    oom_kills: int | None
    events: dict[str, int] = field(default_factory=dict)
    unreadable: tuple[tuple[str, str], ...] = ()


class CgroupMemory:
    """A cgroup's memory controller, read through kept descriptors.

    ``version`` is 1 or 2, ``path`` the cgroup's directory, ``read_only`` whether its
    cgroupfs is mounted read-only (the default in a pod: reads work, writes such as
    ``memory.high`` do not). ``errors`` counts failed reads by ``(file, reason)``.
    Use ``discover()`` (or ``for_pid``) to find it.
    """

    def __init__(self, path: str, version: int, *, read_only: bool = False,
                 top: str | None = None) -> None:
        self.path = path
        self.version = version
        self.read_only = read_only
        # The highest directory limits() may look at for an ancestor's limit: the
        # hierarchy's mount point here (or --cgroup-root); None: this group only.
        self.top = top
        # Where the last limits() found its figures: the directory of the group whose
        # memory.max / memory.limit_in_bytes (limit_source) or memory.high (high_source)
        # is the effective one; ANCESTOR_NOT_VISIBLE when v1's hierarchical figure is
        # lower than every group visible here; None when there is no such limit.
        self.limit_source: str | None = None
        self.high_source: str | None = None
        self.errors: dict[tuple[str, str], int] = {}
        self._fds: dict[str, int] = {}
        self._last_limit: tuple[int | None, int | None] | None = None

    @classmethod
    def for_pid(cls, pid: int | str = "self", proc_root: str = "/proc",
                cgroup_root: str | None = None) -> "CgroupMemory | None":
        """``discover(pid, proc_root, cgroup_root)``: kept for the tree probe's callers."""
        return discover(pid, proc_root=proc_root, cgroup_root=cgroup_root)

    # -- files ------------------------------------------------------------
    def _raw(self, key: str, size: int = 4096) -> tuple[bytes | None, str | None]:
        """The file's bytes through its kept descriptor (opened on first use), or
        ``(None, reason)``; the reason is counted."""
        name = _FILES[self.version].get(key)
        if name is None:
            return None, None
        fd = self._fds.get(key)
        try:
            if fd is None:
                fd = self._fds[key] = os.open(os.path.join(self.path, name),
                                              os.O_RDONLY | os.O_CLOEXEC)
            return os.pread(fd, size, 0), None
        except FileNotFoundError:
            reason = REASON_MISSING
        except OSError as exc:
            reason = os_error_reason(exc)
            if fd is not None:  # e.g. ENODEV after the group was removed: reopen next time
                self._close_fd(key)
        self._count(name, reason)
        return None, reason

    def _count(self, name: str, reason: str) -> None:
        self.errors[(name, reason)] = self.errors.get((name, reason), 0) + 1

    def _close_fd(self, key: str) -> None:
        fd = self._fds.pop(key, None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        for key in list(self._fds):
            self._close_fd(key)

    def _number(self, key: str, unread: list, *, limit: bool = False) -> int | None:
        raw, reason = self._raw(key, 64)
        name = _FILES[self.version].get(key, key)
        if raw is None:
            if reason is not None:
                unread.append((name, reason))
            return None
        value, reason = parse_value(raw, limit=limit)
        if reason is not None:
            self._count(name, reason)
            unread.append((name, reason))
        return value

    def _keyed(self, key: str, unread: list) -> dict[bytes, int] | None:
        raw, reason = self._raw(key, 16384)
        if raw is None:
            if reason is not None:
                unread.append((_FILES[self.version][key], reason))
            return None
        return parse_keyed(raw)

    # -- reading ----------------------------------------------------------
    def limits(self) -> tuple[int | None, int | None]:
        """``(limit_bytes, high_bytes)`` the kernel applies to this group, in bytes:
        the lowest of its own and its ancestors' (a parent's tighter limit binds the
        child too); ``None`` when unlimited or unreadable. Sets ``limit_source`` and
        ``high_source`` to the group each came from.

        v2: the minimum of ``memory.max`` (and, separately, of ``memory.high``) over
        this directory and its parents up to ``top`` (the mount point), never above
        it. v1 (no ``memory.high``): the minimum of ``memory.limit_in_bytes`` and
        ``memory.stat``'s ``hierarchical_memory_limit`` (and its
        ``hierarchical_memsw_limit``, memory plus swap, when lower): the kernel's own
        minimum over every ancestor, even those above the mount's root.

        Ancestors outside this cgroup namespace are not seen: with a private cgroup
        namespace (the default on v2) the namespace root is the container's own
        group, so on v2 a parent's limit there is invisible. A group's own limit: two
        kept-descriptor reads (about 2 us); v1 adds ``memory.stat`` (about 20 us),
        v2 two opens per visible parent.
        """
        unread: list = []
        limit = self._number("max", unread, limit=True)
        self.limit_source = self.path if limit is not None else None
        if self.version == 1:
            stat = self._keyed("stat", [])
            for key in (b"hierarchical_memory_limit", b"hierarchical_memsw_limit"):
                raw = (stat or {}).get(key)
                value = None if raw is None or raw >= V1_UNLIMITED_FLOOR else raw
                if value is not None and (limit is None or value < limit):
                    limit = value
                    self.limit_source = self._v1_ancestor_with(value)
            self.high_source = None
            return limit, None
        high = self._number("high", unread, limit=True)
        self.high_source = self.path if high is not None else None
        for parent in self._parents():
            up_max = _read_limit(os.path.join(parent, "memory.max"))
            if up_max is not None and (limit is None or up_max < limit):
                limit, self.limit_source = up_max, parent
            up_high = _read_limit(os.path.join(parent, "memory.high"))
            if up_high is not None and (high is None or up_high < high):
                high, self.high_source = up_high, parent
        return limit, high

    def _parents(self) -> list[str]:
        """This group's parent directories, nearest first, up to ``top`` included
        (none when ``top`` is None or this directory is not under it)."""
        if self.top is None:
            return []
        top = os.path.normpath(self.top)
        here = os.path.normpath(self.path)
        if here == top or not here.startswith(top.rstrip("/") + "/"):
            return []
        out = []
        while here != top:
            here = os.path.dirname(here)
            out.append(here)
        return out

    def _v1_ancestor_with(self, value: int) -> str:
        """The nearest visible v1 ancestor whose ``memory.limit_in_bytes`` or
        ``memory.memsw.limit_in_bytes`` is ``value``, else ``ANCESTOR_NOT_VISIBLE``."""
        for parent in self._parents():
            for name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
                if _read_limit(os.path.join(parent, name)) == value:
                    return parent
        return ANCESTOR_NOT_VISIBLE

    def limit_changed(self) -> bool:
        """Whether ``limits()`` differs from what the previous call (or the first)
        saw: an in-place pod resize (Kubernetes 1.27+) changes ``memory.max``."""
        now = self.limits()
        changed = self._last_limit is not None and now != self._last_limit
        self._last_limit = now
        return changed

    def events(self) -> dict[str, int]:
        """Counters of v2 ``memory.events`` or v1 ``memory.oom_control``; ``{}`` if
        unreadable."""
        got = self._keyed("events", [])
        return {k.decode(): v for k, v in (got or {}).items()}

    def read(self) -> CgroupReading:
        """One ``CgroupReading`` (see there): five kept-descriptor reads, about 25 us
        of which ``memory.stat`` is most. Never raises."""
        unread: list[tuple[str, str]] = []
        current = self._number("current", unread)
        limit = self._number("max", unread, limit=True)
        high = self._number("high", unread, limit=True) if self.version == 2 else None
        stat = self._keyed("stat", unread)
        inactive = None
        if stat is not None:
            inactive = stat.get(_INACTIVE_FILE[self.version])
            if inactive is None:
                name = _FILES[self.version]["stat"]
                self._count(name, REASON_MISSING)
                unread.append((name, REASON_MISSING))
        working_set = max(0, current - inactive) if current is not None and \
            inactive is not None else None
        ev = self._keyed("events", unread)
        events = {k.decode(): v for k, v in (ev or {}).items()}
        oom_kills = events.get("oom_kill")
        if ev is not None and oom_kills is None:
            name = _FILES[self.version]["events"]
            self._count(name, REASON_MISSING)  # a kernel before 4.13 (v1) has no oom_kill
            unread.append((name, REASON_MISSING))
        return CgroupReading(current, limit, high, inactive, working_set, oom_kills, events,
                             tuple(unread))

    def __repr__(self) -> str:
        return f"CgroupMemory(path={self.path!r}, version={self.version}, " \
               f"read_only={self.read_only})"


def parse_value(raw: bytes, *, limit: bool = False) -> tuple[int | None, str | None]:
    """A cgroup file's single number: ``(value, None)``, or ``(None, reason)`` for an
    empty, non-numeric, negative or too large one. With ``limit``, ``max`` and v1's
    unlimited value are ``(None, None)``: no limit, not an error."""
    text = raw.strip()
    if not text:
        return None, REASON_EMPTY
    if limit and text == b"max":
        return None, None
    if text.startswith(b"-") and text[1:].isdigit():
        return None, REASON_NEGATIVE
    if not text.isdigit():
        return None, REASON_GARBAGE
    value = int(text)
    if limit and value >= V1_UNLIMITED_FLOOR:
        return None, None
    if value > MAX_COUNTER:
        return None, REASON_HUGE
    return value, None


def _read_limit(path: str) -> int | None:
    """An ancestor's limit file (``parse_value`` with ``limit``), ``None`` when it is
    unlimited, missing (the root group has no ``memory.max``) or unreadable."""
    try:
        with open(path, "rb") as f:
            raw = f.read(64)
    except OSError:
        return None
    return parse_value(raw, limit=True)[0]


def parse_keyed(raw: bytes) -> dict[bytes, int]:
    """``key value`` lines (memory.stat, memory.events, memory.oom_control) as a dict;
    lines whose value is not a whole number >= 0 are left out."""
    out = {}
    for line in raw.splitlines():
        key, _, value = line.partition(b" ")
        value = value.strip()
        if value.isdigit() and int(value) <= MAX_COUNTER:
            out[key] = int(value)
    return out


# --------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------

def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


@dataclass(frozen=True)
class _Found:
    memory: CgroupMemory | None
    why_not: str  # "" when found


def _has(directory: str, version: int) -> bool:
    return os.path.exists(os.path.join(directory, _FILES[version]["current"]))


def _is_hierarchy_root(directory: str) -> bool:
    """Whether ``directory`` is the root group of a cgroup hierarchy: on v1 only the
    root has ``cgroup.sane_behavior`` (and ``release_agent``; kernel/cgroup/cgroup-v1.c,
    CFTYPE_ONLY_ON_ROOT), on v2 the root has no ``memory.current`` (CFTYPE_NOT_ON_ROOT),
    which ``_has`` already refuses. A cgroup namespace's root is not a hierarchy root."""
    return os.path.exists(os.path.join(directory, "cgroup.sane_behavior"))


def _under_cgroup_root(cgroup_root: str, rel_path: str, version: int,
                       candidates: list[Mount], pid: int | None = None) -> CgroupMemory | None:
    """The group ``rel_path`` names under ``--cgroup-root``, which stands for the mount
    point of the hierarchy: the mount of this controller (``candidates``) whose root
    holds ``rel_path`` gives the part to drop (the mount's root field), as in
    discovery without it. ``cgroup_root`` itself is taken as the cgroup's own
    directory only when it is not a hierarchy root (``_is_hierarchy_root``): the
    root's usage is the whole host's, and a sidecar given the host's cgroupfs must
    never enforce a limit on that (a target outside the tree is not found instead).
    A directory is taken only if ``pid`` (numeric; ``None``: not checked) is in it
    (``_holds``)."""
    mount = next((m for m in candidates if relative_to_root(rel_path, m.root) is not None),
                 None)
    rel = relative_to_root(rel_path, mount.root if mount is not None else "/")
    ro = mount.read_only if mount is not None else False
    dirs = [os.path.join(cgroup_root, rel)] if rel is not None else []
    if not _is_hierarchy_root(cgroup_root):
        dirs.append(cgroup_root)  # --cgroup-root may be the cgroup's directory itself
    for d in dirs:
        if _has(d, version) and _holds(d, pid):
            return CgroupMemory(os.path.normpath(d), version, read_only=ro, top=cgroup_root)
    return None


def _member_pids(directory: str) -> set[int] | None:
    """The processes (TGIDs) directly in the group ``directory`` (its ``cgroup.procs``),
    or ``None`` when that file cannot be read (a fixture tree without it)."""
    text = _read_text(os.path.join(directory, "cgroup.procs"))
    if text is None:
        return None
    return {int(w) for w in text.split() if w.isdigit()}


def _descends_from(child: int, ancestor: int, proc_root: str = "/proc") -> bool:
    """Whether ``ancestor`` is ``child``'s parent, grandparent, ... (``/proc/<pid>/stat``
    field 4, the PPID; at most 64 levels)."""
    pid = child
    for _ in range(64):
        stat = _read_text(f"{proc_root}/{pid}/stat")
        if stat is None:
            return False
        try:
            ppid = int(stat.rpartition(")")[2].split()[1])
        except (IndexError, ValueError):
            return False
        if ppid == ancestor:
            return True
        if ppid <= 1:
            return False
        pid = ppid
    return False


def _holds(directory: str, pid: int | None) -> bool:
    """Whether the group ``directory`` can be ``pid``'s workload's. With ``--cgroup-root``
    a directory is taken only if its ``cgroup.procs`` lists the process or only its
    descendants (the workload that joined it in a pre-exec step), or if it is an
    empty leaf (no processes, no child groups: one the workload joins itself, e.g. a
    pre-exec step writing its PID to ``cgroup.procs`` while Sentinel stays outside, as
    ``--clamp-high`` needs). An ancestor (child groups: every sibling container's
    memory) or a group holding other processes (another workload's) is never taken.
    Unknown (no ``pid``, no readable file): accepted."""
    if pid is None:
        return True
    members = _member_pids(directory)
    if members is None or pid in members:
        return True
    if members:  # the workload's only if every process in it is one of pid's descendants
        return all(_descends_from(m, pid) for m in members)
    try:
        with os.scandir(directory) as entries:
            return not any(e.is_dir(follow_symlinks=False) for e in entries)
    except OSError:
        return False


def _numeric_pid(pid: int | str, proc_root: str) -> int | None:
    """``pid`` as a number (``"self"`` is this process on the real /proc), else None."""
    if isinstance(pid, int):
        return pid
    if pid == "self":
        return os.getpid() if proc_root == "/proc" else None
    return int(pid) if str(pid).isdigit() else None


def is_hierarchy_root(memory: CgroupMemory) -> bool:
    """Whether ``memory`` is a hierarchy's root group (the whole host's memory): never
    the figure to enforce a container's limit on."""
    return _is_hierarchy_root(memory.path)


def other_members(memory: CgroupMemory, own_pids) -> list[int]:
    """Processes directly in ``memory``'s group that are not in ``own_pids`` (sorted):
    a cgroup measure counts their memory too. ``[]`` when unreadable."""
    members = _member_pids(memory.path) or set()
    return sorted(members - set(own_pids))


def _locate(pid: int | str, proc_root: str, cgroup_root: str | None) -> _Found:
    own = _read_text(f"{proc_root}/{pid}/cgroup")
    if own is None:
        return _Found(None, f"{proc_root}/{pid}/cgroup cannot be read (the process is gone, "
                            "or /proc is not this PID namespace's)")
    v1_path, v2_path = parse_proc_cgroup(own)
    mounts = parse_mountinfo(_read_text(f"{proc_root}/self/mountinfo") or "")
    tried: list[str] = []
    # v1 first where this process has a memory line: on hybrid hosts the cgroup2
    # hierarchy exists (/sys/fs/cgroup/unified) but the memory controller is v1's.
    for version, rel_path in ((1, v1_path), (2, v2_path)):
        if rel_path is None:
            continue
        candidates = [m for m in mounts if m.fstype == "cgroup2"] if version == 2 else \
            [m for m in mounts if m.fstype == "cgroup" and "memory" in m.super_options]
        if cgroup_root is not None:
            found = _under_cgroup_root(cgroup_root, rel_path, version, candidates,
                                       _numeric_pid(pid, proc_root))
            if found is not None:
                return _Found(found, "")
            tried.append(f"v{version} {rel_path} under --cgroup-root {cgroup_root}: no group "
                         f"there holds process {pid} (nor is an empty leaf for it to join)"
                         + (" (the hierarchy's root itself is never taken for the "
                            "workload's group: it is the whole host's memory)"
                            if _is_hierarchy_root(cgroup_root) and _has(cgroup_root, version)
                            else ""))
            continue
        if not candidates:
            tried.append(f"v{version} {rel_path}: no {'cgroup2' if version == 2 else 'v1 memory'}"
                         " hierarchy is mounted here")
            continue
        for m in candidates:
            rel = relative_to_root(rel_path, m.root)
            if rel is None:
                tried.append(f"v{version} {rel_path} is outside the mount {m.mount_point} "
                             f"(its root is {m.root})")
                continue
            d = os.path.normpath(os.path.join(m.mount_point, rel))
            if _has(d, version):
                return _Found(CgroupMemory(d, version, read_only=m.read_only,
                                           top=m.mount_point), "")
            tried.append(f"v{version} {d} has no {_FILES[version]['current']}"
                         + (" (no memory controller in this cgroup2 hierarchy)"
                            if version == 2 else ""))
    if v1_path is None and v2_path is None:
        tried.append(f"{proc_root}/{pid}/cgroup names no memory controller and no cgroup2 path")
    return _Found(None, "; ".join(tried))


def discover(pid: int | str = "self", *, proc_root: str = "/proc",
             cgroup_root: str | None = None) -> CgroupMemory | None:
    """The memory controller of ``pid``'s cgroup as seen from here, or ``None`` when
    none is visible (``explain_no_cgroup`` says why). Reads ``/proc/<pid>/cgroup``
    and ``/proc/self/mountinfo`` (both under ``proc_root``); ``cgroup_root``
    replaces the hierarchy's mount point (or is the cgroup's directory). Never
    raises."""
    return _locate(pid, proc_root, cgroup_root).memory


def explain_no_cgroup(pid: int | str = "self", *, proc_root: str = "/proc",
                      cgroup_root: str | None = None, sidecar: bool = False) -> str:
    """One sentence on why no cgroup memory controller is visible for ``pid``, and what
    would make it visible; ``""`` when one is. In sidecar (watch) mode the workload's
    cgroup is usually another container's."""
    found = _locate(pid, proc_root, cgroup_root)
    if found.memory is not None:
        return ""
    if sidecar:
        fix = ("in sidecar mode the workload's cgroup belongs to another container: mount "
               "the host's /sys/fs/cgroup read-only into Sentinel's container (a hostPath "
               "volume) and share the host's cgroup namespace, or give --cgroup-root the "
               "directory where the workload's cgroup is mounted")
    elif cgroup_root is not None and not os.path.isdir(cgroup_root):
        fix = f"check --cgroup-root {cgroup_root}: it does not exist (or is not a directory)"
    elif cgroup_root is not None:
        fix = (f"check --cgroup-root {cgroup_root}: it must be where the cgroup file system "
               "is mounted, or the directory of the group this process is in")
    else:
        fix = ("mount the cgroup file system (read-only is enough) at /sys/fs/cgroup, or "
               "give --cgroup-root the directory where it is mounted")
    return f"no cgroup memory controller is visible for process {pid} ({found.why_not}); {fix}"


# --------------------------------------------------------------------------
# --max-rss auto
# --------------------------------------------------------------------------

# Sentinel's own footprint when it shares the workload's cgroup (wrapper mode), which
# --max-rss auto takes off the limit with the tree measures: the interpreter, the
# control socket and the exporter measure about 30 MiB of RSS while watching (the
# README's 29.4 MiB), the kubernetes client that posts Events about 24 MiB more;
# rounded up. One definition: the chart's "sentinel.footprintMiB"
# (charts/sentinel/templates/_helpers.tpl) uses the same numbers (tests/unit/test_cgroup.py
# reads both). A static figure on purpose: auto is resolved before the workload is
# spawned and before anything heavy is imported, when Sentinel's own RSS is a fraction
# of what it will be.
OWN_FOOTPRINT_BYTES = 32 * 1024 * 1024
OWN_FOOTPRINT_EVENTS_BYTES = 56 * 1024 * 1024  # when Kubernetes Events may be posted
MIN_AUTO_LIMIT_BYTES = 64_000  # settings.MIN_LIMIT_BYTES: below it any process is killed


def auto_limit(limit_bytes: int | None, high_bytes: int | None, share: float,
               own_bytes: int = 0, *, version: int = 2) -> int:
    """``--max-rss auto``: ``share`` (0 < share <= 1) of the lower of the cgroup's hard
    limit and ``memory.high``, minus ``own_bytes`` (Sentinel's footprint when it
    shares the cgroup), in bytes, rounded down. Pure. Raises ``UsageError`` when
    there is no limit, or when nothing is left after Sentinel's own footprint."""
    limits = [x for x in (limit_bytes, high_bytes) if x is not None]
    if not limits:
        word = '(memory.max is "max")' if version == 2 else \
            "(memory.limit_in_bytes is unlimited)"
        raise UsageError(f"--max-rss auto: the container has no memory limit {word}; set "
                         "resources.limits.memory or give --max-rss a size")
    base = min(limits)
    value = int(base * share) - own_bytes
    if value < MIN_AUTO_LIMIT_BYTES:
        mib = 1024 * 1024
        left = "nothing" if value <= 0 else f"{value} bytes"
        raise UsageError(f"--max-rss auto: {share_text(share)} of the container's limit of "
                         f"{base / mib:.1f} MiB ({base} bytes), less Sentinel's own "
                         f"{own_bytes / mib:.0f} MiB, leaves {left}; raise "
                         "resources.limits.memory, a larger share, or give --max-rss a size")
    return value


def share_text(share: float) -> str:
    """``0.855`` -> ``"85.5%"``: an auto share as the user gave it, not rounded."""
    return f"{round(share * 100, 6):g}%"
