"""When to look next, and how fast memory grows: pure functions, no I/O, no clock.

The supervisor calls ``next_interval`` after each sample and ``growth_rate`` over
its recent ``(time, bytes)`` history; the dashboard calls the same ``growth_rate``
for "time to limit", so the TUI and the enforcement speak of one growth figure.

A wake-up that should not wait for the next tick (a cgroup ``memory.events``
``high``/``max`` notification, a PSI trigger) goes through the supervisor's
``sample_now(reason)``, which cancels the pending tick and samples at once; this
module decides only the period between ticks.
"""

from __future__ import annotations

from typing import Iterable

# Below this distance to the limit (in sampling periods at the current growth
# rate) the sampler speeds up; it never samples faster than MIN_INTERVAL_SECONDS
# (a tree walk of a few processes costs ~0.1 ms: 4 ms keeps that under 3 % of a core).
MIN_INTERVAL_SECONDS = 0.004
# The sampler's growth rate (growth_rate) is over this much recent history; long
# enough to smooth chunked allocations, short enough to follow a change. The leak
# and prediction rules (sentinel.core.alerts) use the same estimator over --leak-window.
RATE_WINDOW_SECONDS = 3.0
# A slope needs two points at different times. No longer minimum span: a leak at start-up
# must speed the sampler up from the second sample (a 1 GiB/s leak crosses a 250 MiB limit
# within a quarter second; waiting for 0.5 s of history overshot it by ~65 MiB, past a
# container's own limit), and at --interval below 8 ms the 64 points kept never span 0.5 s.
# Over-estimating early only samples faster for a moment; it never kills sooner.
_MIN_POINTS = 2


# growth_rate's bounded work: at most this many lags, and this many pairs per lag.
_LAGS = 32
_STARTS_PER_LAG = 16


