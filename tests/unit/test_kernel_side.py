"""``sentinel.core.kernel_side`` on a fake clock: the early-SIGKILL decision as a pure
function, ``Ladder.escalate_now``, and the supervisor telling a kernel OOM kill apart
from its own SIGKILL and from someone else's (the oom_kill counter of a fake cgroup)."""

from __future__ import annotations

import dataclasses
import signal

import pytest

from sentinel.config.settings import parse_settings
from sentinel.core.kernel_side import OOM_RISE_SETTLE_SECONDS, early_sigkill_reason
from sentinel.core.ladder import Ladder
from sentinel.core.state import KillRecord
from sentinel.errors import UsageError
from sentinel.probes.contract import MemorySample
from tests.unit.test_guardian_clock import FakeLoop, MiB, make
from tests.unit.test_ladder_unit import FakeSignaller, record

SIGKILLED = signal.SIGKILL  # a raw wait status: killed by signal 9


# ---------------------------------------------------------------- the pure decision
def test_sigkill_early_when_the_hard_limit_comes_before_the_grace_period_ends():
    # 400 MiB used of 512 MiB, +100 MiB/s: the limit in 1.12 s, the SIGKILL in 8 s.
    why = early_sigkill_reason(400 * MiB, 512 * MiB, 100 * MiB, now=1002.0, sigkill_at=1010.0)
    assert why is not None
    assert "1.12s" in why and "8.00s" in why and "512.0 MiB" in why


def test_no_early_sigkill_when_the_grace_period_ends_first_or_nothing_grows():
    assert early_sigkill_reason(400 * MiB, 512 * MiB, 10 * MiB, 1002.0, 1010.0) is None  # 11.2 s
    assert early_sigkill_reason(400 * MiB, 512 * MiB, 0.0, 1002.0, 1010.0) is None
    assert early_sigkill_reason(400 * MiB, 512 * MiB, -5 * MiB, 1002.0, 1010.0) is None
    assert early_sigkill_reason(400 * MiB, 512 * MiB, None, 1002.0, 1010.0) is None
    assert early_sigkill_reason(400 * MiB, None, 100 * MiB, 1002.0, 1010.0) is None  # no limit
    assert early_sigkill_reason(None, 512 * MiB, 100 * MiB, 1002.0, 1010.0) is None
    assert early_sigkill_reason(400 * MiB, 512 * MiB, 100 * MiB, 1010.0, 1010.0) is None  # due


def test_at_the_hard_limit_already_sigkill_now_whatever_the_rate():
    why = early_sigkill_reason(512 * MiB, 512 * MiB, None, 1002.0, 1010.0)
    assert why is not None and "at its hard limit" in why


# ---------------------------------------------------------------- the ladder
def test_escalate_now_sends_sigkill_at_once_and_records_why():
    loop = FakeLoop()
    sig = FakeSignaller(loop)
    rec = record(10.0)
    killed: list = []
    lad = Ladder(sig, loop, clock=loop.time, grace_period_seconds=10.0, record=rec,
                 on_sigkill=killed.append)
    assert lad.escalate_now("not started") is None  # nothing scheduled yet: nothing sent
    lad.start()
    loop.advance(1.5)
    assert lad.escalate_now("the hard limit first").reached
    assert sig.signals() == [signal.SIGTERM, signal.SIGCONT, signal.SIGKILL]
    assert sig.sent[-1][0] == 1001.5
    assert rec.early_sigkill_reason == "the hard limit first" == lad.early_reason
    assert rec.to_dict()["early_sigkill_reason"] == "the hard limit first"
    assert killed == [list(sig.pids)]  # the post-SIGKILL hook (process_mrelease) ran
    assert lad.escalate_now("again") is None  # once is enough
    loop.advance(20.0)
    assert sig.signals().count(signal.SIGKILL) == 1


