"""SIGTERM -> grace period -> SIGKILL: one object for every stop.

Memory kills, the operator's ``stop``/``kill``, the forwarded shutdown signal and
the sweep of leftovers (run mode after the main process exited, watch mode after
a killed target is gone) are each one ``Ladder``. It owns the order and timing
of the steps and what a ``KillRecord`` says of them; the caller owns who gets a
signal (the injected *signaller*) and how steps are reported (callbacks), so the
ladder itself needs no processes, no loop and no clock of its own: tests drive
it with a fake signaller and a fake scheduler.

The steps, as systemd and Kubernetes do them:

1. ``term_signal`` (SIGTERM, or the signal Sentinel received on shutdown), then
   SIGCONT (a stopped process, state T, runs its SIGTERM handler now instead of
   sitting stopped until SIGKILL);
2. after ``grace_period_seconds``: SIGKILL (at once when every process refused
   the SIGTERM: a grace period would wait for nothing). ``escalate=False`` (the
   shutdown: Kubernetes' terminationGracePeriodSeconds bounds it) stops here;
3. ``reap_give_up_seconds`` (2 s) after SIGKILL, ``on_unconfirmed`` names a main
   process still there (stuck in state D, a frozen cgroup) and the ladder waits
   on, up to ``main_wait_seconds`` (max(10 s, grace)) after SIGKILL: a big process
   can take seconds to die, and its real status must not be lost; then
   ``on_given_up`` (the kill is "not confirmed").

A step that reached no process is neither claimed in the record nor counted;
processes that refuse a signal (EPERM) are recorded in ``KillRecord.refused``.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from sentinel.config.settings import signal_name
from sentinel.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

# SIGKILLed processes that have not been reaped this long after it are named.
REAP_GIVE_UP_SECONDS = 2.0
# The main process is waited for up to max(this, the grace period) after its SIGKILL.
MAIN_REAP_WAIT_SECONDS = 10.0


@dataclass
class Reach:
    """What one signal step did: ``reached`` PIDs got it, ``refused`` (pid -> real UID,
    ``None`` if unreadable) gave EPERM; ``group_reached`` when a killpg reached a member
    of the process group that the PID list may have missed."""

    reached: list[int] = field(default_factory=list)
    refused: dict[int, int | None] = field(default_factory=dict)
    group_reached: bool = False


# Sends one signal number to the processes of the stop and says who it reached.
Signaller = Callable[[int], Reach]


class Handle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """What the ladder needs of a loop: an ``asyncio`` loop is one."""

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Handle: ...


def main_reap_bound(grace_period_seconds: float) -> float:
    """Seconds after SIGKILL the main process is waited for: max(10 s, grace)."""
    return max(MAIN_REAP_WAIT_SECONDS, grace_period_seconds)


class Ladder:
    """One stop of one program. Create, then ``start()`` (or ``kill_now()``).

    ``signaller(sig) -> Reach`` sends ``sig``; ``scheduler.call_later`` runs the
    timers; ``clock()`` (monotonic seconds) times the record. ``record`` (a
    ``KillRecord``, optional: the shutdown keeps none) gets ``signals``, ``reached``,
    ``refused`` and ``sigkill_wall``. Callbacks, each optional:

    - ``on_step(sig, reach)`` after each step that sent a signal (SIGCONT excluded);
    - ``on_sigkill(pids)`` right after SIGKILL reached ``pids``: the hook where
      ``process_mrelease`` frees their memory without waiting for their exit;
    - ``everyone_refuses(refused) -> bool``: every live process refuses Sentinel
      (the SIGTERM step then escalates at once);
    - ``before_check()``: reap what is pending before survivors are judged;
    - ``on_unconfirmed(bound)`` 2 s after SIGKILL, the main process still there;
    - ``on_given_up(waited)`` at the end of the wait (``waited``: the full bound).

    ``wait_for_main`` (with ``main_pid``) enables step 3's long wait; without it
    ``on_given_up(False)`` comes 2 s after SIGKILL (0 s if every process refused).
    ``main_exited()`` ends the ladder: no further step or callback.
    """

    def __init__(self, signaller: Signaller, scheduler: Scheduler, *,
                 grace_period_seconds: float, clock: Callable[[], float] = time.monotonic,
                 record: Any = None, term_signal: int = signal.SIGTERM,
                 continue_after_term: bool = True, escalate: bool = True,
                 main_pid: int | None = None, wait_for_main: bool = False,
                 reap_give_up_seconds: float = REAP_GIVE_UP_SECONDS,
                 main_wait_seconds: float | None = None,
                 on_step: Callable[[int, Reach], None] | None = None,
                 on_sigkill: Callable[[list[int]], None] | None = None,
                 everyone_refuses: Callable[[dict], bool] | None = None,
                 before_check: Callable[[], None] | None = None,
                 on_unconfirmed: Callable[[float], None] | None = None,
                 on_given_up: Callable[[bool], None] | None = None) -> None:
        self.signaller = signaller
        self.scheduler = scheduler
        self.clock = clock
        self.grace_period_seconds = grace_period_seconds
        self.record = record
        self.term_signal = term_signal
        self.continue_after_term = continue_after_term
        self.escalate = escalate
        self.main_pid = main_pid
        self.wait_for_main = wait_for_main
        self.reap_give_up_seconds = reap_give_up_seconds
        self.main_wait_seconds = (main_reap_bound(grace_period_seconds)
                                  if main_wait_seconds is None else main_wait_seconds)
        self.on_step = on_step
        self.on_sigkill = on_sigkill
        self.everyone_refuses = everyone_refuses
        self.before_check = before_check
        self.on_unconfirmed = on_unconfirmed
        self.on_given_up = on_given_up
        self.signals: list[str] = []  # the steps that reached a process, in order
        self.refused: dict[int, int | None] = {}
        self.grace_deadline: float | None = None  # clock() time of the SIGKILL step
        self.ended = False
        self.early_reason: str | None = None  # why escalate_now() cut the grace short
        self._handle: Handle | None = None
        self._held: Handle | None = None  # start_held's pending first step

    # ------------------------------------------------------------------ steps
    @property
    def sigkill_sent(self) -> bool:
        """SIGKILL reached a process (a second one is never sent)."""
        return "SIGKILL" in self.signals

    def start(self) -> Reach:
        """Step 1: ``term_signal`` then SIGCONT; schedule SIGKILL (``escalate``)."""
        reach = None
        try:
            reach = self._send(self.term_signal)
            if self.continue_after_term:
                self.signaller(signal.SIGCONT)  # failures are not reported: the SIGTERM counts
        finally:
            # Scheduled whatever the signaller or a hook raised: a ladder must never stall
            # between its steps (the exception still reaches the caller, which logs it).
            if self.escalate and not self.ended:
                all_refused = (reach is not None and not reach.reached and bool(self.refused)
                               and (self.everyone_refuses is None
                                    or self.everyone_refuses(self.refused)))
                delay = 0.0 if all_refused else self.grace_period_seconds
                self.grace_deadline = self.clock() + delay
                self._later(delay, self._sigkill)
        return reach

    def start_held(self, hold_seconds: float) -> None:
        """Step 1 after a pre-step (the pre-kill hook): the SIGKILL is scheduled now,
        ``grace_period_seconds`` from now, as ``start()`` would (a pre-step never moves
        it, nor ``escalate_now``'s early SIGKILL); ``term_signal`` waits up to
        ``hold_seconds`` (< the grace period), or until ``release()``."""
        self.grace_deadline = self.clock() + self.grace_period_seconds
        self._later(self.grace_period_seconds, self._sigkill)
        self._held = self.scheduler.call_later(hold_seconds, self.release)

    def release(self) -> Reach | None:
        """The pre-step is over: send ``term_signal`` (and SIGCONT) now; SIGKILL at once
        if every process refused it, else at the deadline ``start_held`` set. ``None``
        if nothing was held (or the ladder already ended, or SIGKILL was sent)."""
        if self._held is None:
            return None
        self._held.cancel()
        self._held = None
        if self.ended or self.sigkill_sent:
            return None
        reach = None
        try:
            reach = self._send(self.term_signal)
            if self.continue_after_term:
                self.signaller(signal.SIGCONT)
        finally:
            if (reach is not None and not reach.reached and bool(self.refused)
                    and not self.ended and not self.sigkill_sent
                    and (self.everyone_refuses is None or self.everyone_refuses(self.refused))):
                self.grace_deadline = self.clock()
                self._later(0.0, self._sigkill)
        return reach

    @property
    def held(self) -> bool:
        """``term_signal`` is waiting for the pre-step (``start_held``)."""
        return self._held is not None

    def kill_now(self) -> Reach | None:
        """Step 2 at once (the operator's ``kill``); ``None`` if SIGKILL was sent already
        (once is enough: a second is neither sent nor counted, the wait not pushed back)."""
        if self.sigkill_sent or self.ended:
            return None
        self.cancel()
        return self._sigkill()

    def escalate_now(self, reason: str) -> Reach | None:
        """Step 2 now, before the grace period ends, because waiting would let the kernel
        act first (``reason``: one line saying why, kept in ``early_reason`` and in the
        record's ``early_sigkill_reason``). ``None`` (nothing sent) once SIGKILL was sent,
        the ladder ended, or before ``start()`` scheduled a SIGKILL."""
        if self.sigkill_sent or self.ended or self.grace_deadline is None:
            return None
        self.early_reason = reason
        if self.record is not None:
            self.record.early_sigkill_reason = reason
        self.cancel()
        return self._sigkill()

    def main_exited(self) -> None:
        """The main process is gone (reaped, or the watched target's pidfd): stop here."""
        self.ended = True
        self.cancel()

    def cancel(self) -> None:
        """Cancel the pending step (the ladder can still be driven by hand)."""
        if self._held is not None and (self.ended or self.sigkill_sent):
            self._held.cancel()  # no SIGTERM after the end, nor after a SIGKILL
            self._held = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    # ------------------------------------------------------------------ inside
    def _later(self, delay: float, fn: Callable, *args) -> None:
        self.cancel()
        self._handle = self.scheduler.call_later(delay, fn, *args)

    def _send(self, sig: int) -> Reach:
        reach = self.signaller(sig)
        self.refused.update(reach.refused)
        rec = self.record
        if reach.reached:  # a step that reached no process is neither claimed nor counted
            name = signal_name(sig)
            self.signals.append(name)
            if rec is not None:
                rec.signals.append(name)
                rec.reached[name] = list(reach.reached)
                if sig == signal.SIGKILL:
                    rec.sigkill_wall = time.time()
        if self.on_step is not None:  # before the record's refused: it names new ones
            self.on_step(sig, reach)
        if rec is not None:
            rec.refused.update(reach.refused)
        return reach

    def _sigkill(self) -> Reach | None:
        self._handle = None
        if self._held is not None:  # the pre-step outlasted the grace period (or early)
            self._held.cancel()
            self._held = None
        if self.ended:
            return None
        reach = None
        try:
            reach = self._send(signal.SIGKILL)
            if reach.reached and self.on_sigkill is not None:
                try:
                    self.on_sigkill(list(reach.reached))
                except Exception as exc:  # a hook (process_mrelease) never stops the ladder
                    log.warning("after SIGKILL: %r (the ladder goes on)", exc)
        finally:
            # At once only when every process refused: never because the walk found none.
            # Scheduled even if the signaller raised: survivors are still named, and the
            # ladder still gives up in time.
            everyone_refused = (reach is not None and not reach.reached
                                and not reach.group_reached and bool(reach.refused))
            self._later(0.0 if everyone_refused else self.reap_give_up_seconds,
                        self._check, False)
        return reach

    def _check(self, waited: bool) -> None:
        self._handle = None
        if self.before_check is not None:
            self.before_check()
        if self.ended:
            return
        main_killed = self.sigkill_sent and self.main_pid not in self.refused
        if self.wait_for_main and main_killed and not waited:
            if self.on_unconfirmed is not None:
                self.on_unconfirmed(self.main_wait_seconds)
            self._later(max(0.0, self.main_wait_seconds - self.reap_give_up_seconds),
                        self._check, True)
            return
        self.ended = True
        if self.on_given_up is not None:
            self.on_given_up(waited)
