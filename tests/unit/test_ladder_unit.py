"""``sentinel.core.ladder.Ladder`` alone: a fake signaller and a fake clock/scheduler.

Order (SIGTERM, SIGCONT, SIGKILL one grace period later), refusals (recorded, a
step that reached nobody not claimed, an all-refused SIGTERM escalating at once),
survivors (named 2 s after SIGKILL, the main process waited for up to max(10 s,
grace)), the SIGKILL hook, and the shutdown's ladder without escalation."""

from __future__ import annotations

import signal

import pytest

from sentinel.core.ladder import Ladder, Reach, main_reap_bound
from sentinel.core.state import KillRecord
from tests.unit.test_guardian_clock import FakeLoop

MAIN, CHILD = 4242, 4243


class FakeSignaller:
    """Records (time, signal); ``refuse`` PIDs give EPERM, ``gone`` ones are missing."""

    def __init__(self, loop: FakeLoop, pids=(MAIN, CHILD), refuse=()) -> None:
        self.loop, self.pids, self.refuse = loop, list(pids), set(refuse)
        self.sent: list[tuple[float, int]] = []

    def __call__(self, sig: int) -> Reach:
        self.sent.append((self.loop.now, sig))
        return Reach([p for p in self.pids if p not in self.refuse],
                     {p: 1000 for p in self.pids if p in self.refuse})

    def signals(self) -> list[int]:
        return [s for _, s in self.sent]


def record(grace: float) -> KillRecord:
    return KillRecord(reason="operator", started_wall=0.0, started_mono=1000.0,
                      measure="rss", value_bytes=None, limit_bytes=None, pids=(MAIN,),
                      grace_period_seconds=grace)


def ladder(loop, signaller, grace=3.0, **kw) -> tuple[Ladder, list]:
    calls: list = []
    kw.setdefault("on_step", lambda sig, reach: calls.append(("step", sig, reach.reached)))
    kw.setdefault("on_unconfirmed", lambda bound: calls.append(("unconfirmed", loop.now)))
    kw.setdefault("on_given_up", lambda waited: calls.append(("given_up", loop.now, waited)))
    return Ladder(signaller, loop, clock=loop.time, grace_period_seconds=grace,
                  main_pid=MAIN, **kw), calls


def test_sigterm_then_sigcont_then_sigkill_one_grace_period_later():
    loop = FakeLoop()
    sig = FakeSignaller(loop)
    rec = record(3.0)
    lad, calls = ladder(loop, sig, record=rec)
    lad.start()
    assert sig.sent == [(1000.0, signal.SIGTERM), (1000.0, signal.SIGCONT)]
    assert lad.grace_deadline == 1003.0
    loop.advance(2.99)
    assert signal.SIGKILL not in sig.signals()
    loop.advance(0.02)
    assert sig.sent[-1] == (1003.0, signal.SIGKILL)
    assert rec.signals == ["SIGTERM", "SIGKILL"]
    assert rec.reached == {"SIGTERM": [MAIN, CHILD], "SIGKILL": [MAIN, CHILD]}
    assert rec.sigkill_wall is not None and lad.sigkill_sent
    assert [c[:2] for c in calls] == [("step", signal.SIGTERM), ("step", signal.SIGKILL)]


def test_main_exit_cancels_every_later_step():
    loop = FakeLoop()
    sig = FakeSignaller(loop)
    lad, calls = ladder(loop, sig, wait_for_main=True)
    lad.start()
    loop.advance(1.0)
    lad.main_exited()
    loop.advance(60.0)
    assert sig.signals() == [signal.SIGTERM, signal.SIGCONT]
    assert [c[0] for c in calls] == ["step"]


def test_refusals_are_recorded_and_a_step_that_reached_nobody_is_not_claimed():
    loop = FakeLoop()
    sig = FakeSignaller(loop, refuse={MAIN, CHILD})
    rec = record(3.0)
    lad, calls = ladder(loop, sig, record=rec, everyone_refuses=lambda refused: True)
    lad.start()
    assert rec.signals == [] and rec.reached == {} and rec.refused == {MAIN: 1000, CHILD: 1000}
    assert lad.grace_deadline == 1000.0  # everyone refuses: no grace period to wait out
    loop.advance(0.0)
    assert sig.signals() == [signal.SIGTERM, signal.SIGCONT, signal.SIGKILL]
    assert rec.signals == [] and not lad.sigkill_sent
    loop.advance(0.0)  # SIGKILL refused by every process: nothing to wait for
    assert calls[-1] == ("given_up", 1000.0, False)


def test_a_partial_refusal_keeps_the_grace_period():
    loop = FakeLoop()
    sig = FakeSignaller(loop, refuse={CHILD})
    rec = record(3.0)
    lad, _ = ladder(loop, sig, record=rec, everyone_refuses=lambda refused: False)
    lad.start()
    assert rec.reached == {"SIGTERM": [MAIN]} and rec.refused == {CHILD: 1000}
    loop.advance(2.9)
    assert signal.SIGKILL not in sig.signals()
    loop.advance(0.2)
    assert sig.signals()[-1] == signal.SIGKILL


