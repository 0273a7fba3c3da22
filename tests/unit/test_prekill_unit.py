"""The pieces of the pre-kill hook and the dry run alone: the ladder's held first step
(``Ladder.start_held``/``release``: the SIGKILL deadline never moves, the early SIGKILL
still applies), the hook's output bound (UTF-8 safe), its environment, the dry run's
termination message, Event notes and metrics series."""

from __future__ import annotations

import signal

from prometheus_client import generate_latest

from sentinel.core.hook import HookResult, hook_environment, truncate_utf8
from sentinel.core.state import Event, GuardianState, KillRecord
from sentinel.exporters import termlog
from sentinel.exporters.event_bodies import record_for
from sentinel.exporters.metrics import SentinelCollector, build_registry
from tests.unit.test_guardian_clock import FakeLoop
from tests.unit.test_ladder_unit import FakeSignaller, ladder, record

MiB = 2**20


def test_a_held_sigterm_waits_for_the_pre_step_and_the_sigkill_deadline_does_not_move():
    loop = FakeLoop()
    sig = FakeSignaller(loop)
    lad, _ = ladder(loop, sig, grace=3.0, record=record(3.0))
    lad.start_held(1.0)
    assert sig.sent == [] and lad.held and lad.grace_deadline == 1003.0
    loop.advance(0.4)
    lad.release()  # the hook ended early: SIGTERM now
    assert sig.sent == [(1000.4, signal.SIGTERM), (1000.4, signal.SIGCONT)]
    assert not lad.held and lad.release() is None  # once
    loop.advance(2.59)
    assert signal.SIGKILL not in sig.signals()
    loop.advance(0.02)
    assert sig.sent[-1] == (1003.0, signal.SIGKILL)


def test_a_pre_step_that_hangs_gets_the_sigterm_at_its_bound_and_the_sigkill_at_grace():
    loop = FakeLoop()
    sig = FakeSignaller(loop)
    lad, _ = ladder(loop, sig, grace=3.0)
    lad.start_held(1.5)
    loop.advance(1.51)
    assert sig.sent == [(1001.5, signal.SIGTERM), (1001.5, signal.SIGCONT)]
    loop.advance(1.5)
    assert sig.sent[-1] == (1003.0, signal.SIGKILL)


def test_the_early_sigkill_applies_while_the_sigterm_is_held_and_no_sigterm_follows():
    loop = FakeLoop()
    sig = FakeSignaller(loop)
    rec = record(3.0)
    lad, _ = ladder(loop, sig, grace=3.0, record=rec)
    lad.start_held(2.0)
    loop.advance(0.5)
    assert lad.escalate_now("the hard limit in 0.2s") is not None
    assert sig.signals() == [signal.SIGKILL]
    loop.advance(5.0)  # the held SIGTERM never comes after the SIGKILL
    assert signal.SIGTERM not in sig.signals()
    assert rec.early_sigkill_reason == "the hard limit in 0.2s" and rec.signals == ["SIGKILL"]


def test_the_main_process_exiting_during_the_pre_step_ends_the_ladder():
    loop = FakeLoop()
    sig = FakeSignaller(loop)
    lad, calls = ladder(loop, sig, grace=3.0)
    lad.start_held(1.0)
    lad.main_exited()
    loop.advance(10.0)
    assert sig.sent == [] and calls == [] and lad.release() is None


def test_a_held_sigterm_that_everyone_refuses_escalates_at_once():
    loop = FakeLoop()
    sig = FakeSignaller(loop, refuse=(4242, 4243))
    lad, _ = ladder(loop, sig, grace=3.0, everyone_refuses=lambda refused: True)
    lad.start_held(1.0)
    loop.advance(0.2)
    lad.release()
    loop.advance(0.01)
    assert sig.signals() == [signal.SIGTERM, signal.SIGCONT, signal.SIGKILL]


