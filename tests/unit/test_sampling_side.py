"""``sentinel.core.sampling_side`` with a fake loop and fixture files: wake-ups counted
and sampled on, unavailable sources said once at INFO, when the kernel covers the limit,
and a kill decided on an estimated PSS is re-read first."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import queue
import signal
import threading

from sentinel.config.settings import Settings
from sentinel.core.sampling_side import SamplingSide
from sentinel.core.spawn import Child
from sentinel.probes.cgroup import CgroupMemory
from sentinel.probes.contract import MemorySample
from sentinel.probes.wakeups import Wakeup
from tests.unit.test_guardian_clock import MiB, FakeLoop, Recorder, ScriptedProbe, make


def sample(measure: int, usage=None, high=None, mx=None) -> MemorySample:
    return MemorySample(at_mono=0.0, measure_bytes=measure, rss_bytes=measure,
                        processes=((4242, measure),), duration_seconds=0.0,
                        cgroup_memory_current_bytes=usage, cgroup_memory_high_bytes=high,
                        cgroup_memory_max_bytes=mx)


def test_a_wakeup_is_counted_by_source_and_samples_at_once():
    g, loop, probe = make(limit=1000 * MiB, rate=0.0)
    loop.advance(0.05)
    before = len(probe.samples)
    for kind in ("memory.events", "usage_threshold", "oom_control", "pressure", "pressure"):
        g.sampling_side._woke(Wakeup(kind, "/x", "test"))
    loop.advance(0.0)
    assert g.state.wakeups == {"memory_events": 1, "usage_threshold": 1, "oom_notify": 1,
                               "pressure": 2}
    assert len(probe.samples) == before + 1  # one sample now (each replaced the pending tick)


def test_unavailable_sources_are_said_once_at_info_never_an_error(tmp_path, caplog):
    loop = asyncio.new_event_loop()
    try:
        s = Settings(command=("app",), workload_name="app", max_rss_bytes=100 * MiB)
        g = Recorder(s, None, set(), loop=loop, probe=ScriptedProbe(FakeLoop(), 0, 0))
        side = SamplingSide(g, proc_pressure=str(tmp_path / "no-psi"))
        with caplog.at_level(logging.INFO, logger="sentinel"):
            side.on_run()
            side.close()
            side.on_run()  # again: the same note is not logged twice
        notes = [r for r in caplog.records if getattr(r, "topic", None) == "pressure"]
        assert len(notes) == 1 and notes[0].levelno == logging.INFO, caplog.text
        assert "does not exist" in g.state.kernel_notes["pressure"]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        side.close()
        g.close()
    finally:
        loop.close()


def test_v2_memory_events_cover_the_limit_only_when_high_or_max_comes_first():
    g, _, _ = make(limit=100 * MiB, rate=0.0)
    side = g.sampling_side
    side.events_watch = type("W", (), {"fd": 7})()
    # usage 60 MiB, high 80: 20 MiB to high; the measure (50) has 50 MiB to the limit
    assert side.covered(sample(50 * MiB, usage=60 * MiB, high=80 * MiB))
    # no high, max far away (1 GiB): the limit comes first, no cover
    assert not side.covered(sample(50 * MiB, usage=60 * MiB, mx=1024 * MiB))
    assert not side.covered(sample(50 * MiB))  # no cgroup figures
    side.events_watch = None
    assert not side.covered(sample(50 * MiB, usage=60 * MiB, high=80 * MiB))


class EstimatingProbe(ScriptedProbe):
    """Over the limit while estimating; a real read (after force_smaps) is under it."""

    def __init__(self, loop) -> None:
        super().__init__(loop, 0, 0.0)
        self.smaps_estimated = False
        self.forced = 0

    def force_smaps(self) -> None:
        self.forced += 1

    def sample(self) -> MemorySample:
        self.samples.append(self.loop.now)
        self.smaps_estimated = not self.forced
        v = 150 * MiB if self.smaps_estimated else 80 * MiB
        return MemorySample(at_mono=self.loop.now, measure_bytes=v, rss_bytes=200 * MiB,
                            processes=((4242, v),), duration_seconds=1e-5)


def test_a_kill_on_an_estimated_pss_reads_pss_for_real_first():
    loop = FakeLoop()
    probe = EstimatingProbe(loop)
    s = Settings(command=("app",), workload_name="app", max_rss_bytes=100 * MiB, measure="pss")
    g = Recorder(s, None, set(), loop=loop, probe=probe, clock=loop.time)  # type: ignore
    g.sent = []
    g._adopt(Child(4242, ("app",), None, loop.now, 0.0))
    loop.advance(0.5)
    assert probe.forced == 1 and g.sent == []  # the real PSS (80 MiB) is under the limit
    assert g.state.last_sample.measure_bytes == 80 * MiB
    assert signal.SIGTERM not in [sig for _, sig in g.sent]


# ---------------------------------------------------------------- review fixes (issue 9)
GiB = 1024 * MiB


class FakeThreshold:
    """A v1 ``UsageThreshold`` without a cgroup: armed at ``at`` bytes; ``register_at``
    raises ``fail`` when given, else returns a real eventfd (adopted and closed)."""

    kind, path, events = "usage_threshold", "/fake/memory.usage_in_bytes", 1

    def __init__(self, at: int, fail: BaseException | None = None) -> None:
        self.fd, self.threshold_bytes, self.fail = 7, at, fail
        self.registered: list[int] = []

    def register_at(self, at: int) -> int:
        self.registered.append(at)
        if self.fail is not None:
            raise self.fail
        return os.eventfd(0, os.EFD_CLOEXEC)

    def why(self, exc: OSError) -> str:
        return f"cgroup v1 usage threshold cannot be registered: {exc.strerror}"

    def adopt(self, fd: int, at: int) -> None:
        os.close(fd)
        self.threshold_bytes = at

    def close(self) -> None:
        self.fd = -1


class FakeWakeups:
    def __init__(self) -> None:
        self.removed: list = []

    def remove(self, source) -> None:
        self.removed.append(source)

    def close(self) -> None:
        pass


class ThreadLoop(FakeLoop):
    """A FakeLoop that also takes ``call_soon_threadsafe`` (from the re-arm thread) into
    a queue the test runs: the handshake with the helper thread."""

    def __init__(self) -> None:
        super().__init__()
        self.posted: queue.Queue = queue.Queue()

    def call_soon_threadsafe(self, callback, *args):
        self.posted.put((callback, args))

    def run_posted(self) -> None:
        callback, args = self.posted.get(timeout=10)
        callback(*args)


def v1_side(limit: int, at: int, fail=None, loop=None):
    """A guardian (no wake-ups of its own) whose sampling side has a FakeThreshold."""
    loop = loop or FakeLoop()
    s = Settings(command=("app",), workload_name="app", max_rss_bytes=limit)
    g = Recorder(s, None, set(), loop=loop, probe=ScriptedProbe(loop, 0, 0.0),  # type: ignore
                 clock=loop.time)
    side = g.sampling_side
    side.wakeups, side.threshold = FakeWakeups(), FakeThreshold(at, fail)
    return g, side


def test_v1_is_not_covered_by_a_threshold_at_or_above_the_hard_limit():
    # The reviewer's group: hard limit 1 GiB, 800 MiB of cache + 200 MiB RSS, limit 921
    # MiB: the threshold belongs at usage + (limit - measure) = 1721 MiB, above the hard
    # limit; the kernel reclaims cache there and usage never crosses it.
    g, side = v1_side(921 * MiB, 1721 * MiB)
    full = sample(200 * MiB, usage=1000 * MiB, mx=1 * GiB)
    assert not side.covered(full)
    side.threshold.threshold_bytes = 1 * GiB  # at the hard limit: no better
    assert not side.covered(sample(200 * MiB, usage=300 * MiB, mx=1 * GiB))
    # The same threshold in a 4 GiB group covers: usage below it, it where it belongs.
    side.threshold.threshold_bytes = 1721 * MiB
    assert side.covered(sample(200 * MiB, usage=1000 * MiB, mx=4 * GiB))
    # Usage already past it (crossed, not yet moved): no cover.
    assert not side.covered(sample(200 * MiB, usage=1800 * MiB, mx=4 * GiB))
    # The measure rose without usage rising (working set): it belongs at 1421 MiB now.
    assert not side.covered(sample(500 * MiB, usage=1000 * MiB, mx=4 * GiB))
    g.close()


def test_v1_is_not_covered_after_a_failed_rearm():
    loop = ThreadLoop()
    g, side = v1_side(100 * MiB, 80 * MiB, fail=OSError(errno.ENOMEM, "Cannot allocate memory"),
                      loop=loop)
    now = sample(20 * MiB, usage=30 * MiB, mx=1 * GiB)
    assert side.covered(now)  # usage 30 MiB below the threshold (80), its place now 30 + 80 = 110
    side.on_limit(150 * MiB)
    side.on_sample(now)  # moves it off the loop: to 30 + 130 = 160 MiB
    loop.run_posted()
    assert side.threshold is None and not side.covered(now)
    assert "Cannot allocate memory" in g.state.kernel_notes["usage_threshold"]
    assert side._arm_pending  # armed again (on the loop) at the next sample far away
    g.close()


def test_a_thread_that_cannot_start_leaves_no_rearm_stuck(monkeypatch):
    g, side = v1_side(100 * MiB, 80 * MiB)
    now = sample(20 * MiB, usage=30 * MiB, mx=1 * GiB)

    def no_thread(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    side._rearm_pending = True
    side.on_sample(now)
    assert not side._rearming and side.threshold is None and not side.covered(now)
    assert "can't start new thread" in g.state.kernel_notes["usage_threshold"]
    g.close()


def test_a_registration_that_raises_anything_reaches_the_loop():
    loop = ThreadLoop()
    g, side = v1_side(100 * MiB, 80 * MiB, fail=ValueError("odd"), loop=loop)
    now = sample(20 * MiB, usage=30 * MiB, mx=1 * GiB)
    side._rearm_pending = True
    side.on_sample(now)
    loop.run_posted()
    assert not side._rearming and side.threshold is None
    assert "ValueError('odd')" in g.state.kernel_notes["usage_threshold"]
    g.close()


def test_limit_none_drops_the_threshold_and_arms_none():
    g, side = v1_side(100 * MiB, 80 * MiB)
    thr = side.threshold
    side.on_limit(None)
    g.state.limit_bytes = None
    side.on_sample(sample(20 * MiB, usage=30 * MiB, mx=1 * GiB))
    assert side.threshold is None and thr.registered == []  # never at max(1, usage - measure)
    assert side.wakeups.removed == [thr] and thr.fd == -1
    g.close()


def test_close_forgets_the_old_cgroups_state():
    g, side = v1_side(100 * MiB, 80 * MiB)
    side._arm_pending = side._rearm_pending = True
    side._limits_seen = side._own_limits_seen = (1 * GiB, None)
    side.close()
    assert not side._arm_pending and not side._rearm_pending
    assert side._limits_seen is None and side._own_limits_seen is None
    g.close()


class PssProbe(ScriptedProbe):
    """Each smaps_rollup read takes 5 ms of the fake clock; PSS a tenth of RSS."""

    def __init__(self, loop) -> None:
        super().__init__(loop, 0, 0.0)
        self.reads = 0
        self.clock = 0.0

    def smaps_rollup(self, pid):
        self.reads += 1
        self.clock += 0.005
        return (10 * MiB, None)


def test_the_shared_pages_check_stops_within_its_time_budget():
    loop = FakeLoop()
    probe = PssProbe(loop)
    s = Settings(command=("app",), workload_name="app", max_rss_bytes=1000 * MiB)
    g = Recorder(s, None, set(), loop=loop, probe=probe, clock=loop.time)  # type: ignore
    side = g.sampling_side
    side._clock = lambda: probe.clock
    backends = tuple((1000 + i, 100 * MiB) for i in range(200))  # 200 x 100 MiB RSS
    big = MemorySample(at_mono=0.0, measure_bytes=900 * MiB, rss_bytes=900 * MiB,
                       processes=backends, duration_seconds=0.0)
    side._shared_pages(big)
    assert probe.reads <= 5, probe.reads  # 20 ms at 5 ms a read, not 200 reads
    assert probe.clock <= 0.025
    # What it read decides: 100 MiB RSS against 10 MiB PSS each.
    assert "shared_pages" in g.state.kernel_notes, g.state.kernel_notes
    assert "processes read in time" in g.state.kernel_notes["shared_pages"]
    g.close()


def _events_wake(**rose) -> Wakeup:
    return Wakeup("memory.events", "/x/memory.events",
                  ", ".join(f"{k} +{n}" for k, n in rose.items()), rose)


def test_v2_wakeups_are_debounced_to_one_sample_per_interval_oom_never():
    g, loop, probe = make(limit=1000 * MiB, rate=0.0, interval_seconds=0.1)
    loop.advance(0.05)
    side = g.sampling_side
    asked: list[tuple[float, str]] = []  # the samples the wake-ups asked for, when
    g.sample_now = lambda why="": asked.append((loop.now, why))  # type: ignore[method-assign]
    for _ in range(10):  # memory.max raised every 10 ms for 100 ms
        side._woke(_events_wake(max=1))
        loop.advance(0.01)
    loop.advance(0.001)  # (float steps: just past the end of the first 100 ms)
    # one at the first wake-up, one (debounced) at the end of its 100 ms: not ten
    assert [round(t - 1000, 3) for t, _ in asked] == [0.05, 0.15], asked
    assert "debounced" in asked[1][1]
    assert g.state.wakeups["memory_events"] == 10  # every one counted
    side._woke(_events_wake(max=1))  # within 100 ms of the debounced sample: deferred
    side._woke(_events_wake(oom_kill=1))  # the kernel killed: at once, whatever the rate
    assert len(asked) == 3 and "oom_kill" in asked[2][1]
    loop.advance(0.2)  # the deferred one was served by the oom_kill sample
    assert len(asked) == 3, asked
    g.close()


def test_a_long_interval_debounces_wakeups_by_a_tenth_of_a_second_only():
    g, loop, _ = make(limit=1000 * MiB, rate=0.0, interval_seconds=5.0, max_interval_seconds=5.0)
    side = g.sampling_side
    asked: list[float] = []
    g.sample_now = lambda why="": asked.append(loop.now)  # type: ignore[method-assign]
    side._woke(_events_wake(high=1))
    loop.advance(0.01)
    side._woke(_events_wake(high=1))
    loop.advance(0.1)
    assert [round(t - 1000, 3) for t in asked] == [0.0, 0.1], asked  # not 5 s later
    g.close()


def test_auto_ignores_sentinels_own_memory_high_clamp(tmp_path, monkeypatch):
    group = tmp_path / "pod"
    group.mkdir()
    for name, text in (("memory.max", str(1 * GiB)), ("memory.high", "max"),
                       ("memory.current", str(100 * MiB)), ("memory.stat", "inactive_file 0\n"),
                       ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")):
        (group / name).write_text(text + "\n")
    g, loop, probe = make(limit=512 * MiB, rate=0.0, limit_auto_share=0.5)
    probe.cgroup = CgroupMemory(str(group), 2, top=str(group))
    side = g.sampling_side
    clamped = {"on": False}
    monkeypatch.setattr(type(g.kernel_side), "high_clamped",
                        property(lambda self: clamped["on"]), raising=False)
    side.on_sample(sample(100 * MiB, usage=100 * MiB, mx=1 * GiB))
    assert g.state.limit_bytes == 512 * MiB
    # --clamp-high at a SIGTERM: memory.high = memory.current (the kill since ended)
    (group / "memory.high").write_text(str(100 * MiB))
    clamped["on"] = True
    side.on_sample(sample(100 * MiB, usage=100 * MiB, high=100 * MiB, mx=1 * GiB))
    assert g.state.limit_bytes == 512 * MiB  # not 50 % of Sentinel's own clamp
    clamped["on"] = False  # lifted, but the file still says it (the restore failed)
    side._limits_next = 0.0
    side.on_sample(sample(100 * MiB, usage=100 * MiB, high=100 * MiB, mx=1 * GiB))
    assert g.state.limit_bytes == 512 * MiB
    # A real resize is still followed: memory.high 800 MiB -> 400 MiB
    (group / "memory.high").write_text(str(800 * MiB))
    side.on_sample(sample(100 * MiB, usage=100 * MiB, high=800 * MiB, mx=1 * GiB))
    assert g.state.limit_bytes == 400 * MiB
    g.close()
