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

# The growth rate is the sampler's robust slope over this much recent history;
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
    Sentinel), ``wakeups`` (source -> count), ``kernel_notes`` (topic -> one line) and
    ``probe``: how memory is followed (``{"probe": "poll"}``, or the eBPF probe's
    ``{"probe": "ebpf", "followed": N, "records": {kind: count}, "lost": N,
    "threshold_bytes": N}``)."""
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
            "probe": dict(getattr(state, "probe_info", None) or {"probe": "poll"}),
            "kernel_notes": {str(k): str(v)
                             for k, v in dict(getattr(state, "kernel_notes", None) or {}).items()}}



# ---------------------------------------------------------------- hosts and programs
# A host (``sentinel.core.guardian.Guardian``, one program; ``Group``, several from a
# config file) has ``programs`` (start order), ``program(name | None)`` and ``multi``.
# An object with only a ``state`` (a test's stand-in) counts as one program.


def host_programs(host) -> list:
    """The host's programs in start order (``[host]`` for a host without ``programs``)."""
    programs = getattr(host, "programs", None)
    return list(programs) if programs else [host]


def program_names(host) -> list[str]:
    """The names of the host's programs, in start order."""
    return [program_name(p) for p in host_programs(host)]


def program_name(program) -> str:
    return getattr(program.state, "program", "") or getattr(program.state, "workload", "")


def is_multi(host) -> bool:
    return bool(getattr(host, "multi", False))


def main_program(host, *, fallback: bool = True):
    """The main program; without one (a config whose programs are all auxiliary) the
    first program, or ``None`` with ``fallback=False``; the host itself for a
    one-program host."""
    finder = getattr(host, "program", None)
    if finder is None:
        return host
    try:
        return finder(None)
    except (LookupError, ValueError):
        return host_programs(host)[0] if fallback else None


def memory_dict(sample, now_mono: float) -> dict | None:
    """The ``memory`` object of a status: every figure of ``sample`` in bytes, its age."""
    if sample is None:
        return None
    return {
        "measure_bytes": sample.measure_bytes, "rss_bytes": sample.rss_bytes,
        "pss_bytes": sample.pss_bytes, "uss_bytes": sample.uss_bytes,
        "cgroup_memory_current_bytes": sample.cgroup_memory_current_bytes,
        "cgroup_memory_max_bytes": sample.cgroup_memory_max_bytes,
        "cgroup_working_set_bytes": sample.cgroup_working_set_bytes,
        # ... and every other figure of the table the sample has (None: not read).
        **{fig.name: getattr(sample, fig.name, None) for fig in FIGURES},
        "sample_age_seconds": round(max(0.0, now_mono - sample.at_mono), 6),
        "sample_duration_seconds": sample.duration_seconds,
    }



def growth_to_limit(state, now_wall: float) -> tuple[float | None, float | None]:
    """``(growth_bytes_per_second, seconds_to_limit)`` of a program's ``GuardianState``:
    ``sentinel.core.sampler.growth_rate`` over the last ``RATE_WINDOW_SECONDS`` of this
    run's history (the estimator the sampler steers by), and the time until the measure
    reaches the limit at that rate (``None``: no growth, no limit, or already over)."""
    if state.main_pid is None:
        return None, None
    since = max(now_wall - RATE_WINDOW_SECONDS, state.started_wall or 0.0)
    growth = _growth([(t, v) for t, v in state.history if t >= since])
    sample, limit = state.last_sample, state.limit_bytes
    value = sample.measure_bytes if sample is not None else None
    if growth and growth > 0 and limit is not None and value is not None and value < limit:
        return growth, (limit - value) / growth
    return growth, None


def alerts_view(state) -> dict:
    """A program's alert rules (issue 11, ``sentinel.core.alerts``) for ``status``:
    ``firing`` (the firing rules, in ``warning``, ``leak``, ``prediction`` order),
    ``growth_bytes_per_second`` and ``seconds_to_limit`` (the rules' robust growth over
    ``--leak-window`` and the time to the limit at it; null with too little history,
    not growing, or no limit), and ``rules``: rule -> ``state`` (``firing`` or
    ``resolved``), ``since`` (Unix time of that state), and the alert's last figures
    (``value_bytes``, ``limit_bytes``, ``share``, ``growth_bytes_per_second``,
    ``seconds_to_limit``, ``window_seconds``); a rule that never fired is absent."""
    rules = {}
    for rule, entry in dict(state.alerts).items():
        entry = dict(entry)
        since = entry.pop("since_wall", None)
        rules[rule] = {"state": entry.pop("state", None), "since": since, **entry}
    return {"firing": [r for r in ("warning", "leak", "prediction")
                       if rules.get(r, {}).get("state") == "firing"],
            "growth_bytes_per_second": state.growth_bytes_per_second,
            "seconds_to_limit": state.seconds_to_limit, "rules": rules}


