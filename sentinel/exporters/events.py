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
(same action, reason, controller, pod) within ``SERIES_WINDOW_SECONDS``
updates the first one's ``series`` (count, lastObservedTime) with a PATCH,
as client-go's ``tools/events`` recorder does, instead of adding one more.

Failures never stop enforcement. Each kind is logged once, as a one-line
warning (exception texts, such as YAML errors, have their whitespace
collapsed) that says the fix (for 403: the RBAC rule to add), and counted in
``EventRecorder.errors_total`` (reason -> count, for
``sentinel_k8s_event_errors_total{reason}``); ``guardian.state.components
["k8s-events"]`` holds a one-line status.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass, field

from sentinel.logs import LOGGER_NAME, fmt_bytes
from sentinel.core.state import REASON_MEMORY, REASON_OPERATOR, Event

log = logging.getLogger(LOGGER_NAME)

COMPONENT = "k8s-events"
# A domain-qualified name, as the API requires of reportingController.
REPORTING_CONTROLLER = "sentinel.dev/guardian"
# Limits the API server enforces (k8s.io/kubernetes pkg/apis/core/validation/events.go).
NOTE_MAX_BYTES = 1024
REASON_MAX = ACTION_MAX = REPORTING_INSTANCE_MAX = 128
NAME_MAX = 253
# client-go's tools/events keeps a series open this long after its last
# observation (finishTime = 6 minutes); a repeat after that starts a new Event.
SERIES_WINDOW_SECONDS = 360.0
QUEUE_SIZE = 64
CONNECT_TIMEOUT_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 5.0
# close() waits this long for queued Events, so a kill's Event usually gets out
# before Sentinel exits, while a slow or dead API server delays the exit by
# at most this much.
FLUSH_SECONDS = 2.0

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# A bigger file is refused as a kubeconfig, so that a wrong path to a huge file
# is not read into memory at start (kubectl's are a few KiB; a multi-cluster
# one with inline certificates some hundred KiB).
KUBECONFIG_MAX_BYTES = 16 * 2**20

# Where a kubeconfig came from (ClusterSource.origin).
FROM_FLAG = "--kubeconfig"
FROM_ENV = "$KUBECONFIG"
FROM_HOME = "~/.kube/config"

# Event reasons: stable UpperCamelCase words.
EVENT_MEMORY = "MemoryLimitExceeded"
EVENT_OPERATOR_STOP = "OperatorStop"
EVENT_OPERATOR_KILL = "OperatorKill"
EVENT_TARGET_NOT_SIGNALABLE = "TargetNotSignalable"
EVENT_SIGNAL_REFUSED = "SignalRefused"  # a process of the workload refused a ladder signal
EVENT_SAMPLING_FAILED = "SamplingFailed"

RBAC_RULE = ('{apiGroups: ["events.k8s.io", ""], resources: ["events"], '
             'verbs: ["create", "patch"]}')

# Failure kinds, the label values of sentinel_k8s_event_errors_total{reason}.
ERROR_REASONS = ("config", "forbidden", "unauthorized", "not_found", "invalid", "conflict",
                 "throttled", "server_error", "timeout", "unreachable", "queue_full", "other")


# --------------------------------------------------------------------------
# Where the cluster is and which pod we are (standard library; PyYAML for a kubeconfig)
# --------------------------------------------------------------------------

def one_line(text) -> str:
    """``text`` (or ``str(exc)``) with every run of whitespace, newlines included, made one
    space: YAML and HTTP errors span lines, and each log line must stay one line."""
    return " ".join(str(text).split())


@dataclass(frozen=True)
class ClusterSource:
    """How to reach the API server: ``kind`` is "kubeconfig" or "incluster".

    ``origin`` says who named a kubeconfig: ``FROM_FLAG``, ``FROM_ENV`` or
    ``FROM_HOME`` ("" for in-cluster); it is not compared.
    """

    kind: str
    where: str  # the kubeconfig path(s), ":"-separated, or the in-cluster host:port
    origin: str = field(default="", compare=False)

    def describe(self) -> str:
        if self.kind != "kubeconfig":
            return f"service account (API server {self.where})"
        return f"kubeconfig {self.where}" + (f" ({self.origin})" if self.origin else "")

    def paths(self) -> list[str]:
        """The kubeconfig files, in order (none for in-cluster)."""
        return [p for p in self.where.split(os.pathsep) if p] if self.kind == "kubeconfig" \
            else []


