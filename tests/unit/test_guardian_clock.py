"""The ladder and the sampler's timing on an injected clock: scripted samples,
a loop whose time only moves when the test says, and recorded signals."""

from __future__ import annotations

import heapq
import signal

import pytest

from sentinel.config.settings import Settings
from sentinel.core.guardian import Guardian
from sentinel.core.spawn import Child
from sentinel.core.state import PHASE_TERMINATING, MemorySample
from sentinel.core.supervisor import ProgramState

MiB = 2**20


class FakeLoop:
    """Just what the guardian's timers need: call_later/call_at/time, run by advance()."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._timers: list = []
        self._seq = 0

    def time(self) -> float:
        return self.now

    def call_later(self, delay, callback, *args):
        return self.call_at(self.now + delay, callback, *args)

    def call_at(self, when, callback, *args):
        handle = _Handle(when, callback, args)
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, handle))
        return handle

    def call_soon(self, callback, *args):
        return self.call_at(self.now, callback, *args)

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, handle = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not handle.cancelled:
                handle.callback(*handle.args)
        self.now = end

    def next_timer(self) -> float | None:
        live = [w for w, _, h in self._timers if not h.cancelled]
        return min(live) - self.now if live else None


class _Handle:
    def __init__(self, when, callback, args) -> None:
        self.when, self.callback, self.args, self.cancelled = when, callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class ScriptedProbe:
    """Returns the measure of a workload growing at ``rate`` bytes/s from ``start``."""

    root_pid = 1
    include_root = False

    def __init__(self, loop: FakeLoop, start: int, rate: float) -> None:
        self.loop, self.start, self.rate, self.t0 = loop, start, rate, loop.now
        self.errors: dict = {}
        self.samples: list[float] = []

    def value(self) -> int:
        return int(self.start + self.rate * (self.loop.now - self.t0))

    def sample(self) -> MemorySample:
        self.samples.append(self.loop.now)
        v = self.value()
        return MemorySample(at_mono=self.loop.now, measure_bytes=v, rss_bytes=v,
                            processes=((4242, v),), duration_seconds=1e-5)

    def children(self, pid):
        return []

    def close(self) -> None:
        pass


class Recorder(Guardian):
    """A guardian whose signals are recorded (with the fake time) instead of sent."""

    sent: list

    def signal_workload(self, sig: int) -> None:
        self.sent.append((self.loop.now, sig))

    def _signal_tree(self, sig: int) -> list[int]:
        self.sent.append((self.loop.now, sig))
        return [] if self._main_status is not None else [4242]  # no leftovers after exit

    def _term_reach(self):
        return ([] if self._main_status is not None else [4242]), {}  # nobody refuses

    def _reap(self) -> None:
        pass  # nothing real to reap: the tests feed exits with child_exited


def make(limit=100 * MiB, start=10 * MiB, rate=100 * MiB, **settings):
    loop = FakeLoop()
    probe = ScriptedProbe(loop, start, rate)
    s = Settings(command=("app",), workload_name="app", max_rss_bytes=limit, **settings)
    g = Recorder(s, None, set(), loop=loop, probe=probe, clock=loop.time)  # type: ignore
    g.sent = []
    g._adopt(Child(4242, ("app",), None, loop.now, 0.0))
    return g, loop, probe


def test_sigterm_at_the_crossing_then_sigkill_exactly_one_grace_period_later():
    g, loop, probe = make(grace_period_seconds=3.0)
    loop.advance(2.0)  # 10 MiB + 100 MiB/s: crosses 100 MiB at t0+0.9 s
    assert [s for _, s in g.sent] == [signal.SIGTERM]
    t_term = g.sent[0][0]
    assert 0.9 <= t_term - 1000.0 <= 0.91  # sampled faster near the limit
    assert g.state.phase == PHASE_TERMINATING
    kill = g.state.current_kill
    assert kill.reason == "memory_limit" and kill.reaction_seconds < 0.005
    loop.advance(3.0)
    assert [s for _, s in g.sent] == [signal.SIGTERM, signal.SIGKILL]
    assert g.sent[1][0] - t_term == pytest.approx(3.0)
    assert kill.signals == ["SIGTERM", "SIGKILL"]
    assert g.state.kills == {("memory_limit", "SIGTERM"): 1, ("memory_limit", "SIGKILL"): 1}


def test_workload_exit_within_the_grace_period_cancels_sigkill():
    g, loop, _ = make(grace_period_seconds=3.0)
    loop.advance(1.0)
    assert [s for _, s in g.sent] == [signal.SIGTERM]
    g.child_exited(signal.SIGTERM)  # a waitpid status: killed by SIGTERM
    loop.advance(10.0)
    # The ladder's SIGTERM, then the leftover sweep's SIGTERM: never a SIGKILL.
    assert [s for _, s in g.sent] == [signal.SIGTERM, signal.SIGTERM]
    assert g.state.last_kill.exit_code == 143
    assert g._exit_code == 143


def test_overshoot_is_small_at_100_mib_per_second():
    g, loop, probe = make(rate=100 * MiB)
    loop.advance(2.0)
    kill = g.state.current_kill
    assert kill.value_bytes - 100 * MiB <= 1 * MiB


def test_idle_workload_is_sampled_at_the_interval_only():
    g, loop, probe = make(rate=0.0)
    loop.advance(10.0)
    assert 99 <= len(probe.samples) <= 101  # 0.1 s at rest
    assert g.sent == []


def test_under_the_limit_is_never_touched_and_paused_enforcement_too():
    g, loop, probe = make(limit=1000 * MiB, rate=10 * MiB)
    loop.advance(20.0)
    assert g.sent == []
    g2, loop2, _ = make()
    g2.pause()
    loop2.advance(5.0)
    assert g2.sent == [] and g2.state.last_sample.measure_bytes > 100 * MiB
    g2.resume()
    loop2.advance(0.01)
    assert [s for _, s in g2.sent] == [signal.SIGTERM]


def test_limit_change_applies_at_once():
    g, loop, probe = make(limit=None, rate=0.0, start=50 * MiB)
    loop.advance(1.0)
    assert g.sent == []
    g.set_limit(40 * MiB)
    loop.advance(0.0)
    assert [s for _, s in g.sent] == [signal.SIGTERM]


def test_operator_stop_and_kill():
    g, loop, _ = make(limit=None, rate=0.0, grace_period_seconds=2.0)
    loop.advance(0.5)
    g.stop()
    assert [s for _, s in g.sent] == [signal.SIGTERM]
    with pytest.raises(ValueError):
        g.stop()  # already stopping
    g.kill()
    assert [s for _, s in g.sent] == [signal.SIGTERM, signal.SIGKILL]
    assert g.state.kills[("operator", "SIGKILL")] == 1


def test_stop_in_a_restart_back_off_cancels_the_restart():
    g, loop, _ = make(limit=None, rate=0.0, restart="always", restart_delay_seconds=5.0)
    loop.advance(0.5)
    g.child_exited(1 << 8)  # exited with code 1
    assert g.state.phase == "restarting" and g.program_state is ProgramState.BACKING_OFF
    finished = []
    g._finish = finished.append  # type: ignore[method-assign]
    assert "cancelled" in g.stop()
    loop.advance(10.0)
    assert finished == [1]  # Sentinel exits with the last code; nothing was respawned
    assert g.state.phase == "exited" and g.state.main_pid is None


def test_an_interval_below_the_4ms_floor_is_never_exceeded():
    # --interval 1ms with a workload racing to the limit: the speed-up's 4 ms
    # floor must not make the sampler wait longer than the interval asked for.
    g, loop, probe = make(limit=1000 * MiB, start=10 * MiB, rate=100 * MiB,
                          interval_seconds=0.001)
    loop.advance(2.0)
    gaps = [b - a for a, b in zip(probe.samples, probe.samples[1:])]
    assert len(gaps) > 1500 and max(gaps) <= 0.001 + 1e-9
    assert g.sent == []  # far below the limit: no kill, just the cadence


def test_persistent_sampling_failure_is_reported_once_then_recovery():
    from sentinel.exporters.events import record_for

    g, loop, probe = make(limit=1000 * MiB, rate=0.0)
    seen = []
    g.listeners.append(seen.append)
    real_sample = probe.sample
    failing = {"on": False}

    def sample():
        if failing["on"]:  # what EMFILE does to the walk: counted, never raised
            probe.errors[("children", "EMFILE")] = probe.errors.get(("children", "EMFILE"), 0) + 1
        return real_sample()
    probe.sample = sample
    loop.advance(1.0)
    assert not g.state.sampling_failing
    failing["on"] = True
    loop.advance(0.15)  # one or two failed samples: not yet "persistent"
    assert not g.state.sampling_failing
    loop.advance(2.0)  # twenty more: said once
    assert g.state.sampling_failing and g.state.sampling_failure == "children EMFILE"
    failed = [e for e in seen if e.kind == "sampling_failed"]
    assert len(failed) == 1 and "out of file descriptors" in failed[0].message
    rec = record_for(failed[0], "app")
    assert (rec.type, rec.reason) == ("Warning", "SamplingFailed")
    failing["on"] = False
    loop.advance(0.2)
    assert not g.state.sampling_failing and g.state.sampling_failing_since_wall is None
    assert [e.kind for e in seen if e.kind.startswith("sampling_")] == \
        ["sampling_failed", "sampling_recovered"]


def test_a_probe_that_raises_counts_as_failing_too():
    g, loop, probe = make(limit=1000 * MiB, rate=0.0)

    def broken():
        raise RuntimeError("probe bug")
    probe.sample = broken
    loop.advance(1.0)
    assert g.state.sampling_failing and "RuntimeError" in g.state.sampling_failure
    assert loop.next_timer() is not None  # sampling goes on, to see a recovery


def test_an_unreadable_smaps_rollup_is_no_sampling_failure():
    # --measure pss with a setuid child: its smaps_rollup gives EACCES every sample,
    # counted as a probe error, but the process counts with its RSS: still enforced.
    g, loop, probe = make(limit=1000 * MiB, rate=0.0)
    seen = []
    g.listeners.append(seen.append)
    real_sample = probe.sample

    def sample():
        key = ("smaps_rollup", "PermissionError")
        probe.errors[key] = probe.errors.get(key, 0) + 1
        return real_sample()
    probe.sample = sample
    loop.advance(2.0)
    assert probe.errors[("smaps_rollup", "PermissionError")] > 10
    assert not g.state.sampling_failing
    assert not [e for e in seen if e.kind == "sampling_failed"]


def _stopped_and_sigkilled(grace: float):
    """A workload that ignores SIGTERM: stopped by the operator, SIGKILLed one grace
    period later; returns the guardian, the loop and the exit codes ``_finish`` got."""
    g, loop, _ = make(limit=None, rate=0.0, grace_period_seconds=grace)
    finished: list[int] = []
    g._finish = finished.append  # type: ignore[method-assign]
    loop.advance(0.5)
    g.stop()
    loop.advance(grace)
    assert [s for _, s in g.sent] == [signal.SIGTERM, signal.SIGKILL]
    return g, loop, finished


def test_a_main_process_dying_after_2s_of_sigkill_keeps_its_real_status():
    # A big process can take seconds to die: still there 2 s after SIGKILL it is named
    # as not confirmed yet, and waited for; its real status (137) is Sentinel's.
    g, loop, finished = _stopped_and_sigkilled(1.0)
    loop.advance(3.0)
    assert finished == [] and g.state.phase == PHASE_TERMINATING
    kill = g.state.current_kill
    assert kill is not None and kill.confirmed is None  # not confirmed yet, not given up
    g.child_exited(signal.SIGKILL)  # a waitpid status: killed by SIGKILL
    loop.advance(1.0)
    assert finished == [137]
    assert g.state.last_kill is kill and kill.exit_code == 137 and kill.confirmed is True
    assert g.state.kills == {("operator", "SIGTERM"): 1, ("operator", "SIGKILL"): 1}


def test_a_main_process_still_there_10s_after_sigkill_ends_in_71():
    g, loop, finished = _stopped_and_sigkilled(1.0)
    loop.advance(9.9)
    assert finished == []
    loop.advance(0.2)
    assert finished == [71]
    kill = g.state.last_kill
    assert kill.confirmed is False and kill.exit_code is None and g.state.current_kill is None


def test_a_grace_period_longer_than_10s_is_the_bound_after_sigkill():
    g, loop, finished = _stopped_and_sigkilled(15.0)
    loop.advance(14.9)
    assert finished == []
    loop.advance(0.2)
    assert finished == [71]


def _real_signalling(monkeypatch, *, refuse: bool):
    """A guardian with the real _signal_tree/_term_reach whose tree walk finds nothing
    (every ``children`` read fails, as with EMFILE), and fake kill/killpg: the workload
    (pid 4242, its group 4242) takes each signal, or with ``refuse`` gives EPERM."""
    import os

    from sentinel.core import supervisor as supervisor_module

    loop = FakeLoop()
    probe = ScriptedProbe(loop, 10 * MiB, 0.0)
    probe.children = lambda pid: None  # type: ignore[method-assign]
    delivered: list[tuple[str, int]] = []

    def kill(pid, sig):
        if pid != 4242:
            raise ProcessLookupError(pid)
        if refuse:  # kill(pid, 0) too: it checks the permission
            raise PermissionError(pid)
        if sig:
            delivered.append(("pid", sig))

    def killpg(pgid, sig):
        if pgid != 4242:
            raise ProcessLookupError(pgid)
        if refuse:
            raise PermissionError(pgid)
        delivered.append(("group", sig))

    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(os, "killpg", killpg)
    monkeypatch.setattr(supervisor_module, "real_uid", lambda pid, proc="/proc": 0)
    s = Settings(command=("app",), workload_name="app", max_rss_bytes=None,
                 grace_period_seconds=1.0)
    g = Guardian(s, None, set(), loop=loop, probe=probe, clock=loop.time)  # type: ignore
    g._reap = lambda: None  # type: ignore[method-assign]
    finished: list[int] = []
    g._finish = finished.append  # type: ignore[method-assign]
    g._adopt(Child(4242, ("app",), None, loop.now, 0.0))
    return g, loop, delivered, finished


def test_a_killpg_that_delivered_counts_even_when_the_walk_finds_no_process(monkeypatch):
    g, loop, delivered, finished = _real_signalling(monkeypatch, refuse=False)
    loop.advance(0.5)
    assert g.stop() == "SIGTERM sent; SIGKILL after the grace period"
    kill = g.state.current_kill
    assert kill.signals == ["SIGTERM"] and kill.reached == {"SIGTERM": [4242]}
    loop.advance(1.0)  # the grace period: SIGKILL, recorded and counted
    assert ("group", signal.SIGKILL) in delivered
    assert kill.signals == ["SIGTERM", "SIGKILL"] and kill.reached["SIGKILL"] == [4242]
    assert g.state.kills == {("operator", "SIGTERM"): 1, ("operator", "SIGKILL"): 1}
    loop.advance(1.0)
    assert finished == [] and g.state.current_kill is kill  # no give-up at 0 s
    g.child_exited(signal.SIGKILL)
    loop.advance(0.1)
    assert finished == [137] and kill.exit_code == 137 and kill.refused == {}


def test_the_fast_give_up_needs_every_process_to_refuse_and_names_it(monkeypatch):
    g, loop, delivered, finished = _real_signalling(monkeypatch, refuse=True)
    loop.advance(0.5)
    assert g.stop().startswith("SIGTERM reached no process: refused by pid 4242 (uid 0) "
                               "(permission denied)")
    loop.advance(1.0)  # the walk found nobody: the grace period is kept
    assert delivered == [] and g.state.kills == {}
    loop.advance(0.01)  # SIGKILL refused too: nothing to wait for
    assert finished == [71]
    assert g.state.last_kill.signals == [] and g.state.last_kill.refused == {4242: 0}


def test_a_second_kill_after_sigkill_sends_and_counts_nothing():
    g, loop, finished = _stopped_and_sigkilled(1.0)  # stop, then SIGKILL at the grace's end
    killed_at = loop.now
    loop.advance(1.5)
    assert g.kill() == "SIGKILL already sent"
    loop.advance(0.1)
    assert g.kill() == "SIGKILL already sent"
    assert [s for _, s in g.sent] == [signal.SIGTERM, signal.SIGKILL]
    assert g.state.current_kill.signals == ["SIGTERM", "SIGKILL"]
    assert g.state.kills == {("operator", "SIGTERM"): 1, ("operator", "SIGKILL"): 1}
    loop.advance(killed_at + 10.05 - loop.now)  # the bound still runs from the first SIGKILL
    assert finished == [71]


def test_a_kill_then_a_kill_again_is_one_sigkill():
    g, loop, _ = make(limit=None, rate=0.0)
    loop.advance(0.5)
    assert g.kill() == "SIGKILL sent"
    assert g.kill() == "SIGKILL already sent"
    assert [s for _, s in g.sent] == [signal.SIGKILL]
    assert g.state.kills == {("operator", "SIGKILL"): 1}


def test_the_sigkill_line_says_when_it_was_sent():
    def sigkill_line(after_stop):
        g, loop, _ = make(limit=None, rate=0.0, grace_period_seconds=3.0)
        seen = []
        g.listeners.append(seen.append)
        loop.advance(0.5)
        if after_stop is not None:
            g.stop()
            loop.advance(after_stop)
        if after_stop is None or after_stop < 3.0:
            g.kill()
        return [e.message for e in seen if e.kind == "signal_sent"
                and e.fields.get("signal") == "SIGKILL"][0]

    assert "after the 3.0s grace period" in sigkill_line(3.5)  # the ladder's own step
    assert "now, 0.5s into the 3.0s grace period" in sigkill_line(0.5)  # stop, then kill
    line = sigkill_line(None)  # kill with no SIGTERM first
    assert "process(es) now (operator)" in line and "grace" not in line


def test_the_kill_summary_names_the_code_sentinel_reports():
    g, loop, _ = make()  # crosses 100 MiB after about 0.9 s
    seen = []
    g.listeners.append(seen.append)
    loop.advance(1.0)
    assert g.state.current_kill is not None
    g.child_exited(0)  # the workload's SIGTERM handler exits 0: still a failure
    loop.advance(0.1)
    done = [e.message for e in seen if e.kind == "kill_finished"]
    assert done and "exit code 0 (Sentinel reports 137)" in done[0], done
