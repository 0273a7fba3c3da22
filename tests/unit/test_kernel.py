"""kernel.SignalInfo.caused_by_self on real signalfd readings: what the kernel raises
at a process for its own writes, against what another process (or the process on
purpose, through tgkill) sends it. kernel.spawnp on real children: glibc's 32/33
reset (and not without glibc), errors as OSError."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from sentinel.core import kernel


@pytest.fixture
def sigfd():
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE, signal.SIGXFSZ})
    fd = kernel.open_signalfd({signal.SIGPIPE, signal.SIGXFSZ})
    try:
        yield fd
    finally:
        kernel.read_signals(fd)  # drop what a failed test left pending
        os.close(fd)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def test_a_write_to_a_gone_reader_is_self_caused(sigfd):
    r, w = os.pipe()
    os.close(r)
    with pytest.raises(BrokenPipeError):
        os.write(w, b"x")
    os.close(w)
    a, b = socket.socketpair()
    b.close()
    with pytest.raises(BrokenPipeError):
        a.send(b"x")
    a.close()
    got = kernel.read_signals(sigfd)
    # Both raised SIGPIPE (one pending instance: standard signals coalesce).
    assert [(i.signo, i.code, i.pid, i.caused_by_self) for i in got] == [
        (signal.SIGPIPE, kernel.SI_USER, os.getpid(), True)]


def test_msg_nosignal_raises_nothing(sigfd):
    a, b = socket.socketpair()
    b.close()
    with pytest.raises(BrokenPipeError):
        a.send(b"x", socket.MSG_NOSIGNAL)
    a.close()
    assert kernel.read_signals(sigfd) == []


_SENT_CHECK = """
import os, signal, subprocess, sys
from sentinel.core import kernel
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE, signal.SIGXFSZ})
fd = kernel.open_signalfd({signal.SIGPIPE, signal.SIGXFSZ})
subprocess.run(["kill", "-PIPE", str(os.getpid())], check=True)
signal.raise_signal(signal.SIGXFSZ)  # Sentinel's deliberate self-signal: tgkill()
got = {i.signo: i for i in kernel.read_signals(fd)}
pipe, xfsz = got[signal.SIGPIPE], got[signal.SIGXFSZ]
print(pipe.code, pipe.pid != os.getpid(), pipe.caused_by_self, xfsz.code, xfsz.caused_by_self)
"""


def test_sent_signals_are_not_self_caused():
    # In a fresh interpreter with one thread: a process-directed signal goes to
    # any thread that does not block it, and other tests leave threads behind.
    out = subprocess.run([sys.executable, "-c", _SENT_CHECK], capture_output=True, text=True,
                         timeout=30, check=True).stdout.split()
    assert out == [str(kernel.SI_USER), "True", "False", str(kernel.SI_TKILL), "False"]


def test_cpu_limit_signal_is_self_caused():
    # SIGXCPU for RLIMIT_CPU comes with SI_KERNEL, which no sender can forge.
    assert kernel.SignalInfo(signal.SIGXCPU, kernel.SI_KERNEL, 0, 0).caused_by_self
    assert not kernel.SignalInfo(signal.SIGXCPU, kernel.SI_USER, 1, 0).caused_by_self
    assert not kernel.SignalInfo(signal.SIGHUP, kernel.SI_KERNEL, 0, 0).caused_by_self  # hangup


def _child_sigign(monkeypatch, tmp_path, glibc: bool) -> int:
    monkeypatch.setattr(kernel, "_GLIBC", glibc)
    out = tmp_path / "status"
    # This process ignores CPython's SIGPIPE and SIGXFSZ; the child is told to
    # reset them and glibc's 32/33.
    pid = kernel.spawnp("sh", ["sh", "-c", f"grep ^SigIgn /proc/self/status > {out}"],
                        os.environ, sigmask=set(), sigdefault=(13, 25, 32, 33), setsid=True)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return int(out.read_text().split()[1], 16)


def test_spawnp_resets_glibc_internal_signals(monkeypatch, tmp_path):
    assert _child_sigign(monkeypatch, tmp_path, glibc=True) == 0


def test_spawnp_fallback_without_glibc_cannot_name_32_and_33(monkeypatch, tmp_path):
    # os.posix_spawnp's sigdefault refuses 32/33: glibc leaves them ignored.
    assert _child_sigign(monkeypatch, tmp_path, glibc=False) == (1 << 31) | (1 << 32)


def test_spawnp_errors_are_oserrors_naming_the_file():
    with pytest.raises(FileNotFoundError) as info:
        kernel.spawnp("definitely-not-a-command-xyz", ["x"], os.environ, sigmask=set(),
                      sigdefault=())
    assert info.value.filename == "definitely-not-a-command-xyz"


def test_a_background_terminal_write_with_sigttou_blocked_raises_nothing():
    # The claim caused_by_self rests on for SIGTTOU: with TOSTOP set and another
    # process group in the terminal's foreground, a process that blocks SIGTTOU
    # (as Sentinel blocks every signal) may write, and nothing is raised
    # (tty_check_change treats a blocked SIGTTOU as ignored).
    import pty
    import termios

    pid, master = pty.fork()
    if pid == 0:  # a session leader with the pty as its controlling terminal
        code = 1
        try:
            attrs = termios.tcgetattr(0)
            attrs[3] |= termios.TOSTOP
            termios.tcsetattr(0, termios.TCSANOW, attrs)
            signal.pthread_sigmask(signal.SIG_BLOCK, kernel.catchable_signals())
            fd = kernel.open_signalfd(kernel.catchable_signals())
            fg = os.fork()
            if fg == 0:
                os.setpgid(0, 0)
                signal.sigwait({signal.SIGTERM})
                os._exit(0)
            os.setpgid(fg, fg)
            os.tcsetpgrp(0, fg)  # now this process is in the background
            written = os.write(1, b"background write\n")
            got = [i.signo for i in kernel.read_signals(fd) if i.signo != signal.SIGCHLD]
            os.kill(fg, signal.SIGTERM)
            code = 0 if written == 17 and got == [] else 3
        finally:
            os._exit(code)
    try:
        out = b""
        while True:
            try:
                chunk = os.read(master, 1024)
            except OSError:  # EIO once the child is gone
                break
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, out
        assert b"background write" in out
    finally:
        os.close(master)