@dataclass(frozen=True)
class PodRef:
    """The pod Events are about (``regarding``)."""

    name: str
    namespace: str
    uid: str | None = None

    def reference(self) -> dict:
        ref = {"apiVersion": "v1", "kind": "Pod", "name": self.name,
               "namespace": self.namespace}
        if self.uid:
            ref["uid"] = self.uid
        return ref


def find_cluster(kubeconfig: str | None, environ=None) -> ClusterSource | None:
    """Where the cluster configuration is, kubectl's way, without importing ``kubernetes``.

    1. ``kubeconfig``, the explicit ``--kubeconfig``/``SENTINEL_KUBECONFIG``
       (``settings.kubeconfig``), as given: whether its files are usable is
       ``kubeconfig_problems``' business, since kubectl refuses a missing one
       rather than look elsewhere.
    2. ``$KUBECONFIG`` from ``environ`` (a ``:``-separated list): the files of
       it that exist, as client-go merges them, skipping missing ones. When it
       is set ``~/.kube/config`` is not read (client-go's loading rules), but
       in a pod the service account still serves when none of its files exists.
    3. The pod's service account (``KUBERNETES_SERVICE_HOST`` and a mounted token).
    4. ``~/.kube/config``.

    ``None`` when there is none of these.
    """
    env = os.environ if environ is None else environ
    if kubeconfig:
        return ClusterSource("kubeconfig", kubeconfig, FROM_FLAG)
    from_env = env.get("KUBECONFIG") or ""
    files = [p for p in from_env.split(os.pathsep) if p and os.path.isfile(p)]
    if files:
        return ClusterSource("kubeconfig", os.pathsep.join(files), FROM_ENV)
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if host and port and os.path.isfile(os.path.join(SA_DIR, "token")):
        return ClusterSource("incluster", f"{host}:{port}")
    if from_env:
        return None
    home = env.get("HOME") or os.path.expanduser("~")
    default = os.path.join(home, ".kube", "config")
    if os.path.isfile(default):
        return ClusterSource("kubeconfig", default, FROM_HOME)
    return None


