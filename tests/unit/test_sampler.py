"""``sentinel.core.sampler``: the cadence and the one growth estimator, as pure
functions; the supervisor (``Guardian``) and the dashboard get the same growth."""

from __future__ import annotations

import signal
import time
import timeit

import pytest

from sentinel.core import sampler
from sentinel.ui import dashboard
from tests.unit.test_guardian_clock import MiB, make

INTERVAL = 0.1


def test_at_rest_the_interval_is_the_one_asked_for():
    assert sampler.next_interval(10 * MiB, None, 50 * MiB, INTERVAL) == INTERVAL  # no limit
    assert sampler.next_interval(10 * MiB, 100 * MiB, 0.0, INTERVAL) == INTERVAL  # steady
    assert sampler.next_interval(10 * MiB, 100 * MiB, None, INTERVAL) == INTERVAL  # unknown
    assert sampler.next_interval(10 * MiB, 100 * MiB, -MiB, INTERVAL) == INTERVAL  # shrinking
    assert sampler.next_interval(200 * MiB, 100 * MiB, MiB, INTERVAL) == INTERVAL  # over
    assert sampler.next_interval(90 * MiB, 100 * MiB, 100 * MiB, INTERVAL,
                                 enforcing=False) == INTERVAL  # paused


def test_near_the_limit_it_samples_at_a_third_of_the_time_left():
    # 40 MiB left at 100 MiB/s: 0.4 s away, sampled every 0.1 s (the interval caps it)
    assert sampler.next_interval(60 * MiB, 100 * MiB, 100 * MiB, INTERVAL) == INTERVAL
    # 6 MiB left: 0.06 s away -> 0.02 s
    assert sampler.next_interval(94 * MiB, 100 * MiB, 100 * MiB, INTERVAL) == \
        pytest.approx(0.02)


def test_the_4ms_floor_never_lifts_the_period_above_the_interval():
    assert sampler.next_interval(100 * MiB - 1, 100 * MiB, 100 * MiB, INTERVAL) == \
        sampler.MIN_INTERVAL_SECONDS == 0.004
    assert sampler.next_interval(100 * MiB - 1, 100 * MiB, 100 * MiB, 0.001) == 0.001


def test_growth_is_the_slope_of_a_line_and_none_with_too_little():
    assert sampler.growth_rate([(0.0, 0), (0.5, 50), (1.0, 100)]) == pytest.approx(100.0)
    assert sampler.growth_rate([(0.0, 0), (1.0, 100)]) == pytest.approx(100.0)  # two points
    assert sampler.growth_rate([(0.0, 0), (0.1, 10), (0.2, 20)]) == pytest.approx(100.0)
    assert sampler.growth_rate([(0.0, 0)]) is None  # one point
    assert sampler.growth_rate([(1.0, 0), (1.0, 10)]) is None  # one time
    assert sampler.growth_rate([(0.0, 300), (0.5, 200), (1.0, 100)]) == pytest.approx(-200.0)


def test_growth_ignores_a_spike_and_a_collection_that_least_squares_would_follow():
    # 1 MiB/s for 60 points, one sample 500 MiB high at the end (a spike), one 300 MiB low (a
    # collection that freed a cache): the median of slopes stays at 1 MiB/s.
    pts = [(float(t), 100 * MiB + t * MiB) for t in range(60)]
    pts[58] = (58.0, pts[58][1] + 500 * MiB)
    pts[2] = (2.0, pts[2][1] - 300 * MiB)
    assert sampler.growth_rate(pts) == pytest.approx(MiB, rel=1e-6)
    n = len(pts)  # least squares, for the contrast: off by more than half
    mt, mv = sum(t for t, _ in pts) / n, sum(v for _, v in pts) / n
    ls = sum((t - mt) * (v - mv) for t, v in pts) / sum((t - mt) ** 2 for t, _ in pts)
    assert abs(ls - MiB) > 0.5 * MiB


