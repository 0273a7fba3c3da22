"""Wiring for ``run``: the guardian plus the parts that watch it.

Imported only after the workload is running (see ``sentinel.entry``). Each
optional part (metrics exporter, control socket, Kubernetes Events,
dashboard) starts here and reports its state in ``guardian.state.components``;
one that cannot start logs one warning and is left off: Sentinel and the
workload keep running without it.
"""

from __future__ import annotations

import logging

from sentinel import __version__, logs
from sentinel.config import Settings
from sentinel.guardian import Guardian
from sentinel.spawn import Child

log = logging.getLogger(logs.LOGGER_NAME)


def start_components(guardian: Guardian, settings: Settings) -> list:
    """Start every enabled part; return the started ones (each has ``close()``)."""
    started: list = []
    # Each part adds its block below, at its own anchor, in this order:
    # [metrics] (sentinel.metrics), [socket] (sentinel.ipc),
    # [k8s-events] (sentinel.events), [dashboard] (sentinel.dashboard).
    # A block starts its part when the settings enable it, appends the
    # object (with .close()) to `started`, and sets
    # guardian.state.components["<part>"] to a short status text.
    # --- [metrics] ---
    if settings.metrics_port:
        from sentinel.metrics import start_exporter  # prometheus_client: after the spawn

        started.append(start_exporter(guardian, settings))
    else:
        guardian.state.components["metrics"] = "off: --no-metrics or --metrics-port 0"
    # --- [socket] ---
    if settings.socket_path:
        from sentinel import ipc

        control = ipc.start(guardian, settings)  # None (logged, components says why) if off
        if control is not None:
            started.append(control)
    # --- [k8s-events] ---
    from sentinel import events, termlog  # stdlib only; `kubernetes` loads in events' worker

    started.extend(events.start(guardian, settings) + termlog.start(guardian, settings))
    # --- [dashboard] ---
    if settings.tui:
        from sentinel.tui import start_tui  # rich: loaded by the render thread

        started.append(start_tui(guardian, settings))
    return started


def serve(settings: Settings, child: Child | None, original_mask: set[int], *,
          pid1: bool, subreaper: bool) -> int:
    """Supervise ``child`` until it is gone for good; return Sentinel's exit code."""
    logs.setup(settings.log_format, "debug" if settings.debug else settings.log_level)
    guardian = Guardian(settings, child, original_mask, pid1=pid1, subreaper=subreaper,
                        version=__version__)
    parts = start_components(guardian, settings)
    try:
        return guardian.run()
    finally:
        for part in reversed(parts):
            try:
                part.close()
            except Exception as exc:  # closing must never change the exit code
                log.debug("closing %r failed: %r", part, exc)