def kubeconfig_problem(path: str) -> str | None:
    """Why the kubeconfig file ``path`` cannot be used, as words that follow its path
    ("does not exist", "is not valid YAML (...)"), or ``None`` when it reads as a YAML
    mapping. Parsed with PyYAML only: ``kubernetes`` is not imported; what only the
    client checks (a missing context, a bad certificate) is reported at the first Event.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(KUBECONFIG_MAX_BYTES + 1)
    except FileNotFoundError:
        return "does not exist"
    except IsADirectoryError:
        return "is a directory, not a file"
    except PermissionError:
        return f"cannot be read by user {os.getuid()} (permission denied)"
    except OSError as exc:
        return f"cannot be read ({one_line(exc.strerror or exc)})"
    if len(data) > KUBECONFIG_MAX_BYTES:
        return f"is bigger than {KUBECONFIG_MAX_BYTES // 2**20} MiB: not a kubeconfig"
    import yaml  # PyYAML, a dependency of the kubernetes client; a few ms

    try:
        doc = yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        return f"is not valid YAML ({one_line(exc)})"
    except ValueError as exc:  # not UTF-8/UTF-16
        return f"is not a text file ({one_line(exc)})"
    if doc is None:
        return "is empty"
    if not isinstance(doc, dict):
        return (f"is not a kubeconfig (a YAML {type(doc).__name__}, not a mapping with "
                "clusters, contexts and users)")
    return None


def kubeconfig_problems(source: ClusterSource) -> list[tuple[str, str]]:
    """``(path, problem)`` for each file of ``source`` that cannot be used (see
    ``kubeconfig_problem``); ``[]`` when all can, or for in-cluster."""
    return [(p, why) for p in source.paths() if (why := kubeconfig_problem(p)) is not None]


def absolute_kubeconfig_env(environ=None, cwd: str | None = None) -> None:
    """Make the relative entries of ``$KUBECONFIG`` absolute, in place, against ``cwd``
    (default: the current directory).

    Call it before Sentinel moves to ``/``: kubectl reads a relative entry from
    the directory it was started in, and so must Sentinel, which reads
    ``$KUBECONFIG`` only once the workload runs.
    """
    env = os.environ if environ is None else environ
    value = env.get("KUBECONFIG")
    if not value:
        return
    base = os.getcwd() if cwd is None else cwd
    parts = [p if not p or os.path.isabs(p) else os.path.join(base, p)
             for p in value.split(os.pathsep)]
    env["KUBECONFIG"] = os.pathsep.join(parts)


def find_pod(source: ClusterSource | None, environ=None) -> PodRef | None:
    """The pod from the downward API (``POD_NAME``, ``POD_NAMESPACE``, ``POD_UID``).

    In a pod without them, ``HOSTNAME`` (the pod's name unless
    ``spec.hostname`` is set) and the service account's namespace file stand
    in. ``None`` when the name or namespace is unknown.
    """
    env = os.environ if environ is None else environ
    name, namespace = env.get("POD_NAME"), env.get("POD_NAMESPACE")
    if source is not None and source.kind == "incluster":
        name = name or env.get("HOSTNAME")
        if not namespace:
            try:
                with open(os.path.join(SA_DIR, "namespace")) as f:
                    namespace = f.read().strip()
            except OSError:
                namespace = None
    if not name or not namespace:
        return None
    return PodRef(name, namespace, env.get("POD_UID") or None)


# --------------------------------------------------------------------------
# Event bodies (pure functions, unit-tested)
# --------------------------------------------------------------------------

def micro_time(wall: float) -> str:
    """A ``MicroTime``: RFC 3339 with exactly six fractional digits, in UTC.

    The API server parses it with Go's ``2006-01-02T15:04:05.000000Z07:00``,
    which needs all six digits. (The Python client's own models serialize
    datetimes with ``isoformat()``, which drops them when the microseconds
    are zero; kubernetes-client/python#730. So bodies are sent as dicts.)
    """
    sec = int(wall)
    micro = int(round((wall - sec) * 1e6))
    if micro >= 1_000_000:
        sec, micro = sec + 1, micro - 1_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{micro:06d}Z"


def rfc3339(wall: float) -> str:
    """A ``Time`` (seconds precision), for the core v1 API's timestamps."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(wall)))


_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
# NameIsDNSSubdomain (k8s.io/apimachinery pkg/util/validation: IsDNS1123Subdomain).
_DNS_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")


def is_dns_subdomain(name: str) -> bool:
    """Whether the API server accepts ``name`` as an object name: a lowercase RFC 1123
    subdomain of at most 253 characters."""
    return len(name) <= NAME_MAX and _DNS_SUBDOMAIN.match(name) is not None


def event_name(pod_name: str, wall: float, bump: int = 0) -> str:
    """``<pod>.<unix nanoseconds in hex>``, as client-go names Events; always a valid name.

    A long pod name is cut to fit 253 characters; a cut that ends in ``-`` or
    ``.`` is trimmed back to a letter or digit (a DNS label may not end so).
    When that still is not a valid name, a random UUID is the name, as
    client-go's ``GenerateEventName`` falls back (kubernetes#127594).
    ``bump`` adds nanoseconds: the next name to try when one is taken (409).
    """
    suffix = f".{int(wall * 1e9) + bump:x}"
    name = pod_name[: NAME_MAX - len(suffix)].rstrip("-.") + suffix
    return name if is_dns_subdomain(name) else str(uuid.uuid4())


def truncate_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes (the API counts bytes), marked with "…"."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    ellipsis = "…".encode()
    return data[: max_bytes - len(ellipsis)].decode(errors="ignore") + "…"


def _pids_text(pids, shown: int = 20) -> str:
    pids = list(pids or [])
    text = ", ".join(map(str, pids[:shown]))
    if len(pids) > shown:
        text += f" and {len(pids) - shown} more"
    return text or "none"


def _size(n) -> str:
    return "n/a" if n is None else f"{fmt_bytes(n)} ({n} bytes)"


@dataclass(frozen=True)
class Record:
    """What to report: an Event minus the pod and the API version."""

    type: str  # "Normal" or "Warning"
    reason: str  # UpperCamelCase, at most 128 characters
    action: str  # machine-readable, e.g. "SIGTERM", at most 128 characters
    note: str  # human-readable, at most NOTE_MAX_BYTES bytes
    at_wall: float


def record_for(event: Event, workload: str) -> Record | None:
    """The ``Record`` for a guardian ``Event``, or ``None`` if it is not reported.

    ``signal_sent`` (a kill step: SIGTERM starting the ladder, or SIGKILL),
    ``attach_failed`` (watch mode: a target Sentinel may not signal) and
    ``sampling_failed`` (Warning ``SamplingFailed``: sampling fails persistently) are
    reported; everything else is not. Memory kills are ``Warning``s, operator
    stops ``Normal``; a SIGKILL after an ignored SIGTERM is always a ``Warning``.
    """
    f = event.fields
    if event.kind == "attach_failed":
        return Record("Warning", EVENT_TARGET_NOT_SIGNALABLE, "Attach",
                      truncate_utf8(event.message, NOTE_MAX_BYTES), event.at_wall)
    if event.kind == "signal_refused":  # EPERM: named, never claimed as a kill
        return Record("Warning", EVENT_SIGNAL_REFUSED, f.get("signal") or "Signal",
                      truncate_utf8(event.message, NOTE_MAX_BYTES), event.at_wall)
    if event.kind == "sampling_failed":  # the limit may not be enforced: never quietly
        return Record("Warning", EVENT_SAMPLING_FAILED, "Sample",
                      truncate_utf8(event.message, NOTE_MAX_BYTES), event.at_wall)
    if event.kind != "signal_sent":
        return None
    kill = f.get("kill") or {}
    reason = f.get("reason") or kill.get("reason")
    sig = f.get("signal") or "SIGTERM"
    signals = kill.get("signals") or [sig]
    grace = kill.get("grace_period_seconds") or 0.0
    # The PIDs this signal reached (``pids``); older events carry only the kill's.
    pids = f.get("pids") if f.get("pids") is not None else kill.get("pids")
    refused = f.get("refused") or []
    measure = kill.get("measure") or "rss"
    numbers = (f"{measure} {_size(kill.get('value_bytes'))}, limit "
               f"{_size(kill.get('limit_bytes'))}")
    if reason == REASON_MEMORY:
        ev_reason, why = EVENT_MEMORY, f"Memory limit exceeded: {numbers}."
    elif reason == REASON_OPERATOR:
        ev_reason = EVENT_OPERATOR_KILL if signals[0] == "SIGKILL" else EVENT_OPERATOR_STOP
        why = f"Operator requested a {'kill' if signals[0] == 'SIGKILL' else 'stop'} " \
              f"({numbers})."
    else:
        return None  # Sentinel's own shutdown: the kubelet records that itself
    if sig == "SIGTERM":
        what = (f"Sent SIGTERM to workload {workload!r} (pids {_pids_text(pids)}); SIGKILL "
                f"after the {grace:.1f}s grace period unless it exits.")
        reaction = f.get("reaction_seconds")
        if reaction is not None:
            what += f" Reaction {reaction * 1000:.0f} ms after the crossing."
        ev_type = "Warning" if reason == REASON_MEMORY else "Normal"
    else:
        if "SIGTERM" in signals:
            what = (f"Sent SIGKILL to workload {workload!r} (pids {_pids_text(pids)}): it was "
                    f"still running {grace:.1f}s after SIGTERM.")
            ev_type = "Warning"
        else:
            what = f"Sent SIGKILL to workload {workload!r} (pids {_pids_text(pids)}), no grace."
            ev_type = "Warning" if reason == REASON_MEMORY else "Normal"
    if refused:
        what += (f" Not sent to pids {_pids_text([r['pid'] for r in refused])} (uid "
                 f"{_pids_text(sorted({str(r['uid']) for r in refused}))}): permission denied.")
    return Record(ev_type, ev_reason, sig, truncate_utf8(f"{why} {what}", NOTE_MAX_BYTES),
                  event.at_wall)


def events_v1_body(rec: Record, pod: PodRef, name: str) -> dict:
    """An ``events.k8s.io/v1`` Event for ``rec`` about ``pod``."""
    return {
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name, "namespace": pod.namespace},
        "eventTime": micro_time(rec.at_wall),
        "type": rec.type, "reason": rec.reason[:REASON_MAX], "action": rec.action[:ACTION_MAX],
        "note": rec.note,
        "regarding": pod.reference(),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": pod.name[:REPORTING_INSTANCE_MAX],
    }


