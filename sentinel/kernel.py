"""Thin wrappers over the Linux calls Python's standard library lacks.

``prctl(PR_SET_CHILD_SUBREAPER)``, ``prctl(PR_SET_PDEATHSIG)`` and
``signalfd(2)`` are the core of what an init does; no maintained library
offers them without a C build (python-prctl needs libcap headers), so they
are called through ctypes here. Nothing else belongs in this module.
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


class SignalInfo:
    """One signal read from a signalfd: number, sender PID and UID, ``si_code``."""

    __slots__ = ("signo", "code", "pid", "uid")

    def __init__(self, signo: int, code: int, pid: int, uid: int) -> None:
        self.signo, self.code, self.pid, self.uid = signo, code, pid, uid

    @property
    def from_kernel(self) -> bool:
        # si_code > 0 means the kernel raised it (a fault, a child event);
        # SI_USER (0) and the negative codes are kill(), sigqueue(), tgkill().
        return self.code > 0


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
