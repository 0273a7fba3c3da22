"""The eBPF memory tracker (``--probe ebpf``): the kernel keeps each watched tree's
resident pages and wakes Sentinel only when something happened.

The BPF object (``sentinel/probes/bpf/sentinel.bpf.c``, built by ``make bpf`` and shipped
in the wheel) has five ``tp_btf`` programs and one task iterator:

- ``rss_stat`` (every change of a process's RSS counters, i.e. nearly every page fault
  of every process on the node): for a watched ``mm_struct``, the changed counter
  (``mm->rss_stat[member].count``, the kernel's batched per-CPU counter: file + anon +
  shmem pages, ``/proc/PID/statm``'s resident) moves the tree's running sum; a record
  when the sum reaches the tree's threshold, again per ``near`` pages of growth above
  it, and (rate-limited) when it moved by the ``step`` since the last step record;
- ``sched_process_fork`` / ``sched_process_exec`` / ``sched_process_exit``: the tree is
  followed without walking /proc (a fork's child joins its parent's tree; execve()
  swaps the mm; an exit takes its pages off the sum);
- ``mark_victim``: the kernel's OOM killer chose a process (any, watched or not);
- ``iter/task`` ``seed_tasks``: run on demand to start following processes by their
  tgid in Sentinel's PID namespace (BPF sees host PIDs; ``pidns`` is
  ``/proc/self/ns/pid``'s inode), idle ones included.

The sum is the kernel's *batched* count: up to ``batch_error_pages()`` per process
below ``statm`` (which sums the per-CPU parts exactly on recent kernels), so Sentinel
arms the threshold that much below its limit and confirms with ``statm``.

Layer 1 (probes): standard library and ``sentinel.probes.libbpf`` only.
"""

from __future__ import annotations

import errno as _errno
import os
import struct
from dataclasses import dataclass
from importlib import resources

from sentinel.probes.libbpf import BpfObject, LibbpfError

OBJECT_NAME = "sentinel.bpf.o"
# Another object file instead of the shipped one (a rebuilt or patched object).
OBJECT_ENV = "SENTINEL_BPF_OBJECT"
BTF_PATH = "/sys/kernel/btf/vmlinux"
ATTACHED = ("on_rss_stat", "on_fork", "on_exec", "on_exit", "on_mark_victim")
PROGRAMS = (*ATTACHED, "seed_tasks")
MAX_TREES = 64  # sentinel.bpf.c MAX_TREES
PAGE = os.sysconf("SC_PAGE_SIZE")

# sentinel.bpf.c's struct event, struct tree_cfg, struct tree_sum, struct proc_val.
_EVENT = struct.Struct("<QQIIIIIIqq")
_TREE_CFG = struct.Struct("<qqqQ")
_TREE_SUM = struct.Struct("<qQqqQ")
_PROC_VAL = struct.Struct("<IIQ")
_MM_VAL = struct.Struct("<IIqII4q")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
KINDS = {1: "limit", 2: "fork", 3: "exit", 4: "victim", 5: "seeded", 6: "step"}
NO_TREE = 0xFFFFFFFF

RIGHTS = ("it needs CAP_BPF and CAP_PERFMON with a seccomp profile that allows bpf(2) "
          "(docker/podman: --cap-add BPF --cap-add PERFMON --security-opt "
          "seccomp=unconfined; Kubernetes: securityContext.capabilities.add [BPF, PERFMON] "
          "and seccompProfile Unconfined, the chart's probe: ebpf), or CAP_SYS_ADMIN")


@dataclass(frozen=True)
class Record:
    """One ring-buffer record. ``kind``: ``limit``, ``fork``, ``exit``, ``victim``,
    ``seeded``, ``step``; ``tree`` the slot (``NO_TREE`` for an unwatched victim);
    ``tgid`` the host PID, ``ns_tgid`` the PID in Sentinel's namespace (0: not visible);
    ``other`` the parent (fork) or the uid (victim); ``sum_bytes`` the tree's sum after
    it, ``mm_bytes`` this process's resident bytes; ``ts_ns`` CLOCK_MONOTONIC ns."""

    seq: int
    ts_ns: int
    kind: str
    tree: int
    tgid: int
    ns_tgid: int
    other: int
    sum_bytes: int
    mm_bytes: int


