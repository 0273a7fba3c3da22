"""Thin wrappers over the Linux calls Python's standard library lacks.

``prctl(PR_SET_CHILD_SUBREAPER)``, ``prctl(PR_SET_PDEATHSIG)``,
``signalfd(2)`` and a ``posix_spawnp(3)`` that can reset every signal are the
core of what an init does; no maintained library offers them without a C
build (python-prctl needs libcap headers), so they are called through ctypes
here, as are process_mrelease(2) and oom_score_adj writes that must not
hide their errors. Nothing else belongs in this module.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct

_libc = ctypes.CDLL(None, use_errno=True)

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
SFD_NONBLOCK = os.O_NONBLOCK
SFD_CLOEXEC = os.O_CLOEXEC
SIGINFO_SIZE = 128  # sizeof(struct signalfd_siginfo), fixed by the kernel ABI


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def set_child_subreaper() -> None:
    """Make orphaned descendants reparent to this process (prctl(2)). Raises ``OSError``."""
    _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")


def is_child_subreaper() -> bool:
    value = ctypes.c_int(0)
    _check(_libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0),
           "prctl(PR_GET_CHILD_SUBREAPER)")
    return bool(value.value)


def set_parent_death_signal(signum: int) -> None:
    """Ask the kernel to send ``signum`` when this process's parent dies. Raises ``OSError``."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


