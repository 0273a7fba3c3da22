"""``sentinel.core.sampling_side`` with a fake loop and fixture files: wake-ups counted
and sampled on, unavailable sources said once at INFO, when the kernel covers the limit,
and a kill decided on an estimated PSS is re-read first."""

from __future__ import annotations

import asyncio
import logging
import signal

from sentinel.config.settings import Settings
from sentinel.core.sampling_side import SamplingSide
from sentinel.core.spawn import Child
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