# ---------------------------------------------------------------- in the supervisor
class _CgroupProbe:
    """The ScriptedProbe's samples with cgroup figures: usage = the measure + ``extra``,
    ``memory.max`` = ``hard``, and an ``oom_kill`` counter the test raises."""

    def __init__(self, inner, hard: int | None, extra: int = 0, inactive: int = 0) -> None:
        self.inner, self.hard, self.extra, self.oom_kills = inner, hard, extra, 0
        self.inactive = inactive  # inactive_file: page cache the kernel reclaims first
        self.errors = inner.errors
        self.root_pid, self.include_root = inner.root_pid, inner.include_root
        self.cgroup = self

    def sample(self) -> MemorySample:
        s = self.inner.sample()
        current = min(s.measure_bytes + self.extra, self.hard or 1 << 62)
        return dataclasses.replace(s, cgroup_memory_current_bytes=current,
                                   cgroup_working_set_bytes=max(0, current - self.inactive),
                                   cgroup_memory_max_bytes=self.hard,
                                   cgroup_oom_kills=self.oom_kills)

    def events(self) -> dict:
        return {"oom_kill": self.oom_kills}

    def limits(self):
        return self.hard, None

    def children(self, pid):
        return []

    def close(self) -> None:
        pass


def _guardian(**kw):
    hard = kw.pop("hard", 256 * MiB)
    g, loop, probe = make(**kw)
    g.probe = _CgroupProbe(probe, hard)
    g.kernel_side.new_run(4242)
    return g, loop, g.probe


def test_a_fast_leaker_is_sigkilled_before_it_reaches_the_hard_limit():
    # 100 MiB/s from 10 MiB: SIGTERM at the 100 MiB limit (t0+0.9 s); the 256 MiB hard
    # limit comes at t0+2.46 s, well before the 10 s grace period ends.
    g, loop, probe = _guardian(grace_period_seconds=10.0)
    loop.advance(3.0)
    sent = [s for _, s in g.sent]
    assert sent == [signal.SIGTERM, signal.SIGKILL], sent
    t_term, t_kill = g.sent[0][0], g.sent[1][0]
    assert t_kill - t_term < 1.6  # well within the grace period
    assert probe.inner.value() - 100 * MiB * (loop.now - t_kill) < 256 * MiB  # before the limit
    kill = g.state.current_kill or g.state.last_kill
    assert kill.early_sigkill_reason and "before the grace period ends" in \
        kill.early_sigkill_reason
    msg = [e.message for e in g.state.events if e.kind == "signal_sent"][-1]
    assert "into the 10.0s grace period" in msg and "hard limit" in msg


def test_a_group_full_of_page_cache_does_not_cut_the_grace_period_short():
    # The usage sits at memory.max (cache fills the group, as it does), the working set
    # is low and the workload does not grow: the SIGKILL waits for the grace period.
    g, loop, probe = _guardian(grace_period_seconds=5.0, rate=0.0, start=120 * MiB)
    probe.extra, probe.inactive = 1 << 30, 200 * MiB  # usage capped at the 256 MiB limit
    loop.advance(4.0)
    assert [s for _, s in g.sent] == [signal.SIGTERM]
    loop.advance(1.5)
    assert [s for _, s in g.sent] == [signal.SIGTERM, signal.SIGKILL]
    assert g.state.current_kill.early_sigkill_reason is None


def test_without_early_sigkill_the_grace_period_is_waited_out():
    g, loop, _ = _guardian(grace_period_seconds=10.0, no_early_sigkill=True)
    loop.advance(5.0)
    assert [s for _, s in g.sent] == [signal.SIGTERM]
    loop.advance(6.0)
    assert [s for _, s in g.sent] == [signal.SIGTERM, signal.SIGKILL]
    assert g.state.last_kill is None and g.state.current_kill.early_sigkill_reason is None