class _SigSet(ctypes.Structure):
    # glibc's sigset_t: 1024 bits. The kernel reads the first _NSIG bits.
    _fields_ = [("val", ctypes.c_ulong * (1024 // (8 * ctypes.sizeof(ctypes.c_ulong))))]


def _sigset(signals) -> _SigSet:
    s = _SigSet()
    bits = 8 * ctypes.sizeof(ctypes.c_ulong)
    for sig in signals:
        s.val[(sig - 1) // bits] |= 1 << ((sig - 1) % bits)
    return s


# si_code values (<asm-generic/siginfo.h>).
SI_USER = 0  # kill(), and the kernel's send_sig(sig, current, 0)
SI_KERNEL = 0x80
SI_TKILL = -6  # tgkill(): raise(), signal.raise_signal(), pthread_kill()


class SignalInfo:
    """One signal read from a signalfd: number, sender PID and UID, ``si_code``."""

    __slots__ = ("signo", "code", "pid", "uid")

    def __init__(self, signo: int, code: int, pid: int, uid: int) -> None:
        self.signo, self.code, self.pid, self.uid = signo, code, pid, uid

    @property
    def caused_by_self(self) -> bool:
        """True for a signal the kernel raised because of this process's own action.

        Measured on Linux 6.18 through a signalfd: a ``write()``/``send()`` to a
        pipe or socket whose reader has gone raises SIGPIPE, and a write past
        ``RLIMIT_FSIZE`` SIGXFSZ, both as ``send_sig(sig, current, 0)``:
        ``si_code`` SI_USER with our own PID (1 as PID 1), thread-directed (one
        raised in a helper thread stays pending on that thread, blocked, and
        never reaches the main thread's signalfd). ``kill -PIPE`` from another
        process has its PID (0 from outside our PID namespace). So SI_USER with
        our own PID is always self-caused, provided Sentinel's deliberate
        self-signals use ``tgkill()`` (``signal.raise_signal``: SI_TKILL), as
        they do. ``RLIMIT_CPU``/``RLIMIT_RTTIME`` give SIGXCPU with SI_KERNEL,
        which no sender can forge: Sentinel's own CPU time. SIGTTOU on a
        terminal write is never raised: the kernel lets a process that blocks
        SIGTTOU write (``tty_check_change``), so one that arrives was sent.
        """
        if self.code == SI_USER:
            return self.pid == os.getpid()
        return self.code == SI_KERNEL and self.signo == signal.SIGXCPU


def open_signalfd(signals) -> int:
    """A non-blocking, close-on-exec signalfd for ``signals`` (which must be blocked)."""
    mask = _sigset(signals)
    return _check(_libc.signalfd(-1, ctypes.byref(mask), SFD_NONBLOCK | SFD_CLOEXEC),
                  "signalfd")


def read_signals(fd: int) -> list[SignalInfo]:
    """Drain a signalfd; ``[]`` when nothing is pending."""
    out: list[SignalInfo] = []
    while True:
        try:
            data = os.read(fd, SIGINFO_SIZE * 32)
        except BlockingIOError:
            return out
        if not data:
            return out
        for off in range(0, len(data) - SIGINFO_SIZE + 1, SIGINFO_SIZE):
            signo, _errno, code, pid, uid = struct.unpack_from("<IiiII", data, off)
            out.append(SignalInfo(signo, code, pid, uid))


def catchable_signals() -> set[int]:
    """Every signal a process can block and receive: all but SIGKILL and SIGSTOP."""
    return set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}


# posix_spawnattr_setflags() bits (glibc's <spawn.h>, the same on every Linux ABI).
_POSIX_SPAWN_SETPGROUP = 0x02
_POSIX_SPAWN_SETSIGDEF = 0x04
_POSIX_SPAWN_SETSIGMASK = 0x08
_POSIX_SPAWN_SETSID = 0x80
# glibc's own real-time signals, SIGCANCEL (32) and SIGSETXID (33). Its
# posix_spawn (sysdeps/unix/sysv/linux/spawni.c, __spawni_child) sets them to
# SIG_IGN in the child unless they are in the attribute's sigdefault set, and an
# ignored disposition survives exec. sigaddset() refuses them (EINVAL), which is
# why os.posix_spawn(setsigdef=...) cannot name them; the sigset's bits are set
# directly here instead, and posix_spawnattr_setsigdefault() copies it as is.
GLIBC_INTERNAL_SIGNALS = (32, 33)


class _SpawnAttr(ctypes.Structure):
    # posix_spawnattr_t: 336 bytes on glibc's 64-bit ABIs. Opaque here, with room
    # to spare; only glibc's own posix_spawnattr_* functions touch it.
    _fields_ = [("opaque", ctypes.c_byte * 1024)]


_GLIBC = hasattr(_libc, "gnu_get_libc_version")
_HAS_ADDCHDIR = hasattr(_libc, "posix_spawn_file_actions_addchdir_np")  # glibc 2.29+


def spawnp(file: str, argv, env, *, sigmask, sigdefault, setsid: bool = False,
           pgroup: int | None = None, cwd: str | None = None,
           stdout_fd: int | None = None, stderr_fd: int | None = None) -> int:
    """``posix_spawnp(3)``: start ``file`` (searched in ``$PATH``) and return its PID.

    ``argv`` is the argument list, ``env`` a mapping; the child gets exactly the
    signal mask ``sigmask`` and ``SIG_DFL`` for every signal in ``sigdefault``
    (any number, glibc's internal 32 and 33 included); other ignored signals
    stay ignored. ``setsid`` makes it a session leader, ``pgroup`` (0: its own)
    puts it in a process group, ``cwd`` (when given) is the directory it starts
    in (glibc's ``posix_spawn_file_actions_addchdir_np``, 2.29+). ``stdout_fd`` and
    ``stderr_fd`` (when given) become the child's fd 1 and 2 (``adddup2`` file
    actions, after the chdir); give them close-on-exec, as every fd Sentinel opens
    is, so they reach the child only as 1 and 2. Same speed as ``os.posix_spawnp`` (glibc's
    clone(CLONE_VM|CLONE_VFORK)); exec errors come back here. Raises
    ``OSError(errno, strerror, file)``. Without glibc, falls back to
    ``os.posix_spawnp`` (whose sigdefault cannot hold 32 and 33).
    """
    if not _GLIBC or (cwd is not None and not _HAS_ADDCHDIR):
        kwargs: dict = {"setsigmask": sigmask,
                        "setsigdef": [s for s in sigdefault if s not in GLIBC_INTERNAL_SIGNALS]}
        if setsid:
            kwargs["setsid"] = True
        if pgroup is not None:
            kwargs["setpgroup"] = pgroup
        dups = [(fd, target) for fd, target in ((stdout_fd, 1), (stderr_fd, 2))
                if fd is not None]
        if dups:
            kwargs["file_actions"] = [(os.POSIX_SPAWN_DUP2, fd, target) for fd, target in dups]
        if cwd is not None:
            # No file action for it in os.posix_spawnp: move, spawn, move back (Sentinel
            # lives in / after the first spawn). A relative `file` is found from `cwd`,
            # as in the glibc path below.
            os.chdir(cwd)
            try:
                return os.posix_spawnp(file, list(argv), env, **kwargs)
            finally:
                os.chdir("/")
        return os.posix_spawnp(file, list(argv), env, **kwargs)
    args = [os.fsencode(a) for a in argv]
    envp = [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
    c_argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
    c_envp = (ctypes.c_char_p * (len(envp) + 1))(*envp, None)
    attr = _SpawnAttr()
    flags = _POSIX_SPAWN_SETSIGMASK | _POSIX_SPAWN_SETSIGDEF
    if setsid:
        flags |= _POSIX_SPAWN_SETSID
    if pgroup is not None:
        flags |= _POSIX_SPAWN_SETPGROUP
    mask, default = _sigset(sigmask), _sigset(sigdefault)
    pid = ctypes.c_int(0)
    actions = None
    if cwd is not None or stdout_fd is not None or stderr_fd is not None:
        actions = _SpawnAttr()  # posix_spawn_file_actions_t: 80 bytes, opaque here
        _libc.posix_spawn_file_actions_init(ctypes.byref(actions))
    if cwd is not None:
        # The child changes directory before exec; a relative `file` is then found
        # relative to it, as a shell's `cd DIR && exec CMD` would.
        _libc.posix_spawn_file_actions_addchdir_np(ctypes.byref(actions), os.fsencode(cwd))
    for fd, target in ((stdout_fd, 1), (stderr_fd, 2)):
        if fd is not None:
            # dup2() clears close-on-exec on the copy: only fd 1/2 survive the exec.
            _libc.posix_spawn_file_actions_adddup2(ctypes.byref(actions), fd, target)
    _libc.posix_spawnattr_init(ctypes.byref(attr))  # glibc: a memset, always 0
    try:
        _libc.posix_spawnattr_setflags(ctypes.byref(attr), ctypes.c_short(flags))
        _libc.posix_spawnattr_setsigmask(ctypes.byref(attr), ctypes.byref(mask))
        _libc.posix_spawnattr_setsigdefault(ctypes.byref(attr), ctypes.byref(default))
        if pgroup is not None:
            _libc.posix_spawnattr_setpgroup(ctypes.byref(attr), ctypes.c_int(pgroup))
        err = _libc.posix_spawnp(ctypes.byref(pid), os.fsencode(file),
                                 None if actions is None else ctypes.byref(actions),
                                 ctypes.byref(attr), c_argv, c_envp)
    finally:
        _libc.posix_spawnattr_destroy(ctypes.byref(attr))
        if actions is not None:
            _libc.posix_spawn_file_actions_destroy(ctypes.byref(actions))
    if err:
        raise OSError(err, os.strerror(err), file)
    return pid.value


# --- pidfds, process_mrelease, oom_score_adj (issue 9: "The kernel's side") ---
#
# os.pidfd_open and signal.pidfd_send_signal exist in the standard library;
# process_mrelease(2) does not (nor in psutil), so it goes through libc's
# syscall(2) here. Its number is 448 on every architecture that uses the
# unified syscall table (x86-64, arm64, riscv: include/uapi/asm-generic/unistd.h).

SYS_process_mrelease = 448

MRELEASE_RELEASED = "released"
MRELEASE_ALREADY = "already"
MRELEASE_UNAVAILABLE = "unavailable"
MRELEASE_NOT_DYING = "not_dying"
MRELEASE_ERROR = "error"


def pidfd_open(pid: int) -> int | None:
    """A close-on-exec pidfd for ``pid`` (pidfd_open(2)), or ``None`` if the process is gone.

    Open it while ``pid`` is known to be ours and alive (a child not yet
    reaped): from then on the fd names that process and no other, even after
    its PID is reused. ESRCH (no such process) gives ``None``; any other
    error (EMFILE, ENODEV without pidfd support) raises ``OSError``.
    """
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def pidfd_signal(pidfd: int, sig: int) -> bool:
    """Send ``sig`` through ``pidfd`` (pidfd_send_signal(2)); ``False`` if the process is gone.

    ESRCH means the process has exited (after its reap the kernel answers
    ESRCH, never another process that got its PID), so there is nothing to
    signal. Other errors (EPERM, EINVAL for a bad signal, EBADF) raise ``OSError``.
    """
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        return False
    return True


def process_mrelease(pidfd: int) -> str:
    """Free a SIGKILLed process's memory now (process_mrelease(2), Linux 5.15), with its pidfd.

    Without it, the memory of a killed process is freed by the victim itself
    as it exits, which a frozen, stopped in D state or slow-to-be-scheduled
    victim may not do for a long while (on these machines a frozen victim is
    not freed at all; a 1 GiB one is freed in ~48 ms instead of ~69 ms).
    Call it after SIGKILL has been sent. Returns one of:

    - ``"released"``: the kernel reaped the victim's private anonymous memory
      (shared anonymous memory and page cache are not reaped by it);
    - ``"already"``: ESRCH, the process has no address space left (being freed
      or gone, reaped or not): nothing to do;
    - ``"unavailable"``: ENOSYS (a kernel before 5.15, or an old seccomp
      profile), EPERM (a seccomp filter or LSM refused it): the caller says
      so once, quietly, and goes on without it;
    - ``"not_dying"``: EINVAL, this victim is not dying yet (the SIGKILL has
      not been delivered) or shares its mm with a live process (after vfork,
      CLONE_VM): a fact about this victim, not the kernel (mm/oom_kill.c
      ``SYSCALL_DEFINE2(process_mrelease)``: ``task_will_free_mem`` false);
    - ``"error"``: anything else (EBADF: not a pidfd; EINTR, ENOMEM).
    """
    result = _libc.syscall(ctypes.c_long(SYS_process_mrelease), ctypes.c_long(pidfd),
                           ctypes.c_long(0))
    if result == 0:
        return MRELEASE_RELEASED
    err = ctypes.get_errno()
    if err == errno.ESRCH:
        return MRELEASE_ALREADY
    if err == errno.EINVAL:
        return MRELEASE_NOT_DYING
    if err in (errno.ENOSYS, errno.EPERM):
        return MRELEASE_UNAVAILABLE
    return MRELEASE_ERROR


OOM_SCORE_ADJ_MIN = -1000
OOM_SCORE_ADJ_MAX = 1000


def _write_oom_score_adj(path: str, value: int) -> None:
    # os.write on a raw fd: a buffered file object writes at close or flush
    # and a failed write there (EACCES) is easy to lose; here it raises.
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(int(value)).encode())
    finally:
        os.close(fd)


def raise_oom_score_adj(pid: int, value: int) -> str | None:
    """Write ``value`` (-1000..1000) to ``/proc/<pid>/oom_score_adj``; an error text, or ``None``.

    Raising the workload's score makes the kernel's OOM killer choose it
    before Sentinel (mm/oom_kill.c: oom_badness adds ``value`` thousandths
    of the machine's memory to the task's footprint). Raising needs no
    privilege; errors, turned into one line for the log: ENOENT/ESRCH the
    process is gone; EACCES the value is below the task's
    ``oom_score_adj_min`` (lowering it needs CAP_SYS_RESOURCE) or the file is
    not ours; EINVAL out of range. Never raises.
    """
    if not OOM_SCORE_ADJ_MIN <= value <= OOM_SCORE_ADJ_MAX:
        return f"oom_score_adj {value} is out of range {OOM_SCORE_ADJ_MIN}..{OOM_SCORE_ADJ_MAX}"
    try:
        _write_oom_score_adj(f"/proc/{pid}/oom_score_adj", value)
    except (FileNotFoundError, ProcessLookupError):
        return f"could not set oom_score_adj of pid {pid}: the process is gone"
    except PermissionError as exc:
        return (f"could not set oom_score_adj of pid {pid} to {value}: {exc.strerror} "
                "(a value below its current minimum needs CAP_SYS_RESOURCE)")
    except OSError as exc:
        return f"could not set oom_score_adj of pid {pid} to {value}: {exc.strerror}"
    return None


def lower_own_oom_score_adj(value: int) -> str | None:
    """Lower Sentinel's own ``/proc/self/oom_score_adj`` to ``value``; an error text, or ``None``.

    Going below the process's ``oom_score_adj_min`` (0 unless a privileged
    ancestor lowered it) needs CAP_SYS_RESOURCE, which root lacks in default
    containers and pods (EACCES): call this once at start-up and log the text
    it returns once; raising the workload's score
    (``raise_oom_score_adj``) protects Sentinel without the capability.
    Never raises.
    """
    if not OOM_SCORE_ADJ_MIN <= value <= OOM_SCORE_ADJ_MAX:
        return f"oom_score_adj {value} is out of range {OOM_SCORE_ADJ_MIN}..{OOM_SCORE_ADJ_MAX}"
    try:
        _write_oom_score_adj("/proc/self/oom_score_adj", value)
    except PermissionError:
        return (f"could not lower Sentinel's own oom_score_adj to {value}: it needs "
                "CAP_SYS_RESOURCE (add it to the container's capabilities); the workload's "
                "raised oom_score_adj protects Sentinel instead")
    except OSError as exc:
        return f"could not lower Sentinel's own oom_score_adj to {value}: {exc.strerror}"
    return None


def trim_malloc() -> bool:
    """Give the C heap's free pages back to the kernel (glibc's ``malloc_trim(0)``); ``True``
    if memory was released, ``False`` if none was or without glibc. Never raises.

    Start-up frees much more than it keeps: the imports after the spawn compile every
    source without a ``.pyc`` (a read-only or ``PYTHONDONTWRITEBYTECODE`` install), and the
    freed pages stay in Sentinel's RSS, trapped below live objects where glibc's own
    trimming (only at the heap's top) cannot return them: about 1 MiB here. Called once
    when start-up is over, not on the sampling loop (it walks the heap)."""
    trim = getattr(_libc, "malloc_trim", None) if _GLIBC else None
    if trim is None:
        return False
    try:
        return bool(trim(0))
    except Exception:
        return False
