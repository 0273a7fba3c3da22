"""Measuring the workload: its process tree, RSS/PSS/USS, and its cgroup's figures.

This is Sentinel's hot path: a sample every 100 ms for as long as the
workload lives. psutil's ``children(recursive=True)`` scans every process in
/proc and reads each one's stat file on every call; ``bench/`` measures that
at about 4.5 % of a core at 10 Hz. Here the tree is walked from the root
through ``/proc/<pid>/task/<tid>/children`` and each process's RSS is read
from ``/proc/<pid>/statm``, both through descriptors kept open between
samples (seq files regenerate on a read at offset 0), a few microseconds a
process. psutil serves everything off that path (names, command lines).

Descriptors are kept only within a budget derived from Sentinel's soft
RLIMIT_NOFILE (``descriptor_budget``), so no shape of workload can use up Sentinel's
descriptors: ``statm`` is kept per process, ``children`` per thread for
processes with at most ``KEEP_CHILDREN_MAX_THREADS`` threads, and for a
process with more (3000 threads need 3000) only while they fit in half the
budget; beyond the budget each file is opened, read and closed (about three
times the cost of a read on a kept one).
"""

from __future__ import annotations

import errno
import os
import resource
import time

from sentinel.probes.cgroup import FIGURE_OF_FILE, CgroupMemory
from sentinel.probes.contract import MemorySample, Unreadable, os_error_reason

# The cgroup reader used to live here as CgroupProbe (cgroup v2 only); its callers
# (core.guardian, core.watch) still say CgroupProbe.for_pid.
CgroupProbe = CgroupMemory

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_READ = 1 << 16
# A read of a seq file this long may have been cut at the page-sized buffer
# (records here are at most a few dozen bytes).
_SEQ_FULL = PAGE_SIZE - 256
# Descriptors the probe leaves to the rest of Sentinel (sockets, clients of
# the control socket and /metrics, the kubernetes client, log files) before
# it keeps any: it keeps at most half of the soft limit minus these.
FD_RESERVE = 128
# PSS/USS (smaps_rollup: a page-table walk under the workload's mmap lock, ~2.3 ms per
# 200 MiB, 9.5 ms per GiB here) is read at most so often that it takes this share of the
# wall time: after a read that cost C seconds the next waits C / 0.05 = 20 C.
SMAPS_MAX_SHARE = 0.05
# ...and at most every ``smaps_min_period`` (the supervisor passes --interval). A read
# cheaper than this (a few small processes) is not worth an estimate: read each sample.
SMAPS_CHEAP_SECONDS = 0.0005
# A kept descriptor costs kernel memory charged to the container's cgroup:
# a struct file and seq_file (~0.3 KiB) plus the seq file's page-sized buffer,
# which stays allocated once read (kmalloc-cg-4k): about 4.2 KiB each, measured
# (10,000 kept statm descriptors: +42 MiB). 1024 caps that at about 4 MiB,
# what the common soft limit of 1024 allowed before Sentinel raised it; past
# that the rest is opened, read and closed each sample (slower, no memory).
FD_KEPT_MAX = 1024
# Processes with more threads keep their per-thread children files only
# while those fit in half the budget; else they are opened, read and closed.
KEEP_CHILDREN_MAX_THREADS = 8
_GONE = (FileNotFoundError, ProcessLookupError)


