"""Kubernetes Events: every kill Sentinel makes becomes an Event on its pod.

``start(guardian, settings)`` decides whether Events are on (``--k8s-events
auto|on|off``), and if so subscribes an ``EventRecorder`` to the guardian's
events. The recorder turns each kill step (``signal_sent``) into an Event body
on the loop (pure dict work, microseconds) and hands it to one worker thread
through a bounded queue; the worker imports the ``kubernetes`` client (about
25 MiB of RSS and 0.3-0.6 s of imports on an idle core, seconds under a 50m CPU
limit) in the background as soon as the workload runs (``spawned``/``attached``),
so that the client is ready before the first kill (loaded at the first Event, it
often did not finish before Sentinel exited), and talks to the API server with
short timeouts. A kill is never delayed: nothing here blocks the loop, a full
queue drops the Event, ``pending_reports()`` tells the linger after a kill what
is still queued, and ``close()`` waits for the worker at most ``FLUSH_SECONDS``.

Where the cluster comes from, as kubectl decides: ``--kubeconfig`` (or
``SENTINEL_KUBECONFIG``: ``settings.kubeconfig``) when given, else
``$KUBECONFIG`` (read here, from the environment), else the pod's service
account (``load_incluster_config``), else ``~/.kube/config``. A kubeconfig
named with ``--kubeconfig`` that is missing, unreadable or not YAML is one
warning at start, whatever the mode (kubectl refuses it too); ``$KUBECONFIG``
naming no existing file is silence under ``auto``, as kubectl skips such
entries. The Event is about the pod named by the downward API (``POD_NAME``,
``POD_NAMESPACE``, ``POD_UID``; in a pod, ``HOSTNAME`` and the service
account's namespace file stand in).

Events go to ``events.k8s.io/v1``; where that group is missing (404 on the
group) the core ``v1`` API is used instead. A repeat of the same Event
(same program, action, reason, controller, pod) within ``SERIES_WINDOW_SECONDS``
updates the first one's ``series`` (count, lastObservedTime) with a PATCH,
as client-go's ``tools/events`` recorder does, instead of adding one more.

The parts: ``sentinel.exporters.k8s`` (where the cluster is, which pod, the
client), ``sentinel.exporters.event_bodies`` (which events are reported, as
what; pure) and ``sentinel.exporters.poster`` (the bounded queue and its
worker, generic). This module is the recorder that wires the three.

Failures never stop enforcement. Each kind is logged once, as a one-line
warning (exception texts, such as YAML errors, have their whitespace
collapsed) that says the fix (for 403: the RBAC rule to add), and counted in
``EventRecorder.errors_total`` (reason -> count, for
``sentinel_k8s_event_errors_total{reason}``); ``guardian.state.components
["k8s-events"]`` holds a one-line status.
"""


from __future__ import annotations

import logging
import os
import threading
import time

from sentinel.core.state import Event
from sentinel.exporters.event_bodies import (  # noqa: F401 - NOTE_MAX_BYTES..: re-exported
    API_CORE_V1, API_EVENTS_V1, EVENT_MEMORY, EVENT_PATHS, NOTE_MAX_BYTES, PATCH_CONTENT_TYPE,
    SERIES_WINDOW_SECONDS, PodRef, Record, core_v1_body, event_name, events_v1_body,
    micro_time, record_for, series_patch,
)
from sentinel.exporters.k8s import (  # noqa: F401 - absolute_kubeconfig_env..: re-exported
    CONNECT_TIMEOUT_SECONDS, ERROR_REASONS, FROM_ENV, FROM_FLAG, FROM_HOME, RBAC_RULE,
    READ_TIMEOUT_SECONDS, SA_DIR, ClusterSource, KubeClient, absolute_kubeconfig_env, discover,
    find_cluster, find_pod, kubeconfig_problem, kubeconfig_problems, one_line,
)
from sentinel.exporters.poster import Poster
from sentinel.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

COMPONENT = "k8s-events"
QUEUE_SIZE = 64
# close() waits this long for queued Events, so a kill's Event usually gets out
# before Sentinel exits, while a slow or dead API server delays the exit by
# at most this much.
FLUSH_SECONDS = 2.0


class _Series:
    __slots__ = ("api", "name", "count", "last_wall")

    def __init__(self, api: str, name: str, last_wall: float) -> None:
        self.api, self.name, self.count, self.last_wall = api, name, 1, last_wall


class _NoClient(Exception):
    """The client could not be loaded (already reported as ``config``): the Event is dropped."""


