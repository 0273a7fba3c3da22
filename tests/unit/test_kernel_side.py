"""``sentinel.core.kernel_side`` on a fake clock: the early-SIGKILL decision as a pure
function, ``Ladder.escalate_now``, and the supervisor telling a kernel OOM kill apart
from its own SIGKILL and from someone else's (the oom_kill counter of a fake cgroup)."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest

from sentinel.config.settings import parse_settings
from sentinel.core import kernel
from sentinel.core.kernel_side import (
    OOM_RISE_SETTLE_SECONDS, KernelSide, early_sigkill_reason, oom_score_adj_plan,
    workload_oom_score_adj_target)
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
        self.ws = None  # callable: sample -> working set bytes or None (default: usage - inactive)
        self.effective = None  # limits()'s hard limit (parents included) when not ``hard``
        self.limit_reads = 0
        self.errors = inner.errors
        self.root_pid, self.include_root = inner.root_pid, inner.include_root
        self.cgroup = self

    def sample(self) -> MemorySample:
        s = self.inner.sample()
        s = dataclasses.replace(s, processes=s.processes + tuple(
            (pid, 0) for pid in getattr(self, "workers", ())))
        current = min(s.measure_bytes + self.extra, self.hard or 1 << 62)
        ws = max(0, current - self.inactive) if self.ws is None else self.ws(s)
        return dataclasses.replace(s, cgroup_memory_current_bytes=current,
                                   cgroup_working_set_bytes=ws,
                                   cgroup_memory_max_bytes=self.hard,
                                   cgroup_oom_kills=self.oom_kills)

    def events(self) -> dict:
        return {"oom_kill": self.oom_kills}

    def limits(self):
        self.limit_reads += 1
        return (self.hard if self.effective is None else self.effective), None

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
    probe.workers = (4243,)  # a worker of the workload's tree, which the kernel kills
    loop.advance(0.5)
    probe.oom_kills = 2
    probe.workers = ()
    loop.advance(OOM_RISE_SETTLE_SECONDS + 0.5)
    ev = [e for e in g.state.events if e.kind == "kernel_oom_kill"]
    assert len(ev) == 1 and ev[0].fields["pid"] is None and ev[0].fields["oom_kills_delta"] == 2
    assert g.state.kills == {("kernel_oom", "SIGKILL"): 1}
    assert g.state.last_kill is None  # the workload's main process was not the one
    g._finish = lambda code: None  # type: ignore[method-assign]
    g.child_exited(SIGKILLED)  # a later kill -9: the settled rise does not make it the kernel's
    assert g.state.last_kill is None


def test_a_rise_with_every_process_of_the_workload_still_there_is_not_the_workloads():
    # The kernel killed another process of the cgroup (a `kubectl exec` shell): said as a
    # note, never counted as a kill of the workload.
    g, loop, probe = _guardian(limit=None, rate=0.0)
    loop.advance(0.5)
    probe.oom_kills = 1
    loop.advance(OOM_RISE_SETTLE_SECONDS + 0.5)
    assert not [e for e in g.state.events if e.kind == "kernel_oom_kill"]
    assert g.state.kills.get(("kernel_oom", "SIGKILL"), 0) == 0
    assert "not the workload's" in g.state.kernel_notes["oom_other"]


def test_a_limit_at_or_above_the_containers_is_warned_of_once():
    g, loop, probe = _guardian(limit=300 * MiB, rate=0.0)
    probe.hard = 200 * MiB
    loop.advance(1.0)
    assert "at or above the container's memory limit" in g.state.kernel_notes[
        "limit_above_container"]


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


# ---------------------------------------------------------------- the early SIGKILL's figures
def test_the_measure_growing_while_the_working_set_does_not_never_cuts_the_grace_period():
    # --measure cgroup: a SIGTERM handler writes a checkpoint (page cache) at 100 MiB/s
    # while the working set stays at 200 MiB of the 256 MiB hard limit: the measure's
    # slope would reach the limit in 0.56 s; the working set's own (0) never does.
    g, loop, probe = _guardian(grace_period_seconds=5.0)
    probe.ws = lambda s: 200 * MiB
    loop.advance(4.0)  # SIGTERM at t0+0.9 s
    assert [s for _, s in g.sent] == [signal.SIGTERM]
    loop.advance(2.5)
    assert [s for _, s in g.sent] == [signal.SIGTERM, signal.SIGKILL]
    assert g.state.current_kill.early_sigkill_reason is None


def test_the_working_set_growing_faster_than_the_measure_is_sigkilled_early():
    # The measure creeps (1 MiB/s, over its limit at t0+0.5 s); the working set grows
    # at 100 MiB/s from 100 MiB: the 256 MiB hard limit at ~1.5 s, before the 10 s grace.
    g, loop, probe = _guardian(grace_period_seconds=10.0, start=int(99.5 * MiB), rate=MiB)
    t0 = loop.now
    probe.ws = lambda s: int(100 * MiB + 100 * MiB * (s.at_mono - t0))
    loop.advance(3.0)
    assert [s for _, s in g.sent] == [signal.SIGTERM, signal.SIGKILL]
    assert g.sent[1][0] - t0 < 1.5  # projected, not when the working set is at the limit
    assert "before the grace period ends" in g.state.current_kill.early_sigkill_reason


def test_the_early_sigkill_uses_the_effective_hard_limit_parents_included():
    # The group's own memory.max is 1 GiB, its parent's 256 MiB (limits()): at 100 MiB/s
    # the parent's limit comes in ~1.5 s, before the 5 s grace period ends.
    g, loop, probe = _guardian(grace_period_seconds=5.0, hard=1 << 30)
    probe.effective = 256 * MiB
    loop.advance(3.0)
    assert [s for _, s in g.sent] == [signal.SIGTERM, signal.SIGKILL]
    assert "256.0 MiB" in g.state.current_kill.early_sigkill_reason
    assert probe.limit_reads <= 2  # cached: re-read at most every few seconds


def test_an_unknown_working_set_skips_the_check_never_the_usage_in_its_place():
    # memory.stat unreadable: no working set. The usage (page cache) is at the limit,
    # which is normal: the grace period is waited out.
    g, loop, probe = _guardian(grace_period_seconds=5.0, rate=0.0, start=120 * MiB)
    probe.extra = 1 << 30
    probe.ws = lambda s: None
    g.set_limit(100 * MiB)
    loop.advance(4.0)
    assert [s for _, s in g.sent] == [signal.SIGTERM]
    loop.advance(1.5)
    assert [s for _, s in g.sent] == [signal.SIGTERM, signal.SIGKILL]


# ---------------------------------------------------------------- --clamp-high restored
class _V2Probe(_CgroupProbe):
    """A cgroup v2 group in ``path`` (a tmp dir with a ``memory.high`` file)."""

    version = 2

    def __init__(self, inner, hard, path) -> None:
        super().__init__(inner, hard)
        self.path = str(path)

    def read(self):
        return SimpleNamespace(current_bytes=self.inner.value())


def test_clamp_high_is_restored_when_the_kill_is_given_up_with_a_survivor(tmp_path):
    high = tmp_path / "memory.high"
    high.write_text("max\n")
    g, loop, probe = make(limit=100 * MiB, grace_period_seconds=1.0, clamp_high=True)
    g.probe = _V2Probe(probe, 1 << 30, tmp_path)
    finished: list[int] = []
    g._finish = finished.append  # type: ignore[method-assign]
    loop.advance(1.0)  # over the limit: SIGTERM, memory.high clamped
    assert [s for _, s in g.sent] == [signal.SIGTERM]
    assert g.kernel_side.high_clamped and high.read_text() != "max\n"
    loop.advance(12.0)  # SIGKILL, the main process never reaped: given up (71)
    assert finished == [71] and g.state.last_kill.confirmed is False
    assert high.read_text() == "max"
    assert not g.kernel_side.high_clamped


# ---------------------------------------------------------------- oom_score_adj
def test_sentinel_never_makes_itself_oom_immune_nor_raises_a_guaranteed_workload():
    assert oom_score_adj_plan(-997, 100) == -999  # never -1000: OOM-immune
    assert oom_score_adj_plan(0, 100) == -100
    assert oom_score_adj_plan(-1000, 100) == -1000  # already there: nothing to lower
    assert oom_score_adj_plan(-999, 100) == -999
    # Lowered (CAP_SYS_RESOURCE): the workload keeps the kubelet's value.
    assert workload_oom_score_adj_target(-997, -999, 100) == -997  # not -899
    assert workload_oom_score_adj_target(0, -100, 100) == 0
    assert workload_oom_score_adj_target(-950, -999, 100) == -950
    # Not lowered: raised by the margin, at most 1000.
    assert workload_oom_score_adj_target(-997, -997, 100) == -897
    assert workload_oom_score_adj_target(950, 950, 100) == 1000


# ---------------------------------------------------------------- every SIGKILL is Sentinel's
def test_an_operators_signal_kill_is_sentinels_even_if_oom_kill_rose():
    g, loop, probe = _guardian(limit=None, rate=10 * MiB)
    g._finish = lambda code: None  # type: ignore[method-assign]
    loop.advance(0.5)
    assert g.send_signal(signal.SIGKILL) == "SIGKILL sent"
    probe.oom_kills = 1  # another process of the group, within the settle window
    g.child_exited(SIGKILLED)
    assert g.state.last_kill is None
    assert ("kernel_oom", "SIGKILL") not in g.state.kills
    assert not [e for e in g.state.events if e.kind == "kernel_oom_kill"]


def test_a_signal_rewritten_to_sigkill_is_sentinels_even_if_oom_kill_rose():
    # --signal-rewrite USR1:KILL: the forwarded SIGKILL is Sentinel's own.
    g, loop, probe = _guardian(limit=None, rate=10 * MiB)
    g._finish = lambda code: None  # type: ignore[method-assign]
    loop.advance(0.5)
    g.on_signal(kernel.SignalInfo(signo=signal.SIGUSR1, code=0, pid=1, uid=0), signal.SIGKILL)
    assert g.sent[-1][1] == signal.SIGKILL
    probe.oom_kills = 1
    g.child_exited(SIGKILLED)
    assert g.state.last_kill is None
    assert not [e for e in g.state.events if e.kind == "kernel_oom_kill"]


# ---------------------------------------------------------------- the exit path is guarded
def test_a_failing_kernel_side_never_keeps_sentinel_from_exiting_with_the_code(caplog):
    g, loop, _ = _guardian(limit=None, rate=0.0)
    finished: list[int] = []
    g._finish = finished.append  # type: ignore[method-assign]

    def broken(*args):
        raise RuntimeError("a kernel-side bug")

    for name in ("main_died", "on_sample", "close", "ladder_starting", "after_sigkill"):
        setattr(g.kernel_side, name, broken)
    g.sigkill_listeners[:] = [broken]
    loop.advance(0.5)
    g.kill()  # the ladder's hooks fail: the SIGKILL is sent all the same
    assert signal.SIGKILL in [s for _, s in g.sent]
    g.child_exited(SIGKILLED)
    loop.advance(1.0)
    assert finished == [137]
    warned = [r for r in caplog.records if "main_died failed" in r.getMessage()]
    assert len(warned) == 1


# ---------------------------------------------------------------- mrelease off the loop
def test_process_mrelease_runs_off_the_loop_and_its_results_come_back_on_it(monkeypatch):
    # A slow process_mrelease (a 32 GiB tree: ~1.5 s) must not hold the loop: the
    # hook returns at once; the counts and the one-time note arrive on the loop.
    release = threading.Event()
    threads: list[str] = []

    def slow(fd):
        threads.append(threading.current_thread().name)
        release.wait(10)
        return kernel.MRELEASE_UNAVAILABLE

    monkeypatch.setattr(kernel, "process_mrelease", slow)
    victims = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]

    async def scenario():
        loop = asyncio.get_running_loop()
        state = SimpleNamespace(kernel_notes={}, main_pid=victims[0].pid)
        side = KernelSide(SimpleNamespace(state=state, loop=loop, probe=None, source=None))
        side.open_pidfds([v.pid for v in victims])
        for v in victims:
            v.kill()
        t = time.monotonic()
        side.after_sigkill([v.pid for v in victims])
        assert time.monotonic() - t < 0.1  # the loop goes on
        assert side.mrelease_results == {} and not side._pidfds
        ticked = asyncio.Event()
        loop.call_soon(ticked.set)
        await asyncio.wait_for(ticked.wait(), 1)  # the loop runs while mrelease waits
        release.set()
        while not side.mrelease_results:
            await asyncio.sleep(0.01)
        side._mrelease_thread.join(5)
        return side, state

    try:
        side, state = asyncio.run(scenario())
    finally:
        release.set()
        for v in victims:
            v.kill()
            v.wait()
    assert threads == ["sentinel-mrelease"] * 2
    assert side.mrelease_results == {"unavailable": 2}
    assert list(state.kernel_notes) == ["mrelease"]  # said once
    assert side._sigkill_sent  # the main process was among them


def test_the_early_sigkill_waits_until_shortly_before_the_projected_crossing():
    from sentinel.core.kernel_side import early_sigkill_reason

    # 1 GiB headroom at 100 MiB/s: the crossing is 10.24 s away, the grace ends in 30 s.
    args = (0, 1024 * MiB, 100 * MiB, 0.0, 30.0)
    assert early_sigkill_reason(*args) is not None  # without a lead: at once
    assert early_sigkill_reason(*args, within_seconds=0.3) is None  # later, not yet
    assert early_sigkill_reason(0, 20 * MiB, 100 * MiB, 0.0, 30.0, within_seconds=0.3)