def core_v1_body(rec: Record, pod: PodRef, name: str) -> dict:
    """The same as a core ``v1`` Event (the fallback): count and timestamps instead of series."""
    ts = rfc3339(rec.at_wall)
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": pod.namespace},
        "involvedObject": pod.reference(),
        "type": rec.type, "reason": rec.reason[:REASON_MAX], "message": rec.note,
        "action": rec.action[:ACTION_MAX],
        "source": {"component": "sentinel"},
        "reportingComponent": REPORTING_CONTROLLER,
        "reportingInstance": pod.name[:REPORTING_INSTANCE_MAX],
        "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
    }


# --------------------------------------------------------------------------
# The recorder
# --------------------------------------------------------------------------

API_EVENTS_V1 = "events.k8s.io/v1"
API_CORE_V1 = "v1"
_PATHS = {API_EVENTS_V1: "/apis/events.k8s.io/v1/namespaces/{ns}/events",
          API_CORE_V1: "/api/v1/namespaces/{ns}/events"}
_PATCH = "application/strategic-merge-patch+json"


class _Series:
    __slots__ = ("api", "name", "count", "last_wall")

    def __init__(self, api: str, name: str, last_wall: float) -> None:
        self.api, self.name, self.count, self.last_wall = api, name, 1, last_wall


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
                 flush_seconds: float = FLUSH_SECONDS, preload: bool = True) -> None:
        self.source = source
        self.pod = pod
        self.workload = workload
        self.preload = preload
        self.version = version
        self.api_version = API_EVENTS_V1
        self.errors_total: dict[str, int] = {}
        self.sent_total: dict[str, int] = {}
        self.dropped_total = 0
        self._loop = loop
        self._components = components
        self._timeout = timeout
        self._flush_seconds = flush_seconds
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._warned: set[str] = set()
        self._series: dict[tuple, _Series] = {}
        self._api = None  # kubernetes.client.ApiClient, made in the worker
        self._exc = None  # the client's exception classes
        self._closed = False
        # Set once the workload runs (the guardian's "spawned"/"attached"):
        # the preload waits for it, so nothing of the client's import runs
        # before the spawn or during Sentinel's own start-up.
        self._workload_seen = threading.Event()
        self._status(f"on: Events for pod {pod.namespace}/{pod.name} via {source.describe()} "
                     + ("(the client loads in the background)" if preload else
                        "(the client loads at the first Event)"))
        self._thread = threading.Thread(target=self._work, name="sentinel-k8s-events",
                                        daemon=True)
        self._thread.start()

    # -- on the loop ---------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """The guardian listener: build the Record and queue it; never blocks."""
        if event.kind in ("spawned", "attached"):
            self._workload_seen.set()
        rec = record_for(event, self.workload)
        if rec is None or self._closed:
            return
        self._workload_seen.set()  # an Event to send: there is a workload
        try:
            self._queue.put_nowait(rec)
        except queue.Full:
            self.dropped_total += 1
            self._fail("queue_full", f"{self._queue.maxsize} Events are waiting to be sent (the "
                       "API server is slow or down): dropping new ones; kills are not delayed")

    def pending_reports(self, since_mono: float) -> str | None:
        """For the linger after a kill: "N Event(s)" while Events are queued or being
        posted, ``None`` when all are out (sent or given up)."""
        n = self._queue.unfinished_tasks
        return f"{n} Kubernetes Event(s)" if n else None

    def close(self) -> None:
        """Stop the worker, waiting at most ``flush_seconds`` for queued Events to go out."""
        if self._closed:
            return
        self._closed = True
        self._workload_seen.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(self._flush_seconds)
        if self._thread.is_alive():
            left = self._queue.qsize()
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

    # -- the worker -------------------------------------------------------------
    def _load_client(self) -> None:
        try:
            self._connect()
        except Exception as exc:  # a broken kubeconfig, a missing token, a bad cert
            self._fail("config", f"cannot load the cluster configuration from "
                       f"{self.source.describe()}: {exc}; kills are not recorded as "
                       "Events. Fix the kubeconfig, or pass --k8s-events off")

    def _work(self) -> None:
        connected = False
        if self.preload:
            # Loaded now, in this thread, right after the start: under a small
            # CPU limit (50-100m) its 0.3-0.6 s of imports take seconds, and
            # started only at the first Event they would often not finish
            # before Sentinel exits, losing the only kill's Event. The loop
            # keeps running meanwhile (the GIL is handed over every 5 ms).
            self._workload_seen.wait()
            if not self._closed:
                connected = True
                started = time.monotonic()
                self._load_client()
                log.debug("Kubernetes Events: client loaded in the background in %.2fs",
                          time.monotonic() - started,
                          extra={"event": "k8s_events", "reason": "client_loaded"})
        while True:
            rec = self._queue.get()
            if rec is None:
                self._queue.task_done()
                break
            try:
                if not connected:
                    connected = True
                    self._load_client()
                if self._api is None:
                    self.dropped_total += 1
                    continue
                self._record(rec)
            except Exception as exc:  # a bug here must never take the worker down
                self.dropped_total += 1
                self._fail("other", f"unexpected error sending an Event: {exc!r}")
            finally:
                self._queue.task_done()
        api = self._api
        if api is not None:
            try:
                api.close()
            except Exception:
                pass

    def _connect(self) -> None:
        # Imported here, in the worker, once the workload runs: the client is
        # ~35 MiB and 0.3-0.6 s of imports that must delay nothing.
        import urllib3
        from kubernetes import client, config
        from kubernetes.client import exceptions

        # urllib3 logs each retry as a warning on the root logger; Sentinel
        # reports failures itself, once, with the fix.
        logging.getLogger("urllib3").setLevel(logging.ERROR)

        cfg = client.Configuration()
        if self.source.kind == "kubeconfig":
            config.load_kube_config(config_file=self.source.where, client_configuration=cfg,
                                    persist_config=False)
        else:
            config.load_incluster_config(client_configuration=cfg)
        # One retry of a failed connect (a keep-alive connection the server
        # closed); never a retry of a request the server may have acted on.
        cfg.retries = urllib3.Retry(total=1, connect=1, read=0, status=0, redirect=0,
                                    other=0)
        api = client.ApiClient(cfg)
        api.user_agent = f"sentinel/{self.version or 'dev'}"
        self._exc = exceptions
        self._urllib3 = urllib3
        self._api = api

    def _request(self, method: str, path: str, body=None, content_type="application/json"):
        """One call through the client's auth and TLS; returns the decoded JSON answer.

        Raises the client's ``ApiException`` for a non-2xx answer, urllib3
        errors for timeouts and connection failures.
        """
        api = self._api
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = api.param_serialize(method=method, resource_path=path, header_params=headers,
                                     body=body, auth_settings=["BearerToken"])
        resp = api.call_api(*params, _request_timeout=self._timeout)
        resp.read()
        text = (resp.data or b"").decode("utf-8", errors="replace")
        if not 200 <= resp.status <= 299:
            raise self._exc.ApiException(http_resp=resp, body=text, data=None)
        return json.loads(text) if text else {}

    def _record(self, rec: Record) -> None:
        key = (rec.action, rec.reason, rec.type)
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
        path = _PATHS[api_version].format(ns=self.pod.namespace)
        try:
            self._request("POST", path, body)
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status == 404 and api_version == API_EVENTS_V1 and self._group_missing(exc):
                self.api_version = API_CORE_V1
                log.info("Kubernetes Events: the API server has no events.k8s.io/v1; using the "
                         "core v1 Events API", extra={"event": "k8s_events"})
                return self._create(rec, key, attempt)
            if status == 409 and attempt < 2:  # AlreadyExists: the same name twice
                return self._create(rec, key, attempt + 1)
            self.dropped_total += 1
            self._classify(exc, "create")
            return
        self._series[key] = _Series(api_version, name, rec.at_wall)
        self.sent_total["create"] = self.sent_total.get("create", 0) + 1
        self._status(f"on: {api_version} Events for pod {self.pod.namespace}/{self.pod.name} "
                     f"({self._counts()})")

    def _patch_series(self, series: _Series, rec: Record) -> bool:
        """PATCH the open series; ``False`` to create a new Event instead (the old one is gone)."""
        count = series.count + 1
        if series.api == API_EVENTS_V1:
            patch = {"series": {"count": count, "lastObservedTime": micro_time(rec.at_wall)}}
        else:
            patch = {"count": count, "lastTimestamp": rfc3339(rec.at_wall)}
        path = _PATHS[series.api].format(ns=self.pod.namespace) + "/" + series.name
        try:
            self._request("PATCH", path, patch, _PATCH)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:  # expired (Events live about an hour)
                return False
            self.dropped_total += 1
            self._classify(exc, "patch")
            return True
        series.count, series.last_wall = count, rec.at_wall
        self.sent_total["patch"] = self.sent_total.get("patch", 0) + 1
        self._status(f"on: {series.api} Events for pod {self.pod.namespace}/{self.pod.name} "
                     f"({self._counts()})")
        return True

    def _group_missing(self, exc) -> bool:
        """After a 404 on create: is it the API group that is missing (not the namespace)?"""
        details = _status_of(exc).get("details") or {}
        if details.get("kind") == "namespaces":
            return False
        try:
            self._request("GET", "/apis/events.k8s.io/v1")
        except Exception as disc:
            return getattr(disc, "status", None) == 404
        return False

    def _classify(self, exc, verb: str) -> None:
        status = getattr(exc, "status", None)
        ns = self.pod.namespace
        if status is not None and self._exc is not None and isinstance(exc, self._exc.ApiException):
            st = _status_of(exc)
            msg = st.get("message") or (getattr(exc, "body", "") or "").strip()[:300] \
                or getattr(exc, "reason", "")
            if status == 403:
                self._fail("forbidden", f"the API server refused to {verb} Events in namespace "
                           f"{ns} (403 Forbidden: {msg}); kills are enforced but not recorded. "
                           f"Fix: add the rule {RBAC_RULE} to a Role bound (RoleBinding) to the "
                           "pod's service account")
            elif status == 401:
                self._fail("unauthorized", f"the API server rejected Sentinel's credentials "
                           f"(401 Unauthorized: {msg}). Fix: in a pod, keep "
                           "automountServiceAccountToken on; outside, check the kubeconfig's "
                           f"user ({self.source.describe()})")
            elif status == 404:
                self._fail("not_found", f"cannot {verb} Events in namespace {ns} (404: {msg}). "
                           "Fix: set POD_NAMESPACE from the downward API (fieldRef "
                           "metadata.namespace)")
            elif status == 422 or status == 400:
                self._fail("invalid", f"the API server rejected an Event as invalid ({status}: "
                           f"{msg}); this is a Sentinel bug, please report it with this line")
            elif status == 409:
                self._fail("conflict", f"an Event with the same name already exists (409: {msg})")
            elif status == 429:
                self._fail("throttled", f"the API server is throttling requests (429: {msg}); "
                           "Events are dropped meanwhile")
            elif status >= 500:
                self._fail("server_error", f"the API server failed ({status}: {msg}); Events "
                           "are dropped meanwhile")
            elif status == 0:
                self._fail("unreachable", f"cannot reach the API server: {msg}")
            else:
                self._fail("other", f"the API server answered {status} to {verb}: {msg}")
            return
        u3 = self._urllib3
        root = getattr(exc, "reason", None) if isinstance(exc, u3.exceptions.MaxRetryError) \
            else exc
        # NewConnectionError subclasses ConnectTimeoutError in urllib3: test it first.
        if isinstance(root, (u3.exceptions.TimeoutError, TimeoutError)) and not isinstance(
                root, u3.exceptions.NewConnectionError):
            self._fail("timeout", f"the API server did not answer within "
                       f"{self._timeout[1]:.0f}s; Events are dropped while it is slow (kills are "
                       "not delayed)")
        elif isinstance(root, (u3.exceptions.HTTPError, OSError)):
            self._fail("unreachable", f"cannot reach the API server via "
                       f"{self.source.describe()}: {root}. Fix: check the pod's network policy "
                       "allows egress to the API server")
        else:
            self._fail("other", f"sending an Event failed: {exc!r}")