def growth_rate(points: Iterable[tuple[float, int]]) -> float | None:
    """The robust growth of ``(seconds, bytes)`` points, in bytes/second: a Theil–Sen
    estimator, the median of pairwise slopes, over the pairs that span at least half
    the points (``(i, j)`` with ``j - i >= n // 2``), a bounded strided subset of them.

    Why not least squares (the estimate before issue 11): one spike, or one collection
    of a garbage collector's sawtooth, moves a mean-based slope as much as a minute of
    leak; a median of slopes ignores up to about a quarter of the points being wild.
    Why only long pairs: short pairs inside one ramp of a sawtooth all have the ramp's
    steep slope, and they would be the majority; a long pair spans at least half the
    window, so a sawtooth whose period is shorter than that contributes its amplitude
    over the span at most, and over lags spread across a period those contributions
    are symmetric about zero (one fixed lag, Theil's abbreviated method, leans up or
    down by up to half the amplitude over the lag, depending on the period). Why a
    subset: every pair of 600 points is 180 000 slopes; at most ``_LAGS`` lags evenly
    spread from ``n // 2`` to ``n - 1`` and ``_STARTS_PER_LAG`` evenly strided pairs
    each (<= 512 slopes and one sort) cost ~30 µs for 64 points and ~45 µs for 600
    (tests/unit/test_sampler.py measures it): bounded work on the sampling loop.

    ``points`` are in time order, on any one clock (monotonic or wall seconds); pass
    only the recent ones (``recent_points``). With two points it is their slope; a
    straight line gives its exact slope. ``None`` with fewer than two points, or when
    they all share one time. Negative when memory shrinks. Raises nothing.
    """
    pts = points if isinstance(points, list) else list(points)
    n = len(pts)
    if n < _MIN_POINTS or pts[-1][0] <= pts[0][0]:
        return None
    half = n // 2
    span = n - 1 - half
    lags = (range(half, n) if span < _LAGS else
            sorted({half + k * span // (_LAGS - 1) for k in range(_LAGS)}))
    slopes = []
    for lag in lags:
        count = n - lag
        step = -(-count // _STARTS_PER_LAG)
        for i in range(0, count, step):
            (t0, v0), (t1, v1) = pts[i], pts[i + lag]
            if t1 > t0:
                slopes.append((v1 - v0) / (t1 - t0))
    if not slopes:
        return None
    slopes.sort()
    m = len(slopes)
    mid = m // 2
    return slopes[mid] if m % 2 else (slopes[mid - 1] + slopes[mid]) / 2


def recent_points(points: Iterable[tuple[float, int]], now: float, *,
                  since: float | None = None,
                  window_seconds: float = RATE_WINDOW_SECONDS) -> list[tuple[float, int]]:
    """The ``(seconds, bytes)`` points of the last ``window_seconds`` before ``now``, and
    not before ``since`` (the start of this run: a restarted workload's growth is its
    own). Same clock as ``now``."""
    start = now - window_seconds
    if since is not None:
        start = max(start, since)
    return [(t, v) for t, v in points if t >= start]


def next_interval(value: int, limit: int | None, rate: float | None, interval_seconds: float,
                  *, enforcing: bool = True) -> float:
    """Seconds until the next sample: ``interval_seconds`` at rest, shortened as
    ``value`` (bytes) approaches ``limit`` (bytes) at ``rate`` (bytes/second).

    At that rate the crossing is ``(limit - value) / rate`` away; sampling at a
    third of that keeps both the reaction time and the overshoot small without
    costing anything while the workload is steady. Never below
    ``MIN_INTERVAL_SECONDS``, and that floor never lifts the period above
    ``interval_seconds`` itself (``--interval`` may be as short as 1 ms): the
    sampler never waits longer than asked. No limit, enforcement paused, no
    growth, or already over the limit: ``interval_seconds``.
    """
    if limit is None or not enforcing or not rate or rate <= 0 or value >= limit:
        return interval_seconds
    eta = (limit - value) / rate
    return max(min(MIN_INTERVAL_SECONDS, interval_seconds), min(interval_seconds, eta / 3))


# The fastest growth relaxed_interval plans for when no faster one is measured: 300 MiB/s,
# three times the benchmark's leak (bench/run.py: 100 MiB/s to a 100 MiB limit). At the
# benchmark's rate a leak then covers at most a ninth of the headroom between two ticks
# (a third of the time to the limit at three times the rate), so the tick alone would
# still see it coming as next_interval does; the kernel's wake-up fires at the crossing
# anyway. At a 100 MiB limit the tick stays ~0.1 s; at 1 GiB it reaches 1 s.
PLAUSIBLE_GROWTH_BYTES_PER_SECOND = 300 * 1024 ** 2


def relaxed_interval(value: int, limit: int | None, rate: float | None,
                     interval_seconds: float, max_interval_seconds: float, *,
                     covered: bool, enforcing: bool = True) -> float:
    """Seconds until the next tick when a kernel wake-up may stand in for the tick.

    ``covered`` says that a kernel notification fires before ``value`` (bytes) can
    reach ``limit`` (bytes): a v1 ``memory.usage_in_bytes`` threshold armed at the
    limit, or v2 ``memory.events`` with ``memory.high``/``memory.max`` reached first.
    Then the tick is only a back-stop and may stretch with the headroom: a third of
    the time to the limit at ``max(rate, PLAUSIBLE_GROWTH_BYTES_PER_SECOND)`` bytes/s,
    between ``interval_seconds`` and ``max_interval_seconds``. Not covered, no limit,
    paused, over the limit, or already sampling faster than ``interval_seconds``
    (near the limit): exactly ``next_interval``. Pure; raises nothing.
    """
    base = next_interval(value, limit, rate, interval_seconds, enforcing=enforcing)
    if (not covered or limit is None or not enforcing or value >= limit
            or base < interval_seconds or max_interval_seconds <= interval_seconds):
        return base
    fastest = max(rate or 0.0, PLAUSIBLE_GROWTH_BYTES_PER_SECOND)
    return max(interval_seconds, min(max_interval_seconds, (limit - value) / fastest / 3))