class EbpfUnavailable(Exception):
    """The tracker cannot run here; ``str()`` is one line naming what is missing and
    what would allow it. ``reason`` is a short key (``no-btf``, ``no-libbpf``,
    ``no-object``, ``EPERM``, ``verifier``, ``attach``, ...) for tests and metrics."""

    def __init__(self, reason: str, line: str) -> None:
        super().__init__(line)
        self.reason = reason


def batch_error_pages(cpus: int | None = None) -> int:
    """How far one process's batched RSS (what BPF reads) may lag ``statm``, in pages:
    3 counters x ``percpu_counter_batch`` (``max(32, 2 x CPUs)``, lib/percpu_counter.c)
    x CPUs."""
    n = cpus or os.cpu_count() or 1
    return 3 * max(32, 2 * n) * n


# The shipped object is under 100 KiB: anything far larger is not one (/dev/zero once
# grew PID 1 by gigabytes before any sample).
OBJECT_MAX_BYTES = 16 << 20


def object_path() -> str:
    """Where the object is read from: ``$SENTINEL_BPF_OBJECT``, else this package's."""
    return os.environ.get(OBJECT_ENV) or str(
        resources.files("sentinel.probes.bpf").joinpath(OBJECT_NAME))


def object_bytes() -> bytes:
    """The compiled object (``object_path()``): a regular file of at most
    ``OBJECT_MAX_BYTES``, opened without blocking (a FIFO never holds the loop). Raises
    ``EbpfUnavailable`` (``no-object``) otherwise."""
    import stat

    path = object_path()
    fix = ("unset SENTINEL_BPF_OBJECT" if os.environ.get(OBJECT_ENV) else
           "build it with `make bpf` (Debian: clang, libbpf-dev) before installing Sentinel")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                why = "not a regular file"
            elif st.st_size > OBJECT_MAX_BYTES:
                why = f"{st.st_size} bytes, more than any BPF object of Sentinel's"
            else:
                with os.fdopen(fd, "rb", closefd=False) as f:
                    data = f.read(OBJECT_MAX_BYTES + 1)
                if len(data) <= OBJECT_MAX_BYTES:
                    return data
                why = "it grew while read"
        finally:
            os.close(fd)
    except OSError as exc:
        why = exc.strerror or str(exc)
    raise EbpfUnavailable("no-object", f"the eBPF object {path} is not readable ({why}): {fix}")


def _refused(exc: LibbpfError, program: str) -> bool:
    """``exc`` is ``program``'s own refusal (load or attach), not the whole object's."""
    return exc.stage in ("load", "attach") and any(
        f"'{program}'" in chunk or program in str(exc) for chunk in exc.log)


