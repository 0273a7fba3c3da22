"""The Prometheus exporter: guardian state -> exposition format, on its own thread.

``start_exporter(guardian, settings)`` binds ``--metrics-address``:
``--metrics-port`` and serves ``/metrics`` from a thread of its own, so a
scrape never runs on the guardian's loop: sampling and the SIGTERM -> grace ->
SIGKILL ladder go on whatever a client does. ``guardian`` is the host: a
``Guardian`` (one program) or a ``Group`` (several, ``--config``). Every figure
is read when a scrape asks for it (``SentinelCollector``): each program's from
``host.programs[i].state``, with a ``program`` label, Sentinel's own from
``host.state``; only the two histograms are fed by the host's listeners as things
happen, filed under the program the event or sample is about. Nothing
here is registered on prometheus_client's global registry: each exporter has
its own ``CollectorRegistry``, so tests can build several.

In ``sentinel run`` the port is bound before the workload is spawned
(``sentinel.launch.bind_metrics_port``) and the listening socket is handed to
``start_exporter``. Counters of earlier containers of the pod come from the
state file (``guardian.pod_state``, see ``sentinel.exporters.statefile``); served
scrapes are counted for the linger after a kill (``pending_reports``).

Failure never reaches the workload: a port that is taken or an address that
does not resolve gives one warning line and leaves the exporter off (see
``guardian.state.components["metrics"]``); a bug while collecting answers
that scrape with HTTP 500 and one warning, never a traceback on stderr.

Imported only from ``sentinel.app.start_components``, after the workload is
running: prometheus_client is not on the start-up path.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import selectors
import socket
import socketserver
import sys
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from sentinel.logs import LOGGER_NAME, printable
from sentinel.probes.figures import BY_NAME, FIGURES
from sentinel.probes.wakeups import read_pressure
from sentinel.core.state import (
    PHASE_RUNNING, PHASE_TERMINATING, REASON_KERNEL_OOM, REASON_MEMORY, Event, GuardianState,
    MemorySample,
)

log = logging.getLogger(LOGGER_NAME)

# Reaction time (limit crossing -> SIGTERM): the sampler speeds up near the
# limit (4 ms at its fastest), so a healthy Sentinel reacts within a few
# milliseconds; 100 ms is one resting interval, 1 s means something is wrong.
REACTION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# One sample of the tree costs microseconds per process (descriptors kept
# open); smaps_rollup (PSS/USS) and big trees cost milliseconds.
SAMPLE_DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                           0.1)
# Series that exist from the start so that rate()/increase() see the first kill.
PREPOPULATED_KILLS = ((REASON_MEMORY, "SIGTERM"), (REASON_MEMORY, "SIGKILL"),
                      (REASON_KERNEL_OOM, "SIGKILL"))
# Kernel wake-ups (GuardianState.wakeups), pre-initialised like the kills.
WAKEUP_SOURCES = ("memory_events", "pressure", "usage_threshold", "oom_notify")
# The host's memory pressure (PSI, kernel/sched/psi.c); a cgroup v2 group has its own
# memory.pressure, which is read instead when the workload's group is known.
SYSTEM_PRESSURE_PATH = "/proc/pressure/memory"
# A client that stalls (connects and sends nothing) loses its connection after
# this many seconds instead of holding a thread.
CLIENT_TIMEOUT_SECONDS = 10.0


class Histogram:
    """A histogram written by one thread (the guardian's loop) and read by scrapes.

    ``observe`` replaces one tuple, which is atomic under the GIL: a scrape
    never holds a lock that the loop would have to wait for, and always sees
    the counts and the sum of the same moment. ``bounds`` are the upper bounds
    (``le``) in seconds, ascending; +Inf is implied.
    """

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = tuple(sorted(bounds))
        self._snapshot: tuple[tuple[int, ...], float] = ((0,) * (len(self.bounds) + 1), 0.0)

    def observe(self, value: float) -> None:
        counts, total = self._snapshot
        i = bisect.bisect_left(self.bounds, value)  # first bound >= value: its "le" bucket
        self._snapshot = (counts[:i] + (counts[i] + 1,) + counts[i + 1:], total + value)

    def buckets(self) -> tuple[list[tuple[str, int]], float]:
        """Cumulative ``[(le, count), ..., ("+Inf", count)]`` and the sum of observations."""
        counts, total = self._snapshot
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), counts):
            running += count
            out.append((floatToGoString(bound), running))
        return out, total


class _Program:
    """One program's figures for one scrape: its state, its label values and, from the
    state file, the counters of earlier containers of the pod (``carried``)."""

    __slots__ = ("state", "program", "workload", "sample", "running", "carried")

    def __init__(self, state: GuardianState, carried) -> None:
        self.state = state
        # A name that is not UTF-8 (a command file named with byte 0xff) would
        # make the exposition's encoder fail, and every scrape answer 500.
        self.program = printable(program_name(state))
        self.workload = printable(state.workload)
        self.running = state.main_pid is not None and state.phase in (PHASE_RUNNING,
                                                                       PHASE_TERMINATING)
        self.sample = state.last_sample if self.running else None
        self.carried = carried


def program_name(state: GuardianState) -> str:
    """The ``program`` label of ``state``'s metrics: ``state.program``, or its workload's
    name for a state made without one."""
    return state.program or state.workload


def webhook_families(notifier) -> list:
    """The webhook receivers' families (``sentinel.exporters.webhooks``), labelled by the
    receiver's name or index, never its URL."""
    from sentinel.exporters.webhooks import FAIL_REASONS  # stdlib only, loaded already

    sent = CounterMetricFamily(
        "sentinel_webhook_sent", "Webhook messages delivered (a 2xx answer), by receiver "
        "(its name or index: docs/webhooks.md).", labels=["receiver"])
    failed = CounterMetricFamily(
        "sentinel_webhook_failed", "Webhook messages given up, by receiver and reason "
        "(timeout, connection, http_5xx after the retries; http_4xx and redirect at once).",
        labels=["receiver", "reason"])
    dropped = CounterMetricFamily(
        "sentinel_webhook_dropped", "Webhook messages dropped because the receiver's queue "
        "was full (it is slow or down).", labels=["receiver"])
    queued = GaugeMetricFamily(
        "sentinel_webhook_queue_length", "Webhook messages queued or being posted, by "
        "receiver.", labels=["receiver"])
    for r in list(notifier.receivers):
        sent.add_metric([r.name], r.sent_total)
        counts = dict.fromkeys(FAIL_REASONS, 0)
        counts.update(dict(r.failed_total))
        for reason, n in sorted(counts.items()):
            failed.add_metric([r.name, reason], n)
        dropped.add_metric([r.name], r.dropped_total)
        queued.add_metric([r.name], r.queue_length)
    return [sent, failed, dropped, queued]


def output_families(stats: dict) -> list:
    """The prefixed output's families (``Group.output_stats``): lines relayed and lines
    dropped, by program and stream. ``[]`` when there is no prefixed output."""
    if not stats:
        return []
    lines = CounterMetricFamily(
        "sentinel_output_lines", "Lines of the programs' stdout/stderr relayed to Sentinel's "
        "own, prefixed with the program's name (output: prefixed).",
        labels=["program", "stream"])
    dropped = CounterMetricFamily(
        "sentinel_output_lines_dropped", "Lines of the programs' output lost because "
        "Sentinel's own stdout/stderr could not take them (closed, EPIPE, ENOSPC); the "
        "program is not harmed.", labels=["program", "stream"])
    for program, streams in sorted(stats.items()):
        for stream, c in sorted(streams.items()):
            lines.add_metric([printable(program), stream], c["lines_relayed"])
            dropped.add_metric([printable(program), stream], c["lines_dropped"])
    return [lines, dropped]


class SentinelCollector(Collector):
    """Builds every ``sentinel_*`` family at scrape time, one series per program.

    ``state`` is the host's (``host.state``: Sentinel's own figures, and on a
    ``Guardian`` the one program's too); the programs are ``guardian.programs``
    read at each scrape (each ``Supervisor``'s ``.state``), or ``[state]`` when
    ``guardian`` has none (a bare state in tests). Every per-program family
    carries ``program`` (``GuardianState.program``) and, as before it, ``workload``;
    Sentinel's own (build info, log lines dropped, Event errors, the system's
    memory pressure) carry neither ``program`` nor a PID.

    Memory figures come from each program's ``last_sample`` and appear only while
    its process runs (a restart back-off or a watch with no target shows no
    memory, not a stale one). The two histograms are kept per program name
    (``reaction_for``, ``sample_duration_for``), fed by the exporter's listeners.
    """

    def __init__(self, state: GuardianState, reaction: Histogram | None = None,
                 sample_duration: Histogram | None = None, guardian=None,
                 pressure_path: str | None = SYSTEM_PRESSURE_PATH) -> None:
        self.state = state
        # The system's PSI file, read at each scrape (about 3 us; None: not exported).
        self.pressure_path = pressure_path
        # Parts that start after the exporter hang on the guardian, read at
        # scrape time: ``pod_state`` (sentinel.exporters.statefile: counters of earlier
        # containers of this pod) and ``k8s_events`` (the Events recorder).
        self.guardian = guardian
        # program name -> Histogram; written on the loop, read by scrapes. setdefault
        # and dict() are atomic under the GIL, so neither side takes a lock.
        self._reaction: dict[str, Histogram] = {}
        self._sample_duration: dict[str, Histogram] = {}
        main = program_name(state)
        if reaction is not None:
            self._reaction[main] = reaction
        if sample_duration is not None:
            self._sample_duration[main] = sample_duration

    # -- the histograms, per program ---------------------------------------------
    def reaction_for(self, program: str) -> Histogram:
        """``sentinel_reaction_seconds`` of the program called ``program``."""
        return self._reaction.setdefault(program, Histogram(REACTION_BUCKETS))

    def sample_duration_for(self, program: str) -> Histogram:
        """``sentinel_sample_duration_seconds`` of the program called ``program``."""
        return self._sample_duration.setdefault(program, Histogram(SAMPLE_DURATION_BUCKETS))

    @property
    def reaction(self) -> Histogram:
        """The main (first) program's reaction histogram."""
        return self.reaction_for(self.main_program())

    @property
    def sample_duration(self) -> Histogram:
        """The main (first) program's sample-duration histogram."""
        return self.sample_duration_for(self.main_program())

    def program_states(self) -> list[GuardianState]:
        """Each program's ``GuardianState``, in start order, read now."""
        programs = getattr(self.guardian, "programs", None)
        if programs is None:
            return [self.state]
        return [p.state for p in list(programs)]

    def main_program(self) -> str:
        """The name of the main program (``host.program(None)``), else the first one."""
        find = getattr(self.guardian, "program", None)
        if callable(find):
            try:
                return program_name(find(None).state)
            except Exception:  # a host without a main program: the first one is
                pass
        states = self.program_states()
        return program_name(states[0] if states else self.state)

    # -- scrape -----------------------------------------------------------------
    def collect(self):
        pod_state = getattr(self.guardian, "pod_state", None)
        carried_for = getattr(pod_state, "carried_for", None)
        progs = [_Program(st, carried_for(program_name(st)) if carried_for else None)
                 for st in self.program_states()]

        def family(kind, name, doc, series, labels=(), unit=""):
            """A family of ``kind`` with each program's ``series(p)``: pairs of (label
            values after workload and program, value); ``None`` when no program has one."""
            fam = None
            for p in progs:
                for values, value in series(p):
                    if fam is None:
                        fam = kind(name, doc, labels=["workload", "program", *labels],
                                   unit=unit)
                    fam.add_metric([p.workload, p.program, *values], value)
            return fam

        def one(value_of):
            """``series`` for one value per program (``None``: no series for it)."""
            def series(p):
                value = value_of(p)
                return () if value is None else (((), value),)
            return series

        gauge = GaugeMetricFamily
        fams = [
            family(gauge, "sentinel_workload_memory_bytes",
                   "The workload tree's memory in bytes by the measure compared with the "
                   "limit (rss: /proc/<pid>/statm; pss/uss: /proc/<pid>/smaps_rollup; "
                   "working-set: usage - inactive_file; cgroup: the cgroup's usage), "
                   "sampled every --interval and faster near the limit.",
                   lambda p: (((p.state.measure,), p.sample.measure_bytes),) if p.sample else (),
                   ["measure"], unit="bytes"),
            family(gauge, "sentinel_workload_rss_bytes", BY_NAME["rss_bytes"].help,
                   one(lambda p: p.sample.rss_bytes if p.sample else None), unit="bytes"),
        ]
        for fig in _OPTIONAL_MEMORY:
            value = one(lambda p, n=fig.name: getattr(p.sample, n, None) if p.sample else None)
            if fig.kind == "counter":  # the kernel's own counter (oom_kill)
                fams.append(family(CounterMetricFamily, f"sentinel_workload_{fig.name}",
                                   fig.help, value))
            else:
                fams.append(family(gauge, f"sentinel_workload_{fig.name}", fig.help, value,
                                   unit="bytes"))
        fams += [
            family(gauge, "sentinel_memory_limit_bytes",
                   "The memory limit in bytes on the measure (--max-rss); crossing it "
                   "starts SIGTERM -> grace period -> SIGKILL.",
                   lambda p: (((p.state.measure,), p.state.limit_bytes),)
                   if p.state.limit_bytes is not None else (), ["measure"], unit="bytes"),
            family(gauge, "sentinel_workload_processes",
                   "Processes in the workload's tree at the last sample (/proc/<pid>/task/"
                   "<tid>/children); 0 while no workload runs.",
                   one(lambda p: len(p.sample.processes) if p.sample is not None else 0)),
            family(gauge, "sentinel_workload_up",
                   "1 while the workload's main process runs (stopping included), 0 while it "
                   "is restarting, exited or not found.", one(lambda p: 1 if p.running else 0)),
            family(gauge, "sentinel_workload_stopped",
                   "1 while the workload's main process is stopped (state T: SIGSTOP, "
                   "SIGTSTP, ...; reported by waitpid), 0 otherwise; SIGCONT resumes it.",
                   one(lambda p: 1 if p.running and p.state.stopped else 0)),
            family(gauge, "sentinel_workload_start_time_seconds",
                   "Start time of the current (or last) workload process, in seconds since "
                   "the Unix epoch.", one(lambda p: p.state.started_wall), unit="seconds"),
            family(CounterMetricFamily, "sentinel_kills",
                   "Signals Sentinel sent to stop the workload, by reason (memory_limit, "
                   "operator, shutdown) and signal (SIGTERM, SIGKILL); one stop counts its "
                   "SIGTERM and, after the grace period, its SIGKILL. reason=\"kernel_oom\" "
                   "counts workload processes the kernel's OOM killer took first (SIGKILL, not "
                   "Sentinel's; the cgroup's oom_kill counter rose).", _kills,
                   ["reason", "signal"]),
            family(CounterMetricFamily, "sentinel_dry_run_signals",
                   "With --dry-run: signals a memory kill would have sent (and did not), by "
                   "reason and signal; sentinel_kills_total does not count them. No series "
                   "without --dry-run.", _dry_run_signals, ["reason", "signal"]),
            family(CounterMetricFamily, "sentinel_wakeups",
                   "Kernel notifications that made Sentinel sample at once instead of at its "
                   "next tick, by source (memory_events: cgroup v2 memory.events; pressure: a "
                   "PSI trigger; usage_threshold: cgroup v1 usage eventfd; oom_notify: cgroup "
                   "v1 OOM eventfd; with --probe ebpf, ebpf_limit: the kernel's sum reached "
                   "the threshold, ebpf_step: it moved by a step, ebpf_lost: records were "
                   "lost).", _wakeups, ["source"]),
        ]
        yield from (f for f in fams if f is not None)
        yield from self._pressure(progs)

        for f in (
                family(CounterMetricFamily, "sentinel_restarts",
                       "Restarts of the workload by the restart policy (--restart).",
                       one(lambda p: p.state.restarts
                           + (p.carried.restarts if p.carried is not None else 0))),
                family(gauge, "sentinel_last_kill_timestamp_seconds",
                       "When Sentinel last started stopping the workload (SIGTERM, or SIGKILL "
                       "for an immediate kill), in seconds since the Unix epoch; 0 if it never "
                       "did.", one(_last_kill_wall), unit="seconds")):
            if f is not None:
                yield f

        reactions, durations = dict(self._reaction), dict(self._sample_duration)
        for name, doc, hists, bounds in (
                ("sentinel_reaction_seconds",
                 "Time in seconds from the estimated memory limit crossing (interpolated "
                 "between two samples) to the SIGTERM that followed.", reactions,
                 REACTION_BUCKETS),
                ("sentinel_sample_duration_seconds",
                 "Time in seconds one memory sample of the workload's tree took "
                 "(/proc/<pid>/statm and children for each process; smaps_rollup for "
                 "pss/uss).", durations, SAMPLE_DURATION_BUCKETS)):
            fam = HistogramMetricFamily(name, doc, labels=["workload", "program"],
                                        unit="seconds")
            for p in progs:
                hist = hists.get(p.program) or hists.get(program_name(p.state)) \
                    or Histogram(bounds)
                buckets, total = hist.buckets()
                fam.add_metric([p.workload, p.program], buckets, total)
            yield fam

        errors = CounterMetricFamily(
            "sentinel_probe_errors", "Failed reads while sampling, by probe (the /proc or "
            "cgroup file) and reason (the error's type, or its errno name such as EMFILE); "
            "vanished processes are not errors.",
            labels=["program", "probe", "reason"])
        for p in progs:
            for (probe, reason), count in sorted(dict(p.state.sample_errors).items()):
                errors.add_metric([p.program, probe, reason], count)
        yield errors

        recorder = getattr(self.guardian, "k8s_events", None)
        if recorder is not None:
            from sentinel.exporters.events import ERROR_REASONS  # stdlib only, loaded already

            event_errors = CounterMetricFamily(
                "sentinel_k8s_event_errors", "Kubernetes Events that could not be sent, by "
                "reason (forbidden, unauthorized, not_found, invalid, timeout, unreachable, "
                "throttled, server_error, queue_full, config, ...; see docs/kubernetes.md).",
                labels=["reason"])
            failed = dict.fromkeys(ERROR_REASONS, 0)
            failed.update(dict(recorder.errors_total))
            for reason, count in sorted(failed.items()):
                event_errors.add_metric([reason], count)
            yield event_errors

        notifier = getattr(self.guardian, "webhooks", None)
        if notifier is not None:
            yield from webhook_families(notifier)

        output = getattr(self.guardian, "output_stats", None)  # several programs, prefixed
        if output is not None:
            yield from output_families(output())

        yield from _present(family(gauge, "sentinel_sampling_failing",
                     "1 while sampling the workload's memory fails (several samples in a row "
                     "with a failed /proc read, e.g. EMFILE: out of file descriptors), so the "
                     "limit may not be enforced; see sentinel_probe_errors_total.",
                     one(lambda p: 1 if p.state.sampling_failing else 0)))
        from sentinel import logs  # already loaded: the guardian logs through it

        dropped = CounterMetricFamily(
            "sentinel_log_lines_dropped", "Sentinel's own log lines dropped because stderr "
            "could not take them (a full pipe nobody reads, EPIPE, EBADF, ENOSPC); enforcement "
            "goes on.", labels=["workload"])
        dropped.add_metric([printable(self.state.workload)], logs.stats()["lines_dropped"])
        yield dropped
        yield from _present(family(gauge, "sentinel_enforcement_paused",
                     "1 while enforcement of the memory limit is paused from the control "
                     "socket.", one(lambda p: 0 if p.state.enforcing else 1)))
        # Issue 11's alert rules (sentinel.core.alerts), read from each program's state.
        yield from _present(family(gauge, "sentinel_alert_firing",
                     "1 while the alert rule fires for the program, else 0: warning (the "
                     "measure above --warn-at of the limit), leak (robust growth over "
                     "--leak-window at least --leak-min-rate, sustained), prediction (the limit "
                     "less than --predict-within away at that growth).", _alerts, ["rule"]))
        yield from _present(family(gauge, "sentinel_predicted_seconds_to_limit",
                     "Seconds until the measure reaches the limit at its robust growth over "
                     "--leak-window; absent when not growing, without a limit, or with too "
                     "little history.", one(lambda p: p.state.seconds_to_limit)))
        yield from _present(family(gauge, "sentinel_growth_bytes_per_second",
                     "The measure's robust growth (median of pairwise slopes) over "
                     "--leak-window, in bytes per second; absent with too little history of "
                     "this run.", one(lambda p: p.state.growth_bytes_per_second)))
        info = InfoMetricFamily("sentinel_build", "Sentinel's version and mode (run or watch).",
                                labels=["version", "mode"])
        info.add_metric([self.state.version, self.state.mode], {})
        yield info

    def _pressure(self, progs):
        """``sentinel_memory_pressure_stall_seconds_total{kind, scope}`` from PSI's
        ``total`` (microseconds stalled since boot, or since the cgroup was made): each
        program's cgroup's ``memory.pressure`` (scope "cgroup", v2 only, with its
        ``program`` label) when its ``state.cgroup`` names it, and the system's (scope
        "system", Sentinel's own: no ``program``). A file that cannot be read (no PSI,
        v1, a gone group) is left out; never a scrape error."""
        paths = []
        for p in progs:
            cgroup = dict(p.state.cgroup or {})
            if cgroup.get("version") == 2 and cgroup.get("path"):
                paths.append(({"scope": "cgroup", "program": p.program},
                              os.path.join(str(cgroup["path"]), "memory.pressure")))
        if self.pressure_path:
            paths.append(({"scope": "system"}, self.pressure_path))
        family = None
        for labels, path in paths:
            try:
                figures = read_pressure(path)
            except (OSError, ValueError):
                continue
            for kind in ("some", "full"):
                total = figures.get(kind, {}).get("total_seconds")
                if total is None:
                    continue
                if family is None:
                    family = CounterMetricFamily(
                        "sentinel_memory_pressure_stall_seconds", "Time in seconds that tasks "
                        "stalled waiting for memory (PSI total: kind some = at least one task, "
                        "full = all non-idle tasks at once), of a program's cgroup (scope "
                        "cgroup, its memory.pressure, with its program label) or the whole "
                        "system (scope system, /proc/pressure/memory); read at scrape time.",
                        labels=["kind", "scope"])
                # Two label sets in one family (the system's has no program): samples
                # are added as the exposition's lines, which prometheus_client allows.
                family.add_sample("sentinel_memory_pressure_stall_seconds_total",
                                  {"kind": kind, **labels}, total)
        if family is not None:
            yield family


def _present(family):
    """``family`` in a tuple, or nothing when no program gave it a series."""
    return () if family is None else (family,)


def _alerts(p: _Program):
    """``sentinel_alert_firing`` series of one program: each rule of
    ``sentinel.core.alerts.RULES``, 1 firing and 0 otherwise (a rule that never fired too)."""
    alerts = dict(p.state.alerts)
    return (((rule,), 1 if (alerts.get(rule) or {}).get("state") == "firing" else 0)
            for rule in ("warning", "leak", "prediction"))


def _kills(p: _Program):
    """``sentinel_kills_total`` series of one program: this container's counts plus the
    carried ones, the prepopulated keys at 0 so rate()/increase() see the first kill."""
    counts = dict.fromkeys(PREPOPULATED_KILLS, 0)
    if p.carried is not None:  # earlier containers of this pod (--state-dir)
        for key, n in dict(p.carried.kills).items():
            counts[key] = counts.get(key, 0) + n
    for key, n in dict(p.state.kills).items():  # a copy: the loop may add a key meanwhile
        counts[key] = counts.get(key, 0) + n
    return [((reason, sig), count) for (reason, sig), count in sorted(counts.items())]


def _dry_run_signals(p: _Program):
    """``sentinel_dry_run_signals_total`` series of a program run with ``--dry-run``:
    memory_limit's SIGTERM and SIGKILL at 0 until counted; none without it."""
    if not getattr(p.state, "dry_run", False):
        return []
    counts = {("memory_limit", "SIGTERM"): 0, ("memory_limit", "SIGKILL"): 0}
    for key, n in dict(p.state.dry_run_signals).items():
        counts[key] = counts.get(key, 0) + n
    return [((reason, sig), count) for (reason, sig), count in sorted(counts.items())]


def _wakeups(p: _Program):
    woke = dict.fromkeys(WAKEUP_SOURCES, 0)
    woke.update(dict(p.state.wakeups))
    return [((str(source),), count) for source, count in sorted(woke.items())]


def _last_kill_wall(p: _Program) -> float:
    kill = p.state.current_kill or p.state.last_kill
    if kill is not None and not getattr(kill, "dry_run", False):  # a dry run stopped nothing
        return kill.started_wall
    return (p.carried.last_kill_wall or 0) if p.carried is not None else 0


# Every figure but RSS is exported when the sample has it; the words come from the one
# table of figures (sentinel.probes.figures), as status, the TUI and the docs do.
_OPTIONAL_MEMORY = tuple(f for f in FIGURES if f.name != "rss_bytes")


def build_registry(collector: SentinelCollector, *, process: bool = True) -> CollectorRegistry:
    """A fresh registry with ``collector`` and, with ``process``, prometheus_client's
    process (``process_*``: CPU seconds, RSS, fds, from /proc/self) and platform
    (``python_info``) collectors."""
    registry = CollectorRegistry()
    registry.register(collector)
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    return registry


# ---------------------------------------------------------------------- HTTP
class _Handler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT_SECONDS

    def log_message(self, format, *args):  # noqa: A002 - no line per request
        pass


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """prometheus_client's ThreadingWSGIServer, minus two things a PID 1 cannot afford."""

    daemon_threads = True  # a request in flight never holds up Sentinel's exit
    timeout = 0  # handle_request() after our selector said "readable" must not wait

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup
        # that can hang for seconds in a container without DNS, on the main
        # thread, before the guardian's loop runs. The name is only used for
        # SERVER_NAME, which nothing here reads.
        socketserver.TCPServer.server_bind(self)
        self.bound()

    def bound(self) -> None:
        """Set what WSGIServer.server_bind sets, once ``self.socket`` is bound."""
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), port
        self.setup_environ()

    def get_request(self):
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of descriptors or memory: the connection stays queued and
                # the socket readable, so accepting again at once would spin
                # and take the GIL from the guardian's loop.
                time.sleep(0.1)
            raise

    def handle_error(self, request, client_address) -> None:
        # socketserver prints a traceback on stderr; a client that times out
        # or hangs up is not worth more than a debug line.
        log.debug("metrics: request from %s failed: %r", client_address, sys.exc_info()[1])


