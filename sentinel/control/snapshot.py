"""The dashboard's snapshot: the guardian's live state as one JSON-ready dict.

``snapshot(state)`` is what ``sentinel run --tui`` draws in-process and what
the control socket's ``status dashboard`` reply carries, so that ``sentinel
top`` draws the very same view from another process. It lives in ``control``
(not ``ui``) because the socket serves it and ``control`` may not import
``ui``; ``sentinel.ui.dashboard`` re-exports it next to the drawing.

Only the standard library is imported at module level: the control socket
imports this in the PID-1 process, which must stay small. psutil (for the
command lines) is imported on a helper thread on first use.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from sentinel.core import sampler
from sentinel.probes.figures import FIGURES

# The growth rate is a least-squares slope over this much recent history;
# long enough to smooth chunked allocations, short enough to follow a change.
RATE_WINDOW_SECONDS = sampler.RATE_WINDOW_SECONDS
# History kept in a snapshot: enough points for a full-width sparkline, few
# enough that a status reply stays a few kilobytes.
HISTORY_POINTS = 240
HISTORY_SECONDS = 120.0



def figure_label(name: str) -> str:
    """A figure's short label from its table name: ``cgroup_working_set_bytes`` ->
    ``"cgroup working set"`` (the name, its unit suffix off, in words)."""
    return name.removesuffix("_bytes").replace("_", " ")


def memory_figures(source) -> list[dict]:
    """Every figure of the table (``sentinel.probes.figures``) that ``source`` has, in
    the table's order: ``[{"name", "label", "unit" ("bytes"/"count"), "value"}]``.
    ``source`` is a ``MemorySample`` or a ``status`` reply's ``memory`` dict; a figure
    that is ``None`` (not read, not measured) is left out, never shown as 0."""
    out = []
    for fig in FIGURES:
        value = source.get(fig.name) if isinstance(source, dict) else \
            getattr(source, fig.name, None)
        if value is not None:
            out.append({"name": fig.name, "label": figure_label(fig.name), "unit": fig.unit,
                        "value": value})
    return out


def kernel_view(state) -> dict:
    """The kernel's side for status and the dashboard: ``cgroup`` (``state.cgroup`` plus
    the last sample's ``limit_bytes``/``high_bytes``, or ``None`` when none is visible),
    ``kernel_oom_kills`` (workload processes the kernel's OOM killer took, counted by
    Sentinel), ``wakeups`` (source -> count) and ``kernel_notes`` (topic -> one line)."""
    from sentinel.core.state import REASON_KERNEL_OOM

    sample = state.last_sample
    cgroup = dict(getattr(state, "cgroup", None) or {}) or None
    if cgroup is not None:
        cgroup["limit_bytes"] = getattr(sample, "cgroup_memory_max_bytes", None)
        cgroup["high_bytes"] = getattr(sample, "cgroup_memory_high_bytes", None)
    kernel_kills = sum(n for (reason, _), n in dict(state.kills).items()
                       if reason == REASON_KERNEL_OOM)
    return {"cgroup": cgroup, "kernel_oom_kills": kernel_kills,
            "wakeups": dict(getattr(state, "wakeups", None) or {}),
            "kernel_notes": {str(k): str(v)
                             for k, v in dict(getattr(state, "kernel_notes", None) or {}).items()}}


_psutil_loaded = threading.Event()
_psutil_lock = threading.Lock()
_psutil_thread: threading.Thread | None = None


def load_psutil() -> None:
    """Import psutil now (about 20 ms); for a thread that may block."""
    try:
        import psutil  # noqa: F401
    finally:
        _psutil_loaded.set()


def _psutil():
    """psutil once imported, else None, starting the import on a helper thread: the
    import must not stall the guardian's loop, which may be what is asking."""
    global _psutil_thread
    if _psutil_loaded.is_set():
        return sys.modules.get("psutil")
    with _psutil_lock:
        if _psutil_thread is None:
            _psutil_thread = threading.Thread(target=load_psutil, daemon=True,
                                              name="sentinel-psutil-import")
            _psutil_thread.start()
    return None


class ProcessNames:
    """Command lines by PID, read with psutil on first sight, cached while the PID lives.

    Only the few processes a view shows are asked for, so a tree of thousands
    costs nothing; ``prune`` drops PIDs that left the tree (a reused PID is
    read again once it reappears after leaving a sample). ``get`` returns
    None until psutil has been imported (see ``_psutil``).
    """

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def get(self, pid: int) -> str | None:
        name = self._cache.get(pid)
        if name is None:
            psutil = _psutil()
            if psutil is None:
                return None
            try:
                proc = psutil.Process(pid)
                argv = proc.cmdline()
            except (psutil.Error, OSError):  # gone, or another user's
                return "?"
            if not argv:
                # Mid-exec (the new image's arguments are not set up yet), a
                # zombie, or a kernel thread: show the name, ask again next time.
                try:
                    return f"[{proc.name()}]"
                except (psutil.Error, OSError):
                    return "?"
            name = self._cache[pid] = " ".join(argv)
        return name

    def prune(self, live: set[int]) -> None:
        for pid in [p for p in self._cache if p not in live]:
            del self._cache[pid]