def test_survivors_are_named_at_2s_and_the_main_process_waited_for_up_to_the_bound():
    loop = FakeLoop()
    sig = FakeSignaller(loop)
    checks: list[float] = []
    lad, calls = ladder(loop, sig, grace=1.0, wait_for_main=True,
                        before_check=lambda: checks.append(loop.now))
    lad.start()
    loop.advance(1.0)  # SIGKILL at 1001
    loop.advance(2.0)
    assert ("unconfirmed", 1003.0) in calls and checks == [1003.0]
    loop.advance(7.9)
    assert not [c for c in calls if c[0] == "given_up"]
    loop.advance(0.2)
    assert calls[-1] == ("given_up", 1011.0, True)  # 10 s after SIGKILL
    assert main_reap_bound(1.0) == 10.0 and main_reap_bound(15.0) == 15.0


def test_a_main_process_reaped_at_the_2s_check_is_no_survivor():
    loop = FakeLoop()
    sig = FakeSignaller(loop)
    holder: list[Ladder] = []
    lad, calls = ladder(loop, sig, grace=1.0, wait_for_main=True,
                        before_check=lambda: holder[0].main_exited())  # the reap finds it
    holder.append(lad)
    lad.start()
    loop.advance(20.0)
    assert [c[0] for c in calls] == ["step", "step"]


def test_without_wait_for_main_the_end_comes_2s_after_sigkill():
    loop = FakeLoop()
    sig = FakeSignaller(loop)
    lad, calls = ladder(loop, sig, grace=1.0)
    lad.start()
    loop.advance(3.0)
    assert calls[-1] == ("given_up", 1003.0, False)
    assert not [c for c in calls if c[0] == "unconfirmed"]


def test_the_sigkill_hook_gets_the_pids_it_reached_and_kill_now_sends_once():
    loop = FakeLoop()
    sig = FakeSignaller(loop, refuse={CHILD})
    released: list[list[int]] = []
    lad, _ = ladder(loop, sig, grace=5.0, on_sigkill=released.append)
    lad.start()
    loop.advance(1.0)
    assert lad.kill_now() is not None
    assert lad.kill_now() is None  # once is enough
    assert sig.signals() == [signal.SIGTERM, signal.SIGCONT, signal.SIGKILL]
    assert released == [[MAIN]]
    loop.advance(5.0)  # the cancelled grace timer sends nothing more
    assert sig.signals().count(signal.SIGKILL) == 1


def test_the_shutdown_ladder_forwards_the_signal_received_and_never_escalates():
    loop = FakeLoop()
    sig = FakeSignaller(loop)
    lad, calls = ladder(loop, sig, grace=0.0, escalate=False, term_signal=signal.SIGINT)
    lad.start()
    loop.advance(3600.0)
    assert sig.signals() == [signal.SIGINT, signal.SIGCONT]
    assert loop.next_timer() is None and not lad.sigkill_sent
    assert [c[:2] for c in calls] == [("step", signal.SIGINT)]


@pytest.mark.parametrize("cont", [True, False])
def test_sigcont_after_sigterm_can_be_left_out(cont):
    loop = FakeLoop()
    sig = FakeSignaller(loop)
    lad, _ = ladder(loop, sig, continue_after_term=cont)
    lad.start()
    assert (signal.SIGCONT in sig.signals()) is cont


def test_a_failing_sigkill_hook_never_stops_the_ladder(caplog):
    # process_mrelease (or any hook) raising must not cost the survivors' check and the
    # give-up: the ladder goes on to its end.
    loop = FakeLoop()
    sig = FakeSignaller(loop)

    def broken(pids):
        raise RuntimeError("hook broke")

    lad, calls = ladder(loop, sig, grace=1.0, on_sigkill=broken)
    lad.start()
    loop.advance(1.01)
    assert sig.signals()[-1] == signal.SIGKILL
    assert "hook broke" in caplog.text
    loop.advance(2.0)
    assert calls[-1] == ("given_up", 1003.0, False)


class FailingSignaller(FakeSignaller):
    def __call__(self, sig: int) -> Reach:
        super().__call__(sig)
        raise OSError(9, "Bad file descriptor")


def test_a_signaller_that_raises_still_leaves_every_later_step_scheduled():
    loop = FakeLoop()
    sig = FailingSignaller(loop)
    lad, calls = ladder(loop, sig, grace=1.0)
    with pytest.raises(OSError):
        lad.start()  # the caller (the supervisor) logs it ...
    with pytest.raises(OSError):
        loop.advance(1.01)  # ... and SIGKILL still follows one grace period later
    assert signal.SIGKILL in sig.signals()
    loop.advance(2.0)
    assert calls and calls[-1] == ("given_up", 1003.0, False)
