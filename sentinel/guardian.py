"""The process lifecycle: forward signals, reap, enforce the limit, exit or restart.

One asyncio loop drives everything: a signalfd (every catchable signal is
blocked and read from it, SIGCHLD included), a sampling timer, and the
grace-period timer. Exporters (metrics, control socket, Kubernetes Events,
dashboard) never get imported here: they read ``Guardian.state``, subscribe
with ``Guardian.listeners``, and call the command methods (``stop``,
``kill``, ``send_signal``, ``set_limit``, ``pause``, ``resume``) from the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Callable

from sentinel import fdlimit, kernel
from sentinel.config import Settings, signal_name
from sentinel.logs import LOGGER_NAME, fmt_bytes
from sentinel.probes import CgroupProbe, TreeProbe
from sentinel.spawn import Child, spawn
from sentinel.state import (
    PHASE_EXITED, PHASE_RESTARTING, PHASE_RUNNING, PHASE_TERMINATING, REASON_MEMORY,
    REASON_OPERATOR, REASON_SHUTDOWN, Event, GuardianState, KillRecord, Listener,
)

log = logging.getLogger(LOGGER_NAME)

_JOB_CONTROL_STOPS = {signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
_SHUTDOWN_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# Below this distance to the limit (in sampling periods at the current growth
# rate) the sampler speeds up; it never samples faster than _MIN_INTERVAL.
_MIN_INTERVAL = 0.004
# This many samples in a row with a failed read (or an exception) make the
# sampling "failing": one error line, status/metrics/an Event say so.
_SAMPLING_FAILING_AFTER = 3
# A run that lasted this long resets the restart back-off.
_STABLE_RUN_SECONDS = 10.0
# After the main child exits, leftovers get SIGTERM, then SIGKILL after the
# grace period; SIGKILLed processes that still have not been reaped after this
# many more seconds (stuck in uninterruptible sleep) are given up on.
_REAP_GIVE_UP_SECONDS = 2.0


def _pid_list(pids: list[int], most: int = 10) -> str:
    """``[1, 2, 3]``, or the first ``most`` and a count: 500 PIDs make no log line."""
    head = ", ".join(map(str, pids[:most]))
    return f"[{head}]" if len(pids) <= most else f"[{head}, and {len(pids) - most} more]"


def _limit_text(limit: int | None) -> str:
    return "none" if limit is None else fmt_bytes(limit)


def exit_code_of(status: int) -> int:
    """A ``waitpid`` status as a shell shows it: the exit code, or 128+N for signal N."""
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
        else 128 + os.WTERMSIG(status)


class Guardian:
    """Supervises one workload (``run`` mode). Create, then ``run()`` until it returns
    Sentinel's exit code.

    ``child`` is the workload already spawned by ``sentinel.spawn`` before
    this module was imported; ``original_mask`` is the signal mask Sentinel was
    given (restored in each child). ``probe`` defaults to a ``TreeProbe`` of
    Sentinel's descendants; tests pass their own, and a ``loop``/``clock`` pair
    to drive time.
    """

    def __init__(self, settings: Settings, child: Child | None, original_mask: set[int], *,
                 pid1: bool = False, subreaper: bool = False,
                 loop: asyncio.AbstractEventLoop | None = None,
                 probe: TreeProbe | None = None, version: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.loop = loop or asyncio.new_event_loop()
        # The monotonic clock of kill records and the grace deadline; the
        # loop's timers must run on the same clock (tests inject both).
        self._clock = clock
        self.original_mask = original_mask
        self.child = child
        self.pid1 = pid1
        self.state = GuardianState(
            mode=settings.mode, workload=settings.workload_name, command=settings.command,
            measure=settings.measure, limit_bytes=settings.max_rss_bytes,
            grace_period_seconds=settings.grace_period_seconds,
            interval_seconds=settings.interval_seconds, version=version, pid1=pid1,
            subreaper=subreaper)
        self.listeners: list[Listener] = []
        self.sample_listeners: list[Callable] = []  # called with each MemorySample
        # The workload shares Sentinel's cgroup in run mode (the container's):
        # its cgroup v2 figures, where there are any, are Sentinel's own cgroup's.
        self.probe = probe or TreeProbe(os.getpid(), include_root=False,
                                        measure=settings.measure, root_threads=(os.getpid(),),
                                        cgroup=CgroupProbe.for_pid("self"))
        self._rewrite = dict(settings.rewrite)
        self._tty_fd = child.tty_fd if child else None
        self._sigfd: int | None = None
        self._sample_handle: asyncio.TimerHandle | None = None
        self._grace_handle: asyncio.TimerHandle | None = None
        self._restart_handle: asyncio.TimerHandle | None = None
        self._done: asyncio.Future | None = None
        self._shutting_down = False
        self._cleanup = False  # main child gone, leftovers being stopped
        self._main_status: int | None = None
        self._prev: tuple[float, int] | None = None  # (mono, measure) of the previous sample
        self._rate = 0.0  # smoothed growth of the measure, bytes/s
        self._consecutive_failures = 0
        self._failed_samples = 0  # samples in a row with a read error (sampling health)
        self._exit_code = 0
        self._listener_errors: set[str] = set()

    # ------------------------------------------------------------------ events
    def emit(self, kind: str, message: str, level: int = logging.INFO, **fields) -> Event:
        """Log ``message``, record it in ``state.events`` and tell the listeners."""
        event = Event(kind, message, fields=fields)
        self.state.events.append(event)
        log.log(level, message, extra={"event": kind, **fields})
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception as exc:  # an exporter's bug never stops enforcement
                name = getattr(listener, "__qualname__", repr(listener))
                if name not in self._listener_errors:
                    self._listener_errors.add(name)
                    log.warning("event listener %s failed: %r (reported once)", name, exc)
        return event

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        """Run the loop until the workload is gone for good; return Sentinel's exit code."""
        try:
            return self.loop.run_until_complete(self.serve())
        finally:
            self.close()

    async def serve(self) -> int:
        self._done = self.loop.create_future()
        self.loop.set_exception_handler(self._on_loop_error)
        self._sigfd = kernel.open_signalfd(kernel.catchable_signals())
        self.loop.add_reader(self._sigfd, self._on_signalfd)
        if self.state.pid1:
            log.info("running as PID 1: reaping every orphan in this PID namespace",
                     extra={"event": "startup"})
        elif self.state.subreaper:
            log.info("not PID 1: registered as child subreaper, so orphaned descendants are "
                     "reaped here", extra={"event": "startup"})
        if self.child is not None:
            self._adopt(self.child)
        self._on_signalfd()  # anything that arrived between the spawn and now
        return await self._done

    def _on_loop_error(self, loop, context: dict) -> None:
        # A bug in a callback (ours or an exporter's) is logged on one line; the
        # loop, and with it signal forwarding, reaping and the ladder, go on.
        exc = context.get("exception")
        log.error("internal error in %s: %s", context.get("handle") or context.get("future")
                  or "the main loop", repr(exc) if exc else context.get("message"),
                  exc_info=exc if self.settings.debug else None, extra={"event": "internal_error"})

    def close(self) -> None:
        for handle in (self._sample_handle, self._grace_handle, self._restart_handle):
            if handle:
                handle.cancel()
        if self._sigfd is not None:
            try:
                self.loop.remove_reader(self._sigfd)
            except Exception:
                pass
            os.close(self._sigfd)
            self._sigfd = None
        self.probe.close()

    def _finish(self, code: int) -> None:
        if self._tty_fd is not None:
            try:
                os.tcsetpgrp(self._tty_fd, os.getpgrp())  # give the terminal back
            except OSError:
                pass
        if self._done and not self._done.done():
            self._done.set_result(code)

    # ------------------------------------------------------------------ workload
    def _adopt(self, child: Child) -> None:
        self.child = child
        self._main_status = None
        self._cleanup = False
        self._prev = None
        self._rate = 0.0
        st = self.state
        st.main_pid = child.pid
        st.started_wall = child.started_wall
        st.phase = PHASE_RUNNING
        st.current_kill = None
        st.grace_deadline_mono = None
        self.emit("spawned", f"started {' '.join(child.command)!r} as pid {child.pid}"
                  + (f" (limit {fmt_bytes(st.limit_bytes)} {st.measure})" if st.limit_bytes
                     else " (no memory limit: watching only)"),
                  pid=child.pid, command=list(child.command))
        self._schedule_sample(0.0)

    def _respawn(self) -> None:
        self._restart_handle = None
        try:
            with fdlimit.as_given():  # the workload gets the RLIMIT_NOFILE Sentinel was given
                child = spawn(self.settings.command, self.original_mask, tty_fd=self._tty_fd)
        except Exception as exc:  # SpawnError: the binary vanished; nothing left to run
            self.emit("exited", f"restart failed: {exc}", logging.ERROR)
            self._finish(getattr(exc, "exit_code", 127))
            return
        self._adopt(child)

    # ------------------------------------------------------------------ signals
    def _on_signalfd(self) -> None:
        if self._sigfd is None:
            return
        for info in kernel.read_signals(self._sigfd):
            if info.signo == signal.SIGCHLD:
                self._reap()
            else:
                self._on_signal(info)

    def _on_signal(self, info: kernel.SignalInfo) -> None:
        sig = info.signo
        target = self._rewrite.get(sig, sig)
        name = signal_name(sig)
        if sig in _SHUTDOWN_SIGNALS and not self._shutting_down:
            self._shutting_down = True
            log.info("received %s from pid %d: forwarding, no restart; exiting when the "
                     "workload is gone", name, info.pid, extra={"event": "shutdown"})
            if self._restart_handle is not None or self.child is None:
                # Waiting out a restart back-off: nothing to forward to.
                if self._restart_handle is not None:
                    self._restart_handle.cancel()
                self.state.phase = PHASE_EXITED
                self._finish(self._exit_code)
                return
            if target and self._main_status is None:
                self._record_kill(REASON_SHUTDOWN, target)
        if target == 0:
            log.debug("dropped %s (rewritten to 0)", name)
        elif self._main_status is None and self.child is not None:
            self.signal_workload(target)
            self.emit("signal_forwarded", f"forwarded {name}"
                      + (f" as {signal_name(target)}" if target != sig else "")
                      + f" to {'pid' if self.settings.single_child else 'process group'} "
                        f"{self.child.pid}", logging.DEBUG, signal=signal_name(target),
                      sender_pid=info.pid)
        if sig in _JOB_CONTROL_STOPS and not self.pid1:
            self._stop_self()
        elif sig == signal.SIGCONT and self._tty_fd is not None and self.child is not None:
            self._give_terminal()

    def _give_terminal(self) -> None:
        try:
            os.tcsetpgrp(self._tty_fd, self.child.pid)  # type: ignore[arg-type, union-attr]
        except OSError:
            pass

    def _stop_self(self) -> None:
        # Job control: the workload stopped (Ctrl-Z) or was told to; stop too,
        # so the shell that started Sentinel sees the job as stopped. `fg`
        # sends us SIGCONT, which is forwarded and gives the terminal back.
        os.kill(os.getpid(), signal.SIGSTOP)

    def signal_workload(self, sig: int) -> None:
        """Send ``sig`` to the workload: its process group, or with ``single_child`` the
        direct child only. Nothing if it is already gone."""
        if self.child is None:
            return
        try:
            if self.settings.single_child:
                os.kill(self.child.pid, sig)
            else:
                os.killpg(self.child.pid, sig)
        except ProcessLookupError:
            pass

    def _descendants(self) -> list[int]:
        """Every live descendant of Sentinel (the workload's whole tree, orphans included)."""
        out, stack, seen = [], [self.probe.root_pid], set()
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            kids = self.probe.children(pid) or []
            if pid != self.probe.root_pid or self.probe.include_root:
                out.append(pid)
            stack.extend(kids)
        return out

    def _signal_tree(self, sig: int) -> list[int]:
        """Send ``sig`` to the process group and to every descendant; return the PIDs hit."""
        if self.child is not None:
            try:
                os.killpg(self.child.pid, sig)
            except ProcessLookupError:
                pass
        hit = []
        for pid in self._descendants():
            try:
                os.kill(pid, sig)
                hit.append(pid)
            except ProcessLookupError:
                pass
        return hit

    # ------------------------------------------------------------------ reaping
    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED)
            except ChildProcessError:
                break
            if pid == 0:
                break
            is_main = self.child is not None and pid == self.child.pid
            if os.WIFSTOPPED(status):
                if is_main and self._tty_fd is not None and not self.pid1:
                    self._stop_self()
                    if self.child is not None:
                        self._give_terminal()
                        self.signal_workload(signal.SIGCONT)
                continue
            if is_main:
                self._main_exited(status)
            else:
                log.debug("reaped orphan pid %d (%s)", pid, exit_code_of(status))
        if self._cleanup and not self._descendants():
            self._cleanup_done()

    def _main_exited(self, status: int) -> None:
        st = self.state
        code = exit_code_of(status)
        self._main_status = status
        st.last_exit_code = code
        kill = st.current_kill
        if kill is not None:
            kill.exit_code = code
        if self._grace_handle:
            self._grace_handle.cancel()
            self._grace_handle = None
        how = (f"exited with code {code}" if os.WIFEXITED(status)
               else f"was killed by {signal_name(os.WTERMSIG(status))} ({code})")
        self.emit("exited", f"workload pid {self.child.pid} {how}",  # type: ignore[union-attr]
                  logging.WARNING if code else logging.INFO, pid=st.main_pid, exit_code=code)
        if kill is not None:
            st.last_kill = kill
            st.current_kill = None
            st.grace_deadline_mono = None
            self.emit("kill_finished", f"{kill.reason} stop done: {' then '.join(kill.signals)}, "
                      f"exit code {code}", logging.INFO, kill=kill.to_dict())
        self._exit_code = self._final_code(code, kill)
        if self._exit_code != code:
            log.info("exit code %d is reported as %d (%s)", code, self._exit_code,
                     "a memory kill is a failure" if code == 0 else "--success-exit-code",
                     extra={"event": "exit_code"})
        # Whatever is left of the tree gets the same ladder, bounded in time.
        self._cleanup = True
        leftovers = self._signal_tree(signal.SIGTERM)
        if leftovers:
            log.info("stopping %d leftover process(es) of the workload: %s", len(leftovers),
                     _pid_list(leftovers), extra={"event": "cleanup"})
            self._grace_handle = self.loop.call_later(
                self.settings.grace_period_seconds, self._cleanup_escalate)
        else:
            self._cleanup_done()

    def _cleanup_escalate(self) -> None:
        left = self._signal_tree(signal.SIGKILL)
        if left:
            log.warning("SIGKILL to %d leftover process(es) after the %.1fs grace period: %s",
                        len(left), self.settings.grace_period_seconds, _pid_list(left),
                        extra={"event": "cleanup"})
        self._grace_handle = self.loop.call_later(_REAP_GIVE_UP_SECONDS, self._cleanup_done)

    def _final_code(self, code: int, kill: KillRecord | None) -> int:
        if code in self.settings.success_exit_codes:
            code = 0
        if code == 0 and kill is not None and kill.reason == REASON_MEMORY:
            # A memory kill is a failure even when the workload exits cleanly.
            code = self.settings.memory_kill_exit_code
        return code

    def _cleanup_done(self) -> None:
        if not self._cleanup:
            return
        self._cleanup = False
        if self._grace_handle:
            self._grace_handle.cancel()
            self._grace_handle = None
        if self._sample_handle:
            self._sample_handle.cancel()
            self._sample_handle = None
        st = self.state
        code = self._exit_code
        ran = time.time() - (st.started_wall or time.time())
        self.child = None
        st.main_pid = None
        if self._should_restart(code):
            if ran >= max(_STABLE_RUN_SECONDS, self.settings.restart_max_delay_seconds):
                self._consecutive_failures = 0
            delay = min(self.settings.restart_max_delay_seconds,
                        self.settings.restart_delay_seconds * 2 ** self._consecutive_failures)
            self._consecutive_failures += 1
            st.restarts += 1
            st.phase = PHASE_RESTARTING
            self.emit("restart_scheduled", f"restarting in {delay:.1f}s (restart "
                      f"{st.restarts}, policy {self.settings.restart})", logging.WARNING,
                      delay_seconds=delay, restarts=st.restarts)
            self._restart_handle = self.loop.call_later(delay, self._respawn)
            return
        st.phase = PHASE_EXITED
        self._finish(code)

    def _should_restart(self, code: int) -> bool:
        s = self.settings
        if self._shutting_down or s.restart == "never":
            return False
        if s.max_restarts and self.state.restarts >= s.max_restarts:
            log.warning("not restarting: --max-restarts %d reached", s.max_restarts,
                        extra={"event": "restart_limit"})
            return False
        return s.restart == "always" or code != 0

    # ------------------------------------------------------------------ sampling
    def _schedule_sample(self, delay: float) -> None:
        if self._sample_handle:
            self._sample_handle.cancel()
        self._sample_handle = self.loop.call_later(delay, self._on_sample_timer)

    def _on_sample_timer(self) -> None:
        self._sample_handle = None
        if self.child is None:
            return
        try:
            self._take_sample()
        except Exception as exc:  # a probe bug must not end enforcement for good
            key = ("tree", type(exc).__name__)
            self.probe.errors[key] = self.probe.errors.get(key, 0) + 1
            if str(key) not in self._listener_errors:
                self._listener_errors.add(str(key))
                log.error("sampling failed: %r (counted in sentinel_probe_errors_total; "
                          "reported once)", exc, extra={"event": "probe_error"})
            self._sample_health({key: 1}, exc)
            self._schedule_sample(self.settings.interval_seconds)

    def _sample_health(self, new_errors: dict, exc: Exception | None = None) -> None:
        """Track failed samples (a read error in the walk, or an exception); after
        ``_SAMPLING_FAILING_AFTER`` in a row say so once, loudly: ``state.sampling_failing``,
        one error line and a ``sampling_failed`` event (a Warning Event); the first good
        sample after that says ``sampling_recovered``."""
        st = self.state
        if not new_errors:
            self._failed_samples = 0
            if st.sampling_failing:
                st.sampling_failing = False
                st.sampling_failure = None
                st.sampling_failing_since_wall = None
                self.emit("sampling_recovered", "sampling of the workload's memory works "
                          "again; the limit is enforced", logging.WARNING)
            return
        self._failed_samples += 1
        if st.sampling_failing or self._failed_samples < _SAMPLING_FAILING_AFTER:
            return
        what = ", ".join(f"{probe} {reason}" for probe, reason in sorted(new_errors))
        if exc is not None:
            what += f" ({exc!r})"
        hint = ("Sentinel is out of file descriptors: start it with a higher RLIMIT_NOFILE "
                "(ulimit -n, docker run --ulimit nofile=N:N)"
                if any(r in ("EMFILE", "ENFILE") for _, r in new_errors) else
                "check that Sentinel may read /proc of the workload (same user, or root)")
        soft, hard = fdlimit.limits()
        st.sampling_failing = True
        st.sampling_failure = what
        st.sampling_failing_since_wall = time.time()
        self.emit("sampling_failed", f"sampling is failing ({self._failed_samples} samples in a "
                  f"row: {what}): the memory limit may not be enforced; {hint} "
                  f"(RLIMIT_NOFILE soft {soft}, hard {hard}; counted in "
                  f"sentinel_probe_errors_total; reported once until it recovers)",
                  logging.ERROR, errors=sorted(f"{p}/{r}" for p, r in new_errors))

    def _take_sample(self) -> None:
        before = dict(self.probe.errors)
        sample = self.probe.sample()
        self._sample_health({k: n - before.get(k, 0) for k, n in self.probe.errors.items()
                             if n != before.get(k, 0)})
        st = self.state
        st.last_sample = sample
        st.sample_errors = self.probe.errors
        st.history.append((time.time(), sample.measure_bytes))
        for listener in self.sample_listeners:
            try:
                listener(sample)
            except Exception as exc:
                name = getattr(listener, "__qualname__", repr(listener))
                if name not in self._listener_errors:
                    self._listener_errors.add(name)
                    log.warning("sample listener %s failed: %r (reported once)", name, exc)
        value = sample.measure_bytes
        prev = self._prev
        self._prev = (sample.at_mono, value)
        if prev is not None and sample.at_mono > prev[0]:
            rate = (value - prev[1]) / (sample.at_mono - prev[0])
            self._rate = 0.5 * self._rate + 0.5 * rate
        limit = st.limit_bytes
        if (limit is not None and value > limit and st.enforcing and st.phase == PHASE_RUNNING
                and self._main_status is None and sample.processes):
            self._memory_kill(sample, prev)
        self._schedule_sample(self._next_interval(value, limit))

    def _next_interval(self, value: int, limit: int | None) -> float:
        """The period at rest, shortened as the measure approaches the limit.

        At the current growth rate the crossing is ``(limit - value) / rate``
        away; sampling at a third of that keeps both the reaction time and the
        overshoot small without costing anything while the workload is steady.
        """
        interval = self.settings.interval_seconds
        if limit is None or not self.state.enforcing or self._rate <= 0 or value >= limit:
            return interval
        eta = (limit - value) / self._rate
        # The floor never lifts the period above --interval itself (--interval
        # may be as short as 1 ms): the sampler never waits longer than asked.
        return max(min(_MIN_INTERVAL, interval), min(interval, eta / 3))

    # ------------------------------------------------------------------ the ladder
    def _record_kill(self, reason: str, sig: int) -> None:
        key = (reason, signal_name(sig))
        self.state.kills[key] = self.state.kills.get(key, 0) + 1

    def _memory_kill(self, sample, prev) -> None:
        st = self.state
        limit = st.limit_bytes or 0
        now = self._clock()
        crossed = sample.at_mono
        if prev is not None and sample.measure_bytes > prev[1] and prev[1] <= limit:
            # Linear interpolation between the last two samples.
            frac = (limit - prev[1]) / (sample.measure_bytes - prev[1])
            crossed = prev[0] + frac * (sample.at_mono - prev[0])
        self.emit("limit_crossed",
                  f"memory limit crossed: {st.measure} {fmt_bytes(sample.measure_bytes)} "
                  f"({sample.measure_bytes} bytes) > limit {fmt_bytes(limit)} ({limit} bytes); "
                  f"pids {', '.join(map(str, sample.pids))}",
                  logging.WARNING, measure=st.measure, value_bytes=sample.measure_bytes,
                  limit_bytes=limit, pids=list(sample.pids))
        self._start_ladder(REASON_MEMORY, sample.measure_bytes, sample.pids,
                           reaction=max(0.0, now - crossed))

    def _start_ladder(self, reason: str, value: int | None, pids, reaction=None) -> None:
        st = self.state
        grace = self.settings.grace_period_seconds
        kill = KillRecord(reason=reason, started_wall=time.time(), started_mono=self._clock(),
                          measure=st.measure, value_bytes=value, limit_bytes=st.limit_bytes,
                          pids=tuple(pids), grace_period_seconds=grace,
                          reaction_seconds=reaction)
        st.current_kill = kill
        st.phase = PHASE_TERMINATING
        st.grace_deadline_mono = self._clock() + grace
        self.signal_workload(signal.SIGTERM)
        kill.signals.append("SIGTERM")
        self._record_kill(reason, signal.SIGTERM)
        self.emit("signal_sent", f"sent SIGTERM to the workload ({reason}); SIGKILL in "
                  f"{grace:.1f}s unless it exits", logging.WARNING, signal="SIGTERM",
                  reason=reason, reaction_seconds=reaction, kill=kill.to_dict())
        self._grace_handle = self.loop.call_later(grace, self._escalate)

    def _escalate(self) -> None:
        self._grace_handle = None
        st = self.state
        kill = st.current_kill
        if kill is None or self._main_status is not None:
            return
        hit = self._signal_tree(signal.SIGKILL)
        kill.signals.append("SIGKILL")
        kill.sigkill_wall = time.time()
        self._record_kill(kill.reason, signal.SIGKILL)
        self.emit("signal_sent", f"sent SIGKILL to {len(hit)} process(es) after the "
                  f"{kill.grace_period_seconds:.1f}s grace period ({kill.reason}): "
                  f"{_pid_list(hit)}",
                  logging.WARNING, signal="SIGKILL", reason=kill.reason, pids=hit,
                  kill=kill.to_dict())

    # ------------------------------------------------------------------ commands
    # Called by the control socket from the loop. Each returns a short message
    # and raises ValueError with a user-facing reason when it cannot act.

    def _require_workload(self) -> None:
        if self.child is None or self._main_status is not None:
            raise ValueError("no workload is running")

    def _cancel_restart(self) -> str | None:
        """In a restart back-off, ``stop``/``kill`` mean: no restart, and Sentinel exits."""
        if self._restart_handle is None:
            return None
        self._restart_handle.cancel()
        self._restart_handle = None
        self._shutting_down = True
        self.state.phase = PHASE_EXITED
        self.emit("restart_cancelled", "pending restart cancelled by the operator; exiting "
                  f"with the last exit code {self._exit_code}", logging.WARNING)
        # Let the reply reach the client before the loop ends.
        self.loop.call_soon(self._finish, self._exit_code)
        return "pending restart cancelled; Sentinel exits"

    def stop(self, reason: str = REASON_OPERATOR) -> str:
        """Start the SIGTERM -> grace -> SIGKILL ladder now (an operator stop); in a
        restart back-off, cancel the restart instead."""
        cancelled = self._cancel_restart()
        if cancelled:
            return cancelled
        self._require_workload()
        if self.state.phase == PHASE_TERMINATING:
            raise ValueError("the workload is already being stopped")
        self._shutting_down = self._shutting_down or reason == REASON_OPERATOR
        sample = self.state.last_sample
        self._start_ladder(reason, sample.measure_bytes if sample else None,
                           sample.pids if sample else (self.child.pid,))  # type: ignore
        return "SIGTERM sent; SIGKILL after the grace period"

    def kill(self, reason: str = REASON_OPERATOR) -> str:
        """SIGKILL the whole workload tree now; in a restart back-off, cancel the restart."""
        cancelled = self._cancel_restart()
        if cancelled:
            return cancelled
        self._require_workload()
        self._shutting_down = True
        st = self.state
        if st.current_kill is None:
            sample = st.last_sample
            st.current_kill = KillRecord(
                reason=reason, started_wall=time.time(), started_mono=self._clock(),
                measure=st.measure, value_bytes=sample.measure_bytes if sample else None,
                limit_bytes=st.limit_bytes,
                pids=sample.pids if sample else (self.child.pid,),  # type: ignore[union-attr]
                grace_period_seconds=0.0)
            st.phase = PHASE_TERMINATING
        if self._grace_handle:
            self._grace_handle.cancel()
        self._escalate()
        return "SIGKILL sent"

    def send_signal(self, sig: int) -> str:
        """Forward one signal to the workload as if Sentinel had received it (no rewrite)."""
        self._require_workload()
        self.signal_workload(sig)
        self.emit("signal_forwarded", f"operator sent {signal_name(sig)} to the workload",
                  signal=signal_name(sig))
        return f"{signal_name(sig)} sent"

    def set_limit(self, limit_bytes: int | None) -> str:
        """Change the memory limit (``None`` removes it); the next sample applies it."""
        old = self.state.limit_bytes
        self.state.limit_bytes = limit_bytes
        self.emit("limit_changed", f"memory limit changed from {_limit_text(old)} to "
                  f"{_limit_text(limit_bytes)}", limit_bytes=limit_bytes, old_limit_bytes=old)
        if self.child is not None:
            self._schedule_sample(0.0)
        return f"limit {_limit_text(limit_bytes)}"

    def pause(self) -> str:
        """Stop enforcing the limit; sampling continues."""
        if not self.state.enforcing:
            return "enforcement already paused"
        self.state.enforcing = False
        self.emit("enforcement_paused", "enforcement paused: the limit is not applied until "
                  "'resume'", logging.WARNING)
        return "enforcement paused"

    def resume(self) -> str:
        if self.state.enforcing:
            return "enforcement already active"
        self.state.enforcing = True
        self.emit("enforcement_resumed", "enforcement resumed")
        if self.child is not None:
            self._schedule_sample(0.0)
        return "enforcement resumed"
