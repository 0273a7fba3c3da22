"""Wiring for ``run``: the guardian plus the parts that watch it.

Imported only after the workload is running (see ``sentinel.entry``). Each
optional part (metrics exporter, control socket, Kubernetes Events,
dashboard) starts here and reports its state in ``guardian.state.components``;
one that cannot start logs one warning and is left off: Sentinel and the
workload keep running without it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from sentinel import __version__, logs

from sentinel.core import fdlimit
from sentinel.config.settings import Settings, signal_name
from sentinel.core.guardian import Guardian
from sentinel.core.spawn import Child
from sentinel.core.state import REASON_SHUTDOWN

log = logging.getLogger(logs.LOGGER_NAME)


# The linger after a kill, when --linger is not given: long enough for a
# Prometheus scraping every few seconds and for the Events to be posted, short
# enough not to hold up the kubelet's restart of the container.
DEFAULT_LINGER_SECONDS = 5.0
_LINGER_POLL_SECONDS = 0.02


def _start_state_file(guardian: Guardian, settings: Settings) -> list:
    from sentinel.exporters import statefile  # stdlib only

    return statefile.start(guardian, settings)


def _start_metrics(guardian: Guardian, settings: Settings, prebound=None) -> list:
    if not settings.metrics_port:
        guardian.state.components["metrics"] = "off: --no-metrics or --metrics-port 0"
        return []
    from sentinel.exporters.metrics import start_exporter  # prometheus_client: after the spawn

    return [start_exporter(guardian, settings, prebound)]


def _start_socket(guardian: Guardian, settings: Settings) -> list:
    if not settings.socket_path:
        guardian.state.components["socket"] = "off: --no-socket"
        return []
    from sentinel.control import server as ipc

    control = ipc.start(guardian, settings)  # None (logged, components says why) if off
    return [control] if control is not None else []


def _start_k8s_events(guardian: Guardian, settings: Settings) -> list:
    from sentinel.exporters import events  # no third-party import; `kubernetes` loads in its worker
    from sentinel.exporters import termlog

    return events.start(guardian, settings) + termlog.start(guardian, settings)


def _start_webhooks(guardian: Guardian, settings: Settings) -> list:
    from sentinel.exporters import webhooks  # stdlib; urllib loads in each receiver's worker

    return webhooks.start(guardian, settings)


def _start_dashboard(guardian: Guardian, settings: Settings) -> list:
    if not settings.tui:
        return []
    from sentinel.ui.tui import start_tui  # rich: loaded by the render thread

    return [start_tui(guardian, settings)]


# The state file first: the exporter's first scrape already shows the pod's
# counters, and it is closed (its last write) after everything else.
_PARTS = (("state-file", _start_state_file), ("metrics", _start_metrics),
          ("socket", _start_socket),
          ("k8s-events", _start_k8s_events), ("webhooks", _start_webhooks),
          ("dashboard", _start_dashboard))


def _publish_cgroup(guardian: Guardian, settings: Settings) -> None:
    """Fill ``state.cgroup`` ({"version", "path", "read_only"}) from the probe's cgroup
    reader, unless the core already did, for status, the TUI and the PSI metrics; in run
    mode without one, ``kernel_notes["cgroup"]`` says why none is visible (one read of
    /proc/self/cgroup and mountinfo). Never raises."""
    state = guardian.state
    if settings.cgroup_note and "measure" not in state.kernel_notes:  # said once
        state.kernel_notes["measure"] = settings.cgroup_note
        log.info("%s", settings.cgroup_note, extra={"event": "cgroup_measure"})
    if settings.cgroup_warning and "cgroup_shared" not in state.kernel_notes:
        state.kernel_notes["cgroup_shared"] = settings.cgroup_warning
        log.warning("%s", settings.cgroup_warning, extra={"event": "cgroup_shared"})
    if settings.limit_auto_note and "auto" not in state.kernel_notes:  # said once
        state.kernel_notes["auto"] = settings.limit_auto_note
        log.info("%s", settings.limit_auto_note, extra={"event": "limit_auto"})
    # Each program's probe reads the container's cgroup (several programs: one each);
    # Sentinel's own state shows the first one found.
    cgroup = None
    for program in getattr(guardian, "programs", None) or [guardian]:
        found = getattr(getattr(program, "probe", None), "cgroup", None)
        if found is not None and not program.state.cgroup:
            program.state.cgroup = {"version": getattr(found, "version", None),
                                    "path": getattr(found, "path", None),
                                    "read_only": bool(getattr(found, "read_only", False))}
        cgroup = cgroup or found
    if not state.cgroup and cgroup is not None:
        state.cgroup = {"version": getattr(cgroup, "version", None),
                        "path": getattr(cgroup, "path", None),
                        "read_only": bool(getattr(cgroup, "read_only", False))}
    elif cgroup is None and settings.mode == "run" and "cgroup" not in state.kernel_notes:
        from sentinel.probes.cgroup import explain_no_cgroup

        try:
            why = explain_no_cgroup("self", cgroup_root=settings.cgroup_root)
        except Exception as exc:  # a note must never stop the components
            why = f"no cgroup memory controller is visible ({exc!r})"
        if why:
            state.kernel_notes["cgroup"] = why


def start_components(guardian: Guardian, settings: Settings, metrics_socket=None) -> list:
    """Start every enabled part; return the started ones (each has ``close()``).

    ``metrics_socket``: the metrics port bound before the spawn (or the
    ``OSError`` binding raised), see ``sentinel.launch.bind_metrics_port``.
    A part that fails in an unexpected way (a bug) is logged on one line and
    left off; the workload is already running and must not pay for it.
    """
    started: list = []
    _publish_cgroup(guardian, settings)
    for name, start in _PARTS:
        try:
            if name == "metrics":
                started.extend(_start_metrics(guardian, settings, metrics_socket))
            else:
                started.extend(start(guardian, settings))
        except Exception as exc:
            guardian.state.components[name] = f"off: internal error {exc!r}"
            log.error("%s could not start: %r; running without it (--debug shows the "
                      "traceback)", name, exc, exc_info=exc if settings.debug else None,
                      extra={"event": "component"})
    return started


def serve(settings: Settings, child: Child | None, original_mask: set[int], *,
          pid1: bool, subreaper: bool, metrics_socket=None) -> int:
    """Supervise ``child`` until it is gone for good; return Sentinel's exit code."""
    logs.setup(settings.log_format, "debug" if settings.debug else settings.log_level)
    # The workload is running with the limits Sentinel was given; from here on
    # Sentinel's own descriptors may go up to the hard limit (restarts get the
    # given soft limit again: sentinel.core.fdlimit.as_given).
    fdlimit.raise_soft()
    guardian = Guardian(settings, child, original_mask, pid1=pid1, subreaper=subreaper,
                        version=__version__)
    return supervise(guardian, settings, metrics_socket=metrics_socket)


