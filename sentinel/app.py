"""Wiring for ``run``: the guardian plus the parts that watch it.

Imported only after the workload is running (see ``sentinel.entry``). Each
optional part (metrics exporter, control socket, Kubernetes Events,
dashboard) starts here and reports its state in ``guardian.state.components``;
one that cannot start logs one warning and is left off: Sentinel and the
workload keep running without it.
"""

from __future__ import annotations

import logging

from sentinel import __version__, fdlimit, logs
from sentinel.config import Settings
from sentinel.guardian import Guardian
from sentinel.spawn import Child

log = logging.getLogger(logs.LOGGER_NAME)


def _start_metrics(guardian: Guardian, settings: Settings) -> list:
    if not settings.metrics_port:
        guardian.state.components["metrics"] = "off: --no-metrics or --metrics-port 0"
        return []
    from sentinel.metrics import start_exporter  # prometheus_client: after the spawn

    return [start_exporter(guardian, settings)]


def _start_socket(guardian: Guardian, settings: Settings) -> list:
    if not settings.socket_path:
        guardian.state.components["socket"] = "off: --no-socket"
        return []
    from sentinel import ipc

    control = ipc.start(guardian, settings)  # None (logged, components says why) if off
    return [control] if control is not None else []


def _start_k8s_events(guardian: Guardian, settings: Settings) -> list:
    from sentinel import events, termlog  # stdlib only; `kubernetes` loads in events' worker

    return events.start(guardian, settings) + termlog.start(guardian, settings)


def _start_dashboard(guardian: Guardian, settings: Settings) -> list:
    if not settings.tui:
        return []
    from sentinel.tui import start_tui  # rich: loaded by the render thread

    return [start_tui(guardian, settings)]


_PARTS = (("metrics", _start_metrics), ("socket", _start_socket),
          ("k8s-events", _start_k8s_events), ("dashboard", _start_dashboard))


def start_components(guardian: Guardian, settings: Settings) -> list:
    """Start every enabled part; return the started ones (each has ``close()``).

    A part that fails in an unexpected way (a bug) is logged on one line and
    left off; the workload is already running and must not pay for it.
    """
    started: list = []
    for name, start in _PARTS:
        try:
            started.extend(start(guardian, settings))
        except Exception as exc:
            guardian.state.components[name] = f"off: internal error {exc!r}"
            log.error("%s could not start: %r; running without it (--debug shows the "
                      "traceback)", name, exc, exc_info=exc if settings.debug else None,
                      extra={"event": "component"})
    return started


def serve(settings: Settings, child: Child | None, original_mask: set[int], *,
          pid1: bool, subreaper: bool) -> int:
    """Supervise ``child`` until it is gone for good; return Sentinel's exit code."""
    logs.setup(settings.log_format, "debug" if settings.debug else settings.log_level)
    # The workload is running with the limits Sentinel was given; from here on
    # Sentinel's own descriptors may go up to the hard limit (restarts get the
    # given soft limit again: sentinel.fdlimit.as_given).
    fdlimit.raise_soft()
    guardian = Guardian(settings, child, original_mask, pid1=pid1, subreaper=subreaper,
                        version=__version__)
    return supervise(guardian, settings)


def supervise(guardian: Guardian, settings: Settings) -> int:
    """Start the parts around ``guardian``, run it, close the parts; return its exit code."""
    parts = start_components(guardian, settings)
    try:
        return guardian.run()
    finally:
        for part in reversed(parts):
            try:
                part.close()
            except Exception as exc:  # closing must never change the exit code
                log.debug("closing %r failed: %r", part, exc)