def explain(exc: LibbpfError) -> EbpfUnavailable:
    """The one line for a failed load (see ``EbpfUnavailable``)."""
    log = [line.strip() for chunk in exc.log for line in chunk.splitlines() if line.strip()]
    if exc.stage == "library":
        why = exc.log[0] if exc.log else exc.strerror
        return EbpfUnavailable("no-libbpf", f"libbpf.so.1 cannot be loaded ({why}): "
                               "install Debian's libbpf1 (apt-get install libbpf1; the image "
                               "has it)")
    if exc.stage == "open":
        where = object_path()
        fix = ("unset SENTINEL_BPF_OBJECT" if os.environ.get(OBJECT_ENV)
               else "reinstall Sentinel (make bpf, then the wheel)")
        return EbpfUnavailable("no-object", f"{where} is not a BPF object libbpf can open "
                               f"({exc.strerror}): {fix}")
    if exc.errno == _errno.EPERM:
        return EbpfUnavailable("EPERM", f"the kernel refused bpf() (EPERM): {RIGHTS}")
    if exc.errno == _errno.EACCES or (exc.stage == "load" and any(
            "verifier" in line or "R1" in line or "invalid" in line for line in log)):
        which = next((line.split("'")[1] for line in log if "prog '" in line), "a program")
        why = next((line for line in reversed(log) if not line.startswith(("--", ";"))
                    and "processed" not in line and not line.startswith("libbpf:")
                    and not line[:1].isdigit()), "")
        return EbpfUnavailable("verifier", f"the kernel's BPF verifier refused {which}"
                               + (f" ({why[:200]})" if why else "")
                               + "; this kernel or this object is not supported")
    relo = next((line for line in log if "relo" in line and "failed" in line), None)
    if relo is not None:
        return EbpfUnavailable("layout", "this kernel's memory counters are laid out in a way "
                               "the probe does not know (it reads mm_struct.rss_stat[] as "
                               "per-CPU counters: Linux 6.2+)")
    if any("BTF" in line for line in log) or exc.errno == _errno.ESRCH:
        return EbpfUnavailable("no-btf", f"the kernel has no usable BTF ({BTF_PATH}: Linux "
                               "5.11+ built with CONFIG_DEBUG_INFO_BTF=y)")
    if exc.stage == "attach":
        return EbpfUnavailable("attach", f"{exc.strerror}: the kernel lacks a tp_btf "
                               "attach point Sentinel needs (rss_stat, sched_process_*, "
                               "mark_victim: Linux 6.2+ with BTF)")
    return EbpfUnavailable(exc.stage, f"{exc.strerror} (libbpf at {exc.stage}"
                           + (f": {log[-1][:200]}" if log else "") + ")")