def program_entry(program, *, main: bool, now_wall: float | None = None,
                  now_mono: float | None = None) -> dict:
    """One entry of ``status``'s ``programs`` list (and of the dashboard's): ``name``,
    ``main``, ``state`` (``ProgramState`` value; ``None`` when the program has none),
    ``phase``, ``pid`` (the main process, ``None`` when none runs), ``stopped``,
    ``enforcing``, ``measure``, ``measure_bytes``, ``memory`` (every figure, as the
    top-level ``memory``), ``limit_bytes``, ``headroom_bytes``, ``growth_bytes_per_second``
    and ``seconds_to_limit`` (``sentinel.core.sampler``'s estimator over this run's
    history), ``kills_total``, ``kills``, ``restarts``, ``last_kill``, ``current_kill``,
    ``last_exit_code``, ``sampling`` (``failing``, ``failure``, ``failing_since``),
    ``uptime_seconds`` of its current process, ``alerts`` (``alerts_view``). Sizes in
    bytes, times in seconds."""
    st = program.state
    now_wall = time.time() if now_wall is None else now_wall
    now_mono = time.monotonic() if now_mono is None else now_mono
    live = st.main_pid is not None
    sample = st.last_sample
    value = sample.measure_bytes if sample is not None and live else None
    growth, to_limit = growth_to_limit(st, now_wall)
    state = getattr(program, "program_state", None)
    return {
        "name": program_name(program),
        "main": main,
        "state": getattr(state, "value", state),
        "phase": st.phase,
        "pid": st.main_pid,
        "stopped": st.stopped and live,
        "enforcing": st.enforcing,
        "dry_run": getattr(st, "dry_run", False),
        "command": list(st.command),
        "measure": st.measure,
        "measure_bytes": value,
        "memory": memory_dict(sample, now_mono) if live else None,
        "limit_bytes": st.limit_bytes,
        "headroom_bytes": st.limit_bytes - value
        if value is not None and st.limit_bytes is not None else None,
        "growth_bytes_per_second": growth,
        "seconds_to_limit": to_limit,
        "kills_total": st.kills_total(),
        "kills": [{"reason": r, "signal": s, "count": n}
                  for (r, s), n in sorted(st.kills.items())],
        "restarts": st.restarts,
        "last_kill": st.last_kill.to_dict() if st.last_kill is not None else None,
        "current_kill": st.current_kill.to_dict() if st.current_kill is not None else None,
        "last_exit_code": st.last_exit_code,
        "sampling": {"failing": st.sampling_failing, "failure": st.sampling_failure,
                     "failing_since": st.sampling_failing_since_wall},
        "uptime_seconds": round(max(0.0, now_wall - st.started_wall), 3)
        if live and st.started_wall is not None else None,
        "alerts": alerts_view(st),
    }


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
    """Robust slope (median of pairwise slopes) in bytes/s of (wall, bytes) points, or
    None if too few: the supervisor's own estimator (``sentinel.core.sampler.growth_rate``),
    so "time to limit" here is what the sampler steers by."""
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
    growth, seconds_to_limit = growth_to_limit(state, now_wall)
    measure_bytes = sample.measure_bytes if sample is not None and state.main_pid else None
    limit = state.limit_bytes
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
    events = [_event(e) for e in list(state.events)[-max_events:]]
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
        "dry_run": getattr(state, "dry_run", False),
        "dry_run_signals": {f"{reason}/{sig}": n for (reason, sig), n
                            in sorted(getattr(state, "dry_run_signals", {}).items())},
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
        "alerts": alerts_view(state),
        **kernel_view(state),
    }


def _event(e) -> dict:
    """One event of the log: ``at`` (Unix time), ``kind``, ``message``, ``program`` (the
    program it is about; "" for Sentinel itself)."""
    return {"at": e.at_wall, "kind": e.kind, "message": e.message,
            "program": getattr(e, "program", "")}


def host_snapshot(host, names: ProcessNames | None = None, *, program: str | None = None,
                  max_events: int = 30, now_wall: float | None = None,
                  now_mono: float | None = None) -> dict[str, Any]:
    """The dashboard's view of a host: ``snapshot`` of the main program (or of the program
    called ``program``; the caller has checked the name), plus ``multi`` (several programs
    from a config file), ``programs`` (``program_entry`` of each, in start order) and, with
    several programs, Sentinel's own parts from ``host.state`` (version, mode, components)
    and the events of every program and of Sentinel merged by time (each names its
    ``program``). With one program it is ``snapshot(host.state)`` plus those two keys.
    Call it on the host's loop."""
    now_wall = time.time() if now_wall is None else now_wall
    now_mono = time.monotonic() if now_mono is None else now_mono
    main = main_program(host, fallback=False)
    finder = getattr(host, "program", None)
    chosen = main_program(host) if program is None or finder is None else finder(program)
    snap = snapshot(chosen.state, names, max_events=max_events, now_wall=now_wall,
                    now_mono=now_mono)
    programs = host_programs(host)
    multi = is_multi(host)
    snap["multi"] = multi
    snap["program"] = program_name(chosen)
    snap["programs"] = [program_entry(p, main=p is main, now_wall=now_wall, now_mono=now_mono)
                        for p in (programs if program is None else [chosen])]
    if multi:
        own = host.state
        snap["version"], snap["mode"] = own.version, own.mode
        snap["sentinel_started"] = own.sentinel_started_wall
        snap["components"] = dict(own.components)
        if program is None:
            merged = [e for p in programs for e in list(p.state.events)[-max_events:]]
            if own not in [p.state for p in programs]:
                merged += list(own.events)[-max_events:]
            merged.sort(key=lambda e: e.at_wall)
            snap["events"] = [_event(e) for e in merged[-max_events:]]
    return snap
