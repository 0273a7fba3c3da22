"""``sentinel.core.init.Init`` with real child processes and a recording program:
the main PID's statuses (exit, stop, continue) go to its program, other children
(orphans) are just reaped, and the rewrite of a received signal."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from sentinel.core import kernel
from sentinel.core.init import Init, exit_code_of
from tests.conftest import wait_until


class Recording:
    def __init__(self, pid: int | None) -> None:
        self.main_pid = pid
        self.reports: list = []

    def child_exited(self, status: int) -> None:
        self.reports.append(("exited", exit_code_of(status)))
        self.main_pid = None

    def child_stopped(self, sig):
        self.reports.append(("stopped", sig))

    def signal_workload(self, sig: int) -> None:
        self.reports.append(("signalled", sig))

    def on_signal(self, info, target) -> bool:
        self.reports.append(("signal", info.signo, target))
        return True

    def after_reap(self) -> None:
        self.reports.append(("after_reap",))


def _spawn(code: str) -> int:
    return os.posix_spawn(sys.executable, [sys.executable, "-c", code], os.environ)


def _reap_until(init: Init, program: Recording, report) -> None:
    wait_until(lambda: init.reap() or report in program.reports, timeout=10)


def test_the_main_pids_statuses_go_to_its_program_and_orphans_are_just_reaped():
    loop = asyncio.new_event_loop()
    try:
        init = Init(loop)
        main = _spawn("import signal; signal.pause()")
        other = _spawn("raise SystemExit(3)")
        program = Recording(main)
        init.programs.append(program)
        wait_until(lambda: os.waitid(os.P_PID, other, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                   is not None, timeout=10)
        init.reap()  # the other child (an orphan to the init): reaped, not reported
        assert program.reports == [("after_reap",)]
        assert not os.path.exists(f"/proc/{other}")
        os.kill(main, signal.SIGSTOP)
        _reap_until(init, program, ("stopped", signal.SIGSTOP))
        os.kill(main, signal.SIGCONT)
        _reap_until(init, program, ("stopped", None))
        os.kill(main, signal.SIGTERM)
        _reap_until(init, program, ("exited", 128 + signal.SIGTERM))
        assert program.main_pid is None
    finally:
        loop.close()


def test_a_received_signal_goes_to_each_program_rewritten():
    loop = asyncio.new_event_loop()
    try:
        init = Init(loop, rewrite={signal.SIGUSR1: signal.SIGUSR2, signal.SIGHUP: 0},
                    tty_fd=None)
        program = Recording(4242)
        init.programs.append(program)
        for sig in (signal.SIGUSR1, signal.SIGHUP, signal.SIGWINCH):
            init.on_signal(kernel.SignalInfo(signo=sig, pid=1, uid=0, code=0))
        assert [r for r in program.reports if r[0] == "signal"] == [
            ("signal", signal.SIGUSR1, signal.SIGUSR2), ("signal", signal.SIGHUP, 0),
            ("signal", signal.SIGWINCH, signal.SIGWINCH)]
        # No terminal: the workload leads its own session, a TSTP there is discarded.
        assert init.target_of(signal.SIGTSTP) == signal.SIGSTOP
        assert Init(loop, rewrite={signal.SIGTSTP: signal.SIGTSTP}).target_of(
            signal.SIGTSTP) == signal.SIGTSTP
        init.finish()  # after the end: to the late listeners only
        late: list = []
        init.late_signal_listeners.append(late.append)
        init.on_signal(kernel.SignalInfo(signo=signal.SIGUSR1, pid=1, uid=0, code=0))
        assert len(late) == 1 and len(program.reports) == 3
    finally:
        loop.close()


def test_a_handler_that_raises_loses_no_signal_of_the_batch(monkeypatch):
    # The signalfd's batch is drained already: a failing handler must not drop the SIGCHLD
    # behind it, or the main process stays a zombie and its status is never passed on.
    class Broken(Recording):
        def on_signal(self, info, target) -> bool:
            raise RuntimeError("handler broke")

    loop = asyncio.new_event_loop()
    try:
        init = Init(loop)
        main = _spawn("raise SystemExit(5)")
        program = Broken(main)
        init.programs.append(program)
        wait_until(lambda: os.waitid(os.P_PID, main, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                   is not None, timeout=10)
        batch = [kernel.SignalInfo(signo=signal.SIGUSR1, pid=1, uid=0, code=0),
                 kernel.SignalInfo(signo=signal.SIGCHLD, pid=main, uid=0, code=1)]
        monkeypatch.setattr(kernel, "read_signals", lambda fd: batch)
        init._sigfd = -1  # read_signals is replaced: no real signalfd is read
        init.read_signals()
        init._sigfd = None
        assert ("exited", 5) in program.reports
        assert not os.path.exists(f"/proc/{main}")
    finally:
        loop.close()