# Command lines for the control socket's ``status dashboard``, shared by its clients.
SERVER_NAMES = ProcessNames()


def _growth(points: list[tuple[float, int]]) -> float | None:
    """Least-squares slope in bytes/s of (wall, bytes) points, or None if too few: the
    supervisor's own estimator (``sentinel.core.sampler.growth_rate``), so "time to
    limit" here is what the sampler steers by."""
    return sampler.growth_rate(points)


def _downsample(points: list[tuple[float, int]], n: int) -> list[list]:
    """At most ``n`` points: the highest value in each of ``n`` equal time slices."""
    if len(points) <= n:
        return [[round(t, 3), v] for t, v in points]
    t0, t1 = points[0][0], points[-1][0]
    span = (t1 - t0) or 1.0
    buckets: dict[int, tuple[float, int]] = {}
    for t, v in points:
        i = min(n - 1, int((t - t0) / span * n))
        if i not in buckets or v > buckets[i][1]:
            buckets[i] = (t, v)
    return [[round(t, 3), v] for t, v in (buckets[i] for i in sorted(buckets))]


def snapshot(state, names: ProcessNames | None = None, *, max_processes: int = 20,
             max_events: int = 30, now_wall: float | None = None,
             now_mono: float | None = None) -> dict[str, Any]:
    """The dashboard's view of a ``GuardianState`` as a JSON-ready dict.

    Call it on the guardian's loop (it reads live state). Costs a pass over
    ``state.history`` (at most 600 entries) and, with ``names``, a psutil read
    for each PID shown for the first time. Relative times (uptime, grace
    left) are computed here, so a remote viewer needs no clock of its own.
    Keys: see docs/dashboard.md.
    """
    now_wall = time.time() if now_wall is None else now_wall
    now_mono = time.monotonic() if now_mono is None else now_mono
    sample = state.last_sample
    history = [(t, v) for t, v in state.history if t >= now_wall - HISTORY_SECONDS]
    this_run = [(t, v) for t, v in history if state.started_wall is None or t >= state.started_wall]
    recent = [(t, v) for t, v in this_run if t >= now_wall - RATE_WINDOW_SECONDS]
    growth = _growth(recent) if state.main_pid is not None else None
    measure_bytes = sample.measure_bytes if sample is not None and state.main_pid else None
    limit = state.limit_bytes
    seconds_to_limit = None
    if growth and growth > 0 and limit is not None and measure_bytes is not None \
            and measure_bytes < limit:
        seconds_to_limit = (limit - measure_bytes) / growth
    tail = this_run[-50:]
    gaps = [b[0] - a[0] for a, b in zip(tail, tail[1:])]

    processes: list[dict] = []
    process_count = 0
    total_rss = 0
    if sample is not None and state.main_pid is not None:
        process_count = len(sample.processes)
        total_rss = sample.rss_bytes
        shown = sorted(sample.processes, key=lambda p: -p[1])[:max_processes]
        for pid, rss in shown:
            processes.append({"pid": pid, "rss_bytes": rss,
                              "command": names.get(pid) if names else None})
        if names is not None:
            names.prune(set(sample.pids))

    grace_left = None
    if state.grace_deadline_mono is not None:
        grace_left = max(0.0, state.grace_deadline_mono - now_mono)
    events = [{"at": e.at_wall, "kind": e.kind, "message": e.message}
              for e in list(state.events)[-max_events:]]
    return {
        "version": state.version,
        "mode": state.mode,
        "workload": state.workload,
        "command": list(state.command),
        "time": now_wall,
        "phase": state.phase,
        "stopped": state.stopped and state.main_pid is not None,
        "stop_signal": state.stop_signal,
        "enforcing": state.enforcing,
        "main_pid": state.main_pid,
        "started": state.started_wall,
        "sentinel_started": state.sentinel_started_wall,
        "measure": state.measure,
        "measure_bytes": measure_bytes,
        "rss_bytes": total_rss if sample is not None and state.main_pid else None,
        # Every figure the last sample has, named from the figures table.
        "figures": memory_figures(sample) if sample is not None and state.main_pid else [],
        "limit_bytes": limit,
        "growth_bytes_per_second": growth,
        "seconds_to_limit": seconds_to_limit,
        "interval_seconds": state.interval_seconds,
        "sample_gap_max_seconds": max(gaps) if gaps else None,
        "process_count": process_count,
        "processes": processes,
        "history": _downsample(history, HISTORY_POINTS),
        "grace_period_seconds": state.grace_period_seconds,
        "grace_remaining_seconds": grace_left,
        "current_kill": state.current_kill.to_dict() if state.current_kill else None,
        "last_kill": state.last_kill.to_dict() if state.last_kill else None,
        "last_exit_code": state.last_exit_code,
        "kills_total": state.kills_total(),
        "restarts": state.restarts,
        "components": dict(state.components),
        "events": events,
        **kernel_view(state),
    }