def _status_of(exc) -> dict:
    """The ``Status`` object in an API error's body, or ``{}``."""
    try:
        body = json.loads(getattr(exc, "body", None) or "{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) and body.get("kind") == "Status" else {}


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
    source = find_cluster(settings.kubeconfig, env)
    pod = find_pod(source, env)
    if source is not None and (source.origin == FROM_FLAG or pod is not None):
        problems = kubeconfig_problems(source)
        if problems:
            message = _kubeconfig_warning(source, problems)
            comps[COMPONENT] = f"off ({message})"
            log.warning("Kubernetes Events off: %s", message,
                        extra={"event": "k8s_events", "reason": "config"})
            return []
    if source is None or pod is None:
        if source is None:
            from_env = env.get("KUBECONFIG")
            kube = (f"$KUBECONFIG names no existing file ({from_env})" if from_env else
                    "no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config)")
            why = ("no cluster configured: not in a pod (no KUBERNETES_SERVICE_HOST and "
                   f"service account token) and {kube}")
            fix = "run in a pod with a service account token, or pass --kubeconfig"
        else:
            why = f"the pod is unknown (POD_NAME / POD_NAMESPACE unset; cluster from " \
                  f"{source.describe()})"
            fix = ("set POD_NAME, POD_NAMESPACE and POD_UID from the downward API (fieldRef "
                   "metadata.name, metadata.namespace, metadata.uid)")
        comps[COMPONENT] = f"off ({why})"
        if mode == "on":
            log.warning("%s", one_line(f"--k8s-events on: {why}; kills will not be recorded "
                                       f"as Events. Fix: {fix}"),
                        extra={"event": "k8s_events", "reason": "config"})
        else:
            log.debug("Kubernetes Events off: %s", why)
        return []
    recorder = EventRecorder(source, pod, workload=settings.workload_name,
                             version=guardian.state.version, loop=guardian.loop,
                             components=comps)
    guardian.listeners.append(recorder)
    guardian.k8s_events = recorder
    return [recorder]


def _kubeconfig_warning(source: ClusterSource, problems: list[tuple[str, str]]) -> str:
    """One line: which kubeconfig file(s), what is wrong, and the fix for where it came from."""
    what = "; ".join(f"{path} {why}" for path, why in problems)
    if source.origin == FROM_FLAG:
        named = "--kubeconfig (or SENTINEL_KUBECONFIG)"
        fix = ("give an existing, readable kubeconfig file (kubectl config view --raw > FILE "
               "writes one), or leave --kubeconfig unset to use $KUBECONFIG, the pod's service "
               "account or ~/.kube/config")
    elif source.origin == FROM_ENV:
        named = "$KUBECONFIG"
        fix = "repair the file or point $KUBECONFIG at a working kubeconfig"
    else:
        named = "the default kubeconfig"
        fix = "repair ~/.kube/config or pass --kubeconfig"
    return one_line(f"the kubeconfig from {named}: {what}; kills will not be recorded as "
                    f"Events. Fix: {fix}, or pass --k8s-events off")