def test_a_sawtooth_has_nearly_no_growth_whatever_its_period():
    # 50 MiB ramps freed at once, 300 one-second points: a ramp climbs 1-7 MiB/s, but over
    # lags spread across the half window the slopes cancel out (below half the leak rule's
    # default 64 KiB/s); one fixed lag (n/2) would lean by up to 170 KiB/s.
    for period in (7, 13, 17, 20, 29, 37, 45):
        pts = [(float(t), 300 * MiB + 50 * MiB * (t % period) // period) for t in range(300)]
        assert abs(sampler.growth_rate(pts)) < 32 * 1024, period


def test_growth_costs_well_under_a_millisecond_for_64_and_600_points():
    # It runs on the sampling loop (64 points: the sampler's; 600: the leak window's).
    for n, budget in ((64, 0.0002), (600, 0.001)):
        pts = [(t * 0.1, 100 * MiB + t * 4096 + (t * 7919) % 65536) for t in range(n)]
        best = min(timeit.repeat(lambda: sampler.growth_rate(pts), number=20, repeat=5)) / 20
        assert best < budget, (n, best)


def test_recent_points_keep_the_window_and_this_run_only():
    pts = [(float(t), t * 10) for t in range(10)]
    assert sampler.recent_points(pts, 9.0) == pts[6:]
    assert sampler.recent_points(pts, 9.0, since=8.0) == pts[8:]
    assert sampler.recent_points(pts, 9.0, window_seconds=1.0) == pts[8:]


def test_the_dashboard_and_the_supervisor_report_the_same_growth(monkeypatch):
    # A workload that allocates in chunks (7 MiB every 0.35 s), sampled by the
    # guardian on a fake clock; its state.history (wall times) feeds the dashboard.
    # Chunks make estimators differ (the last step, a smoothed step, a slope).
    g, loop, probe = make(limit=10_000 * MiB, start=10 * MiB, rate=0.0)
    t0 = loop.now
    probe.value = lambda: 10 * MiB + 7 * MiB * int((loop.now - t0) / 0.35)  # type: ignore
    wall0 = time.time()
    monkeypatch.setattr(time, "time", lambda: wall0 + (loop.now - 1000.0))  # wall = fake
    g.state.started_wall = wall0
    loop.advance(0.6)  # enough samples (0.1 s apart) for a slope
    for _ in range(40):
        loop.advance(0.13)
        snap = dashboard.snapshot(g.state, now_wall=time.time(), now_mono=loop.now)
        assert g.growth_bytes_per_second is not None
        assert snap["growth_bytes_per_second"] == pytest.approx(g.growth_bytes_per_second,
                                                                rel=1e-6)
    assert g.growth_bytes_per_second == pytest.approx(20 * MiB, rel=0.15)
    assert dashboard.RATE_WINDOW_SECONDS == sampler.RATE_WINDOW_SECONDS


def test_the_dashboard_estimator_is_the_samplers():
    pts = [(0.0, 0), (0.4, 10), (1.0, 90), (1.7, 120)]
    assert dashboard._growth(pts) == sampler.growth_rate(pts)


def test_sample_now_samples_at_once_and_replaces_the_pending_tick():
    # The entry point for kernel wake-ups (memory.events, PSI): one sample now, and
    # the next tick one interval after it, not two ticks.
    g, loop, probe = make(limit=1000 * MiB, rate=0.0)
    loop.advance(0.55)  # samples at 0.0 ... 0.5; the next tick due at 0.6
    before = len(probe.samples)
    g.sample_now("memory.events high")
    loop.advance(0.0)
    assert len(probe.samples) == before + 1 and probe.samples[-1] == loop.now
    assert loop.next_timer() == pytest.approx(INTERVAL)
    loop.advance(0.06)  # the old 0.6 tick is gone
    assert len(probe.samples) == before + 1


def test_a_start_up_leak_speeds_the_sampler_up_from_the_second_sample():
    # 1 GiB/s from the first sample against a 250 MiB limit at --interval 0.1: the crossing
    # is ~0.23 s away. The growth must be known (and the period shortened) at the second
    # sample; waiting for 0.5 s of history let the leak overshoot by ~65 MiB.
    g, loop, probe = make(limit=250 * MiB, start=10 * MiB, rate=1024 * MiB)
    loop.advance(INTERVAL)  # samples at 0.0 and 0.1
    assert len(probe.samples) == 2
    assert g.growth_bytes_per_second == pytest.approx(1024 * MiB, rel=0.01)
    assert loop.next_timer() < INTERVAL
    loop.advance(1.0)
    assert g.sent and g.sent[0][1] == signal.SIGTERM
    killed_at = g.state.current_kill or g.state.last_kill
    assert killed_at.value_bytes - 250 * MiB < 16 * MiB  # overshoot, bytes


# ---------------------------------------------------------------- relaxed_interval
def test_a_kernel_wakeup_that_covers_the_limit_lets_the_tick_stretch_with_the_headroom():
    plan = sampler.PLAUSIBLE_GROWTH_BYTES_PER_SECOND
    assert plan == 300 * MiB  # three times the benchmark's 100 MiB/s leak
    far = sampler.relaxed_interval(10 * MiB, 4096 * MiB, None, INTERVAL, 1.0, covered=True)
    assert far == 1.0  # 4 GiB of headroom at 300 MiB/s: 13 s away, capped by --max-interval
    # 600 MiB left at the planned-for 300 MiB/s: a third of 2 s
    mid = sampler.relaxed_interval(424 * MiB, 1024 * MiB, None, INTERVAL, 5.0, covered=True)
    assert mid == pytest.approx(600 / 300 / 3)
    # a faster measured growth is planned for instead
    assert sampler.relaxed_interval(424 * MiB, 1024 * MiB, 2048 * MiB, INTERVAL, 1.0,
                                    covered=True) == pytest.approx(600 / 2048 / 3)
    # at the benchmark's 100 MiB limit the tick stays about --interval
    assert sampler.relaxed_interval(1 * MiB, 100 * MiB, None, INTERVAL, 1.0,
                                    covered=True) == pytest.approx(99 / 300 / 3)


def test_without_cover_or_near_the_limit_it_is_exactly_next_interval():
    args = (10 * MiB, 4096 * MiB, None, INTERVAL)
    assert sampler.relaxed_interval(*args, 1.0, covered=False) == INTERVAL
    assert sampler.relaxed_interval(10 * MiB, None, None, INTERVAL, 1.0, covered=True) == INTERVAL
    assert sampler.relaxed_interval(*args, 1.0, covered=True, enforcing=False) == INTERVAL
    assert sampler.relaxed_interval(5000 * MiB, 4096 * MiB, None, INTERVAL, 1.0,
                                    covered=True) == INTERVAL  # over the limit
    # near the limit (sampling faster than --interval): the kernel's cover changes nothing
    near = (94 * MiB, 100 * MiB, 100 * MiB, INTERVAL)
    assert sampler.relaxed_interval(*near, 1.0, covered=True) == \
        sampler.next_interval(*near) == pytest.approx(0.02)
    # never below --interval, and --max-interval below --interval changes nothing
    assert sampler.relaxed_interval(1023 * MiB, 1024 * MiB, None, INTERVAL, 1.0,
                                    covered=True) == INTERVAL
    assert sampler.relaxed_interval(*args, 0.05, covered=True) == INTERVAL
