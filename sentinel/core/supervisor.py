"""One program's states, and which operator command fits which state.

A supervised program (``sentinel run``'s workload, ``sentinel watch``'s target)
is always in exactly one ``ProgramState``:

==================  ==========================================================
``starting``        no process yet (watch mode waiting for its target)
``running``         the main process runs; the limit is enforced
``stopped_by_signal`` the main process is stopped (SIGSTOP/SIGTSTP, state T)
``stopping``        a ladder (SIGTERM -> grace -> SIGKILL) is under way
``backing_off``     it exited and a restart is scheduled (the back-off delay)
``exited``          it exited on its own and is not restarted
``stopped``         it was stopped (operator ``stop``/``kill``, a shutdown
                    signal) and is not restarted
``given_up``        Sentinel gave up: the main process outlived its SIGKILL
                    (exit code 71), or ``--max-restarts`` was reached
==================  ==========================================================

``check(command, state)`` is the one place that says whether an operator command
(``stop``, ``kill``, ``signal``, ``limit``, ``pause``, ``resume``) fits; a command
that does not is refused with a ``StateError`` (the control socket's
``invalid_state`` reply) whose message is the one the socket has always sent.
``Supervisor`` is the program itself: it computes the state and runs the
command (what each does is documented on it); ``sentinel.core.guardian.Guardian``
runs one under the init.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shlex
import signal
import time
from collections import deque
from enum import Enum
from typing import Callable

from sentinel.config.settings import Settings, signal_name
from sentinel.core import fdlimit, kernel, sampler
from sentinel.core.alerts import AlertSettings, Rules
from sentinel.core.kernel_side import KernelSide
from sentinel.core.init import Init, exit_code_of
from sentinel.core.ladder import REAP_GIVE_UP_SECONDS as _REAP_GIVE_UP_SECONDS
from sentinel.core.ladder import Ladder, Reach, main_reap_bound
from sentinel.core.sampling_side import SamplingSide
from sentinel.core.spawn import Child, spawn
from sentinel.errors import EXIT_NOT_ENDED, StateError
from sentinel import logs
from sentinel.config.webhooks import workload_environ
from sentinel.logs import LOGGER_NAME, fmt_bytes
from sentinel.probes.tree import CgroupProbe, TreeProbe, status_field, walk_period_for
from sentinel.core.state import (
    PHASE_EXITED, PHASE_RESTARTING, PHASE_RUNNING, PHASE_TERMINATING, REASON_MEMORY,
    REASON_OPERATOR, REASON_SHUTDOWN, Event, GuardianState, KillRecord, Listener,
)


class ProgramState(str, Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPED_BY_SIGNAL = "stopped_by_signal"
    STOPPING = "stopping"
    BACKING_OFF = "backing_off"
    EXITED = "exited"
    STOPPED = "stopped"
    GIVEN_UP = "given_up"


COMMANDS = ("stop", "kill", "signal", "limit", "pause", "resume")
_ALL = frozenset(ProgramState)
_LIVE = frozenset({ProgramState.RUNNING, ProgramState.STOPPED_BY_SIGNAL})
# Which states each command fits. ``stop``/``kill`` in a back-off cancel the
# restart; ``kill`` while stopping cuts the grace period short; the limit and
# enforcement can be changed in any state (they apply to the next run too).
ALLOWED: dict[str, frozenset[ProgramState]] = {
    "stop": _LIVE | {ProgramState.BACKING_OFF},
    "kill": _LIVE | {ProgramState.STOPPING, ProgramState.BACKING_OFF},
    "signal": _LIVE | {ProgramState.STOPPING},
    "limit": _ALL,
    "pause": _ALL,
    "resume": _ALL,
}


def check(command: str, state: ProgramState) -> None:
    """Return if ``command`` fits ``state``; else raise ``StateError`` (its ``state`` and
    ``command`` set) with the reason an operator reads. Raises ``KeyError`` for a
    command that is not one of ``COMMANDS`` (a bug of the caller)."""
    if state in ALLOWED[command]:
        return
    if state is ProgramState.STOPPING:
        message = "the workload is already being stopped"
    else:
        message = "no workload is running"
    raise StateError(message, state=state.value, command=command)


def program_state(*, has_process: bool, stopping: bool, stopped_by_signal: bool,
                  restart_pending: bool, exited: bool, operator_or_shutdown: bool,
                  given_up: bool) -> ProgramState:
    """The state from the supervisor's facts: ``has_process`` (a main process that has
    not exited), ``stopping`` (a ladder under way), ``stopped_by_signal`` (state T),
    ``restart_pending`` (back-off timer set), ``exited`` (the main process exited:
    its leftovers may still be swept, or Sentinel is ending), ``operator_or_shutdown``
    (the end was asked for: no restart), ``given_up``."""
    if restart_pending:
        return ProgramState.BACKING_OFF
    if given_up:  # a main process that outlived its SIGKILL may still be there
        return ProgramState.GIVEN_UP
    if has_process:
        if stopping:
            return ProgramState.STOPPING
        return ProgramState.STOPPED_BY_SIGNAL if stopped_by_signal else ProgramState.RUNNING
    if exited:
        return ProgramState.STOPPED if operator_or_shutdown else ProgramState.EXITED
    return ProgramState.STARTING


log = logging.getLogger(LOGGER_NAME)

_SHUTDOWN_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# The growth estimate reads at most this many recent samples (of the last
# sampler.RATE_WINDOW_SECONDS): near the limit Sentinel samples every 4 ms, and a
# slope over 750 points at 250 Hz would cost more than the walk it steers.
_RATE_POINTS = 64
# This many samples in a row with a failed read (or an exception) make the
# sampling "failing": one error line, status/metrics/an Event say so.
_SAMPLING_FAILING_AFTER = 3
# Probe errors that have a fallback in the same sample (no threat to enforcement).
_FALLBACK_PROBES = frozenset({"smaps_rollup"})
# The pre-kill hook's output in the log: at most this many lines of this many characters.
_HOOK_LOG_LINES = 200
_HOOK_LOG_LINE_CHARS = 2000
# A run that lasted this long resets the restart back-off.
_STABLE_RUN_SECONDS = 10.0
# --dry-run: after a would-be kill the next one waits until the measure has stayed below
# DRY_REARM_SHARE of the limit for a whole grace period, and at least DRY_REARM_MIN_SECONDS.
# A real run would have killed once: the workload then stays down for the grace period,
# the restart back-off (1 s by default) and its start-up. A workload hovering at its
# limit or a collector's sawtooth (periods of a second or two) dips below the limit on
# every cycle but never stays below the band that long: one report per storm, not one
# per dip (each report is Events, webhooks, a termination message and a hook run).
DRY_REARM_SHARE = 0.95
DRY_REARM_MIN_SECONDS = 3.0
# The ladder's timing after SIGKILL (2 s to name survivors, max(10 s, grace) for
# the main process) lives in sentinel.core.ladder.
# /proc/<pid>/stat states (fs/proc/array.c task_state_array), for warnings. A task
# frozen by the cgroup v1 freezer shows as D.
_STATE_NAMES = {"R": "running", "S": "sleeping", "D": "uninterruptible sleep",
                "T": "stopped", "t": "tracing stop", "Z": "zombie", "X": "dead",
                "I": "idle", "P": "parked"}


def _pid_list(pids: list[int], most: int = 10) -> str:
    """``[1, 2, 3]``, or the first ``most`` and a count: 500 PIDs make no log line."""
    head = ", ".join(map(str, pids[:most]))
    return f"[{head}]" if len(pids) <= most else f"[{head}, and {len(pids) - most} more]"


def _limit_text(limit: int | None) -> str:
    return "none" if limit is None else fmt_bytes(limit)


def process_facts(pid: int, proc: str = "/proc") -> dict:
    """What the kernel says about ``pid``, for a warning about a process Sentinel could
    not stop: ``{"pid", "state", "uid", "rss_bytes"}``.

    ``state`` is the one-letter state from ``/proc/<pid>/stat`` (field 3; ``None``
    once the process is gone), ``uid`` the real UID from ``/proc/<pid>/status``
    (``Uid:``, first field: what kill(2) compares with Sentinel's UIDs), and
    ``rss_bytes`` the resident set size from ``/proc/<pid>/statm`` (field 2 x page
    size). A figure that cannot be read is ``None``; nothing is raised.
    """
    # Hand-read rather than psutil: three small files on a rare path, and run mode
    # never loads psutil (PID 1 stays small); this runs when something is wrong.
    facts: dict = {"pid": pid, "state": None, "uid": None, "rss_bytes": None}
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            facts["state"] = f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return facts
    facts["uid"] = real_uid(pid, proc)
    try:
        with open(f"{proc}/{pid}/statm", "rb") as f:
            facts["rss_bytes"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        pass
    return facts


def real_uid(pid: int, proc: str = "/proc") -> int | None:
    """The real UID of ``pid`` (``/proc/<pid>/status``, ``Uid:`` first field), or ``None``."""
    return status_field(pid, b"Uid:", proc)


def facts_text(facts: dict) -> str:
    """``pid 12 (state D uninterruptible sleep, rss 1.8 MiB, uid 0)``, for one log line."""
    state = facts.get("state")
    if state is None:
        return f"pid {facts['pid']} (gone)"
    name = _STATE_NAMES.get(state, "")
    return (f"pid {facts['pid']} (state {state}{' ' + name if name else ''}, rss "
            f"{fmt_bytes(facts.get('rss_bytes'))}, uid {facts.get('uid')})")


def _refused_text(refused: dict[int, int | None], most: int = 10) -> str:
    """``pid 12 (uid 0), pid 13 (uid 0)``, the first ``most`` and a count."""
    items = [f"pid {pid} (uid {'?' if uid is None else uid})" for pid, uid in refused.items()]
    return ", ".join(items[:most]) + (f", and {len(items) - most} more" if len(items) > most
                                      else "")


def tell_listeners(listeners: list, event: Event, failed: set[str]) -> None:
    """Call each of ``listeners`` with ``event``. A listener that raises (an exporter's
    bug) is logged once (its name kept in ``failed``) and never stops enforcement."""
    for listener in list(listeners):
        try:
            listener(event)
        except Exception as exc:
            name = getattr(listener, "__qualname__", repr(listener))
            if name not in failed:
                failed.add(name)
                log.warning("event listener %s failed: %r (reported once)", name, exc)


def as_program(method):
    """Run ``method`` with ``logs.PROGRAM`` set to the supervisor's program name when it
    is one of several (``host`` set): its log lines, and those of every timer and
    reader it schedules meanwhile (asyncio copies the context), name the program."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.host is None:
            return method(self, *args, **kwargs)
        token = logs.PROGRAM.set(self.state.program)
        try:
            return method(self, *args, **kwargs)
        finally:
            logs.PROGRAM.reset(token)
    return wrapper


class Supervisor:
    """One program's lifecycle: its state machine (``program_state``), the memory
    check on each sample (the probe, ``sentinel.core.sampler`` for the cadence), the
    ladder of each stop (``sentinel.core.ladder``), restarts with back-off, and the
    operator's commands (``stop``, ``kill``, ``send_signal``, ``set_limit``, ``pause``,
    ``resume``: each returns a short text, or raises ``StateError`` when it does not
    fit the state). ``Guardian`` (``sentinel.core.guardian``) runs it under an
    ``Init`` on one loop.

    ``child`` is the workload already spawned by ``sentinel.core.spawn``;
    ``original_mask`` is the signal mask Sentinel was given (restored in each
    child). ``probe`` defaults to a ``TreeProbe`` of Sentinel's descendants; tests
    pass their own, and a ``loop``/``clock`` pair to drive time. ``source`` (watch
    mode's ``WatchSource``) provides a workload Sentinel did not spawn.
    ``launcher()`` (several programs: ``sentinel.core.group``) starts the program
    again and returns its ``Child`` (raises ``SpawnError``); default: ``spawn`` of
    ``settings.command``. ``host`` (a ``Group``) hears of the program's end for good
    (``host.program_ended(self, code)``) instead of Sentinel ending.
    """

    def __init__(self, settings: Settings, child: Child | None, original_mask: set[int], *,
                 pid1: bool = False, subreaper: bool = False,
                 loop: asyncio.AbstractEventLoop | None = None,
                 probe: TreeProbe | None = None, version: str = "",
                 clock: Callable[[], float] = time.monotonic, source=None,
                 launcher: Callable[[], Child] | None = None, host=None) -> None:
        self.settings = settings
        self.host = host
        self.launcher = launcher
        self.ended = False  # its run ended for good (restarts included): _finish was called
        self.sample_delay = 0.0  # the delay the next sample was scheduled with, seconds
        self.loop = loop or asyncio.new_event_loop()
        # The monotonic clock of kill records and the grace deadline; the
        # loop's timers must run on the same clock (tests inject both).
        self._clock = clock
        self.original_mask = original_mask
        self.child = child
        # Restarts start where the first run started (Sentinel itself moved to /).
        self._workload_cwd = child.cwd if child is not None else None
        self.pid1 = pid1
        self.state = GuardianState(
            mode=settings.mode, workload=settings.workload_name, command=settings.command,
            measure=settings.measure, limit_bytes=settings.max_rss_bytes,
            grace_period_seconds=settings.grace_period_seconds,
            interval_seconds=settings.interval_seconds, version=version, pid1=pid1,
            subreaper=subreaper, program=settings.workload_name)
        self.state.dry_run = bool(getattr(settings, "dry_run", False))
        # The pre-kill hook of the kill under way (sentinel.core.hook), one at a time.
        self._hook = None
        # --dry-run: a would-be kill ended with the workload still running; the next one
        # waits until the measure stayed below the band for a while (_dry_rearm).
        self._dry_armed = True
        self._dry_calm_since: float | None = None  # since when below the band, kill over
        self.listeners: list[Listener] = []
        self.sample_listeners: list[Callable] = []  # called with each MemorySample
        # After the workload is gone for good (``serve()`` has its exit code),
        # ``run()`` awaits ``linger(code)`` on the same loop before closing, so
        # signals are still read and orphans reaped (sentinel.app sets it); a
        # signal other than SIGCHLD that arrives then goes to these listeners.
        self.linger: Callable | None = None
        # The init that routes this program's reaped statuses here (Guardian sets it).
        self.init: Init | None = None
        self.late_signal_listeners: list[Callable] = []  # called with a kernel.SignalInfo
        # The workload shares Sentinel's cgroup in run mode (the container's):
        # its cgroup v2 figures, where there are any, are Sentinel's own cgroup's.
        self.probe = probe or TreeProbe(os.getpid(), include_root=False,
                                        measure=settings.measure, root_threads=(os.getpid(),),
                                        smaps_min_period=settings.interval_seconds,
                                        walk_period=walk_period_for(settings.measure),
                                        cgroup=CgroupProbe.for_pid(
                                            "self", cgroup_root=settings.cgroup_root),
                                        root_filter=self._not_helper)
        self._tty_fd = child.tty_fd if child else None
        self._sample_handle: asyncio.TimerHandle | None = None
        self._restarts_exhausted = False  # --max-restarts reached: given up
        self._ladder: Ladder | None = None  # the workload's current (or last) stop
        self._cleanup_ladder: Ladder | None = None  # the leftover sweep after its exit
        # Called with the PIDs the ladder's SIGKILL reached, right after it was sent:
        # where process_mrelease(2) will free their memory without waiting for the exit.
        self.sigkill_listeners: list[Callable[[list[int]], None]] = []
        self._restart_handle: asyncio.TimerHandle | None = None
        self._done: asyncio.Future | None = None
        self._shutting_down = False
        self._cleanup = False  # main child gone, leftovers being stopped
        self._main_status: int | None = None
        self._prev: tuple[float, int] | None = None  # (mono, measure) of the previous sample
        # (mono, measure) of this run's recent samples, for sampler.growth_rate
        self._recent: deque[tuple[float, int]] = deque(maxlen=_RATE_POINTS)
        # Issue 11's warning, leak and prediction rules, fed on each sample.
        self.alerts = Rules(AlertSettings.of(settings), settings.measure)
        self._consecutive_failures = 0
        self._failed_samples = 0  # samples in a row with a read error (sampling health)
        self._exit_code = 0
        self._listener_errors: set[str] = set()
        # Processes that refused the signal being sent (EPERM), pid -> real UID: filled by
        # _signal_tree, emptied by the ladder step that reads it.
        self._refusals: dict[int, int | None] = {}
        self._cleanup_refused: dict[int, int | None] = {}  # the leftover sweep's refusals
        self._group_reached = False  # the last _signal_tree's killpg reached a process
        self._ending_kill: KillRecord | None = None  # a kill whose leftovers are being swept
        # Where the workload comes from when Sentinel did not spawn it (watch mode's
        # WatchSource): it attaches it with begin_run/end_run, answers the signals
        # Sentinel receives (on_signal), and sends signals to the tree (send).
        self.source = source
        # Kernel wake-ups, the auto limit's re-read, the shared-pages check (issue 9).
        self.sampling_side = SamplingSide(self)
        if source is not None:
            source.bind(self)
        # The kernel's side of a kill: oom_kill told apart, racing the hard limit,
        # process_mrelease after SIGKILL, oom_score_adj (sentinel.core.kernel_side).
        self.kernel_side = KernelSide(self)
        self.sigkill_listeners.append(self.kernel_side.after_sigkill)

    def _not_helper(self, pid: int) -> bool:
        """The probe's root filter: a pre-kill hook (``Init.helpers``) is not the
        workload's, and never counts in its memory."""
        return self.init is None or pid not in self.init.helpers

    # ------------------------------------------------------------------ events
    def emit(self, kind: str, message: str, level: int = logging.INFO, **fields) -> Event:
        """Log ``message``, record it in ``state.events`` and tell the listeners."""
        event = Event(kind, message, fields=fields, program=self.state.program)
        self.state.events.append(event)
        extra = {"event": kind, **fields}
        if self.host is not None:
            extra["program"] = self.state.program
        log.log(level, message, extra=extra)
        tell_listeners(self.listeners, event, self._listener_errors)
        return event

    def close(self) -> None:
        for handle in (self._sample_handle, self._restart_handle):
            if handle:
                handle.cancel()
        for ladder in (self._ladder, self._cleanup_ladder):
            if ladder is not None:
                ladder.cancel()
        if self.source is not None:
            self.source.close()
        self.sampling_side.close()
        self.sampling_side.close_ebpf()
        self.kernel_side.hook("close")
        if self._hook is not None:
            self._hook.close()
        self.probe.close()

    @property
    def finished(self) -> bool:
        """The workload is gone for good: ``run()`` has its exit code."""
        return self._done is not None and self._done.done()

    def finish(self, code: int) -> None:
        """End ``serve()`` with Sentinel's exit ``code`` (a source's SIGTERM, say)."""
        self._finish(code)

    def _finish(self, code: int) -> None:
        if self.host is not None:  # one of several programs: the group decides what follows
            if not self.ended:
                self.ended = True
                self.host.program_ended(self, code)
            return
        if self.init is not None:
            self.init.finish()  # the terminal goes back; later signals go to the linger
        if self._done and not self._done.done():
            self._done.set_result(code)

    # ------------------------------------------------------------------ workload
    def _adopt(self, child: Child) -> None:
        self.begin_run(child)
        st = self.state
        self.emit("spawned", f"started {' '.join(child.command)!r} as pid {child.pid}"
                  + (f" (limit {fmt_bytes(st.limit_bytes)} {st.measure})" if st.limit_bytes
                     else " (no memory limit: watching only)")
                  + ("; DRY RUN: memory kills are reported, no signal is sent"
                     if st.dry_run else ""),
                  pid=child.pid, command=list(child.command),
                  **({"dry_run": True} if st.dry_run else {}))
        self.sample_now()

    def begin_run(self, child: Child, probe: TreeProbe | None = None) -> None:
        """Take ``child`` as the workload from now on (spawned, or found by a source
        such as watch mode's): its PID, start time and phase ``running`` in ``state``,
        a fresh growth history, no kill under way. ``probe`` replaces the memory probe
        (the old one is closed). The caller reports it and schedules the first sample
        (``sample_now``)."""
        if probe is not None:
            old, self.probe = self.probe, probe
            old.close()
        self.child = child
        self._main_status = None
        self._cleanup = False
        self._prev = None
        self._recent.clear()
        self._publish_alerts(self.alerts.reset("a new run of the program started"))
        self._ladder = None
        self._dry_armed = True
        self._dry_calm_since = None
        st = self.state
        st.main_pid = child.pid
        st.started_wall = child.started_wall
        st.phase = PHASE_RUNNING
        st.current_kill = None
        st.grace_deadline_mono = None
        self.sampling_side.on_run()
        self.kernel_side.hook("new_run", child.pid)

    def end_run(self) -> None:
        """The workload is gone without a status of Sentinel's (watch mode's target):
        stop its ladder and sampling, forget it. ``state.current_kill`` is left to
        the caller, which reports how the stop ended."""
        for ladder in (self._ladder, self._cleanup_ladder):
            if ladder is not None:
                ladder.main_exited()
        self._ladder = self._cleanup_ladder = None
        self.kernel_side.hook("close")  # pidfds closed, memory.high restored
        if self._sample_handle:
            self._sample_handle.cancel()
            self._sample_handle = None
        self.child = None
        self._prev = None
        self._recent.clear()
        self.state.main_pid = None

    def sample_now(self, reason: str = "") -> None:
        """Cancel the pending sampling tick and sample at once (on the loop). The entry
        point for wake-ups that should not wait for the tick: a limit change,
        ``resume``, the start of a run; later the kernel's cgroup ``memory.events``/PSI
        notifications. ``reason`` is for the debug log."""
        if reason:
            log.debug("sampling now: %s", reason)
        self._schedule_sample(0.0)

    @as_program
    def start(self) -> None:
        """Start the program afresh (several programs: its first start, ``start NAME``,
        ``restart NAME``, a reload): a new restart budget, then ``launcher()``. A
        spawn that fails ends the program (``host.program_ended`` with 127/126)."""
        self.ended = False
        self._shutting_down = False
        self._restarts_exhausted = False
        self._consecutive_failures = 0
        self._exit_code = 0
        self.state.phase = PHASE_RUNNING
        self._respawn(first=True)

    @as_program
    def shutdown(self) -> None:
        """Sentinel is ending (several programs, in reverse start order): no restart; a
        restart back-off is cancelled, a live program gets the ladder (its stop signal,
        its grace period, SIGKILL), one already being stopped finishes its ladder. The
        end comes as ``host.program_ended``; nothing happens for an ended program."""
        if self.ended:
            return
        self._end_dry_kill("Sentinel is shutting down; the shutdown is real")
        self.no_restart()
        state = self.program_state
        if state in _LIVE:
            sample = self.state.last_sample
            self._start_ladder(REASON_SHUTDOWN, sample.measure_bytes if sample else None,
                               sample.pids if sample else (self.child.pid,))  # type: ignore
        elif state is not ProgramState.STOPPING and not self._cleanup:
            # Nothing to stop (no process, no sweep under way): it ends now.
            self.loop.call_soon(self._finish, self._exit_code)
        # stopping, or its leftovers being swept: its end follows by itself

    @as_program
    def no_restart(self) -> None:
        """From now on the program is not restarted (Sentinel is ending, or a reload
        replaces it): a pending restart back-off is cancelled and the program ends
        (``host.program_ended``, on the loop) with its last exit code."""
        self._shutting_down = True
        if self._restart_handle is not None:
            self._restart_handle.cancel()
            self._restart_handle = None
            self.state.phase = PHASE_EXITED
            self.loop.call_soon(self._finish, self._exit_code)

    def _respawn(self, first: bool = False) -> None:
        self._restart_handle = None
        try:
            with fdlimit.as_given():  # the workload gets the RLIMIT_NOFILE Sentinel was given
                if self.launcher is not None:
                    child = self.launcher()
                else:
                    child = spawn(self.settings.command, self.original_mask,
                                  tty_fd=self._tty_fd, cwd=self._workload_cwd,
                                  environ=workload_environ(getattr(self.settings,
                                                                   "webhooks", ())))
        except Exception as exc:  # SpawnError: the binary vanished; nothing left to run
            self.emit("exited", f"{'start' if first else 'restart'} failed: {exc}",
                      logging.ERROR)
            self.state.phase = PHASE_EXITED
            self._exit_code = getattr(exc, "exit_code", 127)
            self._finish(self._exit_code)
            return
        self._adopt(child)

    # ------------------------------------------------------------------ signals
    # ------------------------------------------------------------------ the init's reports
    @property
    def main_pid(self) -> int | None:
        """The live main process (whose statuses the init routes here), or ``None``."""
        return self.child.pid if self.child is not None and self._main_status is None \
            else None

    def on_signal(self, info: kernel.SignalInfo, target: int) -> bool:
        """A signal Sentinel received, ``target`` the one to forward (``Init.target_of``:
        rewritten; 0 drops it). SIGTERM/SIGINT are the shutdown: no restart, forwarded
        as a ladder without escalation. False when Sentinel is ending at once (nothing
        to forward to: a restart back-off), so the init does no job control."""
        if self.source is not None:
            return self.source.on_signal(info, target)
        sig = info.signo
        name = signal_name(sig)
        if sig in _SHUTDOWN_SIGNALS and self.state.shutdown_signal is None:
            self.state.shutdown_signal = name  # the runtime is stopping us: no linger after this
        elif sig in _SHUTDOWN_SIGNALS and self._main_status is None and self.child is not None:
            log.info("received %s from pid %d again: forwarding; still waiting for the workload "
                     "to exit (it decides how long; the runtime's SIGKILL or 'sentinel kill' "
                     "ends it)", name, info.pid, extra={"event": "shutdown"})
        if sig in _SHUTDOWN_SIGNALS and not self._shutting_down:
            self._end_dry_kill(f"Sentinel received {name}; the shutdown is real")
            self._shutting_down = True
            log.info("received %s from pid %d: forwarding, no restart; exiting when the "
                     "workload is gone", name, info.pid, extra={"event": "shutdown"})
            if self._restart_handle is not None or self.child is None:
                # Waiting out a restart back-off: nothing to forward to.
                if self._restart_handle is not None:
                    self._restart_handle.cancel()
                self.state.phase = PHASE_EXITED
                self._finish(self._exit_code)
                return False
            if target and self._main_status is None:
                self._record_kill(REASON_SHUTDOWN, target)
        if target == 0:
            log.debug("dropped %s (rewritten to 0)", name)
        elif self._main_status is None and self.child is not None:
            if target == signal.SIGKILL:  # a rewrite to SIGKILL: Sentinel's, not the kernel's
                self.kernel_side.hook("note_sigkill")
            if sig in _SHUTDOWN_SIGNALS:
                # The shutdown is a ladder without escalation: the signal received, then
                # SIGCONT (a stopped workload runs its handler); no SIGKILL from Sentinel:
                # the runtime's own timeout (terminationGracePeriodSeconds) bounds it.
                Ladder(self._forward, self.loop, clock=self._clock, grace_period_seconds=0.0,
                       term_signal=target, escalate=False).start()
            else:
                self.signal_workload(target)
            self.emit("signal_forwarded", f"forwarded {name}"
                      + (f" as {signal_name(target)}" if target != sig else "")
                      + f" to {'pid' if self.settings.single_child else 'process group'} "
                        f"{self.child.pid}", logging.DEBUG, signal=signal_name(target),
                      sender_pid=info.pid)
        return True

    def _forward(self, sig: int) -> Reach:
        """The shutdown ladder's signaller: ``signal_workload``, SIGCONT as after a SIGTERM."""
        if sig == signal.SIGCONT:
            self._continue_after_term()
        else:
            self.signal_workload(sig)
        return Reach()

    def signal_workload(self, sig: int) -> None:
        """Send ``sig`` to the workload: its process group, or with ``single_child`` the
        direct child only. Nothing if it is already gone."""
        if self.child is None:
            return
        if self.source is not None and self.source.signals_tree:
            # No process group of Sentinel's making: the whole tree. Refusals are
            # named as signal_refused (a ladder names its own).
            self._refusals = {}
            self._signal_tree(sig)
            if self._refusals and self.state.current_kill is None:
                self._note_refusals(None, sig, self._refusals, {})
            return
        try:
            if self.settings.single_child:
                os.kill(self.child.pid, sig)
            else:
                os.killpg(self.child.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            # EPERM: the child (for killpg: every member of the group) runs as another
            # user, e.g. a setuid program. Never an internal error; during a ladder the
            # ladder names each refusing process itself.
            log.log(logging.DEBUG if self.state.current_kill else logging.WARNING,
                    "cannot send %s to the workload (%s %d): permission denied: it runs as "
                    "another user than Sentinel (uid %d); run Sentinel as that user or as root",
                    signal_name(sig), "pid" if self.settings.single_child else "process group",
                    self.child.pid, os.getuid(), extra={"event": "signal_refused"})

    def _continue_after_term(self, tree: bool = False) -> None:
        """SIGCONT right after a SIGTERM, as systemd does: a stopped process (state T)
        runs its SIGTERM handler now instead of sitting stopped until SIGKILL. To the
        workload (its process group, or the direct child with ``single_child``); with
        ``tree`` to every descendant too. Failures are not reported: the SIGTERM
        before it is the step that counts, and names who refused it."""
        if self.child is None:
            return
        if self.source is not None and self.source.signals_tree:
            self._signal_tree(signal.SIGCONT)  # where the SIGTERM went: the whole tree
            return
        try:
            if self.settings.single_child and not tree:
                os.kill(self.child.pid, signal.SIGCONT)
            else:
                os.killpg(self.child.pid, signal.SIGCONT)
        except OSError:
            pass
        for pid in self._descendants() if tree else ():
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
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
        """Send ``sig`` to the process group and to every descendant; return the PIDs hit.

        A process that refuses (EPERM: it runs as another user, e.g. setuid) is added
        to ``_refusals`` (pid -> real UID) instead; every other one still gets ``sig``.
        ``_group_reached`` says whether the killpg reached any member of the group.
        The walk can miss processes (a ``children`` file that cannot be opened:
        EMFILE), so a live main process it did not find is signalled by its PID (it
        is Sentinel's unreaped child: the PID is still its own) and counted.
        """
        self._group_reached = False
        if self.source is not None and self.source.signals_tree:
            return self._send_each(self._descendants(), sig) if self.child is not None else []
        if self.child is not None:
            try:
                os.killpg(self.child.pid, sig)
                self._group_reached = True
            except (ProcessLookupError, PermissionError):  # EPERM: each is named below
                pass
        pids = self._descendants()
        main = self.child.pid if self.child is not None and self._main_status is None else None
        if main is not None and main not in pids:
            pids.append(main)
        return self._send_each(pids, sig, os.kill)

    def _term_reach(self) -> tuple[list[int], dict[int, int | None]]:
        """Who ``signal_workload`` reaches: ``(pids, refused)``. The direct child with
        ``single_child``, else the members of the workload's process group (its ID is
        the child's PID) found in the tree; ``refused`` (pid -> real UID) are those for
        which kill(pid, 0) gives EPERM. Read before the signal is sent, so a process
        that exits at once still counts as reached."""
        if self.child is None:
            return [], {}
        if self.source is not None and self.source.signals_tree:
            return self._reachable(self._descendants())  # the ladder's SIGTERM: the tree
        if self.settings.single_child:
            members = [self.child.pid]
        else:
            members = []
            for pid in self._descendants():
                try:
                    if os.getpgid(pid) == self.child.pid:
                        members.append(pid)
                except OSError:
                    pass
            # The main process leads the group (a session leader cannot leave it); a
            # walk that missed it (EMFILE) must not make the killpg's SIGTERM unclaimed.
            if self._main_status is None and self.child.pid not in members:
                members.append(self.child.pid)
        return self._reachable(members)

    def _send_each(self, pids: list[int], sig: int, send=None) -> list[int]:
        """``send(pid, sig)`` (default ``source.send``) to each of ``pids``; the PIDs hit;
        a gone one is skipped, EPERM goes into ``_refusals``."""
        send = send or self.source.send
        hit = []
        for pid in pids:
            try:
                send(pid, sig)
                hit.append(pid)
            except ProcessLookupError:
                pass
            except PermissionError:
                self._refusals[pid] = real_uid(pid)
        return hit

    @staticmethod
    def _reachable(pids) -> tuple[list[int], dict[int, int | None]]:
        """Split ``pids`` by kill(pid, 0): ``(reached, refused)``, refused = EPERM (pid ->
        real UID); gone ones are in neither."""
        reached, refused = [], {}
        for pid in pids:
            try:
                os.kill(pid, 0)
                reached.append(pid)
            except ProcessLookupError:
                pass
            except PermissionError:
                refused[pid] = real_uid(pid)
        return reached, refused

    def _note_refusals(self, kill: KillRecord | None, sig: int,
                       refused: dict[int, int | None], seen: dict[int, int | None]) -> None:
        """One warning line for the processes of ``refused`` not already in ``seen``
        (then added to it), and into ``kill.refused``."""
        new = {pid: uid for pid, uid in refused.items() if pid not in seen}
        seen.update(refused)
        if kill is not None:
            kill.refused.update(refused)
        if not new:
            return
        self.emit("signal_refused",
                  f"cannot send {signal_name(sig)} to {len(new)} process(es) of the workload: "
                  f"{_refused_text(new)}: permission denied (another user than Sentinel's uid "
                  f"{os.getuid()}, e.g. a setuid program); Sentinel does not stop them. Fix: "
                  "run Sentinel as root (or with CAP_KILL), or keep the workload from "
                  "changing its real UID", logging.WARNING, signal=signal_name(sig),
                  refused=[{"pid": p, "uid": u} for p, u in new.items()])

    def _all_refused(self, refused: dict) -> bool:
        """True when every live process of the tree refuses Sentinel's signals."""
        left = self._descendants()
        return bool(left) and all(pid in refused for pid in left)

    # ------------------------------------------------------------------ reaping
    def _reap(self) -> None:
        """Reap what is pending (``Init.reap``): statuses of the main process come back
        as ``child_exited``/``child_stopped``, then ``after_reap``."""
        if self.init is not None:
            self.init.reap()

    @as_program
    def after_reap(self) -> None:
        """After each reaping pass: the leftover sweep is over once every process left
        refuses Sentinel's signals (or none is left)."""
        if self._cleanup and all(p in self._cleanup_refused for p in self._descendants()):
            self._cleanup_done()

    @as_program
    def child_stopped(self, sig: int | None) -> None:
        """The init's report that the main process was stopped by ``sig`` (a ``waitpid``
        WUNTRACED status, state T), or continued (``None``, WCONTINUED): recorded in
        ``state.stopped``/``stop_signal`` and reported once per change."""
        st = self.state
        was = st.stop_signal
        st.stopped = sig is not None
        st.stop_signal = signal_name(sig) if sig is not None else None
        if sig is not None and was is None:
            self.emit("stopped", f"workload pid {st.main_pid} stopped by {st.stop_signal} "
                      "(state T); it runs again on SIGCONT", logging.WARNING,
                      pid=st.main_pid, signal=st.stop_signal)
        elif sig is None and was is not None:
            self.emit("continued", f"workload pid {st.main_pid} continued", pid=st.main_pid)

    @as_program
    def child_exited(self, status: int) -> None:
        """The init's report that the main process was reaped with ``status`` (a raw
        ``waitpid`` status): record its exit code, end its ladder, sweep its
        leftovers, then restart it or finish with Sentinel's exit code."""
        st = self.state
        code = exit_code_of(status)
        self._main_status = status
        st.stopped, st.stop_signal = False, None
        st.last_exit_code = code
        kill = st.current_kill
        if kill is not None:
            kill.exit_code = code
        if self._ladder is not None:
            self._ladder.main_exited()
        if self._hook is not None and not self._hook.ended:  # nothing left to take evidence of
            self._hook.abort(f"killed: the workload (pid {self.child.pid}) exited first")
        how = (f"exited with code {code}" if os.WIFEXITED(status)
               else f"was killed by {signal_name(os.WTERMSIG(status))} ({code})")
        self.emit("exited", f"workload pid {self.child.pid} {how}",  # type: ignore[union-attr]
                  logging.WARNING if code else logging.INFO, pid=st.main_pid, exit_code=code)
        if kill is not None:
            st.last_kill = kill
            st.current_kill = None
            st.grace_deadline_mono = None
        self._publish_alerts(self.alerts.reset("the workload exited"))
        # The kernel's OOM killer, not Sentinel? (a SIGKILL Sentinel did not send while
        # oom_kill rose): recorded as a kernel_oom kill, announced at ERROR.
        self.kernel_side.hook("main_died", status,
                              self._ladder is not None and self._ladder.sigkill_sent
                              and not (kill is not None and kill.dry_run))
        # kill_finished waits for the leftover sweep: the stop is over when the tree is.
        self._ending_kill = kill
        self._exit_code = self._final_code(code, kill)
        if self._exit_code != code:
            # Which rule changed the code: the memory-kill rule whenever it applied (it
            # runs after --success-exit-code, e.g. 143 -> 0 -> 137), else the mapping.
            mapped = self._final_code(code, None)
            if self._exit_code != mapped:
                why = ("a memory kill is a failure" + (f", although --success-exit-code maps "
                       f"{code} to 0" if mapped != code else "")
                       + "; --memory-kill-exit-code sets the code")
            else:
                why = f"--success-exit-code {code}"
            log.info("exit code %d is reported as %d (%s)", code, self._exit_code, why,
                     extra={"event": "exit_code"})
        # Whatever is left of the tree gets the same ladder, bounded in time.
        self._cleanup = True
        self._cleanup_refused = dict(kill.refused) if kill is not None else {}
        self._cleanup_ladder = Ladder(
            self._cleanup_signal, self.loop, clock=self._clock,
            grace_period_seconds=self.settings.grace_period_seconds,
            on_step=self._cleanup_step, on_sigkill=self.after_sigkill,
            before_check=self._reap, on_given_up=lambda waited: self._cleanup_done())
        if not self._cleanup_ladder.start().reached:
            self._cleanup_done()

    def _cleanup_signal(self, sig: int) -> Reach:
        """The leftover sweep's signaller: the whole tree (the main process is gone)."""
        if sig == signal.SIGCONT:
            self._continue_after_term(tree=True)  # a stopped leftover runs its handler
            return Reach()
        self._refusals = {}
        hit = self._signal_tree(sig)
        return Reach(hit, dict(self._refusals))

    def _cleanup_step(self, sig: int, reach: Reach) -> None:
        self._note_refusals(self._ending_kill, sig, reach.refused, self._cleanup_refused)
        if not reach.reached:
            return
        if sig == signal.SIGKILL:
            log.warning("SIGKILL to %d leftover process(es) after the %.1fs grace period: %s",
                        len(reach.reached), self.settings.grace_period_seconds,
                        _pid_list(reach.reached), extra={"event": "cleanup"})
        else:
            log.info("stopping %d leftover process(es) of the workload: %s",
                     len(reach.reached), _pid_list(reach.reached), extra={"event": "cleanup"})

    def _survivors(self, refused: dict, after: str) -> list[dict]:
        """``process_facts`` of every live process of the tree, with one warning line
        naming them (``after``: what they outlived); ``[]`` when the tree is gone."""
        survivors = [process_facts(pid) for pid in self._descendants()]
        survivors = [f for f in survivors if f["state"] is not None]
        if not survivors:
            return []
        stuck = [f for f in survivors if f["pid"] not in refused]
        log.warning("%d process(es) of the workload still there %s: %s%s",
                    len(survivors), after,
                    ", ".join(facts_text(f) + (", permission denied" if f["pid"] in refused
                                               else "") for f in survivors[:10])
                    + (f", and {len(survivors) - 10} more" if len(survivors) > 10 else ""),
                    "; state D is uninterruptible sleep or a frozen cgroup (freezer.state "
                    "FROZEN): SIGKILL takes effect only once the kernel lets the process run"
                    if any(f["state"] == "D" for f in stuck) else "",
                    extra={"event": "survivors", "survivors": survivors})
        return survivors

    def _kill_summary(self, kill: KillRecord) -> str:
        """The ``kill_finished`` line: which signals reached the workload, its exit code,
        and whether its end was confirmed (no process of the tree left)."""
        how = " then ".join(kill.signals) if kill.signals else "no signal reached it"
        if kill.dry_run:
            how = "dry run, nothing sent" + (f" (would have sent {how})" if kill.signals
                                             else "")
        code = ("exit status unknown (still running)" if kill.exit_code is None
                else f"exit code {kill.exit_code}")
        if kill.exit_code is not None and self._exit_code != kill.exit_code \
                and self.settings.mode == "run":
            code += f" (Sentinel reports {self._exit_code})"  # --memory-kill-exit-code etc.
        if kill.confirmed is False:
            text = (f"{kill.reason} stop not confirmed: {how}, {code}; still there: "
                    + _pid_list([f["pid"] for f in kill.survivors]))
        else:
            text = f"{kill.reason} stop done: {how}, {code}"
        if kill.refused:
            text += f"; refused by {_refused_text(kill.refused)}: permission denied"
        return text

    def _final_code(self, code: int, kill: KillRecord | None) -> int:
        if code in self.settings.success_exit_codes:
            code = 0
        if code == 0 and kill is not None and kill.reason == REASON_MEMORY \
                and not kill.dry_run:  # a dry run killed nothing: the exit is the workload's
            # A memory kill is a failure even when the workload exits cleanly.
            code = self.settings.memory_kill_exit_code
        return code

    def _cleanup_done(self) -> None:
        if not self._cleanup:
            return
        self._cleanup = False
        if self._cleanup_ladder is not None:
            self._cleanup_ladder.main_exited()  # over: no further step
            self._cleanup_ladder = None
        if self._sample_handle:
            self._sample_handle.cancel()
            self._sample_handle = None
        kill, self._ending_kill = self._ending_kill, None
        survivors = self._survivors(self._cleanup_refused, "after the leftover sweep; Sentinel "
                                    "no longer waits for them")
        if kill is not None:
            kill.confirmed = not survivors
            kill.survivors = survivors
            self.emit("kill_finished", self._kill_summary(kill),
                      logging.WARNING if survivors else logging.INFO, kill=kill.to_dict())
        st = self.state
        code = self._exit_code
        ran = time.time() - (st.started_wall or time.time())
        self.child = None
        st.main_pid = None
        if ran >= max(_STABLE_RUN_SECONDS, self.settings.restart_max_delay_seconds):
            self._consecutive_failures = 0  # a stable run: the back-off and budget start again
        if self._should_restart(code):
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
        wanted = s.restart == "always" or code != 0
        # The budget counts restarts in a row, each after a run shorter than the stable
        # run (max(10 s, the back-off cap)): a crash loop gives up, as supervisord's
        # startretries does, and a program that crashes once a day never does.
        if wanted and s.max_restarts and self._consecutive_failures >= s.max_restarts:
            self._restarts_exhausted = True
            self.emit("gave_up", f"not restarting: {s.max_restarts} restarts in a row without "
                      f"a stable run (--max-restarts {s.max_restarts}); giving up",
                      logging.ERROR, restarts=self.state.restarts)
            return False
        return wanted

    # ------------------------------------------------------------------ sampling
    def _schedule_sample(self, delay: float) -> None:
        if self._sample_handle:
            self._sample_handle.cancel()
        self.sample_delay = delay
        self._sample_handle = self.loop.call_later(delay, self._on_sample_timer)

    def sample_due_in(self) -> float | None:
        """Seconds until the next scheduled sample (``None``: none scheduled, or no
        process), for the group's alignment of idle samples (``Group.piggyback``)."""
        if self._sample_handle is None or self.child is None:
            return None
        return self._sample_handle.when() - self.loop.time()

    @as_program
    def sample_early(self) -> None:
        """Take the scheduled sample now (cancelling its timer); nothing if none is
        scheduled any more (it was taken meanwhile, or the program ended)."""
        if self._sample_handle is None:
            return
        self._sample_handle.cancel()
        self._on_sample_timer(piggyback=False)

    @as_program
    def _on_sample_timer(self, piggyback: bool = True) -> None:
        self._sample_handle = None
        if self.child is None:
            return
        if piggyback and self.host is not None:
            # Several programs: the ones whose idle sample is nearly due take it on this
            # wake-up too (one wake-up and one cgroup read for all, not one each).
            self.loop.call_soon(self.host.piggyback, self)
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
        # An unreadable smaps_rollup (PSS/USS of a setuid child) is counted as a
        # probe error but is no failure: that process counts with its RSS, an
        # upper bound, so the limit is still enforced.
        self._sample_health({k: n - before.get(k, 0) for k, n in self.probe.errors.items()
                             if n != before.get(k, 0) and k[0] not in _FALLBACK_PROBES})
        st = self.state
        st.last_sample = sample
        st.sample_errors = self.probe.errors
        st.history.append((time.time(), sample.measure_bytes))
        self.sampling_side.on_sample(sample)  # may change the limit (auto), warn (shared)
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
        self._recent.append((sample.at_mono, value))
        self._observe_alerts(sample.at_mono, value)  # before the kill: warn first
        self.kernel_side.hook("on_sample", sample)
        if st.phase == PHASE_TERMINATING and self._main_status is None and st.current_kill:
            # The working set's own growth (kept by the kernel side), not the measure's.
            self.kernel_side.hook("check_early_sigkill", sample, self._ladder)
        limit = st.limit_bytes
        if not self._dry_armed:
            self._dry_rearm(sample.at_mono, value, limit)
        if (limit is not None and value > limit and st.enforcing and st.phase == PHASE_RUNNING
                and self._main_status is None and sample.processes and self._dry_armed):
            if getattr(self.probe, "smaps_estimated", False):
                # PSS/USS between two smaps reads is an estimate from RSS: read them
                # for real before a kill (force_smaps makes the next sample do so).
                self._prev = prev
                self._recent.pop()
                self.probe.force_smaps()
                return self._take_sample()
            self._memory_kill(sample, prev)
        self._schedule_sample(self._next_interval(value, limit))

    def dry_rearm_seconds(self) -> float:
        """How long (seconds) the measure must stay below ``DRY_REARM_SHARE`` of the
        limit after a dry-run kill before the next crossing is reported: the grace
        period, at least ``DRY_REARM_MIN_SECONDS``."""
        return max(self.settings.grace_period_seconds, DRY_REARM_MIN_SECONDS)

    def _dry_rearm(self, now: float, value: int, limit: int | None) -> None:
        """After a dry-run kill: re-arm once that kill has ended and ``value`` (bytes,
        sampled at ``now``, monotonic seconds) has stayed below ``DRY_REARM_SHARE`` of
        ``limit`` for ``dry_rearm_seconds()``; a sample in the band starts over."""
        if self.state.current_kill is not None or (
                limit is not None and value >= DRY_REARM_SHARE * limit):
            self._dry_calm_since = None
            return
        if self._dry_calm_since is None:
            self._dry_calm_since = now
        calm = now - self._dry_calm_since
        if calm < self.dry_rearm_seconds():
            return
        self._dry_armed = True
        self._dry_calm_since = None
        log.info("dry run: %s below %.0f%% of the limit for %.1fs; the next crossing is "
                 "reported", self.state.measure, DRY_REARM_SHARE * 100, calm,
                 extra={"event": "dry_run_rearmed"})

    def _observe_alerts(self, now: float, value: int) -> None:
        """Feed the alert rules (``sentinel.core.alerts``) one sample; they run while
        enforcement is paused too (they only warn). A bug in them is reported once and
        never stops the sampling."""
        try:
            transitions = self.alerts.observe(now, value, self.state.limit_bytes)
        except Exception as exc:
            if "alerts" not in self._listener_errors:
                self._listener_errors.add("alerts")
                log.error("alert rules failed: %r (reported once)", exc,
                          extra={"event": "alert_error"})
            return
        self._publish_alerts(transitions)

    def _publish_alerts(self, transitions) -> None:
        """The rules' figures into ``state`` (``growth_bytes_per_second``,
        ``seconds_to_limit``, the firing rules' last figures in ``state.alerts``), and
        each transition as the ``alert`` event (WARNING firing, INFO resolved)."""
        st = self.state
        figures = self.alerts.figures
        st.growth_bytes_per_second = figures.growth_bytes_per_second
        st.seconds_to_limit = figures.seconds_to_limit
        for rule in self.alerts.firing:
            entry = st.alerts.get(rule)
            if entry is not None:
                value = st.last_sample.measure_bytes if st.last_sample else None
                limit = st.limit_bytes
                entry.update(value_bytes=value, limit_bytes=limit,
                             share=value / limit if value is not None and limit else None,
                             growth_bytes_per_second=figures.growth_bytes_per_second,
                             seconds_to_limit=figures.seconds_to_limit)
        for t in transitions:
            fields = dict(t.fields)
            st.alerts[t.rule] = {"state": t.state, "since_wall": time.time(),
                                 **{k: v for k, v in fields.items()
                                    if k not in ("rule", "state")}}
            self.emit("alert", t.message, t.level, **fields)

    @property
    def growth_bytes_per_second(self) -> float | None:
        """The measure's growth over the last ``sampler.RATE_WINDOW_SECONDS`` of this run,
        bytes/second (``sampler.growth_rate``; the dashboard computes the same), or
        ``None`` with too few samples."""
        points = self._recent
        if not points:
            return None
        return sampler.growth_rate(sampler.recent_points(points, points[-1][0]))

    def _next_interval(self, value: int, limit: int | None) -> float:
        """The period until the next sample: ``sampler.next_interval`` at this run's growth
        (the eBPF probe's plan while it covers the limit: ``SamplingSide.ebpf_interval``)."""
        planned = self.sampling_side.ebpf_interval(value, limit)
        if planned is not None:
            return planned
        return sampler.relaxed_interval(
            value, limit, self.growth_bytes_per_second, self.settings.interval_seconds,
            self.settings.max_interval_seconds, enforcing=self.state.enforcing,
            covered=self.sampling_side.covered(self.state.last_sample))

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
                  limit_bytes=limit, pids=list(sample.pids),
                  **({"dry_run": True} if st.dry_run else {}))
        self._start_ladder(REASON_MEMORY, sample.measure_bytes, sample.pids,
                           reaction=max(0.0, now - crossed))

    def _start_ladder(self, reason: str, value: int | None, pids, reaction=None) -> None:
        st = self.state
        grace = self.settings.grace_period_seconds
        kill = KillRecord(reason=reason, started_wall=time.time(), started_mono=self._clock(),
                          measure=st.measure, value_bytes=value, limit_bytes=st.limit_bytes,
                          pids=tuple(pids), grace_period_seconds=grace,
                          reaction_seconds=reaction,
                          dry_run=st.dry_run and reason == REASON_MEMORY)
        st.current_kill = kill
        st.phase = PHASE_TERMINATING
        st.grace_deadline_mono = self._clock() + grace
        self._ladder = self._make_ladder(kill)
        if kill.dry_run:
            self._dry_armed = False
            self._dry_calm_since = None
        hold = None
        if reason == REASON_MEMORY:
            try:
                hold = self._start_hook(kill)
            except Exception as exc:  # EMFILE for its pipe, a bug: the kill goes on without it
                log.warning("pre-kill hook not started: %r; the kill proceeds without it", exc,
                            extra={"event": "pre_kill_hook_failed"})
        if hold is not None:
            self._ladder.start_held(hold)
        else:
            self._ladder.start()
        st.grace_deadline_mono = self._ladder.grace_deadline

    def _start_hook(self, kill: KillRecord) -> float | None:
        """Start the pre-kill hook for the memory kill ``kill``; return how long the
        SIGTERM waits for it (its timeout), or ``None`` (no hook, one still running, no
        init to reap it, or it could not be started: the SIGTERM goes at once)."""
        command = getattr(self.settings, "pre_kill_hook", ())
        if not command or self.child is None:
            return None
        if self._hook is not None and not self._hook.done:
            log.warning("pre-kill hook: the previous one (pid %s) is still running; not "
                        "starting another", self._hook.pid, extra={"event": "pre_kill_hook"})
            return None
        if self.init is None:  # nothing would reap it
            return None
        from sentinel.config.settings import pre_kill_hook_timeout
        from sentinel.core.hook import PreKillHook, hook_environment

        timeout = pre_kill_hook_timeout(self.settings)
        from sentinel.config.webhooks import child_environ

        # Without the webhook URLs' variables: the hook's output is reported everywhere.
        env = hook_environment(child_environ(os.environ, getattr(self.settings, "webhooks", ())),
                               pid=self.child.pid, pids=kill.pids,
                               program=self.state.program, measure=kill.measure,
                               value_bytes=kill.value_bytes, limit_bytes=kill.limit_bytes,
                               reason=kill.reason)
        ladder = self._ladder

        def ended() -> None:
            if ladder is not None and ladder is self._ladder and ladder.held:
                ladder.release()
                self.state.grace_deadline_mono = ladder.grace_deadline

        hook = PreKillHook(command, env, self.original_mask, loop=self.loop,
                           timeout_seconds=timeout, clock=self._clock,
                           on_ended=self._as_program_call(ended),
                           on_result=self._as_program_call(
                               lambda result: self._hook_result(kill, result)),
                           helpers=self.init.helpers)
        if not hook.start():  # reported (on_result); the next kill tries again
            return None
        self._hook = hook  # only a started hook: one that never ran is never "running"
        self.init.helpers[hook.pid] = self._as_program_call(hook.reaped)
        log.info("pre-kill hook %r started as pid %d for pid %d (at most %.1fs; SIGTERM "
                 "after it)", shlex.join(command), hook.pid, self.child.pid, timeout,
                 extra={"event": "pre_kill_hook_started", "pid": hook.pid})
        return timeout

    def _as_program_call(self, fn):
        """``fn`` run with the program's name in the log context (several programs)."""
        if self.host is None:
            return fn

        def call(*args):
            token = logs.PROGRAM.set(self.state.program)
            try:
                return fn(*args)
            finally:
                logs.PROGRAM.reset(token)
        return call

    def _hook_result(self, kill: KillRecord, result) -> None:
        """Report the pre-kill hook's end: its output in the log (what was kept), then
        the ``pre_kill_hook`` event (its fields: ``HookResult.fields()`` and the kill)."""
        fields = result.fields()
        kill.pre_kill_hook = fields
        command = shlex.join(result.command)
        if result.error is not None:
            how = f"could not be started: {result.error}"
        elif result.timed_out:
            how = f"timed out after {result.seconds:.1f}s and was killed"
        else:
            how = f"exited with code {result.exit_code} after {result.seconds:.1f}s"
        size = f"{result.output_bytes} bytes of output"
        if result.dropped_bytes:
            size += f", {result.dropped_bytes} dropped beyond the first {len(result.output)}"
        from sentinel.core.hook import reported_output  # redacted before lines are cut

        text = reported_output(result.output).decode("utf-8", "replace").rstrip("\n")
        lines = text.split("\n") if text else []
        # Line by line, bounded: the log's queue (1000 lines) must not drop the rest.
        for line in lines[:_HOOK_LOG_LINES]:
            log.info("pre-kill hook output: %s", line[:_HOOK_LOG_LINE_CHARS],
                     extra={"event": "pre_kill_hook_output", "pid": result.pid})
        if len(lines) > _HOOK_LOG_LINES or result.dropped_bytes:
            log.info("pre-kill hook output: %d more line(s) of the %d kept bytes not logged, "
                     "%d bytes beyond them dropped", max(0, len(lines) - _HOOK_LOG_LINES),
                     len(result.output), result.dropped_bytes,
                     extra={"event": "pre_kill_hook_output_cut", "pid": result.pid})
        failed = result.error is not None or result.timed_out or result.exit_code != 0
        self.emit("pre_kill_hook", f"pre-kill hook {command!r} (pid {result.pid}) {how} "
                  f"({size}); the kill proceeds", logging.WARNING if failed else logging.INFO,
                  **fields, kill=kill.to_dict())

    @property
    def _stop_name(self) -> str:
        """The ladder's first signal (``--stop-signal``, default SIGTERM), by name."""
        return signal_name(getattr(self.settings, "stop_signal", signal.SIGTERM))

    def _make_ladder(self, kill: KillRecord) -> Ladder:
        """The workload's ladder for ``kill``: SIGTERM (with SIGCONT) to what
        ``signal_workload`` reaches, SIGKILL to the whole tree, the main process
        waited for after it."""
        # pidfds before any signal (a reused PID is never hit); --clamp-high's memory.high
        self.kernel_side.hook("ladder_starting", kill)
        return Ladder(self._ladder_signal, self.loop, clock=self._clock,
                      grace_period_seconds=kill.grace_period_seconds, record=kill,
                      term_signal=getattr(self.settings, "stop_signal", signal.SIGTERM),
                      main_pid=self.child.pid if self.child else None, wait_for_main=True,
                      main_wait_seconds=main_reap_bound(self.settings.grace_period_seconds),
                      on_step=lambda sig, reach: self._ladder_step(kill, sig, reach),
                      on_sigkill=None if kill.dry_run else self.after_sigkill,
                      everyone_refuses=self._all_refused,
                      before_check=self._reap, on_unconfirmed=self._not_confirmed_yet,
                      on_given_up=self._give_up)

    def _ladder_signal(self, sig: int) -> Reach:
        """The workload ladder's signaller: SIGTERM/SIGCONT as ``signal_workload`` sends
        them (who it reaches read before the signal, so a process that exits at once
        still counts), SIGKILL to the whole tree (``_signal_tree``)."""
        kill = self.state.current_kill
        if kill is not None and kill.dry_run:
            # Dry run: who the step would reach, and no kill(2) at all.
            if sig == signal.SIGCONT:
                return Reach()
            if sig == signal.SIGKILL:
                pids = self._descendants()
                if self.child is not None and self._main_status is None \
                        and self.child.pid not in pids:
                    pids.append(self.child.pid)
                return Reach(*self._reachable(pids))
            return Reach(*self._term_reach())
        if sig == signal.SIGCONT:
            self._continue_after_term()
            return Reach()
        if sig == signal.SIGKILL:
            self._refusals = {}
            hit = self._signal_tree(signal.SIGKILL)
            return Reach(hit, dict(self._refusals), self._group_reached)
        reached, refused = self._term_reach()  # before the signal: who it is for
        self.signal_workload(sig)
        return Reach(reached, refused)

    def after_sigkill(self, pids: list[int]) -> None:
        """Called by every ladder right after its SIGKILL reached ``pids``: tells
        ``sigkill_listeners`` (process_mrelease(2) goes here, to free their memory
        without waiting for the exit)."""
        for hook in list(self.sigkill_listeners):
            try:
                hook(pids)
            except Exception as exc:  # a listener's bug never stops the ladder
                name = getattr(hook, "__qualname__", repr(hook))
                if name not in self._listener_errors:
                    self._listener_errors.add(name)
                    log.warning("SIGKILL listener %s failed: %r (reported once)", name, exc)

    def _ladder_step(self, kill: KillRecord, sig: int, reach: Reach) -> None:
        """Name the refusals of one step, and count and report a step that reached."""
        reason, grace = kill.reason, kill.grace_period_seconds
        refused, reached = reach.refused, reach.reached
        self._note_refusals(kill, sig, refused, kill.refused)
        if kill.dry_run and sig == signal.SIGKILL:
            # The would-be kill ends here, whoever the SIGKILL would have reached: the
            # workload runs on (never the ladder's give-up, which would end Sentinel).
            self.loop.call_soon(self._dry_kill_done, kill)
        if not reached:  # a step that reached no process is neither claimed nor counted
            return
        if kill.dry_run:
            key = (reason, signal_name(sig))
            self.state.dry_run_signals[key] = self.state.dry_run_signals.get(key, 0) + 1
        else:
            self._record_kill(reason, sig)
        if sig == signal.SIGKILL:
            waited = self._clock() - kill.started_mono
            if kill.early_sigkill_reason:
                when = (f"{waited:.1f}s into the {grace:.1f}s grace period: "
                        f"{kill.early_sigkill_reason}")
            elif grace > 0 and waited >= grace - 0.05:
                when = f"after the {grace:.1f}s grace period"
            elif self._stop_name in kill.signals:  # an operator kill cut the grace period short
                when = f"now, {waited:.1f}s into the {grace:.1f}s grace period"
            else:  # a kill without a SIGTERM first, or one that no process accepted
                when = "now"
            head = f"sent SIGKILL to {len(reached)} process(es) {when} ({reason}): "
            tail = ""
        else:
            head = f"sent {signal_name(sig)} to the workload ({reason}): "
            tail = f"; SIGKILL in {grace:.1f}s unless it exits"
        if kill.dry_run:
            head = "would have " + head
            tail = (f"; would have sent SIGKILL in {grace:.1f}s" if sig != signal.SIGKILL
                    else "") + " (dry run: no signal sent)"
        self.emit("signal_sent", head + _pid_list(reached)
                  + (f", not to {_pid_list(list(refused))} (permission denied)" if refused
                     else "") + tail, logging.WARNING,
                  signal=signal_name(sig), reason=reason, pids=reached,
                  refused=[{"pid": p, "uid": u} for p, u in refused.items()],
                  kill=kill.to_dict(), **({"dry_run": True} if kill.dry_run else {}),
                  **({} if sig == signal.SIGKILL else {"reaction_seconds": kill.reaction_seconds}))

    @as_program
    def _dry_kill_done(self, kill: KillRecord, why: str = "") -> None:
        """A dry-run kill is over (its would-be SIGKILL, or ``why``: an operator's stop,
        the shutdown): the ladder ends, ``kill_finished`` (``dry_run``) says the workload
        would have been killed and still runs; the next report waits for the measure to
        stay below the band (``_dry_rearm``)."""
        st = self.state
        if st.current_kill is not kill:
            return
        if self._ladder is not None:
            self._ladder.main_exited()
        self._ladder = None
        st.last_kill = kill
        st.current_kill = None
        st.grace_deadline_mono = None
        if self.child is not None and self._main_status is None:
            st.phase = PHASE_RUNNING
        would = " then ".join(kill.signals) if kill.signals else "no signal"
        self.emit("kill_finished", f"{kill.reason} dry run: would have sent {would}; nothing "
                  "was sent, the workload keeps running"
                  + (f" ({why})" if why else f"; the next report once {kill.measure} has "
                     f"stayed below {DRY_REARM_SHARE:.0%} of the limit for "
                     f"{self.dry_rearm_seconds():.1f}s"),
                  logging.WARNING, kill=kill.to_dict(), dry_run=True)

    def _end_dry_kill(self, why: str) -> None:
        """End a dry-run kill under way (an operator's stop or kill, the shutdown act for
        real: they need the program out of its would-be grace period)."""
        kill = self.state.current_kill
        if kill is not None and kill.dry_run:
            self._dry_kill_done(kill, why)

    def _not_confirmed_yet(self, bound: float) -> None:
        """2 s after SIGKILL the main process is still there: name what is left (the
        record's survivors come at the end) and wait on."""
        kill = self.state.current_kill
        if kill is None or self.child is None:
            return
        self._survivors(
            kill.refused, f"{_REAP_GIVE_UP_SECONDS:.1f}s after SIGKILL; the kill is not "
            f"confirmed yet: Sentinel waits for the main process (pid {self.child.pid}) "
            f"up to {bound:.1f}s after SIGKILL")

    def _give_up(self, waited: bool = False) -> None:
        """The end of the ladder's wait for the main process after its SIGKILL.

        ``_REAP_GIVE_UP_SECONDS`` after SIGKILL a main process still there was named
        (``_not_confirmed_yet``) and waited for until ``main_reap_bound()`` after SIGKILL
        (``waited``): a big process can take seconds to die, and its real status (137)
        must not be lost. A main process that refused SIGKILL (EPERM), or that no
        SIGKILL reached, is not waited for. Here: name what is left, record the kill
        as not confirmed and, in run mode, exit with ``EXIT_NOT_ENDED`` (its status is
        unknown; no restart, since it may still run). As PID 1 the kernel then kills
        the rest of the namespace, once a frozen process is thawed."""
        st = self.state
        kill = st.current_kill
        if kill is None or self._main_status is not None or self.child is None:
            return
        if kill.dry_run:  # nothing was sent: nothing to give up on
            self._dry_kill_done(kill)
            return
        bound = main_reap_bound(self.settings.grace_period_seconds)
        after = (f"{bound:.1f}s after SIGKILL" if waited
                 else f"{_REAP_GIVE_UP_SECONDS:.1f}s after SIGKILL" if "SIGKILL" in kill.signals
                 else "refusing SIGKILL")
        kill.survivors = self._survivors(kill.refused, after) or [process_facts(self.child.pid)]
        kill.confirmed = False
        self.kernel_side.hook("restore_high")  # --clamp-high must not outlive the stop
        st.last_kill = kill
        st.current_kill = None
        st.grace_deadline_mono = None
        if self.settings.mode != "run":  # watch: the target may still go; keep watching
            st.phase = PHASE_RUNNING  # it is still watched: a new kill or stop may start
            self.emit("kill_finished", self._kill_summary(kill), logging.WARNING,
                      kill=kill.to_dict())
            return
        self._exit_code = EXIT_NOT_ENDED
        self.emit("kill_finished", self._kill_summary(kill) + f"; Sentinel exits with code "
                  f"{EXIT_NOT_ENDED} (the workload's status is unknown)", logging.WARNING,
                  kill=kill.to_dict())
        if self._sample_handle:
            self._sample_handle.cancel()
            self._sample_handle = None
        self._shutting_down = True
        st.phase = PHASE_EXITED
        self._finish(EXIT_NOT_ENDED)

    # ------------------------------------------------------------------ commands
    # Called by the control socket from the loop. Each returns a short message
    # and raises StateError (a ValueError: the socket's "invalid_state" reply) with a
    # user-facing reason when the command does not fit the workload's state.

    @property
    def program_state(self) -> ProgramState:
        """The workload's ``sentinel.core.supervisor.ProgramState`` now."""
        st = self.state
        kill = st.last_kill
        return program_state(
            has_process=self.child is not None and self._main_status is None,
            stopping=st.phase == PHASE_TERMINATING and st.current_kill is not None,
            stopped_by_signal=st.stopped, restart_pending=self._restart_handle is not None,
            exited=self._main_status is not None or st.phase == PHASE_EXITED,
            operator_or_shutdown=self._shutting_down,
            given_up=self._restarts_exhausted or (
                st.phase == PHASE_EXITED and kill is not None and kill.confirmed is False))

    def _require(self, command: str) -> None:
        """Refuse ``command`` with a ``StateError`` unless it fits ``program_state``."""
        check(command, self.program_state)

    def _cancel_restart(self) -> str | None:
        """In a restart back-off, ``stop``/``kill`` mean: no restart, and Sentinel exits."""
        if self._restart_handle is None:
            return None
        self._restart_handle.cancel()
        self._restart_handle = None
        self._shutting_down = True
        self.state.phase = PHASE_EXITED
        if self.host is not None:  # one of several: it stays stopped (``start`` starts it)
            self.emit("restart_cancelled", "pending restart cancelled by the operator",
                      logging.WARNING)
            self.loop.call_soon(self._finish, self._exit_code)
            return "pending restart cancelled"
        self.emit("restart_cancelled", "pending restart cancelled by the operator; exiting "
                  f"with the last exit code {self._exit_code}", logging.WARNING)
        # Let the reply reach the client before the loop ends.
        self.loop.call_soon(self._finish, self._exit_code)
        return "pending restart cancelled; Sentinel exits"

    @as_program
    def stop(self, reason: str = REASON_OPERATOR) -> str:
        """Start the SIGTERM -> grace -> SIGKILL ladder now (an operator stop); in a
        restart back-off, cancel the restart instead. Real with ``--dry-run`` too (it
        ends a dry-run kill under way first)."""
        self._end_dry_kill("an operator stop; it is real")
        self._require("stop")
        cancelled = self._cancel_restart()
        if cancelled:
            return cancelled
        self._shutting_down = self._shutting_down or reason == REASON_OPERATOR
        sample = self.state.last_sample
        self._start_ladder(reason, sample.measure_bytes if sample else None,
                           sample.pids if sample else (self.child.pid,))  # type: ignore
        kill = self.state.current_kill
        stop = self._stop_name
        if kill is not None and stop not in kill.signals:  # never claim it
            if not kill.refused:
                return (f"{stop} reached no process (the workload is ending); SIGKILL "
                        "follows, see Sentinel's log")
            return (f"{stop} reached no process: refused by {_refused_text(kill.refused)} "
                    "(permission denied); SIGKILL follows, see Sentinel's log")
        return f"{stop} sent; SIGKILL after the grace period"

    @as_program
    def kill(self, reason: str = REASON_OPERATOR) -> str:
        """SIGKILL the whole workload tree now; in a restart back-off, cancel the restart.
        After the ladder's SIGKILL reached the workload, nothing more is sent. Real with
        ``--dry-run`` too (it ends a dry-run kill under way first)."""
        self._end_dry_kill("an operator kill; it is real")
        self._require("kill")
        cancelled = self._cancel_restart()
        if cancelled:
            return cancelled
        self._shutting_down = True
        st = self.state
        if st.current_kill is not None and "SIGKILL" in st.current_kill.signals:
            # Once is enough: a second SIGKILL is neither sent nor counted, and the
            # wait for the main process's end is not pushed back.
            return "SIGKILL already sent"
        if st.current_kill is None:
            sample = st.last_sample
            st.current_kill = KillRecord(
                reason=reason, started_wall=time.time(), started_mono=self._clock(),
                measure=st.measure, value_bytes=sample.measure_bytes if sample else None,
                limit_bytes=st.limit_bytes,
                pids=sample.pids if sample else (self.child.pid,),  # type: ignore[union-attr]
                grace_period_seconds=0.0)
            st.phase = PHASE_TERMINATING
            self._ladder = self._make_ladder(st.current_kill)
        self._ladder.kill_now()
        kill = st.current_kill or st.last_kill
        if kill is not None and "SIGKILL" not in kill.signals:  # never claim it
            if not kill.refused:
                return "SIGKILL reached no process (the workload is ending); see Sentinel's log"
            return (f"SIGKILL reached no process: refused by {_refused_text(kill.refused)} "
                    "(permission denied); see Sentinel's log")
        return "SIGKILL sent"

    @as_program
    def send_signal(self, sig: int) -> str:
        """Forward one signal to the workload as if Sentinel had received it (no rewrite)."""
        self._require("signal")
        if sig == signal.SIGKILL:  # Sentinel's SIGKILL: the death is never the kernel's
            self.kernel_side.hook("note_sigkill")
        self.signal_workload(sig)
        self.emit("signal_forwarded", f"operator sent {signal_name(sig)} to the workload",
                  signal=signal_name(sig))
        return f"{signal_name(sig)} sent"

    @as_program
    def set_limit(self, limit_bytes: int | None) -> str:
        """Change the memory limit (``None`` removes it); the next sample applies it."""
        self._require("limit")
        old = self.state.limit_bytes
        self.state.limit_bytes = limit_bytes
        self.emit("limit_changed", f"memory limit changed from {_limit_text(old)} to "
                  f"{_limit_text(limit_bytes)}", limit_bytes=limit_bytes, old_limit_bytes=old)
        self.sampling_side.on_limit(limit_bytes)
        if self.child is not None:
            self.sample_now("limit changed")
        return f"limit {_limit_text(limit_bytes)}"

    def apply_limit(self, limit_bytes: int, why: str) -> None:
        """A new limit from Sentinel itself (``--max-rss auto`` after the container's
        limit changed): a ``limit_changed`` event as for the ``limit`` command, the v1
        threshold re-armed; the sample being taken applies it."""
        old = self.state.limit_bytes
        self.state.limit_bytes = limit_bytes
        self.emit("limit_changed", f"memory limit changed from {_limit_text(old)} to "
                  f"{_limit_text(limit_bytes)} ({why})", logging.WARNING,
                  limit_bytes=limit_bytes, old_limit_bytes=old, auto=True)
        self.sampling_side.on_limit(limit_bytes)

    @as_program
    def pause(self) -> str:
        """Stop enforcing the limit; sampling continues."""
        self._require("pause")
        if not self.state.enforcing:
            return "enforcement already paused"
        self.state.enforcing = False
        self.emit("enforcement_paused", "enforcement paused: the limit is not applied until "
                  "'resume'", logging.WARNING)
        return "enforcement paused"

    @as_program
    def resume(self) -> str:
        """Enforce the limit again, from a sample taken at once."""
        self._require("resume")
        if self.state.enforcing:
            return "enforcement already active"
        self.state.enforcing = True
        self.emit("enforcement_resumed", "enforcement resumed")
        if self.child is not None:
            self.sample_now("enforcement resumed")
        return "enforcement resumed"