class EventRecorder:
    """Posts kill Events off the loop. A guardian listener; ``close()`` when done.

    Metric-readable attributes: ``errors_total`` (failure reason -> count, the
    reasons in ``ERROR_REASONS``), ``sent_total`` ("create"/"patch" -> count),
    ``dropped_total`` (Events never sent), ``api_version`` in use.
    """

    name = COMPONENT

    def __init__(self, source: ClusterSource, pod: PodRef, *, workload: str, version: str = "",
                 loop=None, components: dict | None = None, queue_size: int = QUEUE_SIZE,
                 timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS),
                 flush_seconds: float = FLUSH_SECONDS, preload: bool = True,
                 multi: bool = False) -> None:
        self.source = source
        self.pod = pod
        self.workload = workload
        # Several programs (host.multi): each note starts with its program's name.
        self.multi = multi
        self.preload = preload
        self.version = version
        self.api_version = API_EVENTS_V1
        self.errors_total: dict[str, int] = {}
        self.sent_total: dict[str, int] = {}
        self.dropped_total = 0
        self._loop = loop
        self._components = components
        self._flush_seconds = flush_seconds
        self._warned: set[str] = set()
        self._series: dict[tuple, _Series] = {}
        self._client = KubeClient(source, version=version, timeout=timeout)
        self._closed = False
        self._preloading = False  # the client is loaded before the first Event is queued
        self._status(f"on: Events for pod {pod.namespace}/{pod.name} via {source.describe()} "
                     + ("(the client loads in the background)" if preload else
                        "(the client loads at the first Event)"))
        # Each Event is sent once (max_attempts=1): the client already retries a failed
        # connect once, and a POST the server may have acted on is never repeated.
        self._poster = Poster(self._record, name="sentinel-k8s-events", queue_size=queue_size,
                              max_attempts=1, on_error=self._send_failed,
                              prepare=self._load_client, finish=self._client.close)

    # -- on the loop ---------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """The guardian listener: build the Record and queue it; never blocks."""
        if event.kind in ("spawned", "attached") and self.preload:
            # Loaded now, in the worker, once the workload runs: under a small CPU
            # limit (50-100m) its 0.3-0.6 s of imports take seconds, and started
            # only at the first Event they would often not finish before Sentinel
            # exits, losing the only kill's Event. Nothing of it runs before the
            # spawn or during Sentinel's own start-up; the loop keeps running
            # meanwhile (the GIL is handed over every 5 ms).
            self._preloading = True
            self._poster.prepare_now()
        rec = record_for(event, self.workload, multi=self.multi)
        if rec is None or self._closed:
            return
        if not self._poster.submit(rec):
            self.dropped_total += 1
            self._fail("queue_full", f"{self._poster.queue_size} Events are waiting to be sent "
                       "(the API server is slow or down): dropping new ones; kills are not "
                       "delayed")

    def pending_reports(self, since_mono: float) -> str | None:
        """For the linger after a kill: "N Event(s)" while Events are queued or being
        posted, ``None`` when all are out (sent or given up)."""
        n = self._poster.pending
        return f"{n} Kubernetes Event(s)" if n else None

    def close(self) -> None:
        """Stop the worker, waiting at most ``flush_seconds`` for queued Events to go out."""
        if self._closed:
            return
        self._closed = True
        left = self._poster.close(self._flush_seconds)
        if left:
            log.warning("Kubernetes Events: the API server is still busy after %.1fs; exiting "
                        "without waiting (%d Event(s) not sent)", self._flush_seconds, left,
                        extra={"event": "k8s_events"})

    # -- bookkeeping (any thread) --------------------------------------------
    def _status(self, text: str) -> None:
        comps = self._components
        if comps is None:
            return
        loop = self._loop
        if loop is None or threading.current_thread() is threading.main_thread():
            comps[COMPONENT] = text
            return
        try:
            loop.call_soon_threadsafe(comps.__setitem__, COMPONENT, text)
        except RuntimeError:  # the loop is closed: Sentinel is exiting
            pass

    def _fail(self, reason: str, message: str) -> None:
        """Count one failure; log it the first time this reason occurs."""
        self.errors_total[reason] = self.errors_total.get(reason, 0) + 1
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning("Kubernetes Events: %s (reported once)", one_line(message),
                        extra={"event": "k8s_events", "reason": reason})
        self._status(f"error: {reason} ({self._counts()})")

    def _counts(self) -> str:
        sent = sum(self.sent_total.values())
        errors = sum(self.errors_total.values())
        return f"{sent} sent, {errors} failed"

    # -- in the poster's worker ------------------------------------------------
    def _load_client(self) -> None:
        started = time.monotonic()
        try:
            self._client.connect()
        except Exception as exc:  # a broken kubeconfig, a missing token, a bad cert
            self._fail("config", f"cannot load the cluster configuration from "
                       f"{self.source.describe()}: {exc}; kills are not recorded as "
                       "Events. Fix the kubeconfig, or pass --k8s-events off")
            return
        if self._preloading:
            log.debug("Kubernetes Events: client loaded in the background in %.2fs",
                      time.monotonic() - started,
                      extra={"event": "k8s_events", "reason": "client_loaded"})

    def _send_failed(self, rec: Record, exc: BaseException) -> None:
        self.dropped_total += 1
        if not isinstance(exc, _NoClient):  # a bug here must never take the worker down
            self._fail("other", f"unexpected error sending an Event: {exc!r}")

    def _record(self, rec: Record) -> None:
        if self._client.api is None:
            raise _NoClient()
        # One series per program: two programs' kills are two Events, never one count.
        key = (rec.program, rec.action, rec.reason, rec.type)
        series = self._series.get(key)
        if series is not None and rec.at_wall - series.last_wall <= SERIES_WINDOW_SECONDS:
            if self._patch_series(series, rec):
                return
        self._create(rec, key)

    def _create(self, rec: Record, key: tuple, attempt: int = 0) -> None:
        name = event_name(self.pod.name, rec.at_wall, attempt)
        api_version = self.api_version
        body = (events_v1_body if api_version == API_EVENTS_V1 else core_v1_body)(
            rec, self.pod, name)
        path = EVENT_PATHS[api_version].format(ns=self.pod.namespace)
        try:
            self._client.request("POST", path, body)
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status == 404 and api_version == API_EVENTS_V1 and \
                    self._client.group_missing(exc):
                self.api_version = API_CORE_V1
                log.info("Kubernetes Events: the API server has no events.k8s.io/v1; using the "
                         "core v1 Events API", extra={"event": "k8s_events"})
                return self._create(rec, key, attempt)
            if status == 409 and attempt < 2:  # AlreadyExists: the same name twice
                return self._create(rec, key, attempt + 1)
            self.dropped_total += 1
            self._fail(*self._client.classify(exc, "create", self.pod.namespace))
            return
        self._series[key] = _Series(api_version, name, rec.at_wall)
        self.sent_total["create"] = self.sent_total.get("create", 0) + 1
        self._status(f"on: {api_version} Events for pod {self.pod.namespace}/{self.pod.name} "
                     f"({self._counts()})")

    def _patch_series(self, series: _Series, rec: Record) -> bool:
        """PATCH the open series; ``False`` to create a new Event instead (the old one is gone)."""
        count = series.count + 1
        patch = series_patch(series.api, count, rec.at_wall)
        path = EVENT_PATHS[series.api].format(ns=self.pod.namespace) + "/" + series.name
        try:
            self._client.request("PATCH", path, patch, PATCH_CONTENT_TYPE)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:  # expired (Events live about an hour)
                return False
            self.dropped_total += 1
            self._fail(*self._client.classify(exc, "patch", self.pod.namespace))
            return True
        series.count, series.last_wall = count, rec.at_wall
        self.sent_total["patch"] = self.sent_total.get("patch", 0) + 1
        self._status(f"on: {series.api} Events for pod {self.pod.namespace}/{self.pod.name} "
                     f"({self._counts()})")
        return True