def descriptor_budget(soft_limit: int | None = None) -> int:
    """How many descriptors the probe may keep for a soft RLIMIT_NOFILE of
    ``soft_limit`` (default: Sentinel's own now): ``(soft - FD_RESERVE) // 2``,
    between 0 and ``FD_KEPT_MAX``."""
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY:
        return FD_KEPT_MAX
    return max(0, min(FD_KEPT_MAX, (soft_limit - FD_RESERVE) // 2))


def status_field(pid: int, key: bytes, proc_root: str = "/proc") -> int | None:
    """The first number of the ``key`` line (e.g. ``b"Uid:"``, ``b"Tgid:"``) of
    ``/proc/<pid>/status``; ``None`` when the process is gone or the line unreadable.
    Off the sampling path: for warnings and target checks."""
    try:
        with open(f"{proc_root}/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return None


def _read_once(path: str, size: int = _READ) -> bytes:
    """Open, read and close ``path`` (for files whose descriptor is not kept)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _pread_all(fd) if size == _READ else os.pread(fd, size, 0)
    finally:
        os.close(fd)


class _Node:
    """Kept descriptors for one process: ``statm`` (``None`` when not kept) and each
    thread's ``children`` (empty when not kept)."""

    __slots__ = ("statm", "children")

    def __init__(self, statm: int | None) -> None:
        self.statm = statm
        self.children: dict[str, int] = {}

    def kept(self) -> int:
        return (self.statm is not None) + len(self.children)

    def close_children(self) -> None:
        for fd in self.children.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.children.clear()

    def close(self) -> None:
        if self.statm is not None:
            try:
                os.close(self.statm)
            except OSError:
                pass
            self.statm = None
        self.close_children()


def _pread_all(fd: int) -> bytes:
    """The whole of a /proc seq file. One read returns at most the seq file's buffer (a
    page) in whole records, so a read that comes back within one record of a page
    (a ``children`` file of some 680 PIDs or more) is followed by more; a shorter one
    is the end, which saves the second syscall for the common small file."""
    data = os.pread(fd, _READ, 0)
    if len(data) < _SEQ_FULL:
        return data
    chunks, offset = [data], len(data)
    while len(data) >= _SEQ_FULL:
        data = os.pread(fd, _READ, offset)
        offset += len(data)
        chunks.append(data)
    return b"".join(chunks)


# How often the tree is walked when a cgroup measure enforces (TreeProbe.walk_period).
CGROUP_WALK_PERIOD_SECONDS = 1.0


def walk_period_for(measure: str) -> float:
    """Seconds between tree walks for ``measure``: 0 (every sample), but with a cgroup
    measure (one read of the cgroup's files is the figure) ``CGROUP_WALK_PERIOD_SECONDS``."""
    return CGROUP_WALK_PERIOD_SECONDS if measure in ("cgroup", "working-set") else 0.0


class TreeProbe:
    """Samples the memory of a process tree.

    ``root_pid``'s descendants are the tree; with ``include_root`` the root
    itself counts too (watch mode), without it only its descendants do (run
    mode: the root is Sentinel). ``root_threads`` limits which of the root's
    threads are asked for children (run mode: only Sentinel's main thread
    spawns, and orphans reparent to it; helper threads never do).

    A ``MemoryProbe`` (``sentinel.probes.contract``). Vanished processes are
    skipped, never counted twice, never an error. Errors that are not "gone"
    (EMFILE, EACCES, ...) are counted in ``errors`` by (probe, reason), named in
    the sample's ``unreadable`` and never raised: the walk goes on without that
    file, and a process whose ``statm`` is denied still has its children walked.
    ``cgroup`` (a ``CgroupMemory``) adds the cgroup's figures to every sample (its
    failed reads are named in ``unreadable`` with pid 0 and counted in
    ``cgroup.errors``);
    ``measure`` is ``rss``, ``pss``, ``uss``, ``cgroup`` (the cgroup's usage) or
    ``working-set`` (usage minus inactive_file).
    With ``measure`` pss/uss, ``smaps_rollup`` is read at most every
    ``max(smaps_min_period, last cost / SMAPS_MAX_SHARE)`` seconds once a read costs
    ``smaps_cheap_seconds`` or more; samples in between carry the last PSS/USS plus
    RSS's growth since as the measure (``smaps_estimated`` is then True and the sample's
    ``pss_bytes``/``uss_bytes`` are ``None``); ``force_smaps()`` makes the next one read.
    ``root_filter(pid)`` says which of the root's direct children are part of the tree
    (``None``: all; with several programs each program's probe keeps its own).
    ``fd_budget`` caps the descriptors kept between samples (default: derived
    from the soft RLIMIT_NOFILE at each sample, see ``descriptor_budget()``);
    ``kept_descriptors`` is how many are kept now.
    """

    def __init__(self, root_pid: int, *, include_root: bool, measure: str = "rss",
                 proc_root: str = "/proc", root_threads: tuple[int, ...] | None = None,
                 cgroup: "CgroupProbe | None" = None, fd_budget: int | None = None,
                 smaps_min_period: float = 0.0,
                 smaps_cheap_seconds: float = SMAPS_CHEAP_SECONDS,
                 walk_period: float = 0.0,
                 root_filter=None) -> None:
        self.root_pid = root_pid
        # Which of the root's direct children belong to this tree (several programs under
        # one Sentinel: the children of the program's session, its orphans included;
        # sentinel.core.group); None: all of them.
        self.root_filter = root_filter
        self.include_root = include_root
        self.measure = measure
        self.proc = proc_root
        self.root_threads = root_threads
        self.cgroup = cgroup
        self.errors: dict[tuple[str, str], int] = {}
        self._unread: list[Unreadable] = []  # this sample's, see MemorySample.unreadable
        self._nodes: dict[int, _Node] = {}
        self._fixed_budget = fd_budget
        self._budget = fd_budget if fd_budget is not None else descriptor_budget()
        self.kept_descriptors = 0
        # PSS/USS at most every last cost / SMAPS_MAX_SHARE seconds (see sample()):
        # smaps_rollup costs ~2.3 ms per 200 MiB and holds the workload's mmap lock.
        self._smaps_next = 0.0  # monotonic time of the next allowed smaps read
        self.smaps_min_period = smaps_min_period
        self.smaps_cheap_seconds = smaps_cheap_seconds
        self._smaps_base: tuple[int, int, int] | None = None  # (rss, pss, uss) then
        self.smaps_estimated = False  # the last sample's PSS/USS is an estimate
        self._last_enforced: int | None = None  # the last good cgroup measure, bytes
        # With a cgroup measure the cgroup's files (one pread each, ~25 us) are the figure;
        # the tree walk (~11 us a process: 11 ms for 1,000) only lists the processes and
        # their RSS, so it runs at most every walk_period seconds (0: every sample).
        self.walk_period = walk_period
        self._last_walk: tuple[float, list[tuple[int, int]]] | None = None

    # -- descriptors ------------------------------------------------------
    def _node(self, pid: int) -> _Node | None:
        """The process's node, its ``statm`` kept while the budget allows; ``None`` if gone."""
        node = self._nodes.get(pid)
        if node is None:
            fd = None
            path = f"{self.proc}/{pid}/statm"
            try:
                if self.kept_descriptors < self._budget:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    self.kept_descriptors += 1
            except _GONE:
                return None
            except OSError:  # EMFILE/ENFILE: not kept; read once below (counted there)
                pass
            node = self._nodes[pid] = _Node(fd)
        return node

    def _drop(self, pid: int) -> None:
        node = self._nodes.pop(pid, None)
        if node is not None:
            self.kept_descriptors -= node.kept()
            node.close()

    def close(self) -> None:
        for pid in list(self._nodes):
            self._drop(pid)
        self.kept_descriptors = 0
        if self.cgroup is not None:
            self.cgroup.close()

    def _refresh_budget(self) -> None:
        if self._fixed_budget is None:
            self._budget = descriptor_budget()
        if self.kept_descriptors > self._budget:
            self.close()  # the limit was lowered under us: start again within it

    def _count_error(self, probe: str, exc: OSError) -> None:
        # The error's type, or for a plain OSError its errno's name (EMFILE, ENFILE).
        reason = type(exc).__name__
        if type(exc) is OSError and exc.errno in errno.errorcode:
            reason = errno.errorcode[exc.errno]
        key = (probe, reason)
        self.errors[key] = self.errors.get(key, 0) + 1

    # -- reading ----------------------------------------------------------
    def children(self, pid: int, node: _Node | None = None) -> list[int] | None:
        """Direct children of ``pid`` over all its threads; ``None`` if it is gone."""
        if node is None:
            node = self._node(pid)
            if node is None:
                return None
        if pid == self.root_pid and self.root_threads is not None:
            tids = [str(t) for t in self.root_threads]
        else:
            try:
                tids = os.listdir(f"{self.proc}/{pid}/task")
            except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
                return None
            except OSError as exc:  # EMFILE: this process's children are not seen
                self._count_error("task", exc)
                return []
        # A few threads: keep their children files. Many: only while they fit in half
        # the budget (a 3000-thread process at a raised limit), the other half staying
        # for the statm of the processes to come; else opened, read and closed.
        keep = len(tids) <= KEEP_CHILDREN_MAX_THREADS or \
            self.kept_descriptors - len(node.children) + len(tids) <= self._budget // 2
        if not keep and node.children:
            self.kept_descriptors -= len(node.children)
            node.close_children()
        kids: list[int] = []
        for tid in tids:
            fd = node.children.get(tid)
            path = f"{self.proc}/{pid}/task/{tid}/children"
            try:
                if fd is not None:
                    data = _pread_all(fd)
                elif keep and self.kept_descriptors < self._budget:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    node.children[tid] = fd
                    self.kept_descriptors += 1
                    data = _pread_all(fd)
                else:
                    data = _read_once(path)
                kids.extend(map(int, data.split()))
            except _GONE:
                continue  # that thread ended; its children went to another thread
            except OSError as exc:
                self._count_error("children", exc)
        if len(node.children) > len(tids):
            for gone in set(node.children) - set(tids):
                try:
                    os.close(node.children.pop(gone))
                except OSError:
                    pass
                self.kept_descriptors -= 1
        if pid == self.root_pid and self.root_filter is not None:
            kids = [kid for kid in kids if self.root_filter(kid)]
        return kids

    def rss_bytes(self, pid: int, node: _Node) -> int | None:
        """RSS of ``pid`` in bytes from ``/proc/<pid>/statm`` (resident pages); ``None`` if
        gone, ``-1`` if unreadable for another reason (EACCES, EISDIR, a garbled line:
        counted in ``errors`` and named in the sample's ``unreadable``)."""
        try:
            data = os.pread(node.statm, 128, 0) if node.statm is not None else \
                _read_once(f"{self.proc}/{pid}/statm", 128)
            return int(data.split()[1]) * PAGE_SIZE
        except (ProcessLookupError, FileNotFoundError):
            return None
        except (OSError, IndexError, ValueError) as exc:
            self._count_error("statm", exc if isinstance(exc, OSError) else OSError(str(exc)))
            self._unread.append(Unreadable(pid, "rss_bytes", os_error_reason(exc)))
            return -1

    def smaps_rollup(self, pid: int) -> tuple[int, int] | tuple[None, None] | None:
        """``(pss_bytes, uss_bytes)`` from ``/proc/<pid>/smaps_rollup``, or from
        ``/proc/<pid>/smaps`` (the same lines per mapping, summed) on a kernel
        without it (before 4.14); ``None`` if the process is gone. ``(None, None)``
        when the process is there but its figures cannot be read (another user's
        process without CAP_SYS_PTRACE: EACCES), counted in ``errors`` as
        ``("smaps_rollup", reason)``: unknown, never 0.

        USS = Private_Clean + Private_Dirty. Costs a page-table walk: about
        ten times a statm read, which is why it is only read for those measures.
        """
        data = None
        for name in ("smaps_rollup", "smaps"):
            try:
                with open(f"{self.proc}/{pid}/{name}", "rb") as f:
                    data = f.read()
                break
            except ProcessLookupError:
                return None
            except FileNotFoundError as exc:
                if not os.path.exists(f"{self.proc}/{pid}/statm"):
                    return None  # gone
                if name == "smaps":  # neither file: nothing to read the figures from
                    self._count_error("smaps_rollup", exc)
                    self._unread.append(Unreadable(pid, "pss_bytes", "missing"))
                    return None, None
            except OSError as exc:
                self._count_error("smaps_rollup", exc)
                self._unread.append(Unreadable(pid, "pss_bytes", os_error_reason(exc)))
                return None, None
        assert data is not None
        pss = uss = 0
        for line in data.splitlines():
            if line.startswith(b"Pss:"):
                pss += int(line.split()[1]) * 1024  # one line in smaps_rollup, one a mapping in smaps
            elif line.startswith((b"Private_Clean:", b"Private_Dirty:")):
                uss += int(line.split()[1]) * 1024
        return pss, uss

    def sample(self) -> MemorySample:
        """Walk the tree once and return a ``MemorySample`` (sizes in bytes).

        The root's processes come first; a PID seen twice in one walk (a
        reparent during the scan) is counted once. Descriptors of processes
        that left the tree are closed.
        """
        t0 = time.perf_counter()
        self._refresh_budget()
        self._unread = []
        seen: set[int] = set()
        processes: list[tuple[int, int]] = []
        want_smaps = self.measure in ("pss", "uss") and (
            self._smaps_base is None or time.monotonic() >= self._smaps_next)
        t_smaps = 0.0  # what the smaps reads of this walk cost, seconds
        pss_total = uss_total = 0
        smaps_unknown = False  # some process's PSS/USS could not be read
        now = time.monotonic()
        walk = not (self.walk_period > 0 and self.cgroup is not None
                    and self.measure in ("cgroup", "working-set")
                    and self._last_walk is not None
                    and now - self._last_walk[0] < self.walk_period)
        stack = [self.root_pid] if walk else []
        if not walk:  # the last walk's processes; the cgroup's figures below are fresh
            processes = list(self._last_walk[1])  # type: ignore[index]
            seen = {pid for pid, _ in processes}
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            node = self._node(pid)
            if node is None:
                continue
            counted = pid != self.root_pid or self.include_root
            if counted:
                rss = self.rss_bytes(pid, node)
                if rss is None:
                    self._drop(pid)
                    continue
            kids = self.children(pid, node)
            if kids is None:
                self._drop(pid)
                continue
            if counted:
                processes.append((pid, max(rss, 0)))  # unreadable (-1): its children still count
                if want_smaps:
                    t1 = time.perf_counter()
                    rollup = self.smaps_rollup(pid)
                    t_smaps += time.perf_counter() - t1
                    if rollup is not None and rollup[0] is None:
                        # Unknown: the measure counts its RSS (PSS and USS never exceed
                        # it), the sample reports no PSS/USS, and the error is counted.
                        smaps_unknown = True
                        rollup = (max(rss, 0), max(rss, 0))  # -1: statm unreadable too
                    if rollup is not None:
                        pss_total += rollup[0]
                        uss_total += rollup[1]
            stack.extend(reversed(kids))
        if walk:
            for pid in [p for p in self._nodes if p not in seen]:
                self._drop(pid)
            self._last_walk = (now, list(processes))
        rss_total = sum(r for _, r in processes)
        fields: dict[str, int | None] = {}
        cg = self.cgroup.read() if self.cgroup is not None else None
        if cg is not None:
            fields = {"cgroup_memory_current_bytes": cg.current_bytes,
                      "cgroup_memory_max_bytes": cg.limit_bytes,
                      "cgroup_memory_high_bytes": cg.high_bytes,
                      "cgroup_inactive_file_bytes": cg.inactive_file_bytes,
                      "cgroup_working_set_bytes": cg.working_set_bytes,
                      "cgroup_oom_kills": cg.oom_kills}
            # pid 0: the cgroup's, not a process's. Counted in self.cgroup.errors, not in
            # self.errors: an optional figure that fails must not mark the tree's sampling
            # (what --measure rss enforces on) as failing.
            for file, reason in cg.unreadable:
                self._unread.append(Unreadable(0, FIGURE_OF_FILE.get(file, file), reason))
        # --measure cgroup is the cgroup's usage (memory.current / memory.usage_in_bytes),
        # working-set the kubelet's working set.
        cg_measure = {"cgroup": "cgroup_memory_current_bytes",
                      "working-set": "cgroup_working_set_bytes"}.get(self.measure)
        pss_out = uss_out = None
        self.smaps_estimated = False
        if self.measure in ("pss", "uss"):
            if want_smaps:
                # The next read waits until this one is under SMAPS_MAX_SHARE of the wall
                # time; in between the figures follow RSS (below).
                self._smaps_next = 0.0 if t_smaps < self.smaps_cheap_seconds else \
                    time.monotonic() + max(self.smaps_min_period, t_smaps / SMAPS_MAX_SHARE)
                self._smaps_base = (rss_total, pss_total, uss_total)
                if not smaps_unknown:
                    pss_out, uss_out = pss_total, uss_total
            else:
                # Between reads: the last PSS/USS plus RSS's growth since. New resident
                # pages count in full (an upper bound on what they add to PSS/USS), so
                # growth is never missed; a kill on such an estimate is preceded by a
                # real read (force_smaps(), the supervisor's _take_sample).
                base_rss, base_pss, base_uss = self._smaps_base  # type: ignore[misc]
                grown = rss_total - base_rss
                pss_total, uss_total = max(0, base_pss + grown), max(0, base_uss + grown)
                self.smaps_estimated = True
        if self.measure == "pss":
            measure = pss_total
        elif self.measure == "uss":
            measure = uss_total
        elif cg_measure is not None and fields.get(cg_measure) is not None:
            measure = fields[cg_measure]  # type: ignore[assignment]
            self._last_enforced = measure
        elif cg_measure is not None:
            # The enforcing figure is unreadable (or no cgroup is visible): never a silent
            # switch to another figure. Counted in errors (the supervisor's sampling
            # health says it once, loudly); meanwhile the last good figure stands, raised
            # to the tree's RSS if that is more, so growth is still stopped.
            files = [f for f, _ in cg.unreadable] if cg is not None else []
            reasons = [r for _, r in cg.unreadable] if cg is not None else []
            key = (files[0] if files else "cgroup", reasons[0] if reasons else "missing")
            self.errors[key] = self.errors.get(key, 0) + 1
            measure = max(self._last_enforced or 0, rss_total)
        else:
            measure = rss_total
        return MemorySample(
            at_mono=time.monotonic(), measure_bytes=measure, rss_bytes=rss_total,
            processes=tuple(processes), duration_seconds=time.perf_counter() - t0,
            pss_bytes=pss_out, uss_bytes=uss_out,
            unreadable=tuple(self._unread), **fields)  # type: ignore[arg-type]

    def force_smaps(self) -> None:
        """Read PSS/USS in the next ``sample()`` whatever the last read cost (before a
        kill decided on an estimate)."""
        self._smaps_next = 0.0
