"""What PID 1 (or a child subreaper) does once per container, as tini's one loop does.

* Read every catchable signal from one signalfd (they are all blocked, SIGCHLD
  included), on the program's asyncio loop.
* Drop signals the kernel raised at Sentinel for its own doing (SIGPIPE of a
  socket client that hung up, SIGXFSZ, SIGXCPU): counted, logged once, never
  forwarded.
* Rewrite a signal before it is forwarded (``--rewrite``), and make the
  job-control stops (SIGTSTP/SIGTTIN/SIGTTOU) a SIGSTOP when the workload leads
  its own session without a terminal (the kernel would discard them there).
* Reap every child and orphan (``waitpid(-1)`` until none is left). A status of a
  program's main PID goes to that program (``child_exited``); a stop or continue
  report too (``child_stopped``); orphans are just reaped.
* Job control on a terminal: when the workload stops (Ctrl-Z) Sentinel stops
  itself, so the shell sees the job stopped, and on ``fg`` gives the terminal
  back to the workload; at the end the terminal goes back to Sentinel's group.

The program (``Program``, today ``sentinel.core.guardian.Guardian``) decides
what a signal means for it (shutdown, forwarding) and what its exit means.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Callable, Protocol

from sentinel.config.settings import signal_name
from sentinel.core import kernel
from sentinel.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

JOB_CONTROL_STOPS = frozenset({signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})


def exit_code_of(status: int) -> int:
    """A ``waitpid`` status as a shell shows it: the exit code, or 128+N for signal N."""
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
        else 128 + os.WTERMSIG(status)


def run_host(host) -> int:
    """Run ``host`` (a ``Guardian`` or a ``Group``) on its loop: ``serve()`` until Sentinel's
    exit code is known, then ``linger(code)`` when set (the reports of a kill get out; the
    code is kept), then ``close()``; return the code."""
    try:
        code = host.loop.run_until_complete(host.serve())
        if host.linger is not None:
            host.loop.run_until_complete(host.linger(code))
        return code
    finally:
        host.close()


def loop_error_handler(debug: bool) -> Callable:
    """An asyncio exception handler: a bug in a callback (ours or an exporter's) is logged
    on one line (the traceback with ``debug``); the loop, and with it signal forwarding,
    reaping and the ladder, go on."""
    def handler(loop, context: dict) -> None:
        exc = context.get("exception")
        log.error("internal error in %s: %s", context.get("handle") or context.get("future")
                  or "the main loop", repr(exc) if exc else context.get("message"),
                  exc_info=exc if debug else None, extra={"event": "internal_error"})
    return handler


class Program(Protocol):
    """What the init needs of a supervised program."""

    @property
    def main_pid(self) -> int | None: ...  # its live main process, or None

    def child_exited(self, status: int) -> None: ...

    def child_stopped(self, sig: int | None) -> None: ...

    def signal_workload(self, sig: int) -> None: ...

    def on_signal(self, info: kernel.SignalInfo, target: int) -> bool: ...

    def after_reap(self) -> None: ...


class Init:
    """PID-1 duties for ``programs`` on ``loop``. ``open()`` starts reading signals,
    ``finish()`` hands the terminal back and makes later signals go to
    ``late_signal_listeners`` (the linger after the workload is gone), ``close()``
    closes the signalfd.

    ``rewrite`` maps a received signal number to the one forwarded (0: dropped);
    ``tty_fd`` is the controlling terminal the workload was given (``None``: none);
    ``self_caused`` is the dict of per-signal counts of self-caused signals
    (``GuardianState.self_caused_signals``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, pid1: bool = False,
                 subreaper: bool = False, rewrite: dict[int, int] | None = None,
                 tty_fd: int | None = None, self_caused: dict[str, int] | None = None) -> None:
        self.loop = loop
        self.pid1 = pid1
        self.subreaper = subreaper
        self.rewrite = dict(rewrite or {})
        self.tty_fd = tty_fd
        self.self_caused = {} if self_caused is None else self_caused
        self.programs: list[Program] = []
        self.finished = False
        self.late_signal_listeners: list[Callable] = []  # called with a kernel.SignalInfo
        # With several programs (sentinel.core.group) the group decides what a received
        # signal means for each program: ``router(info, target) -> go_on`` replaces
        # asking every program; ``on_orphan(pid, status)`` hears of each reaped orphan
        # (a process that was not a program's main process), to attribute it.
        self.router: Callable[[kernel.SignalInfo, int], bool] | None = None
        self.on_orphan: Callable[[int, int], None] | None = None
        self.on_reaped: Callable[[int], None] | None = None  # every reaped PID, after it
        # Sentinel's own direct children that are no program's (the pre-kill hook:
        # sentinel.core.hook): pid -> called with its status once it is reaped. The
        # programs' trees leave them out (Supervisor's and Group's root filters).
        self.helpers: dict[int, Callable[[int], None]] = {}
        self._sigfd: int | None = None

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Open the signalfd for every catchable signal and read it on the loop."""
        self._sigfd = kernel.open_signalfd(kernel.catchable_signals())
        self.loop.add_reader(self._sigfd, self.read_signals)
        if self.pid1:
            log.info("running as PID 1: reaping every orphan in this PID namespace",
                     extra={"event": "startup"})
        elif self.subreaper:
            log.info("not PID 1: registered as child subreaper, so orphaned descendants are "
                     "reaped here", extra={"event": "startup"})

    def finish(self) -> None:
        """The programs are over: the terminal goes back to Sentinel's process group;
        signals from now on go to ``late_signal_listeners``."""
        self.finished = True
        if self.tty_fd is not None:
            try:
                os.tcsetpgrp(self.tty_fd, os.getpgrp())  # give the terminal back
            except OSError:
                pass

    def close(self) -> None:
        if self._sigfd is not None:
            try:
                self.loop.remove_reader(self._sigfd)
            except Exception:
                pass
            os.close(self._sigfd)
            self._sigfd = None

    # ------------------------------------------------------------------ signals
    def read_signals(self) -> None:
        """Handle every signal pending on the signalfd (also called once at start:
        anything that arrived between the spawn and the reader)."""
        if self._sigfd is None:
            return
        failed = False
        for info in kernel.read_signals(self._sigfd):
            # The batch is drained from the signalfd already: one handler's failure must
            # not drop the signals after it (a lost SIGCHLD would leave the main process
            # a zombie and Sentinel waiting for it forever).
            try:
                if info.signo == signal.SIGCHLD:
                    self.reap()
                elif info.caused_by_self:
                    self._on_self_caused(info)
                else:
                    self.on_signal(info)
            except Exception as exc:
                failed = True
                log.error("handling %s failed: %r (the other signals are still handled)",
                          signal_name(info.signo), exc)
        if failed:
            self.reap()  # whatever was lost, every exited child is still reaped

    def _on_self_caused(self, info: kernel.SignalInfo) -> None:
        # The kernel raised it at Sentinel for Sentinel's own write (SIGPIPE: a
        # socket client or stderr reader that hung up; SIGXFSZ: a file-size
        # limit) or CPU time (SIGXCPU): the workload never gets it. Counted, and
        # logged once per signal: a log line to a gone stderr raises another.
        name = signal_name(info.signo)
        counts = self.self_caused
        counts[name] = counts.get(name, 0) + 1
        if counts[name] == 1:
            log.info("%s raised by Sentinel's own %s: not forwarded to the workload "
                     "(counted in status as self_caused_signals; logged once)", name,
                     "CPU time" if info.signo == signal.SIGXCPU else "write to a peer or file "
                     "that cannot take it", extra={"event": "self_caused_signal"})

    def target_of(self, sig: int) -> int:
        """The signal forwarded for a received ``sig``: ``--rewrite``'s, and SIGSTOP for a
        job-control stop when the workload has no terminal (it leads its own session:
        its process group is orphaned, and the kernel discards SIGTSTP/SIGTTIN/SIGTTOU
        there when they would stop it; get_signal, is_current_pgrp_orphaned; as
        dumb-init does; ``--rewrite TSTP:TSTP`` keeps the signal). 0: dropped."""
        if sig in JOB_CONTROL_STOPS and sig not in self.rewrite and self.tty_fd is None:
            return signal.SIGSTOP
        return self.rewrite.get(sig, sig)

    def on_signal(self, info: kernel.SignalInfo) -> None:
        """One received signal: to each program (``Program.on_signal`` with the
        rewritten target; it returns False when it has ended and nothing more is
        to be done), then job control."""
        if self.finished:  # lingering: nothing to forward to
            for listener in list(self.late_signal_listeners):
                listener(info)
            return
        sig = info.signo
        target = self.target_of(sig)
        go_on = True
        if self.router is not None:
            go_on = self.router(info, target)
        else:
            for program in list(self.programs):
                go_on = program.on_signal(info, target) and go_on
        if not go_on:
            return
        if sig in JOB_CONTROL_STOPS and not self.pid1 and (
                self.tty_fd is not None or info.code == kernel.SI_KERNEL):
            # A job of a shell on a terminal (the workload has the terminal, or the
            # terminal itself sent it: Ctrl-Z): stop too, so the shell sees the job
            # stopped. Sent from outside without a terminal (`docker kill -s TSTP`):
            # Sentinel keeps running, to guard and to report the workload stopped.
            self.stop_self()
        elif sig == signal.SIGCONT and self.tty_fd is not None:
            for program in self.programs:
                if program.main_pid is not None:
                    self.give_terminal(program.main_pid)

    def give_terminal(self, pid: int) -> None:
        """Make ``pid``'s process group the terminal's foreground group."""
        try:
            os.tcsetpgrp(self.tty_fd, pid)  # type: ignore[arg-type]
        except OSError:
            pass

    def stop_self(self) -> None:
        # Job control: the workload stopped (Ctrl-Z) or was told to; stop too,
        # so the shell that started Sentinel sees the job as stopped. `fg`
        # sends us SIGCONT, which is forwarded and gives the terminal back.
        os.kill(os.getpid(), signal.SIGSTOP)

    # ------------------------------------------------------------------ reaping
    def program_of(self, pid: int) -> Program | None:
        """The program whose main process is ``pid``, or ``None`` (an orphan)."""
        for program in self.programs:
            if program.main_pid == pid:
                return program
        return None

    def reap(self) -> None:
        """Reap every child with a status pending, route main PIDs' statuses and stop
        reports to their program, then tell each program (``after_reap``)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED | os.WCONTINUED)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self.helpers:
                if not (os.WIFSTOPPED(status) or os.WIFCONTINUED(status)):
                    try:
                        self.helpers.pop(pid)(status)
                    except Exception as exc:  # a helper's bug never stops the reaping
                        log.warning("helper pid %d: %r", pid, exc)
                    if self.on_reaped is not None:
                        self.on_reaped(pid)  # a reused PID is attributed afresh
                continue
            program = self.program_of(pid)
            if os.WIFCONTINUED(status):
                if program is not None:
                    program.child_stopped(None)
                continue
            if os.WIFSTOPPED(status):
                if program is not None:
                    program.child_stopped(os.WSTOPSIG(status))
                if program is not None and self.tty_fd is not None and not self.pid1:
                    self.stop_self()
                    if program.main_pid is not None:  # `fg`: Sentinel runs again
                        self.give_terminal(program.main_pid)
                        program.signal_workload(signal.SIGCONT)
                continue
            if program is not None:
                program.child_exited(status)
            elif self.on_orphan is not None:
                self.on_orphan(pid, status)
            else:
                log.debug("reaped orphan pid %d (%s)", pid, exit_code_of(status))
            if self.on_reaped is not None:
                self.on_reaped(pid)
        for program in list(self.programs):
            program.after_reap()