def linger_seconds(settings: Settings, guardian: Guardian, environ=None) -> float:
    """The bound on the linger after a kill: ``--linger``, else ``DEFAULT_LINGER_SECONDS``
    in a pod (``POD_NAME`` set, or Events on) and 0 elsewhere."""
    if settings.linger_seconds is not None:
        return settings.linger_seconds
    env = os.environ if environ is None else environ
    in_pod = bool(env.get("POD_NAME")) or getattr(guardian, "k8s_events", None) is not None
    return DEFAULT_LINGER_SECONDS if in_pod else 0.0


def make_linger(guardian: Guardian, parts: list, seconds: float):
    """The coroutine function ``guardian.run()`` awaits once the workload is gone.

    After a kill by Sentinel (memory limit or operator; not its own shutdown,
    which the kubelet is waiting on), it waits until every part that reports
    (``pending_reports(since_mono)``: the exporter until one more scrape has
    been served when a scraper has been seen, the Events recorder until its
    queue is posted) has nothing pending, at most ``seconds``; a SIGTERM or
    SIGINT meanwhile ends it at once. The termination message is written
    synchronously when the kill is over, before this starts. It runs on the
    guardian's loop, so orphans are still reaped and signals still read; it
    never raises and never changes the exit code.
    """
    async def linger(code: int) -> None:
        try:
            await _linger(guardian, parts, seconds)
        except Exception as exc:  # a bug here must not cost the exit code
            log.error("linger failed: %r; exiting now with code %d", exc, code,
                      extra={"event": "linger"})
    return linger


