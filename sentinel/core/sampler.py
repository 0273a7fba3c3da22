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
# The growth rate is a least-squares slope over this much recent history; long
# enough to smooth chunked allocations, short enough to follow a change.
RATE_WINDOW_SECONDS = 3.0
# A slope needs two points at different times. No longer minimum span: a leak at start-up
# must speed the sampler up from the second sample (a 1 GiB/s leak crosses a 250 MiB limit
# within a quarter second; waiting for 0.5 s of history overshot it by ~65 MiB, past a
# container's own limit), and at --interval below 8 ms the 64 points kept never span 0.5 s.
# Over-estimating early only samples faster for a moment; it never kills sooner.
_MIN_POINTS = 2


def growth_rate(points: Iterable[tuple[float, int]]) -> float | None:
    """The least-squares slope of ``(seconds, bytes)`` points, in bytes/second.

    ``points`` are in time order, on any one clock (monotonic or wall seconds);
    pass only the recent ones (``recent_points``). With two points it is their
    slope; ``None`` with fewer, or when they all share one time. Negative when
    memory shrinks. Raises nothing.
    """
    pts = list(points)
    if len(pts) < _MIN_POINTS or pts[-1][0] <= pts[0][0]:
        return None
    n = len(pts)
    t0 = pts[0][0]
    mean_t = sum(t - t0 for t, _ in pts) / n
    mean_v = sum(v for _, v in pts) / n
    var = sum((t - t0 - mean_t) ** 2 for t, _ in pts)
    if var <= 0:
        return None
    return sum((t - t0 - mean_t) * (v - mean_v) for t, v in pts) / var


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