class MemoryTracker:
    """The loaded BPF object and its maps (see the module). One per Sentinel; trees
    are slots ``0..MAX_TREES-1`` handed out by the caller.

    ``MemoryTracker()`` loads and attaches everything or raises ``EbpfUnavailable``.
    ``fd`` is readable when records wait (``loop.add_reader``); ``drain()`` returns them.
    ``lost`` counts records the ring buffer dropped (a gap in the sequence numbers).
    Methods raise ``LibbpfError`` on a failed map call (the caller falls back)."""

    def __init__(self, data: bytes | None = None, programs: tuple[str, ...] = PROGRAMS) -> None:
        if not os.path.exists(BTF_PATH):
            raise EbpfUnavailable("no-btf", f"the kernel has no BTF ({BTF_PATH} is absent: "
                                  "Linux 6.2+ built with CONFIG_DEBUG_INFO_BTF=y)")
        data = object_bytes() if data is None else data
        # Sentinel's one optional program: mark_victim's arguments changed over kernel
        # versions (a bare pid before the task); without it, OOM victims are told by the
        # cgroup's counters only, and ``without`` says why.
        self.without: dict[str, str] = {}
        try:
            self.obj = self._load(data, programs)
        except LibbpfError as exc:
            if "on_mark_victim" not in programs or not _refused(exc, "on_mark_victim"):
                raise explain(exc) from None
            self.without["on_mark_victim"] = str(explain(exc))
            try:
                self.obj = self._load(data, tuple(p for p in programs if p != "on_mark_victim"))
            except LibbpfError as exc2:
                raise explain(exc2) from None
        try:
            self._fds = {m: self.obj.map_fd(m) for m in ("cfg", "trees", "sums", "seed",
                                                         "watched", "mms")}
            self.lost = 0
            self._next_seq: int | None = None
            self._pending: list[Record] = []
            self._ring = self.obj.ring_buffer("events", self._on_record)
            st = os.stat("/proc/self/ns/pid")
            self.pidns_ino = st.st_ino
            self.obj.update(self._fds["cfg"], _U32.pack(0), _U64.pack(st.st_ino))
        except LibbpfError as exc:
            self.obj.close()
            raise explain(exc) from None

    @staticmethod
    def _load(data: bytes, programs: tuple[str, ...]) -> BpfObject:
        return BpfObject(data, programs, attach=tuple(p for p in programs if p in ATTACHED))

    @property
    def fd(self) -> int:
        return self._ring.fd

    def _on_record(self, raw: bytes) -> None:
        seq, ts, kind, tree, tgid, nst, other, _pad, total, mm = _EVENT.unpack_from(raw)
        # Two CPUs may commit out of their numbers' order: only a number past the
        # highest seen + 1 is a gap (the later one's arrival then is no loss).
        if self._next_seq is not None and seq > self._next_seq:
            self.lost += seq - self._next_seq
        if self._next_seq is None or seq >= self._next_seq:
            self._next_seq = seq + 1
        elif self.lost:
            self.lost -= 1  # a late one counted as lost before
        self._pending.append(Record(seq, ts, KINDS.get(kind, str(kind)), tree, tgid, nst,
                                    other, total * PAGE, mm * PAGE))

    def drain(self) -> list[Record]:
        """The records waiting now, oldest first (never blocks)."""
        self._ring.consume()
        out, self._pending = self._pending, []
        return out

    def configure(self, tree: int, threshold_bytes: int | None, *, near_bytes: int = 0,
                  step_bytes: int = 0, step_seconds: float = 0.0) -> None:
        """Tree ``tree``'s record rules: a ``limit`` record when its sum reaches
        ``threshold_bytes`` (``None``: never) and per ``near_bytes`` of growth above it;
        a ``step`` record when it moved ``step_bytes`` (0: none) since the last one, at
        most one per ``step_seconds``. Bytes are rounded to pages (up for the steps)."""
        threshold = 0 if threshold_bytes is None else max(1, threshold_bytes // PAGE)
        near = -(-near_bytes // PAGE) if near_bytes > 0 else 0
        step = -(-step_bytes // PAGE) if step_bytes > 0 else 0
        self.obj.update(self._fds["trees"], _U32.pack(tree), _TREE_CFG.pack(
            threshold, near, step, int(step_seconds * 1e9)))

    def seed(self, tree: int, ns_pids) -> int:
        """Follow the processes ``ns_pids`` (PIDs in Sentinel's namespace) in ``tree``
        from now on, with their current pages in its sum: the task iterator finds them
        at once, idle or not. Returns how many records (``seeded``) it produced; those
        already followed are left alone."""
        fd = self._fds["seed"]
        pids = [p for p in ns_pids if p > 0]
        for pid in pids:
            self.obj.update(fd, _U32.pack(pid), _U32.pack(tree))
        if not pids:
            return 0
        try:
            self.obj.iterate("seed_tasks")
        finally:
            for pid in pids:  # gone meanwhile, or not visible: not left behind
                self.obj.delete(fd, _U32.pack(pid))
        return len(pids)

    def sum_bytes(self, tree: int) -> int:
        """The tree's running sum (bytes), the kernel's batched count."""
        raw = self.obj.lookup(self._fds["sums"], _U32.pack(tree), _TREE_SUM.size)
        return max(0, _TREE_SUM.unpack(raw)[0]) * PAGE if raw else 0

    def processes(self, tree: int) -> dict[int, int]:
        """The processes the kernel follows in ``tree``: ``{ns_tgid: host tgid}`` (ns_tgid
        0 for one not visible in Sentinel's namespace)."""
        fd = self._fds["watched"]
        out: dict[int, int] = {}
        for key in self.obj.keys(fd, _U32.size):
            raw = self.obj.lookup(fd, key, _PROC_VAL.size)
            if raw is None:
                continue
            t, nst, _mm = _PROC_VAL.unpack(raw)
            if t == tree:
                out[nst] = _U32.unpack(key)[0]
        return out

    def forget(self, tree: int) -> None:
        """Stop following every process of ``tree``; its sum and records start over."""
        self.configure(tree, None)
        # Both values start with the tree (struct proc_val, struct mm_val).
        for name, key_size, value in (("watched", _U32.size, _PROC_VAL),
                                      ("mms", _U64.size, _MM_VAL)):
            fd = self._fds[name]
            for key in self.obj.keys(fd, key_size):
                raw = self.obj.lookup(fd, key, value.size)
                if raw is not None and _U32.unpack_from(raw)[0] == tree:
                    self.obj.delete(fd, key)
        self.obj.update(self._fds["sums"], _U32.pack(tree), bytes(_TREE_SUM.size))

    def close(self) -> None:
        obj, self.obj = getattr(self, "obj", None), None
        if obj is not None:
            obj.close()
