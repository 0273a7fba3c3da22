"""Warn before the kill (issue 11): the ``warning``, ``leak`` and ``prediction`` rules of
one program, as a pure state machine fed by samples. No I/O, no clock of its own.

The supervisor feeds ``Rules.observe`` with each sample's ``(monotonic seconds, measure
bytes, limit bytes)`` and emits each returned ``Transition`` as the ``alert`` Event of
issue 11's contract. Every rule has hysteresis, so it fires once and resolves once:

- ``warning``: the measure above ``warn_at_share`` of the limit; resolves below that
  share minus ``WARNING_HYSTERESIS`` (5 points). Needs a limit.
- ``leak``: the robust growth over ``leak_window_seconds`` (``sentinel.core.sampler.
  growth_rate``, the estimator the sampler steers by, over a longer window) at least
  ``leak_min_rate_bytes_per_second``, and sustained: the floor (the lowest sample) of
  the window's last quarter rises from the floor of its first quarter at least half as
  fast as that growth, and by more than the typical rise between two samples (the
  floor's resolution). A leak is memory nothing frees, so its floor rises; a garbage collector's
  sawtooth has a flat floor (for periods up to a quarter of the window), and a one-off
  spike moves neither the median of slopes nor a floor. Resolves when the growth
  stayed below half the minimum rate for a whole window. Works without a limit.
- ``prediction``: at that growth, sustained (a rising floor), the limit is less than
  ``predict_within_seconds`` away; resolves when it stayed more than
  ``PREDICTION_HYSTERESIS`` (1.5) times that away (or not growing) for a whole window.
  Needs a limit.

``leak`` and ``prediction`` start their history half a window into each run (start-up
growth, loading code and filling caches, is not a leak; the warning and the kill watch
it), then wait for half a window of history and ``MIN_POINTS`` points.
The history keeps at most ``MAX_POINTS`` points per window (one every
``window / MAX_POINTS`` seconds), so its cost does not grow with the sampling rate:
``growth_rate`` over 600 points costs ~45 µs, run once per kept point.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from dataclasses import dataclass, field

from sentinel.core import sampler
from sentinel.logs import fmt_bytes

RULES = ("warning", "leak", "prediction")
FIRING, RESOLVED = "firing", "resolved"
# The warning resolves 5 points of the limit below where it fired: a measure hovering
# at 80 % would otherwise fire and resolve on every sample.
WARNING_HYSTERESIS = 0.05
# The prediction resolves when the limit is 1.5x the horizon away.
PREDICTION_HYSTERESIS = 1.5
# A slope of fewer points than this is noise, whatever the window.
MIN_POINTS = 10
# Points kept per window: growth_rate over 600 points is ~45 µs; at the default 5 min
# window that is one point every 0.5 s.
MAX_POINTS = 600


@dataclass(frozen=True)
class AlertSettings:
    """The rules' thresholds. ``warn_at_share`` (0-1, ``None``: no warning),
    ``leak_window_seconds`` (> 0), ``leak_min_rate_bytes_per_second`` (> 0),
    ``predict_within_seconds`` (``None``: no prediction)."""

    warn_at_share: float | None = 0.8
    leak_window_seconds: float = 300.0
    leak_min_rate_bytes_per_second: float = 64 * 1024
    predict_within_seconds: float | None = 600.0

    @classmethod
    def of(cls, settings) -> "AlertSettings":
        """The thresholds of a ``Settings`` (``warn_at_share``, ``leak_window_seconds``,
        ``leak_min_rate_bytes_per_second``, ``predict_within_seconds``)."""
        return cls(settings.warn_at_share, settings.leak_window_seconds,
                   float(settings.leak_min_rate_bytes_per_second),
                   settings.predict_within_seconds)


@dataclass(frozen=True)
class Transition:
    """A rule that fired or resolved: ``rule`` (one of ``RULES``), ``state`` (``firing``
    or ``resolved``), ``message`` (one line), ``level`` (``logging.WARNING`` firing,
    ``logging.INFO`` resolved) and ``fields``: the contract's ``alert`` fields
    (``rule``, ``state``, ``value_bytes``, ``limit_bytes``, ``share``,
    ``growth_bytes_per_second``, ``seconds_to_limit``, ``window_seconds``)."""

    rule: str
    state: str
    message: str
    level: int
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Figures:
    """What the rules saw at the last sample: ``growth_bytes_per_second`` over the
    window (``None``: not enough history), ``floor_growth_bytes_per_second`` (the rise
    of the window's floor), ``seconds_to_limit`` at that growth (``None``: no limit,
    not growing, or over it)."""

    growth_bytes_per_second: float | None = None
    floor_growth_bytes_per_second: float | None = None
    seconds_to_limit: float | None = None
    # The floor's rise over the window (bytes) and its resolution (floor_step), for
    # _sustained: a rise within one sampling step is the sampling's, not the workload's.
    floor_rise_bytes: float | None = None
    floor_step_bytes: float | None = None


def floor_rise(points: list[tuple[float, int]]) -> tuple[int, float] | None:
    """How much the floor of ``(seconds, bytes)`` points (time order) rises: the lowest
    value of the last quarter of their time span minus that of the first quarter
    (bytes), and the time between the quarters' middles (seconds, 3/4 of the span).
    ``None`` with fewer than 4 points, no time span, or a quarter without a point.

    Quarters of *time*, not of the points: the sampler samples faster near the limit
    (sampler.relaxed_interval, next_interval), so a sawtooth's tops hold more points
    than its troughs, and the last quarter of the points may be shorter than a period
    and miss the last trough: a flat floor seen rising."""
    if len(points) < 4:
        return None
    t0, t1 = points[0][0], points[-1][0]
    quarter = (t1 - t0) / 4
    if quarter <= 0:
        return None
    first = [v for t, v in points if t <= t0 + quarter]
    last = [v for t, v in points if t >= t1 - quarter]
    if not first or not last:
        return None
    return min(last) - min(first), 3 * quarter


def floor_growth(points: list[tuple[float, int]]) -> float | None:
    """How fast the floor of ``(seconds, bytes)`` points rises, bytes/second
    (``floor_rise`` over its time). ``None`` as ``floor_rise``."""
    rise = floor_rise(points)
    return None if rise is None else rise[0] / rise[1]


def floor_step(points: list[tuple[float, int]]) -> float:
    """The floor's resolution, bytes: the median rise between two consecutive points
    that rise (0 when none does). A quarter's lowest sample is above the true trough
    by up to about one such step (the first sample after a collection lands anywhere
    on the ramp's first step), so two floors differ by up to that much on a flat
    floor: a sawtooth's ramp steps (its slope times the sampling period), a leak's
    allocation chunks. The median, so a one-off spike does not count."""
    ups = [b - a for (_, a), (_, b) in zip(points, points[1:]) if b > a]
    return float(statistics.median(ups)) if ups else 0.0


def _duration(seconds: float) -> str:
    """``245`` -> ``"4m05s"``: for the alert's one-line message only."""
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _size(n: float) -> str:
    """Bytes for the message: ``logs.fmt_bytes`` of the rounded value."""
    return fmt_bytes(round(n))


class Rules:
    """One program's alert rules (one instance per program, fed by its supervisor).

    ``observe(now, value, limit)`` takes a sample (``now`` monotonic seconds, ``value``
    the measure in bytes, ``limit`` bytes or ``None``) and returns the transitions it
    caused, in ``RULES`` order; ``figures`` holds what it saw. ``reset(why)`` forgets
    the history (a new run: a restarted workload's growth is its own) and resolves the
    firing rules. ``firing`` is the set of firing rules. Raises nothing."""

    def __init__(self, settings: AlertSettings, measure: str = "rss") -> None:
        self.settings = settings
        self.measure = measure
        self.firing: set[str] = set()
        self.figures = Figures()
        self._points: deque[tuple[float, int]] = deque()
        self._spacing = settings.leak_window_seconds / MAX_POINTS
        self._run_started: float | None = None  # the first sample of this run
        self._started: float | None = None  # the first point of the history (after warm-up)
        self._now = 0.0
        # Since when a firing leak/prediction has met its resolve condition (the dwell).
        self._calm_since: dict[str, float] = {}

    def reset(self, why: str = "the program restarted") -> list[Transition]:
        """Forget this run's history and resolve every firing rule, saying ``why`` (one
        line, e.g. "the workload exited"); returns those transitions."""
        self._points.clear()
        self._run_started = self._started = None
        self._calm_since.clear()
        self.figures = Figures()
        return [self._resolve(rule, f"{self._title(rule)} resolved: {why}", None, None)
                for rule in RULES if rule in self.firing]

    def observe(self, now: float, value: int, limit: int | None) -> list[Transition]:
        s = self.settings
        self._now = now
        if self._run_started is None:
            self._run_started = now
        warm = now - self._run_started >= s.leak_window_seconds / 2
        if warm and self._started is None:
            self._started = now
        pts = self._points
        if warm and (not pts or now - pts[-1][0] >= self._spacing):
            pts.append((now, value))
            while pts and pts[0][0] < now - s.leak_window_seconds:
                pts.popleft()
            self.figures = self._figures(now, value, limit)
        elif warm and self.figures.growth_bytes_per_second is not None:
            # Between kept points the growth stands; the distance to the limit moves.
            f = self.figures
            self.figures = Figures(f.growth_bytes_per_second, f.floor_growth_bytes_per_second,
                                   self._to_limit(value, limit, f.growth_bytes_per_second),
                                   f.floor_rise_bytes, f.floor_step_bytes)
        out: list[Transition] = []
        for rule in RULES:
            t = getattr(self, "_" + rule)(value, limit)
            if t is not None:
                out.append(t)
        return out

    # ------------------------------------------------------------------ figures
    def _figures(self, now: float, value: int, limit: int | None) -> Figures:
        pts = list(self._points)
        if (len(pts) < MIN_POINTS or self._started is None
                or now - self._started < self.settings.leak_window_seconds / 2):
            return Figures()
        growth = sampler.growth_rate(pts)
        rise = floor_rise(pts)
        return Figures(growth, None if rise is None else rise[0] / rise[1],
                       self._to_limit(value, limit, growth),
                       None if rise is None else rise[0], floor_step(pts))

    @staticmethod
    def _to_limit(value: int, limit: int | None, growth: float | None) -> float | None:
        if limit is None or not growth or growth <= 0 or value >= limit:
            return None
        return (limit - value) / growth

    def _sustained(self) -> bool:
        """The growth is a leak's: the floor rises at least half as fast as the median
        slope (a sawtooth's floor stays flat while its slopes may lean up), and by more
        than the floor's resolution (``floor_step``): a garbage collector's sawtooth,
        sampled a few times a period, shows floors a ramp step apart, and its median
        slope wanders as far as the threshold with only half a window of history."""
        f = self.figures
        return (f.growth_bytes_per_second is not None and f.growth_bytes_per_second > 0
                and f.floor_growth_bytes_per_second is not None
                and f.floor_growth_bytes_per_second >= f.growth_bytes_per_second / 2
                and f.floor_rise_bytes is not None and f.floor_step_bytes is not None
                and f.floor_rise_bytes > f.floor_step_bytes)

    # ------------------------------------------------------------------ rules
    def _fields(self, rule: str, state: str, value: int | None, limit: int | None) -> dict:
        f = self.figures
        return {"rule": rule, "state": state, "value_bytes": value, "limit_bytes": limit,
                "share": value / limit if value is not None and limit else None,
                "growth_bytes_per_second": f.growth_bytes_per_second,
                "seconds_to_limit": f.seconds_to_limit,
                "window_seconds": 0.0 if rule == "warning" else self.settings.leak_window_seconds}

    def _fire(self, rule: str, message: str, value: int, limit: int | None) -> Transition:
        self.firing.add(rule)
        return Transition(rule, FIRING, message, logging.WARNING,
                          self._fields(rule, FIRING, value, limit))

    def _resolve(self, rule: str, message: str, value: int | None,
                 limit: int | None) -> Transition:
        self.firing.discard(rule)
        return Transition(rule, RESOLVED, message, logging.INFO,
                          self._fields(rule, RESOLVED, value, limit))

    @staticmethod
    def _title(rule: str) -> str:
        return {"warning": "memory warning", "leak": "leak suspicion",
                "prediction": "limit prediction"}[rule]

    def _growth_text(self) -> str:
        f = self.figures
        text = (f"{self.measure} grows {_size(f.growth_bytes_per_second or 0)}/s over "
                f"{_duration(self.settings.leak_window_seconds)}")
        if f.seconds_to_limit is not None:
            text += f"; the limit in {_duration(f.seconds_to_limit)} at this rate"
        return text

    def _warning(self, value: int, limit: int | None) -> Transition | None:
        share = self.settings.warn_at_share
        on = "warning" in self.firing
        if share is None or limit is None or limit <= 0:
            return self._resolve("warning", "memory warning resolved: no limit or no "
                                 "warning threshold any more", value, limit) if on else None
        now_share = value / limit
        text = (f"{self.measure} {_size(value)} is {now_share:.0%} of the limit "
                f"{_size(limit)}")
        if not on and now_share > share:
            return self._fire("warning", f"memory warning: {text} (warn at {share:.0%})",
                              value, limit)
        if on and now_share < share - WARNING_HYSTERESIS:
            return self._resolve("warning", f"memory warning resolved: {text}", value, limit)
        return None

    def _leak(self, value: int, limit: int | None) -> Transition | None:
        rate = self.settings.leak_min_rate_bytes_per_second
        growth = self.figures.growth_bytes_per_second
        on = "leak" in self.firing
        if growth is None:
            return None
        if not on and growth >= rate and self._sustained():
            return self._fire("leak", "leak suspected: " + self._growth_text(), value, limit)
        if on and self._calm("leak", growth < rate / 2):
            return self._resolve("leak", "leak no longer suspected: " + self._growth_text(),
                                 value, limit)
        return None

    def _calm(self, rule: str, calm: bool) -> bool:
        """Whether the resolve condition ``calm`` of a firing ``rule`` has held for a
        whole window (a leak that pauses for a moment stays one alert)."""
        if not calm:
            self._calm_since.pop(rule, None)
            return False
        since = self._calm_since.setdefault(rule, self._now)
        if self._now - since < self.settings.leak_window_seconds:
            return False
        del self._calm_since[rule]
        return True

    def _prediction(self, value: int, limit: int | None) -> Transition | None:
        within = self.settings.predict_within_seconds
        f = self.figures
        on = "prediction" in self.firing
        eta = f.seconds_to_limit
        if not on:
            if (within is not None and eta is not None and eta < within
                    and self._sustained()):
                return self._fire("prediction", f"limit predicted: {self.measure} reaches the "
                                  f"limit {_size(limit or 0)} in {_duration(eta)} at "
                                  f"{_size(f.growth_bytes_per_second or 0)}/s (over "
                                  f"{_duration(self.settings.leak_window_seconds)})",
                                  value, limit)
            return None
        if limit is not None and value >= limit:
            return None  # over the limit: the kill is under way; it stands until then
        if within is None or limit is None:
            return self._resolve("prediction", "limit prediction resolved: no limit or no "
                                 "prediction horizon any more", value, limit)
        if f.growth_bytes_per_second is not None and self._calm(
                "prediction", eta is None or eta > within * PREDICTION_HYSTERESIS):
            return self._resolve("prediction", "limit prediction resolved: "
                                 + self._growth_text(), value, limit)
        return None