# --------------------------------------------------------------------------
# Wiring
# --------------------------------------------------------------------------

def start(guardian, settings, environ=None) -> list:
    """Start Events for ``guardian`` per ``settings.k8s_events``; return ``[recorder]`` or ``[]``.

    ``auto``: on when a cluster is configured and the pod is known, silently
    off otherwise. ``on``: as auto, with one warning saying what is missing.
    Either way, a kubeconfig that cannot be used gives one warning and leaves
    Events off: one named by ``--kubeconfig`` always (the user asked for it),
    one from ``$KUBECONFIG`` or ``~/.kube/config`` when Events would be on.
    Sets ``guardian.state.components["k8s-events"]`` and, when on,
    ``guardian.k8s_events`` (the recorder, for the metrics exporter).
    """
    mode = settings.k8s_events
    comps = guardian.state.components
    if mode == "off":
        comps[COMPONENT] = "off (--k8s-events off)"
        return []
    env = os.environ if environ is None else environ
    source, pod, why_off, warning = discover(settings.kubeconfig, mode, env)
    if source is None or pod is None:
        comps[COMPONENT] = f"off ({why_off})"
        if warning is not None:
            log.warning("%s", warning, extra={"event": "k8s_events", "reason": "config"})
        else:
            log.debug("Kubernetes Events off: %s", why_off)
        return []
    recorder = EventRecorder(source, pod, workload=settings.workload_name,
                             version=guardian.state.version, loop=guardian.loop,
                             components=comps, multi=bool(getattr(guardian, "multi", False)))
    guardian.listeners.append(recorder)
    guardian.k8s_events = recorder
    return [recorder]