def test_the_output_is_cut_on_a_character_boundary():
    text = "é" * 3000  # 2 bytes each
    cut = truncate_utf8(text.encode(), 4095)
    assert cut == "é" * 2047 and len(cut.encode()) <= 4095
    assert truncate_utf8(b"ok \xff\xfe", 4096) == "ok \ufffd\ufffd"
    res = HookResult(("dump",), 12, exit_code=0, output=("é" * 3000).encode(),
                     output_bytes=10_000)
    fields = res.fields()
    assert len(fields["output"].encode()) <= 4096 and fields["dropped_bytes"] == 4000


def test_the_hooks_environment_names_the_kill():
    env = hook_environment({"PATH": "/bin"}, pid=7, pids=(7, 8), program="web",
                           measure="pss", value_bytes=10, limit_bytes=None, reason="memory_limit")
    assert env == {"PATH": "/bin", "SENTINEL_PID": "7", "SENTINEL_PIDS": "7 8",
                   "SENTINEL_PROGRAM": "web", "SENTINEL_MEASURE": "pss",
                   "SENTINEL_VALUE_BYTES": "10", "SENTINEL_LIMIT_BYTES": "",
                   "SENTINEL_REASON": "memory_limit"}


def _dry_kill() -> KillRecord:
    return KillRecord(reason="memory_limit", started_wall=1.0, started_mono=1.0, measure="rss",
                      value_bytes=70 * 2**20, limit_bytes=60 * 2**20, pids=(7,),
                      grace_period_seconds=1.0, signals=["SIGTERM", "SIGKILL"],
                      reached={"SIGTERM": [7], "SIGKILL": [7]}, dry_run=True)


def test_the_termination_message_of_a_dry_run_says_nothing_was_sent():
    text = termlog.summary(_dry_kill().to_dict(), "web", kills_total=1)
    assert text.startswith("DRY RUN: Sentinel would have stopped 'web': memory limit exceeded.")
    assert "Would have sent SIGTERM then SIGKILL (1.0s grace period); dry run: no signal was " \
           "sent." in text
    assert "reached" not in text and "Kills by Sentinel" not in text


def test_the_termination_message_carries_the_hooks_output():
    kill = _dry_kill()
    kill.dry_run = False
    kill.pre_kill_hook = {"exit_code": 0, "timed_out": False, "seconds": 0.25,
                          "output": "Thread 1: leak()\n" * 400}
    text = termlog.summary(kill.to_dict(), "web")
    assert "Pre-kill hook (exit code 0, 0.2s) output: Thread 1: leak()" in text
    assert len(text.encode()) <= termlog.MAX_BYTES


def test_a_dry_run_events_note_says_so_and_the_hook_has_its_own_event():
    kill = _dry_kill().to_dict()
    ev = Event("signal_sent", "would have sent SIGTERM ...", fields={
        "signal": "SIGTERM", "reason": "memory_limit", "pids": [7], "refused": [],
        "kill": kill, "dry_run": True})
    rec = record_for(ev, "web")
    assert rec.reason == "MemoryLimitExceeded"
    assert "DRY RUN, no signal sent: would have sent SIGTERM to workload 'web'" in rec.note
    hook = Event("pre_kill_hook", "...", fields={
        **HookResult(("py-spy", "dump"), 9, exit_code=1, output=b"x" * 5000,
                     output_bytes=5000).fields(), "kill": kill})
    rec = record_for(hook, "web")
    assert (rec.type, rec.reason, rec.action) == ("Warning", "PreKillHook", "PreKillHook")
    assert rec.note.startswith("Pre-kill hook 'py-spy dump' for workload 'web' (pid 7, rss ")
    assert "exited with code 1 after 0.0s (dry run). Output: xxx" in rec.note
    assert len(rec.note.encode()) <= 1024


def test_dry_run_signals_are_their_own_counter():
    st = GuardianState(mode="run", workload="web", command=("web",), measure="rss",
                       limit_bytes=None, grace_period_seconds=1.0, interval_seconds=0.1,
                       version="0", program="web")
    text = generate_latest(build_registry(SentinelCollector(st), process=False)).decode()
    assert "sentinel_dry_run_signals_total" not in text  # no series without --dry-run
    st.dry_run = True
    st.dry_run_signals[("memory_limit", "SIGTERM")] = 2
    text = generate_latest(build_registry(SentinelCollector(st), process=False)).decode()
    assert ('sentinel_dry_run_signals_total{program="web",reason="memory_limit",'
            'signal="SIGTERM",workload="web"} 2.0') in text
    assert ('sentinel_dry_run_signals_total{program="web",reason="memory_limit",'
            'signal="SIGKILL",workload="web"} 0.0') in text