async def _linger(guardian: Guardian, parts: list, seconds: float) -> None:
    st = guardian.state
    kill = st.last_kill
    if seconds <= 0 or st.mode != "run" or kill is None or kill.reason == REASON_SHUTDOWN:
        return  # watch mode ends only on SIGTERM/SIGINT: the kubelet is waiting
    if st.shutdown_signal is not None:
        # A SIGTERM/SIGINT came during the kill (its grace period, the leftover
        # sweep): the kubelet is waiting out terminationGracePeriodSeconds.
        log.debug("no linger: %s received during the kill; exiting now",
                  st.shutdown_signal, extra={"event": "linger_skipped"})
        return
    if st.started_wall is not None and kill.started_wall < st.started_wall:
        return  # a kill of an earlier run (--restart); this exit is not a kill's
    # A scrape that started after the kill's last counter change (SIGTERM, or
    # SIGKILL) shows it: count those made during the grace period or the sweep.
    now_mono, now_wall = time.monotonic(), time.time()
    since = now_mono - max(0.0, now_wall - (kill.sigkill_wall or kill.started_wall))
    reporters = [p for p in parts if hasattr(p, "pending_reports")]

    def pending() -> list[str]:
        return [what for p in reporters if (what := p.pending_reports(since))]

    waiting = pending()
    if not waiting:
        return
    cut: list[str] = []

    def on_late_signal(info) -> None:
        if info.signo in (signal.SIGTERM, signal.SIGINT) and not cut:
            cut.append(signal_name(info.signo))

    guardian.late_signal_listeners.append(on_late_signal)
    log.info("lingering up to %.1fs so that the kill is reported: waiting for %s (--linger; a "
             "SIGTERM ends it)", seconds, ", ".join(waiting), extra={"event": "linger"})
    deadline = now_mono + seconds
    try:
        while True:
            await asyncio.sleep(_LINGER_POLL_SECONDS)
            waiting = pending()
            took = time.monotonic() - now_mono
            if not waiting:
                log.info("linger over after %.2fs: the kill's reports are out", took,
                         extra={"event": "linger", "seconds": took})
                return
            if cut:
                log.info("linger cut short by %s after %.2fs; not out: %s", cut[0], took,
                         ", ".join(waiting), extra={"event": "linger", "seconds": took})
                return
            if time.monotonic() >= deadline:
                log.warning("linger: %s still not out after %.1fs; exiting (a longer --linger "
                            "waits more)", ", ".join(waiting), seconds,
                            extra={"event": "linger", "seconds": took})
                return
    finally:
        guardian.late_signal_listeners.remove(on_late_signal)


def supervise(guardian: Guardian, settings: Settings, metrics_socket=None) -> int:
    """Start the parts around ``guardian``, run it (and linger after a kill, see
    ``make_linger``), close the parts; return its exit code."""
    parts = start_components(guardian, settings, metrics_socket)
    guardian.linger = make_linger(guardian, parts, linger_seconds(settings, guardian))
    from sentinel.core.kernel import trim_malloc

    trim_malloc()  # start-up's garbage (compiling sources without a .pyc): ~1 MiB of RSS
    try:
        return guardian.run()
    finally:
        for part in reversed(parts):
            try:
                part.close()
            except Exception as exc:  # closing must never change the exit code
                log.debug("closing %r failed: %r", part, exc)


def serve_watch(settings: Settings, original_mask: set[int] | None = None) -> int:
    """Run ``sentinel watch`` until SIGTERM/SIGINT; return Sentinel's exit code (0).

    ``original_mask``: the signal mask before the caller blocked every signal,
    when it did (earlier is better: a SIGTERM before the block kills Sentinel
    with 143 instead of exit 0); ``None`` blocks them here. Raises ``UsageError``
    (exit code 2) for a ``--target-pid`` that can never be watched: Sentinel, one of
    its ancestors, a thread (``check_target_pid``).
    """
    from sentinel.core.targets import check_target_pid

    if settings.target_pid is not None:
        check_target_pid(settings.target_pid)
    logs.setup(settings.log_format, "debug" if settings.debug else settings.log_level)
    # Every signal is read from the guardian's signalfd, so it must be blocked
    # before any thread (the metrics exporter, the Events worker) starts.
    if original_mask is None:
        from sentinel.core.spawn import block_signals

        original_mask = block_signals()
    from sentinel.exporters.kubeenv import absolute_kubeconfig_env  # os only

    absolute_kubeconfig_env()  # read after the move to /, as kubectl would read it here
    os.chdir("/")
    from sentinel.core import fdlimit

    fdlimit.raise_soft()  # watch spawns nothing: the probe may use up to the hard limit
    from sentinel.core.watch import watch_guardian

    guardian = watch_guardian(settings, original_mask, version=__version__)
    return supervise(guardian, settings)



def serve_config(config, program_settings: dict, original_mask: set[int], *, pid1: bool,
                 subreaper: bool, reload_config=None, metrics_socket=None) -> int:
    """``sentinel run --config FILE``: supervise the programs of ``config`` (a
    ``ProgramsConfig``; ``program_settings`` their resolved ``Settings`` by name) until
    Sentinel ends; return its exit code. ``reload_config()`` reads the file again (for
    SIGHUP and ``reload``)."""
    from sentinel.core.group import Group

    settings = config.settings
    logs.setup(settings.log_format, "debug" if settings.debug else settings.log_level)
    fdlimit.raise_soft()  # programs are spawned with the limit Sentinel was given
    group = Group(config, program_settings, original_mask, pid1=pid1, subreaper=subreaper,
                  version=__version__, reload_config=reload_config)
    os.chdir("/")  # the group keeps the start directory for programs without a cwd
    return supervise(group, settings, metrics_socket=metrics_socket)