# A scraper is one that scraped within this long: Prometheus' default lookback
# (query.lookback-delta) is 5 min; one that has not scraped for longer would not
# show the kill anyway, so the linger does not wait for it.
SCRAPER_RECENT_SECONDS = 300.0


class MetricsExporter:
    """The running exporter: a registry, a listening socket and one accept thread.

    ``url`` is where it serves; ``None`` after ``close()`` or when it could not
    start. ``close()`` stops accepting at once (no polling interval to wait
    out), unsubscribes from the guardian and is idempotent.
    """

    def __init__(self, guardian, collector: SentinelCollector, registry: CollectorRegistry) -> None:
        self.guardian = guardian
        self.collector = collector
        self.registry = registry
        self.url: str | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._reported: set[str] = set()
        self._lock = threading.Lock()
        # Scrapes served (the response sent), kubelet probes not counted: the
        # linger after a kill waits for one more when a scraper has been seen.
        self.scrapes_total = 0
        self.last_scrape_started_mono: float | None = None
        self._last_sampled: GuardianState | None = None  # see on_sample

    # -- listeners, on the guardian's loop ----------------------------------
    def on_event(self, event: Event) -> None:
        if event.kind == "signal_sent" and event.fields.get("signal") == "SIGTERM":
            reaction = event.fields.get("reaction_seconds")
            if reaction is not None:  # None for operator and shutdown stops
                program = event.program or self.collector.main_program()
                self.collector.reaction_for(program).observe(float(reaction))

    def on_sample(self, sample: MemorySample) -> None:
        # A MemorySample does not name its program: it is the one whose state holds
        # it (the supervisor sets ``last_sample`` before calling the listeners).
        # The last match is tried first: one identity check per sample on the loop.
        state = self._last_sampled
        if state is None or state.last_sample is not sample:
            state = next((st for st in self.collector.program_states()
                          if st.last_sample is sample), None)
            self._last_sampled = state
        program = program_name(state) if state is not None else self.collector.main_program()
        self.collector.sample_duration_for(program).observe(sample.duration_seconds)

    # -- serving ---------------------------------------------------------------
    def listen(self, address: str, port: int, sock: socket.socket | None = None) -> None:
        """Bind and start serving. Raises ``OSError`` (``socket.gaierror`` for a bad address).

        ``sock``: a socket already bound and listening (``sentinel.entry`` binds
        the port before the spawn, so the workload cannot take it); it is
        served as it is, and ``address``/``port`` are not used.
        """
        if sock is not None:
            if not isinstance(sock, socket.socket):  # entry's _socket.socket: wrap its fd
                sock = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
            family = sock.family
            server_class = type("_Server", (_Server,), {"address_family": family})
            server = server_class(sock.getsockname()[:2], _Handler, bind_and_activate=False)
            server.socket.close()  # the one TCPServer made; ours is bound and listening
            server.socket = sock
            server.server_address = sock.getsockname()
            server.bound()
        else:
            infos = socket.getaddrinfo(address or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
            family, _, _, _, sockaddr = infos[0]
            server_class = type("_Server", (_Server,), {"address_family": family})
            server = server_class(sockaddr[:2], _Handler)
        server.set_app(self._app(make_wsgi_app(self.registry)))
        self._server = server
        self._wake_r, self._wake_w = socket.socketpair()
        host, bound_port = server.server_address[:2]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        self.url = f"http://{shown}:{bound_port}/metrics"
        self._thread = threading.Thread(target=self._serve, name="sentinel-metrics", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        server, wake = self._server, self._wake_r
        with selectors.DefaultSelector() as selector:
            selector.register(server, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while True:
                ready = selector.select()
                if any(key.fileobj is wake for key, _ in ready):
                    return
                try:
                    server.handle_request()  # accepts, then a thread per request
                except Exception as exc:  # never let the accept thread die with a traceback
                    log.debug("metrics: accepting a connection failed: %r", exc)

    def _served(self, environ, started: float) -> None:
        """Count a scrape once its response went out (kubelet probes, favicon excluded)."""
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            return
        if str(environ.get("HTTP_USER_AGENT", "")).startswith("kube-probe/"):
            return
        with self._lock:
            self.scrapes_total += 1
            last = self.last_scrape_started_mono
            self.last_scrape_started_mono = started if last is None else max(last, started)

    def _app(self, app):
        def sentinel_metrics_app(environ, start_response):
            started = time.monotonic()
            try:
                return _Body(app(environ, start_response),
                             lambda: self._served(environ, started))
            except Exception as exc:  # a collector bug: this scrape fails, Sentinel does not
                self._report(exc)
                body = f"sentinel: collecting metrics failed: {exc!r}\n".encode()
                start_response("500 Internal Server Error",
                               [("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body)))])
                return [body]

        return sentinel_metrics_app

    def _report(self, exc: Exception) -> None:
        key = repr(exc)
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
        log.warning("metrics: a scrape failed: %s; /metrics answers 500 while this lasts, the "
                    "workload is still guarded (reported once)", " ".join(repr(exc).split()),
                    extra={"event": "component", "component": "metrics"})

    def pending_reports(self, since_mono: float) -> str | None:
        """What is still to go out for the linger after a kill: "a scrape" when a scraper
        has been seen within ``SCRAPER_RECENT_SECONDS`` but none started at or after
        ``since_mono`` (``time.monotonic()``: the kill's last counter change) has been
        served; ``None`` when nothing is pending (or nobody scrapes now: one ``curl``
        or ``helm test`` long ago is no scraper to wait for)."""
        with self._lock:
            last = self.last_scrape_started_mono
        if self.url is None or last is None or last >= since_mono:
            return None
        if time.monotonic() - last > SCRAPER_RECENT_SECONDS:
            return None
        return "a scrape of /metrics"

    def close(self) -> None:
        for registered, item in ((self.guardian.listeners, self.on_event),
                                 (self.guardian.sample_listeners, self.on_sample)):
            while item in registered:
                registered.remove(item)
        if self._wake_w is not None:
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._server is not None:
            self._server.server_close()
            self._server = None
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None
        self.url = None


class _Body:
    """A WSGI response body whose ``close()`` (called by the server once the body was
    sent) calls ``on_sent``."""

    def __init__(self, body, on_sent) -> None:
        self._body, self._on_sent = body, on_sent

    def __len__(self) -> int:
        # wsgiref sets Content-Length only for a body of one item it can count.
        return len(self._body)

    def __iter__(self):
        return iter(self._body)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
        self._on_sent()


def _bind_hint(exc: OSError) -> str:
    """The fix for a failed bind, naming the flag and variable to change."""
    port_flag = "--metrics-port/SENTINEL_METRICS_PORT"
    addr_flag = "--metrics-address/SENTINEL_METRICS_ADDRESS"
    if isinstance(exc, socket.gaierror) or exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return f"use an address of this host with {addr_flag} (e.g. 0.0.0.0), or --no-metrics"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"use a port >= 1024 with {port_flag}, or --no-metrics"
    return f"choose a free port with {port_flag}, or --no-metrics"


def start_exporter(guardian, settings, prebound=None) -> MetricsExporter:
    """Serve ``/metrics`` for ``guardian`` on ``settings.metrics_address``:``metrics_port``.

    ``prebound``: what ``sentinel.launch.bind_metrics_port`` made before the
    spawn: a listening socket to serve on, or the ``OSError`` binding raised
    (reported here, as a bind failure); ``None`` binds here.

    Always returns a ``MetricsExporter`` (with ``close()``). When the port is
    taken, the address is wrong or anything else goes wrong, it logs one
    warning line naming the flag to change, leaves the exporter off and says
    why in ``guardian.state.components["metrics"]``; the workload is guarded
    as before. Call on the guardian's loop thread (before ``run()``).
    """
    state: GuardianState = guardian.state
    address, port = settings.metrics_address, settings.metrics_port
    collector = SentinelCollector(state, guardian=guardian)
    exporter = MetricsExporter(guardian, collector, build_registry(collector))
    where = f"[{address}]:{port}" if ":" in (address or "") else f"{address}:{port}"
    try:
        if isinstance(prebound, BaseException):
            raise prebound
        exporter.listen(address, port, sock=prebound)
    except Exception as exc:  # OSError mostly; never a traceback, never a stop
        exporter.close()
        if prebound is not None and not isinstance(prebound, BaseException):
            prebound.close()  # a no-op once listen() took its descriptor
        if isinstance(exc, UnicodeError):  # getaddrinfo's IDNA step: a label over 63 chars
            reason = f"cannot resolve address {address!r}: not a valid host name"
            hint = "give an IP address or a valid host name with --metrics-address"
        elif isinstance(exc, OSError):
            reason = (exc.strerror or str(exc)).lower() if not isinstance(exc, socket.gaierror) \
                else f"cannot resolve address {address!r}: {exc.strerror or exc}"
            hint = _bind_hint(exc)
        else:
            reason, hint = repr(exc), "report this bug; --no-metrics turns the exporter off"
        state.components["metrics"] = f"off: cannot listen on {where}: {reason}"
        guardian.emit("component", f"metrics exporter off: cannot listen on {where} "
                      f"(port {port}): {reason}; no /metrics, the workload is still guarded; "
                      f"{hint}", logging.WARNING, component="metrics", status="off")
        return exporter
    guardian.listeners.append(exporter.on_event)
    guardian.sample_listeners.append(exporter.on_sample)
    state.components["metrics"] = f"on: {exporter.url}"
    guardian.emit("component", f"metrics on {exporter.url}", logging.INFO,
                  component="metrics", status="on", url=exporter.url)
    return exporter