def test_the_tuis_state_line_says_dry_run():
    from sentinel.ui.dashboard import state_line

    snap = {"phase": "running", "main_pid": 7, "enforcing": True}
    assert state_line(snap)[0] == "RUNNING"
    label, detail, _ = state_line({**snap, "dry_run": True})
    assert label == "RUNNING (DRY RUN)"
    assert detail == "pid 7; memory kills are reported, no signal sent"


def test_a_hook_that_cannot_be_started_never_stops_the_kill(monkeypatch):
    """No pipe for the hook (EMFILE): one warning, and the SIGTERM at the crossing as
    without a hook, the SIGKILL one grace period later (injected clock)."""
    import errno

    import pytest

    from sentinel.core import hook
    from tests.unit.test_guardian_clock import make

    def no_pipe(flags):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(hook.os, "pipe2", no_pipe)
    g, loop, _ = make(grace_period_seconds=3.0, pre_kill_hook=("py-spy", "dump"))
    loop.advance(2.0)
    assert [s for _, s in g.sent] == [signal.SIGTERM]
    t_term = g.sent[0][0]
    loop.advance(3.0)
    assert [s for _, s in g.sent] == [signal.SIGTERM, signal.SIGKILL]
    assert g.sent[1][0] - t_term == pytest.approx(3.0)


def test_a_dry_run_sends_nothing_counts_apart_and_reports_once_per_crossing(monkeypatch):
    from tests.unit.test_guardian_clock import Recorder, make

    # The workload (pid 4242) is made up: the dry SIGKILL's kill(pid, 0) would miss it.
    monkeypatch.setattr(Recorder, "_reachable", staticmethod(lambda pids: (list(pids), {})))
    monkeypatch.setattr(Recorder, "_descendants", lambda self: [4242])
    g, loop, probe = make(grace_period_seconds=1.0, dry_run=True)
    loop.advance(10.0)  # crosses at t0+0.9 s and keeps growing past the limit
    assert g.sent == []  # not one signal
    assert g.state.kills == {}
    assert g.state.dry_run_signals == {("memory_limit", "SIGTERM"): 1,
                                       ("memory_limit", "SIGKILL"): 1}
    kinds = [e.kind for e in g.state.events]
    assert kinds.count("limit_crossed") == 1 and kinds.count("kill_finished") == 1
    assert g.state.last_kill.dry_run and g.state.current_kill is None
    assert g.state.phase == "running"


def test_a_dry_run_whose_sigkill_would_reach_nobody_still_ends_and_sentinel_runs_on():
    from tests.unit.test_guardian_clock import make

    g, loop, probe = make(grace_period_seconds=1.0, dry_run=True)  # pid 4242: no process
    loop.advance(20.0)  # past the 2 s and 10 s waits after a SIGKILL
    assert g.sent == [] and not g.finished
    kinds = [e.kind for e in g.state.events]
    assert kinds.count("kill_finished") == 1 and g.state.phase == "running"


def test_a_dry_run_kill_is_no_last_kill_for_the_metrics():
    st = GuardianState(mode="run", workload="web", command=("web",), measure="rss",
                       limit_bytes=None, grace_period_seconds=1.0, interval_seconds=0.1,
                       version="0", program="web", dry_run=True)
    st.last_kill = _dry_kill()
    text = generate_latest(build_registry(SentinelCollector(st), process=False)).decode()
    assert ('sentinel_last_kill_timestamp_seconds{program="web",workload="web"} 0.0'
            in text)


