"""Thin wrappers over the Linux calls Python's standard library lacks.

``prctl(PR_SET_CHILD_SUBREAPER)``, ``prctl(PR_SET_PDEATHSIG)``,
``signalfd(2)`` and a ``posix_spawnp(3)`` that can reset every signal are the
core of what an init does; no maintained library offers them without a C
build (python-prctl needs libcap headers), so they are called through ctypes
here. Nothing else belongs in this module.
"""

from __future__ import annotations

import ctypes
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


def spawnp(file: str, argv, env, *, sigmask, sigdefault, setsid: bool = False,
           pgroup: int | None = None) -> int:
    """``posix_spawnp(3)``: start ``file`` (searched in ``$PATH``) and return its PID.

    ``argv`` is the argument list, ``env`` a mapping; the child gets exactly the
    signal mask ``sigmask`` and ``SIG_DFL`` for every signal in ``sigdefault``
    (any number, glibc's internal 32 and 33 included); other ignored signals
    stay ignored. ``setsid`` makes it a session leader, ``pgroup`` (0: its own)
    puts it in a process group. Same speed as ``os.posix_spawnp`` (glibc's
    clone(CLONE_VM|CLONE_VFORK)); exec errors come back here. Raises
    ``OSError(errno, strerror, file)``. Without glibc, falls back to
    ``os.posix_spawnp`` (whose sigdefault cannot hold 32 and 33).
    """
    if not _GLIBC:
        kwargs: dict = {"setsigmask": sigmask,
                        "setsigdef": [s for s in sigdefault if s not in GLIBC_INTERNAL_SIGNALS]}
        if setsid:
            kwargs["setsid"] = True
        if pgroup is not None:
            kwargs["setpgroup"] = pgroup
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
    _libc.posix_spawnattr_init(ctypes.byref(attr))  # glibc: a memset, always 0
    try:
        _libc.posix_spawnattr_setflags(ctypes.byref(attr), ctypes.c_short(flags))
        _libc.posix_spawnattr_setsigmask(ctypes.byref(attr), ctypes.byref(mask))
        _libc.posix_spawnattr_setsigdefault(ctypes.byref(attr), ctypes.byref(default))
        if pgroup is not None:
            _libc.posix_spawnattr_setpgroup(ctypes.byref(attr), ctypes.c_int(pgroup))
        err = _libc.posix_spawnp(ctypes.byref(pid), os.fsencode(file), None,
                                 ctypes.byref(attr), c_argv, c_envp)
    finally:
        _libc.posix_spawnattr_destroy(ctypes.byref(attr))
    if err:
        raise OSError(err, os.strerror(err), file)
    return pid.value