def test_a_sigkill_sentinel_did_not_send_while_oom_kill_rose_is_a_kernel_oom_kill():
    g, loop, probe = _guardian(limit=None, rate=10 * MiB)
    g._finish = lambda code: None  # type: ignore[method-assign]
    loop.advance(0.5)
    probe.oom_kills = 1  # the kernel's OOM killer; then the main process dies of SIGKILL
    g.child_exited(SIGKILLED)
    kill = g.state.last_kill
    assert isinstance(kill, KillRecord) and kill.reason == "kernel_oom"
    assert kill.signals == [] and kill.exit_code == 137 and kill.pids == (4242,)
    assert kill.limit_bytes is None and kill.value_bytes is not None
    assert g.state.kills == {("kernel_oom", "SIGKILL"): 1}
    ev = [e for e in g.state.events if e.kind == "kernel_oom_kill"]
    assert len(ev) == 1
    assert ev[0].fields["pid"] == 4242 and ev[0].fields["oom_kills_delta"] == 1
    assert ev[0].fields["cgroup_limit_bytes"] == 256 * MiB
    assert ev[0].fields["kill"]["reason"] == "kernel_oom"
    assert "256.0 MiB" in ev[0].message and "--max-rss auto" in ev[0].message
    assert g._exit_code == 137


def test_a_sigkill_from_outside_with_oom_kill_unchanged_is_not_a_kernel_oom_kill():
    g, loop, _ = _guardian(limit=None, rate=10 * MiB)
    g._finish = lambda code: None  # type: ignore[method-assign]
    loop.advance(0.5)
    g.child_exited(SIGKILLED)
    assert g.state.last_kill is None and g.state.kills == {}
    assert not [e for e in g.state.events if e.kind == "kernel_oom_kill"]
    assert g._exit_code == 137


def test_sentinels_own_sigkill_stays_sentinels_even_if_oom_kill_rose():
    g, loop, probe = _guardian(limit=None, rate=10 * MiB)
    g._finish = lambda code: None  # type: ignore[method-assign]
    loop.advance(0.5)
    g.kill()
    probe.oom_kills = 1
    g.child_exited(SIGKILLED)
    assert g.state.last_kill.reason == "operator"
    assert ("kernel_oom", "SIGKILL") not in g.state.kills


def test_a_rise_the_main_process_outlives_is_another_process_killed_by_the_kernel():
    g, loop, probe = _guardian(limit=None, rate=0.0)
    loop.advance(0.5)
    probe.oom_kills = 2
    loop.advance(OOM_RISE_SETTLE_SECONDS + 0.5)
    ev = [e for e in g.state.events if e.kind == "kernel_oom_kill"]
    assert len(ev) == 1 and ev[0].fields["pid"] is None and ev[0].fields["oom_kills_delta"] == 2
    assert g.state.kills == {("kernel_oom", "SIGKILL"): 1}
    assert g.state.last_kill is None  # the workload's main process was not the one
    g._finish = lambda code: None  # type: ignore[method-assign]
    g.child_exited(SIGKILLED)  # a later kill -9: the settled rise does not make it the kernel's
    assert g.state.last_kill is None


# ---------------------------------------------------------------- the options
def test_the_options_parse_from_flags_and_variables_and_refuse_out_of_range():
    s = parse_settings("run", ["--", "app"], environ={})
    assert (s.oom_score_adj_margin, s.no_early_sigkill, s.clamp_high) == (100, False, False)
    s = parse_settings("run", ["--oom-score-adj-margin", "0", "--no-early-sigkill",
                               "--clamp-high", "--", "app"], environ={})
    assert (s.oom_score_adj_margin, s.no_early_sigkill, s.clamp_high) == (0, True, True)
    s = parse_settings("watch", ["--target-pid", "1"],
                       environ={"SENTINEL_OOM_SCORE_ADJ_MARGIN": "250",
                                "SENTINEL_NO_EARLY_SIGKILL": "1"})
    assert (s.oom_score_adj_margin, s.no_early_sigkill) == (250, True)
    with pytest.raises(UsageError) as info:
        parse_settings("run", ["--oom-score-adj-margin", "5000", "--", "app"], environ={})
    assert "--oom-score-adj-margin" in str(info.value) and "0-2000" in str(info.value)