def test_a_dry_run_kill_is_no_last_kill_in_the_state_file():
    import json

    from sentinel.exporters.statefile import render

    st = GuardianState(mode="run", workload="web", command=("web",), measure="rss",
                       limit_bytes=None, grace_period_seconds=1.0, interval_seconds=0.1,
                       version="0", program="web", dry_run=True)
    st.last_kill = _dry_kill()
    doc = json.loads(render({}, [st], None))
    assert doc["last_kill_timestamp_seconds"] is None
    assert doc["last_kill_timestamp_seconds_by_program"] == {}


def test_a_hook_without_a_pipe_is_reported_and_the_next_kill_tries_it_again(
        monkeypatch, caplog):
    """One EMFILE must not disable the hook for good: the failure is the hook's report
    (``pre_kill_hook``, exit code 127, the error), and the next kill starts it again
    rather than waiting for "the previous one (pid None)" forever."""
    import errno
    import logging

    from sentinel.core import hook
    from tests.unit.test_guardian_clock import make

    calls = []

    def no_pipe(flags):
        calls.append(flags)
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(hook.os, "pipe2", no_pipe)
    g, loop, _ = make(grace_period_seconds=3.0, pre_kill_hook=("py-spy", "dump"))
    loop.advance(2.0)  # the crossing: the hook fails, the SIGTERM goes at once
    assert [s for _, s in g.sent] == [signal.SIGTERM] and len(calls) == 1
    reports = [e for e in g.state.events if e.kind == "pre_kill_hook"]
    assert len(reports) == 1 and reports[0].fields["exit_code"] == 127
    assert "Too many open files" in reports[0].fields["error"]
    with caplog.at_level(logging.WARNING):
        assert g._start_hook(g.state.current_kill) is None  # the next kill: tried again
    assert len(calls) == 2
    assert "still running" not in caplog.text


def test_a_dry_run_around_its_limit_reports_once_and_rearms_after_a_calm_grace_period(
        monkeypatch):
    """A workload oscillating around its limit (a 0.5 s sawtooth from 50 to 110 MiB, a
    100 MiB limit) dips below the limit on every cycle: one dry kill for the whole storm,
    not one per dip (each is Events, webhooks, a hook run). Once it stays below 95 % of
    the limit for the re-arm period, the next crossing is reported again."""
    from sentinel.core.supervisor import DRY_REARM_MIN_SECONDS
    from tests.unit.test_guardian_clock import Recorder, ScriptedProbe, make

    monkeypatch.setattr(Recorder, "_reachable", staticmethod(lambda pids: (list(pids), {})))
    monkeypatch.setattr(Recorder, "_descendants", lambda self: [4242])
    shape = {"calm_from": None, "calm_until": None}

    def value(self) -> int:
        t = self.loop.now - self.t0
        if shape["calm_from"] is not None and shape["calm_from"] <= t < shape["calm_until"]:
            return 60 * MiB  # well below the band
        return int(50 * MiB + 60 * MiB * ((t % 0.5) / 0.5))

    monkeypatch.setattr(ScriptedProbe, "value", value)
    g, loop, probe = make(grace_period_seconds=1.0, dry_run=True, interval_seconds=0.02)
    assert g.dry_rearm_seconds() == DRY_REARM_MIN_SECONDS  # the grace period is shorter
    loop.advance(20.0)  # 40 cycles, each one over the limit and back down to 50 MiB

    def count(kind):
        return [e.kind for e in g.state.events].count(kind)

    assert count("limit_crossed") == 1 and count("kill_finished") == 1
    assert g.sent == []
    # Calm (below 95 %) for less than the re-arm period: still one report.
    shape.update(calm_from=20.0, calm_until=20.0 + DRY_REARM_MIN_SECONDS - 0.5)
    loop.advance(DRY_REARM_MIN_SECONDS + 2.0)
    assert count("limit_crossed") == 1
    # Calm for longer: re-armed, and the next crossing is a second report.
    start = loop.now - probe.t0
    shape.update(calm_from=start, calm_until=start + DRY_REARM_MIN_SECONDS + 0.5)
    loop.advance(DRY_REARM_MIN_SECONDS + 2.0)
    assert count("limit_crossed") == 2

