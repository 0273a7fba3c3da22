"""Measuring the workload: its process tree, RSS/PSS/USS, cgroup v2 figures.

This is Sentinel's hot path: a sample every 100 ms for as long as the
workload lives. psutil's ``children(recursive=True)`` scans every process in
/proc and reads each one's stat file on every call; ``bench/`` measures that
at about 4.5 % of a core at 10 Hz. Here the tree is walked from the root
through ``/proc/<pid>/task/<tid>/children`` and each process's RSS is read
from ``/proc/<pid>/statm``, both through descriptors kept open between
samples (seq files regenerate on a read at offset 0), a few microseconds a
process. psutil serves everything off that path (names, command lines).
"""

from __future__ import annotations

import os
import time

from sentinel.state import MemorySample

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_READ = 1 << 16


class _Node:
    """Open descriptors for one process: ``statm`` and each thread's ``children``."""

    __slots__ = ("statm", "children")

    def __init__(self, statm: int) -> None:
        self.statm = statm
        self.children: dict[str, int] = {}

    def close(self) -> None:
        for fd in (self.statm, *self.children.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        self.children.clear()


def _pread_all(fd: int) -> bytes:
    data = os.pread(fd, _READ, 0)
    if len(data) < _READ:
        return data
    chunks = [data]
    while len(data) == _READ:
        data = os.pread(fd, _READ, sum(map(len, chunks)))
        chunks.append(data)
    return b"".join(chunks)


class TreeProbe:
    """Samples the memory of a process tree.

    ``root_pid``'s descendants are the tree; with ``include_root`` the root
    itself counts too (watch mode), without it only its descendants do (run
    mode: the root is Sentinel). ``root_threads`` limits which of the root's
    threads are asked for children (run mode: only Sentinel's main thread
    spawns, and orphans reparent to it; helper threads never do).

    Vanished processes are skipped, never counted twice, never an error.
    Errors that are not "gone" are counted in ``errors`` by (probe, reason).
    """

    def __init__(self, root_pid: int, *, include_root: bool, measure: str = "rss",
                 proc_root: str = "/proc", root_threads: tuple[int, ...] | None = None,
                 cgroup: "CgroupProbe | None" = None) -> None:
        self.root_pid = root_pid
        self.include_root = include_root
        self.measure = measure
        self.proc = proc_root
        self.root_threads = root_threads
        self.cgroup = cgroup
        self.errors: dict[tuple[str, str], int] = {}
        self._nodes: dict[int, _Node] = {}

    # -- descriptors ------------------------------------------------------
    def _node(self, pid: int) -> _Node | None:
        node = self._nodes.get(pid)
        if node is None:
            try:
                fd = os.open(f"{self.proc}/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
            except (FileNotFoundError, ProcessLookupError):
                return None
            node = self._nodes[pid] = _Node(fd)
        return node

    def _drop(self, pid: int) -> None:
        node = self._nodes.pop(pid, None)
        if node is not None:
            node.close()

    def close(self) -> None:
        for pid in list(self._nodes):
            self._drop(pid)

    def _count_error(self, probe: str, exc: OSError) -> None:
        key = (probe, type(exc).__name__)
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
        kids: list[int] = []
        for tid in tids:
            fd = node.children.get(tid)
            try:
                if fd is None:
                    fd = os.open(f"{self.proc}/{pid}/task/{tid}/children",
                                 os.O_RDONLY | os.O_CLOEXEC)
                    node.children[tid] = fd
                kids.extend(map(int, _pread_all(fd).split()))
            except (FileNotFoundError, ProcessLookupError):
                continue  # that thread ended; its children went to another thread
            except OSError as exc:
                self._count_error("children", exc)
        if len(node.children) > len(tids):
            for gone in set(node.children) - set(tids):
                try:
                    os.close(node.children.pop(gone))
                except OSError:
                    pass
        return kids

    def rss_bytes(self, pid: int, node: _Node) -> int | None:
        """RSS of ``pid`` in bytes from ``/proc/<pid>/statm`` (resident pages); ``None`` if gone."""
        try:
            return int(os.pread(node.statm, 128, 0).split()[1]) * PAGE_SIZE
        except (ProcessLookupError, FileNotFoundError):
            return None
        except (OSError, IndexError, ValueError) as exc:
            self._count_error("statm", exc if isinstance(exc, OSError) else OSError(str(exc)))
            return None

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
                    return None, None
            except OSError as exc:
                self._count_error("smaps_rollup", exc)
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
        seen: set[int] = set()
        processes: list[tuple[int, int]] = []
        want_smaps = self.measure in ("pss", "uss")
        pss_total = uss_total = 0
        smaps_unknown = False  # some process's PSS/USS could not be read
        stack = [self.root_pid]
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
                processes.append((pid, rss))
                if want_smaps:
                    rollup = self.smaps_rollup(pid)
                    if rollup is not None and rollup[0] is None:
                        # Unknown: the measure counts its RSS (PSS and USS never exceed
                        # it), the sample reports no PSS/USS, and the error is counted.
                        smaps_unknown = True
                        rollup = (rss, rss)
                    if rollup is not None:
                        pss_total += rollup[0]
                        uss_total += rollup[1]
            stack.extend(reversed(kids))
        for pid in [p for p in self._nodes if p not in seen]:
            self._drop(pid)
        rss_total = sum(r for _, r in processes)
        cg = self.cgroup.read(working_set=self.measure == "cgroup") if self.cgroup else None
        fields = {}
        if cg is not None:
            fields = {"cgroup_memory_current_bytes": cg[0], "cgroup_memory_max_bytes": cg[1],
                      "cgroup_working_set_bytes": cg[2]}
        if self.measure == "pss":
            measure = pss_total
        elif self.measure == "uss":
            measure = uss_total
        elif self.measure == "cgroup" and cg is not None and cg[2] is not None:
            measure = cg[2]
        else:
            measure = rss_total
        return MemorySample(
            at_mono=time.monotonic(), measure_bytes=measure, rss_bytes=rss_total,
            processes=tuple(processes), duration_seconds=time.perf_counter() - t0,
            pss_bytes=pss_total if want_smaps and not smaps_unknown else None,
            uss_bytes=uss_total if want_smaps and not smaps_unknown else None, **fields)


class CgroupProbe:
    """Reads a cgroup v2 memory controller: ``memory.current``, ``memory.max``, ``memory.stat``.

    ``path`` is the cgroup's directory (e.g. ``/sys/fs/cgroup``). Use
    ``for_pid`` to find it; it returns ``None`` where there is no cgroup v2
    memory controller (cgroup v1 hosts, hybrid hosts without it).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._current = os.open(os.path.join(path, "memory.current"), os.O_RDONLY | os.O_CLOEXEC)

    @classmethod
    def for_pid(cls, pid: int | str = "self", proc_root: str = "/proc") -> "CgroupProbe | None":
        path = cgroup_v2_path(pid, proc_root)
        if path is None or not os.path.exists(os.path.join(path, "memory.current")):
            return None
        try:
            return cls(path)
        except OSError:
            return None

    def _read(self, name: str) -> bytes | None:
        try:
            with open(os.path.join(self.path, name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def read(self, working_set: bool = False) -> tuple[int | None, int | None, int | None]:
        """``(memory.current, memory.max or None for "max", working set or None)`` in bytes.

        Working set = memory.current - inactive_file (memory.stat), floored at
        0, as the kubelet computes it; only read when asked (one more file).
        """
        try:
            current = int(os.pread(self._current, 64, 0))
        except (OSError, ValueError):
            return None, None, None
        raw_max = self._read("memory.max")
        limit = int(raw_max) if raw_max and raw_max.strip().isdigit() else None
        ws = None
        if working_set:
            stat = self._read("memory.stat") or b""
            inactive = 0
            for line in stat.splitlines():
                if line.startswith(b"inactive_file "):
                    inactive = int(line.split()[1])
                    break
            ws = max(0, current - inactive)
        return current, limit, ws

    def events(self) -> dict[str, int]:
        """Counters from ``memory.events`` (low, high, max, oom, oom_kill); ``{}`` if unreadable."""
        raw = self._read("memory.events") or b""
        out = {}
        for line in raw.decode().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                out[key] = int(value)
        return out


def cgroup_v2_path(pid: int | str = "self", proc_root: str = "/proc") -> str | None:
    """The cgroup v2 directory of ``pid``: the ``0::`` line of ``/proc/<pid>/cgroup``
    joined to the cgroup2 mount point from ``/proc/self/mountinfo``; ``None`` if absent."""
    try:
        with open(f"{proc_root}/{pid}/cgroup") as f:
            rel = next((line[3:].strip() for line in f if line.startswith("0::")), None)
        if rel is None:
            return None
        with open(f"{proc_root}/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    mount = left.split()[4]
                    return os.path.normpath(mount + "/" + rel.lstrip("/"))
    except OSError:
        return None
    return None
