"""The dashboard's data and drawing: one status snapshot dict, one renderer.

``snapshot(state)`` turns the guardian's live state into a plain,
JSON-ready dict (sizes in bytes, times in seconds, wall times as Unix
times). ``sentinel run --tui`` takes it in-process; the control socket's
``status dashboard`` reply can carry the same dict so ``sentinel top`` draws
the very same view from another process (``StatusAdapter`` also makes do
with a plain ``status`` reply). ``render``
is a pure function from that dict to a rich renderable; ``format_line`` is
the one-line form for a stdout that is not a terminal.

Only the standard library is imported at module level: the control socket
may import ``snapshot`` in the PID-1 process, which must stay small. rich and
psutil are imported on first use.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from sentinel.logs import fmt_bytes

# The snapshot (the view model, JSON-ready) is served by the control socket too, so it
# lives in sentinel.control.snapshot (control may not import ui); re-exported here.
from sentinel.control.snapshot import (  # noqa: F401
    HISTORY_POINTS, HISTORY_SECONDS, RATE_WINDOW_SECONDS, SERVER_NAMES, ProcessNames,
    _downsample, _growth, _psutil, host_snapshot, load_psutil, memory_figures, snapshot,
)

# Headroom thresholds for the bar and the sparkline: share of the limit used.
WARN_FRACTION = 0.75
DANGER_FRACTION = 0.90
SPARK = "▁▂▃▄▅▆▇█"
# Between two samples at most this far apart the sparkline holds the first
# value; a longer silence (no workload: restart back-off) is left blank.
SPARK_HOLD_SECONDS = 2.0
# The sparkline is drawn to the limit (a full block is the limit) once the peak
# shown reaches this share of it; below, a limit far above the workload would
# flatten it to one row of the lowest block, so it is drawn from the lowest to
# the highest value shown instead (the label gives that range).
SPARK_LIMIT_SCALE_FRACTION = 0.5
# In that own-range scale the range is at least this share of the peak, so page-
# level jitter of a steady workload stays flat instead of filling the height.
SPARK_MIN_RANGE_FRACTION = 0.125


# Keys a control-socket ``status`` object shares with a snapshot, same meaning.
_STATUS_KEYS = ("version", "mode", "workload", "command", "phase", "stopped", "stop_signal",
                "enforcing", "dry_run", "main_pid",
                "measure", "limit_bytes", "interval_seconds", "grace_period_seconds",
                "grace_remaining_seconds", "current_kill", "last_kill", "last_exit_code",
                "kills_total", "restarts", "components", "events",
                "cgroup", "kernel_oom_kills", "wakeups", "kernel_notes", "probe",
                "multi", "program", "programs", "alerts")


class StatusAdapter:
    """Snapshots for ``sentinel top`` from successive control-socket replies.

    A reply with a ``"dashboard"`` object (``status dashboard``) is used as it
    is. A plain ``status`` reply lacks history, growth, names and events: the
    history is then built from the replies themselves, the growth rate from
    it, and command lines read here when the PIDs are visible (``kubectl exec``
    into Sentinel's container shares its PID namespace); events stay empty.
    """

    def __init__(self, names: ProcessNames | None = None, max_processes: int = 20) -> None:
        self.names = names
        self.max_processes = max_processes
        self.history: deque = deque(maxlen=600)  # (wall, measure_bytes) seen by this client
        self._run_started: float | None = None

    def update(self, reply: dict, now_wall: float | None = None) -> dict:
        now = time.time() if now_wall is None else now_wall
        inner = reply.get("dashboard")
        if isinstance(inner, dict):
            snap = dict(inner)
            if self.names is not None:  # the server had no name yet (psutil loading)
                snap["processes"] = [
                    {**p, "command": self.names.get(p["pid"])}
                    if not p.get("command") and p.get("pid") else p
                    for p in snap.get("processes") or []]
            return snap
        status = reply.get("status") if isinstance(reply.get("status"), dict) else reply
        snap: dict[str, Any] = {k: status.get(k) for k in _STATUS_KEYS if k in status}
        snap["time"] = now
        uptime = status.get("workload_uptime_seconds")
        snap["started"] = now - uptime if uptime is not None else None
        live = status.get("main_pid") is not None
        memory = status.get("memory") or {}
        value = memory.get("measure_bytes") if live else None
        snap["measure_bytes"] = value
        snap["rss_bytes"] = memory.get("rss_bytes") if live else None
        snap["figures"] = memory_figures(memory) if live else []
        procs = sorted(status.get("processes") or [], key=lambda p: -(p.get("rss_bytes") or 0))
        snap["process_count"] = len(procs)
        shown = []
        for p in procs[:self.max_processes]:
            p = dict(p)
            if not p.get("command") and self.names is not None and p.get("pid"):
                p["command"] = self.names.get(p["pid"])
            shown.append(p)
        snap["processes"] = shown
        if self.names is not None:
            self.names.prune({p.get("pid") for p in procs})
        if snap["started"] is not None and (self._run_started is None or
                                            abs(snap["started"] - self._run_started) > 1.0):
            self._run_started = snap["started"]
        if value is not None:
            self.history.append((now, value))
        snap["history"] = _downsample([p for p in self.history if p[0] >= now - HISTORY_SECONDS],
                                      HISTORY_POINTS)
        recent = [(t, v) for t, v in self.history
                  if t >= now - RATE_WINDOW_SECONDS and t >= (self._run_started or 0)]
        growth = _growth(recent) if live else None
        snap["growth_bytes_per_second"] = growth
        limit = snap.get("limit_bytes")
        snap["seconds_to_limit"] = (limit - value) / growth if (
            growth and growth > 0 and limit is not None and value is not None
            and value < limit) else None
        snap.setdefault("events", None)  # an older socket: none to show
        return snap


# --------------------------------------------------------------------------
# Formatting (numbers stay numeric in the snapshot; only here are they text)
# --------------------------------------------------------------------------

def fmt_duration(seconds: float | None) -> str:
    """``0.42`` -> ``"0.4s"``, ``245`` -> ``"4m05s"``, ``7300`` -> ``"2h01m"``."""
    if seconds is None:
        return "n/a"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fmt_rate(bps: float | None) -> str:
    if bps is None:
        return "n/a"
    sign = "+" if bps >= 0 else "-"
    return f"{sign}{fmt_bytes(int(abs(bps)))}/s"


def fmt_ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def _fraction(snap: dict) -> float | None:
    value, limit = snap.get("measure_bytes"), snap.get("limit_bytes")
    if value is None or not limit:
        return None
    return value / limit


def headroom_style(fraction: float | None) -> str:
    if fraction is None:
        return "cyan"
    if fraction >= 1.0:
        return "bold red"
    if fraction >= DANGER_FRACTION:
        return "red"
    if fraction >= WARN_FRACTION:
        return "yellow"
    return "green"


def _killed_this_run(snap: dict) -> dict | None:
    kill = snap.get("last_kill")
    started = snap.get("started")
    if kill and (started is None or (kill.get("started") or 0) >= started):
        return kill
    return None


def _kill_text(kill: dict) -> str:
    if kill.get("reason") == "kernel_oom":  # no signal of Sentinel's: the kernel's SIGKILL
        code = kill.get("exit_code")
        return "kernel OOM kill (SIGKILL by the kernel, before Sentinel's limit)" + (
            f", exit code {code}" if code is not None else "")
    how = " then ".join(kill.get("signals") or []) or "signal"
    code = kill.get("exit_code")
    return f"{kill.get('reason', '?')}: {how}" + (f", exit code {code}" if code is not None else "")


def state_line(snap: dict) -> tuple[str, str, str]:
    """``(label, detail, style)`` for the workload's state, e.g.
    ``("TERMINATING", "SIGTERM sent (memory_limit), SIGKILL in 1.2s", "bold yellow")``;
    with ``--dry-run`` the label says ``DRY RUN`` too."""
    label, detail, style = _state_line(snap)
    if snap.get("dry_run"):
        label += " (DRY RUN)"
        detail = (detail + "; " if detail else "") + "memory kills are reported, no signal sent"
    return label, detail, style


def _state_line(snap: dict) -> tuple[str, str, str]:
    phase = snap.get("phase") or "unknown"
    pid = snap.get("main_pid")
    if phase == "running" and snap.get("stopped"):
        return ("STOPPED", f"pid {pid}, stopped by {snap.get('stop_signal') or 'a signal'} "
                "(state T); SIGCONT resumes it", "bold yellow")
    if phase == "running":
        if snap.get("enforcing", True):
            return "RUNNING", f"pid {pid}", "bold green"
        return "RUNNING", f"pid {pid}, enforcement paused (limit not applied)", "bold yellow"
    if phase == "terminating":
        kill = snap.get("current_kill") or {}
        reason = kill.get("reason", "?")
        if "SIGKILL" in (kill.get("signals") or []):
            return "KILLING", f"SIGKILL sent ({reason}), waiting for the tree to exit", "bold red"
        left = snap.get("grace_remaining_seconds")
        return ("TERMINATING", f"SIGTERM sent ({reason}), SIGKILL in {fmt_duration(left)} "
                f"unless it exits", "bold yellow")
    if phase == "restarting":
        kill = _killed_this_run(snap)
        last = f"killed ({_kill_text(kill)})" if kill else \
            f"exited with code {snap.get('last_exit_code')}"
        return "RESTARTING", f"restart {snap.get('restarts', 0)}; last run {last}", "bold magenta"
    if phase == "exited":
        kill = _killed_this_run(snap)
        if kill:
            return "KILLED", _kill_text(kill), "bold red"
        return "EXITED", f"exit code {snap.get('last_exit_code')}", "bold"
    if phase == "waiting":
        return "WAITING", "no target process yet", "bold cyan"
    return phase.upper(), "", "bold"


# A program's ``state`` (``sentinel.core.supervisor.ProgramState``) as the table shows it.
_PROGRAM_STATE_STYLES = {
    "running": "green", "starting": "cyan", "stopped_by_signal": "yellow",
    "stopping": "bold yellow", "backing_off": "magenta", "exited": "default",
    "stopped": "default", "given_up": "bold red",
}


def several(snap: dict) -> bool:
    """The snapshot is of several programs (a config file): the view adds the table."""
    return bool(snap.get("multi")) or len(snap.get("programs") or []) > 1


def program_rows(snap: dict) -> list[dict]:
    """The programs table's view model, one dict per program in start order, every cell
    already text: ``name`` (``*`` after the main one), ``state`` and ``state_style``,
    ``pid``, ``memory`` (``"rss 50.0 MiB / 200.0 MiB"``), ``fraction`` (of the limit, or
    ``None``) and ``memory_style``, ``growth``, ``to_limit`` (from the snapshot's
    ``growth_bytes_per_second``/``seconds_to_limit``: the sampler's one estimator),
    ``kills``, ``restarts``. Empty with one program."""
    if not several(snap):
        return []
    rows = []
    for p in snap.get("programs") or []:
        value, limit = p.get("measure_bytes"), p.get("limit_bytes")
        frac = value / limit if value is not None and limit else None
        state = str(p.get("state") or p.get("phase") or "?")
        if p.get("enforcing") is False:
            state += " (paused)"
        if p.get("dry_run"):
            state += " (DRY RUN)"
        if (p.get("sampling") or {}).get("failing"):
            state += " (sampling failing)"
        memory = f"{p.get('measure', 'rss')} {fmt_bytes(value) if value is not None else '-'}"
        memory += f" / {fmt_bytes(limit)}" if limit is not None else " / no limit"
        left, rate = p.get("seconds_to_limit"), p.get("growth_bytes_per_second")
        if frac is not None and frac >= 1.0:
            to_limit = "over"
        elif left is not None:
            to_limit = fmt_duration(left)
        elif limit and value is not None and rate is not None and rate <= 0:
            to_limit = "not growing"
        else:
            to_limit = "n/a"
        rows.append({
            "name": str(p.get("name") or "?") + (" *" if p.get("main") else ""),
            "state": state, "state_style": _PROGRAM_STATE_STYLES.get(p.get("state"), "bold"),
            "pid": str(p["pid"]) if p.get("pid") is not None else "-",
            "memory": memory, "fraction": frac, "memory_style": headroom_style(frac),
            "growth": fmt_rate(rate) if value is not None else "n/a", "to_limit": to_limit,
            "kills": str(p.get("kills_total", 0)), "restarts": str(p.get("restarts", 0)),
        })
    return rows


def format_line(snap: dict) -> str:
    """One plain status line (no escape codes), for a stdout that is not a terminal."""
    label, detail, _ = state_line(snap)
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(snap.get("time") or time.time()))
    parts = [ts, snap.get("workload") or "?", label.lower()]
    if detail:
        parts.append(f"({detail})")
    value, limit = snap.get("measure_bytes"), snap.get("limit_bytes")
    measure = snap.get("measure", "rss")
    if limit:
        frac = _fraction(snap)
        pct = f" ({frac * 100:.1f}%)" if frac is not None else ""
        parts.append(f"{measure} {fmt_bytes(value)} of {fmt_bytes(limit)}{pct}")
    else:
        parts.append(f"{measure} {fmt_bytes(value)} (no limit)")
    if snap.get("growth_bytes_per_second") is not None:
        parts.append(f"growth {fmt_rate(snap['growth_bytes_per_second'])}")
    if snap.get("seconds_to_limit") is not None:
        parts.append(f"limit in {fmt_duration(snap['seconds_to_limit'])}")
    firing = (snap.get("alerts") or {}).get("firing")
    if firing:
        parts.append("alerts " + ",".join(firing))
    parts.append(f"procs {snap.get('process_count', 0)}")
    parts.append(f"kills {snap.get('kills_total', 0)} restarts {snap.get('restarts', 0)}")
    rows = program_rows(snap)
    if rows:  # several programs: each one's state and memory, after the main one's line
        parts.append("| " + "; ".join(
            f"{r['name']} {r['state']} pid {r['pid']} {r['memory']} kills {r['kills']} "
            f"restarts {r['restarts']}" for r in rows))
    return " ".join(str(p) for p in parts)


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------

def _bar(fraction: float | None, width: int):
    from rich.text import Text

    width = max(4, width)
    if fraction is None:
        return Text("─" * width, style="dim")
    filled = min(width, round(min(fraction, 1.0) * width))
    text = Text("█" * filled, style=headroom_style(fraction))
    text.append("░" * (width - filled), style="dim")
    return text


def spark_scale(values: list[int], limit: int | None) -> tuple[int, int, bool]:
    """``(floor, top, to_limit)``: the values a sparkline draws as its lowest and its
    full block. ``0..limit`` when the peak reaches ``SPARK_LIMIT_SCALE_FRACTION`` of the
    limit; else the values' own range (at least ``SPARK_MIN_RANGE_FRACTION`` of the
    peak), so growth far below a high limit (or without one) is visible."""
    peak = max(values, default=0)
    if limit and peak >= limit * SPARK_LIMIT_SCALE_FRACTION:
        return 0, limit, True
    low = min(values, default=0)
    span = max(peak - low, int(peak * SPARK_MIN_RANGE_FRACTION), 1)
    return max(0, peak - span), peak, False


def sparkline(history: list, width: int, limit: int | None, now: float | None = None,
              span_seconds: float | None = None, scale: tuple[int, int] | None = None):
    """A rich ``Text`` of ``width`` cells: the highest value per time slice, drawn on
    ``spark_scale`` (to the limit near it, else on the values' own range), coloured by
    headroom; blank where no sample fell. ``scale`` gives ``(floor, top)`` instead."""
    from rich.text import Text

    text = Text()
    if not history or width <= 0:
        return Text(" " * max(0, width))
    t_end = now if now is not None else history[-1][0]
    span = span_seconds or max(1.0, t_end - history[0][0])
    t_start = t_end - span
    cells: list[int | None] = [None] * width
    last_i, last_t = -1, 0.0
    for t, v in history:
        if t < t_start:
            continue
        i = min(width - 1, int((t - t_start) / span * width))
        if last_i >= 0 and i > last_i + 1 and t - last_t <= SPARK_HOLD_SECONDS:
            # Fewer samples than cells: hold the previous value across the
            # cells in between. A longer silence (a restart) stays blank.
            for j in range(last_i + 1, i):
                cells[j] = cells[last_i]
        cells[i] = v if cells[i] is None else max(cells[i], v)  # type: ignore[type-var]
        last_i, last_t = i, t
    floor, top = scale or spark_scale([c for c in cells if c is not None], limit)[:2]
    for c in cells:
        if c is None:
            text.append(" ")
            continue
        frac = (c - floor) / ((top - floor) or 1)
        idx = min(len(SPARK) - 1, max(0, int(frac * (len(SPARK) - 1) + 0.5)))
        text.append(SPARK[idx], style=headroom_style(c / limit if limit else None))
    return text


def _event_style(kind: str) -> str:
    return {"limit_crossed": "bold red", "signal_sent": "red", "kill_started": "red",
            "kill_finished": "yellow", "exited": "yellow", "restart_scheduled": "magenta",
            "spawned": "green", "enforcement_paused": "yellow", "limit_changed": "cyan",
            "pre_kill_hook": "magenta",
            "signal_forwarded": "cyan", "kernel_oom_kill": "bold red"}.get(kind, "default")


def _component_text(name: str, status: str):
    """``metrics: listening on :8000`` in green, ``socket: off`` in red; the status is
    cut at its first ``": "`` or ``" ("`` (the reason; ``sentinel status`` shows it all)."""
    from rich.text import Text

    short = status
    for sep in (": ", " ("):
        short = short.split(sep, 1)[0]
    low = short.strip().lower()
    ok = not low.startswith(("off", "fail", "error", "disabled", "unavailable"))
    text = Text(f"{name}: ", style="dim")
    text.append(short.strip() or status, style="green" if ok else "red")
    return text


def figure_lines(snap: dict) -> list:
    """Lines for every memory figure the sample has (labels and units from the figures
    table; the enforcing measure marked) and, when known, the kernel's side: the cgroup
    (version, path, limit), kernel OOM kills, wake-ups and the kernel notes."""
    from rich.text import Text

    from sentinel.control.client import cgroup_text, figure_text

    lines = []
    figures = snap.get("figures") or []
    measure = snap.get("measure", "rss")
    enforcing = {"rss": "rss_bytes", "pss": "pss_bytes", "uss": "uss_bytes",
                 "working-set": "cgroup_working_set_bytes",
                 "cgroup": "cgroup_memory_current_bytes"}.get(measure)
    if figures:
        row = Text("figures ", style="dim", no_wrap=True, overflow="ellipsis")
        for i, fig in enumerate(figures):
            if i:
                row.append("  ")
            row.append(figure_text(fig), style="bold" if fig.get("name") == enforcing else "")
        lines.append(row)
    if "cgroup" in snap or "kernel_oom_kills" in snap:
        row = Text("cgroup ", style="dim", no_wrap=True, overflow="ellipsis")
        notes = dict(snap.get("kernel_notes") or {})
        row.append(cgroup_text(snap.get("cgroup"), notes))
        oom = snap.get("kernel_oom_kills") or 0
        row.append("  kernel OOM kills ", style="dim")
        row.append(str(oom), style="bold red" if oom else "")
        woke = {k: v for k, v in sorted((snap.get("wakeups") or {}).items()) if v}
        if woke:
            row.append("  wake-ups ", style="dim")
            row.append(", ".join(f"{k} x{v}" for k, v in woke.items()))
        lines.append(row)
        probe = snap.get("probe") or {}
        if probe.get("probe") == "ebpf":  # --probe ebpf: the kernel follows the tree
            row = Text("probe ", style="dim", no_wrap=True, overflow="ellipsis")
            row.append(f"eBPF: the kernel follows {probe.get('followed', 0)} process(es)")
            if probe.get("threshold_bytes") is not None:
                row.append(f", wakes Sentinel at {fmt_bytes(probe['threshold_bytes'])}")
            if probe.get("lost"):
                row.append(f"  {probe['lost']} record(s) lost", style="yellow")
            lines.append(row)
        for topic, text in sorted(notes.items()):
            if topic == "cgroup" and not snap.get("cgroup"):
                continue  # said on the cgroup line
            note = Text(f"kernel {topic}: ", style="dim", no_wrap=True, overflow="ellipsis")
            note.append(str(text), style="yellow")
            lines.append(note)
    return lines


def render(snap: dict, *, width: int = 100, height: int | None = None,
           banner: str | None = None, hint: str | None = None):
    """The whole view as a rich renderable ``width`` cells wide.

    With ``height`` (a live screen) the process and event lists are cut so
    the view fits; without it (a test, a final summary) up to 10 of each are
    shown. ``banner`` is a red line on top (e.g. a lost connection); ``hint``
    goes in the footer (how to quit).
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now = snap.get("time") or time.time()
    lines: list = []
    if banner:
        lines.append(Text(banner, style="bold white on red", no_wrap=True, overflow="ellipsis"))

    # Title: who, since when.
    title = Text(no_wrap=True, overflow="ellipsis")
    title.append(f"Sentinel {snap.get('version', '')}".rstrip(), style="bold")
    title.append(f"  {snap.get('workload') or '?'}", style="bold cyan")
    command = " ".join(snap.get("command") or [])
    if snap.get("started") and snap.get("main_pid"):
        title.append(f"  up {fmt_duration(max(0.0, now - snap['started']))}")
    title.append(f"  restarts {snap.get('restarts', 0)}  kills {snap.get('kills_total', 0)}")
    if command:
        title.append(f"  $ {command}", style="dim")
    lines.append(title)

    # Several programs: one row each; the panels below are the main program's.
    rows = program_rows(snap)
    if rows:
        lines.append(Text(f"Programs ({len(rows)}; * main, shown below)", style="bold"))
        grid = Table.grid(padding=(0, 2), expand=False)
        heads = ("PROGRAM", "STATE", "PID", "MEMORY / LIMIT", "GROWTH", "TO LIMIT", "KILLS",
                 "RESTARTS")
        keys = ("name", "state", "pid", "memory", "growth", "to_limit", "kills", "restarts")
        widths = [max(len(h), *(len(r[k]) for r in rows)) for h, k in zip(heads, keys)]
        # The bar gets what the text columns leave (at most 20 cells; none under 4).
        bar_width = min(20, width - sum(widths) - 2 * len(widths))
        for i, w in enumerate(widths):
            # Every text column at its width but the name, which yields on a narrow screen.
            grid.add_column(no_wrap=True, justify="right" if i in (2, 4, 6, 7) else "left",
                            overflow="ellipsis", min_width=None if i == 0 else w)
            if i == 3 and bar_width >= 4:
                grid.add_column(no_wrap=True, width=bar_width)
        bar_head = [Text("")] if bar_width >= 4 else []
        head = [Text(h, style="dim") for h in heads]
        grid.add_row(*head[:4], *bar_head, *head[4:])
        for r in rows:
            bar = [_bar(r["fraction"], bar_width)] if bar_width >= 4 else []
            grid.add_row(Text(r["name"], style="bold" if r["name"].endswith("*") else ""),
                         Text(r["state"], style=r["state_style"]), r["pid"],
                         Text(r["memory"], style=r["memory_style"]), *bar, r["growth"],
                         r["to_limit"],
                         Text(r["kills"], style="red" if r["kills"] != "0" else ""),
                         r["restarts"])
        lines.append(grid)

    # State.
    label, detail, style = state_line(snap)
    state = Text("State ", style="dim", no_wrap=True, overflow="ellipsis")
    state.append(f" {label} ", style=style + " reverse")
    if detail:
        state.append(f"  {detail}")
    lines.append(state)

    # The measure against the limit.
    value, limit = snap.get("measure_bytes"), snap.get("limit_bytes")
    frac = _fraction(snap)
    measure = snap.get("measure", "rss")
    figures = Text(no_wrap=True, overflow="ellipsis")
    figures.append(f"{measure} ", style="dim")
    figures.append(fmt_bytes(value), style=headroom_style(frac) + " bold")
    if limit:
        figures.append(" of limit ", style="dim")
        figures.append(fmt_bytes(limit), style="bold")
        if frac is not None:
            figures.append(f"  {frac * 100:.1f}%", style=headroom_style(frac) + " bold")
            room = limit - value
            figures.append("  headroom " if room >= 0 else "  over by ", style="dim")
            figures.append(fmt_bytes(abs(room)))
    else:
        figures.append("  no limit: watching only", style="dim")
    lines.append(figures)
    lines.extend(figure_lines(snap))
    pct = f" {frac * 100:5.1f}%" if frac is not None else ""
    bar = _bar(frac, width - len(pct) - 2)
    bar.append(pct, style=headroom_style(frac))
    lines.append(bar)

    # Growth and sampling.
    growth = Text(no_wrap=True, overflow="ellipsis")
    growth.append("growth ", style="dim")
    growth.append(fmt_rate(snap.get("growth_bytes_per_second")))
    left = snap.get("seconds_to_limit")
    rate = snap.get("growth_bytes_per_second")
    if limit and frac is not None and frac >= 1.0:
        growth.append("  over the limit", style="bold red")  # no "time to limit" then
    else:
        growth.append("  time to limit ", style="dim")
        if left is not None:
            growth.append(fmt_duration(left), style=headroom_style(frac) + " bold")
        elif limit and value is not None and rate is not None and rate <= 0:
            growth.append("not growing", style="green")
        else:
            growth.append("n/a")
    growth.append("  sampling every ", style="dim")
    growth.append(fmt_ms(snap.get("interval_seconds")))
    if snap.get("sample_gap_max_seconds") is not None:
        growth.append(f" (worst recent gap {fmt_ms(snap['sample_gap_max_seconds'])})", style="dim")
    lines.append(growth)
    # A line per firing alert rule (issue 11): warning, leak, prediction.
    from sentinel.control.client import alert_lines
    for text in alert_lines(snap.get("alerts")):
        lines.append(Text("ALERT " + text, style="bold yellow", no_wrap=True,
                          overflow="ellipsis"))

    # Sparkline of the measure.
    history = snap.get("history") or []
    spark_label = "history "
    spark_span = None
    scale = None
    if history:
        spark_span = max(1.0, now - history[0][0])
        spark_label = f"last {fmt_duration(spark_span)} "
        floor, top, to_limit = spark_scale([v for _, v in history], limit)
        scale = (floor, top)
        if not to_limit:  # say the range drawn: it is not 0 to the limit
            spark_label += f"{fmt_bytes(floor)}-{fmt_bytes(top)} "
    spark = Text(spark_label, style="dim", no_wrap=True, overflow="crop")
    spark.append_text(sparkline(history, width - len(spark_label), limit, now, spark_span,
                                scale))
    lines.append(spark)

    # How many rows are left for processes and events.
    components = dict(snap.get("components") or {})
    procs = snap.get("processes") or []
    # Section headers (2), the table's header row, the footer, and the
    # table's placeholder row when there is no process.
    fixed = len(lines) + 4 + (0 if procs else 1) + len(rows)  # the programs grid: a line each
    events = snap.get("events") or []
    if height is None:
        n_procs, n_events = min(len(procs), 10), min(len(events), 10)
    else:
        room = max(0, height - fixed)
        n_procs = min(len(procs), max(1, room // 3), room)
        n_events = max(0, min(len(events), room - n_procs))

    total = snap.get("rss_bytes") or sum(p.get("rss_bytes") or 0 for p in procs) or 0
    count = snap.get("process_count", len(procs))
    header = Text(f"Processes ({count}", style="bold")
    header.append(f", {n_procs} shown by RSS)" if n_procs < count else ")", style="bold")
    lines.append(header)
    table = Table.grid(padding=(0, 2), expand=False)
    table.add_column("PID", justify="right", no_wrap=True)
    table.add_column("RSS", justify="right", no_wrap=True)
    table.add_column("SHARE", justify="right", no_wrap=True)
    table.add_column("COMMAND", no_wrap=True, overflow="ellipsis",
                     max_width=max(10, width - 34))
    table.add_row(*(Text(h, style="dim") for h in ("PID", "RSS", "SHARE", "COMMAND")))
    for p in procs[:n_procs]:
        rss = p.get("rss_bytes")
        share = f"{rss / total * 100:.1f}%" if rss is not None and total else "n/a"
        pid_style = "bold" if p.get("pid") == snap.get("main_pid") else ""
        table.add_row(Text(str(p.get("pid")), style=pid_style), fmt_bytes(rss), share,
                      p.get("command") or "")
    if not procs:
        table.add_row("-", "-", "-", Text("no workload process", style="dim"))
    lines.append(table)

    if snap.get("events") is None:
        lines.append(Text("Events (not in this Sentinel's status reply)", style="bold"))
    else:
        lines.append(Text(f"Events (last {n_events} of {len(events)})", style="bold"))
    for e in events[len(events) - n_events:] if n_events else []:
        row = Text(no_wrap=True, overflow="ellipsis")
        row.append(time.strftime("%H:%M:%S", time.localtime(e.get("at") or 0)), style="dim")
        row.append(f"  {e.get('kind', ''):<17} ", style=_event_style(e.get("kind", "")))
        if rows:  # several programs: whose event it is ("sentinel" for Sentinel's own)
            row.append(f"{e.get('program') or 'sentinel'}: ", style="bold")
        row.append(e.get("message", ""))
        lines.append(row)

    footer = Text(no_wrap=True, overflow="ellipsis")
    for name in ("metrics", "socket"):
        components.setdefault(name, "off")
    for i, (name, status) in enumerate(sorted(components.items())):
        if i:
            footer.append("  ")
        footer.append_text(_component_text(name, str(status)))
    if hint:
        footer.append(f"  {hint}", style="dim")
    lines.append(footer)
    return Group(*lines)
