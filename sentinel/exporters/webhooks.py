"""Webhooks: a JSON POST to each configured receiver on alerts, kills, kernel OOM kills,
restarts, give-ups and dry-run reports.

``start(host, settings)`` builds one ``Receiver`` per ``WebhookSpec`` (from
``SENTINEL_WEBHOOK_URL``, ``--webhook-url-file`` and the config file's
``settings.webhooks``; see ``sentinel.config.webhooks`` and docs/webhooks.md) and
subscribes a ``WebhookNotifier`` to the host's events. The notifier runs on the loop:
it picks the events a receiver wants (``event_class``), builds the body (pure dict and
``json.dumps`` work, microseconds) and submits it to the receiver's bounded ``Poster``;
it never blocks and never raises into the core, so the ladder keeps its timing
whatever the receivers do. Each receiver's own worker thread POSTs with
``urllib.request`` (imported in that thread, never on the loop or before the spawn),
a timeout per attempt (``--webhook-timeout``, 5 s), and retries with back-off
(0.5 s, 1 s, 2 s: four attempts in all) on connection errors, timeouts, 5xx and 429.
Other 4xx are not retried: the receiver understood the request and refused it (a
revoked token, a deleted channel, a malformed URL path), so the same request would get
the same answer, and retrying would hold the queue up for the next message. Redirects
are not followed (a POST with a token is not re-sent to a place the receiver names).

What happens to every message is counted per receiver: sent, failed (given up, by
reason), dropped (its queue was full), queued; ``sent + failed + dropped + queued`` is
what was submitted. The URLs never leave this module: receivers are named by their
index or their ``name``, and each URL's parts are registered with
``sentinel.logs.register_secret`` so that no log line can show them.
"""

from __future__ import annotations

import json
import logging
import os
import time

from sentinel import logs
from sentinel.config.webhooks import EVENT_CLASSES, WebhookSpec, secrets_of
from sentinel.core.state import REASON_SHUTDOWN, Event
from sentinel.exporters.poster import Poster, Retry
from sentinel.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

COMPONENT = "webhooks"
BODY_VERSION = 1
MAX_ATTEMPTS = 4
BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 4.0
# At exit (after the linger, if there was one), how long all receivers together may
# still take to post what is queued: a dead receiver delays the exit by at most this.
FLUSH_SECONDS = 1.0
# Of a receiver's error answer: what is read (and redacted), and what is kept of it.
DETAIL_READ_BYTES = 4096
DETAIL_CHARS = 200
# What a text message may hold: chat receivers cut long messages anyway.
TEXT_MAX_CHARS = 1000
# The failure reasons of sentinel_webhook_failed_total{reason}.
FAIL_REASONS = ("timeout", "connection", "http_4xx", "http_5xx", "redirect", "other")
_RETRIED = ("timeout", "connection", "http_5xx", "http_429")
SEVERITIES = {"alert": "warning", "kill": "critical", "oom": "critical",
              "restart": "warning", "gave-up": "critical"}


def event_class(event: Event) -> str | None:
    """The receiver event class (``EVENT_CLASSES``) of ``event``, or ``None`` when no
    webhook reports it: a kill's first signal (``signal_sent`` whose step is the first of
    its ladder) and its ``kill_finished`` and ``pre_kill_hook`` are ``kill`` (not a stop
    for Sentinel's own shutdown: the kubelet asked for that one); ``alert``,
    ``kernel_oom_kill`` (``oom``), ``restart_scheduled`` (``restart``), ``gave_up``
    (``gave-up``)."""
    kind, fields = event.kind, event.fields
    if kind == "alert":
        return "alert"
    if kind == "kernel_oom_kill":
        return "oom"
    if kind == "restart_scheduled":
        return "restart"
    if kind == "gave_up":
        return "gave-up"
    if kind in ("signal_sent", "kill_finished", "pre_kill_hook"):
        kill = fields.get("kill") or {}
        if kill.get("reason", fields.get("reason")) == REASON_SHUTDOWN:
            return None
        if kind == "signal_sent":
            signals = kill.get("signals") or []
            # The first step only: a SIGKILL after the SIGTERM is told by kill_finished.
            if fields.get("signal") == "SIGKILL" and len(signals) > 1:
                return None
        return "kill"
    return None


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class Context:
    """Where Sentinel runs, for the bodies: the pod, its namespace and node from the
    downward API (``POD_NAME``, ``POD_NAMESPACE``, ``NODE_NAME``; ``None`` when unset) and
    Sentinel's PID. ``workload(program)`` gives a program's workload label."""

    def __init__(self, host, environ=None) -> None:
        env = os.environ if environ is None else environ
        self.pod = env.get("POD_NAME") or None
        self.namespace = env.get("POD_NAMESPACE") or None
        self.node = env.get("NODE_NAME") or None
        self.sentinel_pid = os.getpid()
        self._host = host

    def workload(self, program: str) -> str:
        host = self._host
        try:
            return host.program(program).state.workload if program else host.state.workload
        except Exception:  # an unknown name (removed by a reload): the program's name
            return program or getattr(getattr(host, "state", None), "workload", "")


def is_dry_run(event: Event) -> bool:
    fields = event.fields
    return bool(fields.get("dry_run") or (fields.get("kill") or {}).get("dry_run"))


def json_body(event: Event, ctx: Context, cls: str) -> dict:
    """The generic body (``version`` 1, documented key by key in docs/webhooks.md):
    ``version, kind, class, severity, dry_run, program, workload, pod, namespace, node?,
    sentinel_pid, time, message, fields``, plus ``rule`` and ``state`` for an alert.
    ``fields`` is the event's own (sizes in bytes, times in seconds)."""
    body: dict = {"version": BODY_VERSION, "kind": event.kind, "class": cls,
                  "severity": severity(event, cls), "dry_run": is_dry_run(event)}
    if event.kind == "alert":
        body["rule"] = event.fields.get("rule")
        body["state"] = event.fields.get("state")
    body.update({"program": event.program, "workload": ctx.workload(event.program),
                 "pod": ctx.pod, "namespace": ctx.namespace})
    if ctx.node:
        body["node"] = ctx.node
    body.update({"sentinel_pid": ctx.sentinel_pid, "time": _rfc3339(event.at_wall),
                 "message": message_of(event), "fields": event.fields})
    return body


def severity(event: Event, cls: str) -> str:
    """``resolved`` for a resolved alert, ``info`` for a dry run's report, else the
    class's (``SEVERITIES``: warning or critical)."""
    if event.kind == "alert" and event.fields.get("state") == "resolved":
        return "resolved"
    if is_dry_run(event):
        return "info"
    return SEVERITIES.get(cls, "warning")


def message_of(event: Event) -> str:
    """The event's message; a dry run's says "would have" (the core's ``signal_sent``
    already does; others get a prefix)."""
    message = event.message
    if is_dry_run(event) and "would have" not in message:
        message = f"dry run, no signal was sent (it would have been): {message}"
    return message


def text_body(event: Event, ctx: Context, cls: str) -> dict:
    """The chat body: ``{"text": "CRITICAL web (ns/pod): message"}``, one line, a
    severity word (no emoji), the program (and pod when known), the message."""
    where = event.program or ctx.workload(event.program)
    if ctx.pod:
        where += f" ({ctx.namespace}/{ctx.pod})" if ctx.namespace else f" ({ctx.pod})"
    word = "DRY-RUN" if is_dry_run(event) else severity(event, cls).upper()
    text = logs.redact(" ".join(f"{word} {where}: {message_of(event)}".split()))
    if len(text) > TEXT_MAX_CHARS:  # cut after the redaction: never half a secret
        text = text[:TEXT_MAX_CHARS - 3] + "..."
    return {"text": text}


class _Refused(Exception):
    """A final answer from the receiver (4xx, a redirect): not retried."""

    def __init__(self, reason: str, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}{': ' + detail if detail else ''}")
        self.reason, self.status = reason, status


class Receiver:
    """One receiver: its spec, its poster (queue and worker thread), its counters.

    Counters (read from any thread): ``sent_total``, ``dropped_total`` (queue full),
    ``failed_total`` (reason -> messages given up), ``retries_total``, ``last_error``
    (the last failure's class, e.g. ``HTTP 500``, ``TimeoutError``; never its text,
    which may hold the URL). ``queue_length``: messages queued or being posted.
    """

    def __init__(self, spec: WebhookSpec, name: str, *, timeout: float, version: str = "",
                 max_attempts: int = MAX_ATTEMPTS, backoff_seconds: float = BACKOFF_SECONDS,
                 max_backoff_seconds: float = MAX_BACKOFF_SECONDS) -> None:
        self.spec, self.name, self.timeout = spec, name, timeout
        self.user_agent = f"sentinel/{version or 'dev'}"
        self.failed_total: dict[str, int] = {}
        self.last_error: str | None = None
        self._warned: set[str] = set()
        self._opener = None
        for secret in secrets_of(spec.url):
            logs.register_secret(secret)
        self.poster = Poster(self._post, name=f"sentinel-webhook-{name}",
                             queue_size=spec.queue, max_attempts=max_attempts,
                             backoff_seconds=backoff_seconds,
                             max_backoff_seconds=max_backoff_seconds,
                             on_error=self._given_up, prepare=self._prepare)

    @property
    def sent_total(self) -> int:
        return self.poster.sent_total

    @property
    def dropped_total(self) -> int:
        return self.poster.dropped_total

    @property
    def retries_total(self) -> int:
        return self.poster.retries_total

    @property
    def queue_length(self) -> int:
        return self.poster.pending

    def submit(self, data: bytes) -> bool:
        """Queue one body (JSON bytes); ``False`` if the queue was full (counted)."""
        return self.poster.submit(data)

    def status(self) -> dict:
        """For ``status``: name, format, events, programs, queue size and length, sent,
        failed (reason -> count), dropped, retries, last error class. Never the URL."""
        return {"name": self.name, "format": self.spec.format, "events": list(self.spec.events),
                "programs": list(self.spec.programs), "queue_size": self.spec.queue,
                "queue_length": self.queue_length, "sent": self.sent_total,
                "failed": dict(self.failed_total), "dropped": self.dropped_total,
                "retries": self.retries_total, "last_error": self.last_error}

    # -- in the worker thread ------------------------------------------------------
    def _prepare(self) -> None:
        import urllib.request  # here, in the worker: never on the loop nor before the spawn

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):  # a 3xx becomes an HTTPError
                return None

        self._opener = urllib.request.build_opener(NoRedirect)

    def _post(self, data: bytes) -> None:
        import http.client
        import urllib.error
        import urllib.request

        if self._opener is None:
            self._prepare()
        req = urllib.request.Request(self.spec.url, data=data, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": self.user_agent})
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                resp.read(65536)
            return
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                # Redacted before it is cut: a cut through an echoed URL would leave a
                # piece of it that no registered secret matches any more.
                body = exc.read(DETAIL_READ_BYTES).decode("utf-8", "replace")
                detail = logs.redact(" ".join(body.split()))[:DETAIL_CHARS]
            except Exception:
                detail = ""
            finally:
                exc.close()
            self.last_error = f"HTTP {status}"
            if status >= 500 or status == 429:
                retry_after = _retry_after(exc.headers.get("Retry-After")) \
                    if status == 429 else None
                raise Retry(f"HTTP {status}", retry_after) from _Refused(
                    "http_5xx" if status >= 500 else "http_4xx", status, detail)
            raise _Refused("redirect" if 300 <= status < 400 else "http_4xx", status,
                           detail) from None
        except (TimeoutError, urllib.error.URLError, OSError,
                http.client.HTTPException) as exc:
            reason = _classify(exc)
            self.last_error = _error_class(exc)
            if reason in _RETRIED:
                raise Retry(reason) from exc
            raise

    def _given_up(self, data: bytes, exc: BaseException) -> None:
        reason = exc.reason if isinstance(exc, _Refused) else _classify(exc)
        if reason not in FAIL_REASONS:
            reason = "other"
        self.last_error = self.last_error or _error_class(exc)
        self.failed_total[reason] = self.failed_total.get(reason, 0) + 1
        if reason not in self._warned:
            self._warned.add(reason)
            retried = "" if isinstance(exc, _Refused) and reason != "http_5xx" else \
                f" after {self.poster.max_attempts} attempts"
            why = ("not retried: the receiver refused the request (check the URL and its "
                   "token)" if reason in ("http_4xx", "redirect") else
                   "the receiver is slow or down")
            log.warning("webhook %s: a message was not delivered%s: %s (%s); %s. Kills are "
                        "not delayed (reported once per reason)", self.name, retried,
                        logs.redact(" ".join(str(exc).split()))[:300], reason, why,
                        extra={"event": "webhook_failed", "receiver": self.name,
                               "reason": reason})


def _retry_after(value: str | None) -> float | None:
    try:
        return min(MAX_BACKOFF_SECONDS, max(0.0, float(value))) if value else None
    except ValueError:
        return None


def _error_class(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):  # URLError wraps the socket's error
        return type(reason).__name__
    return type(exc).__name__


def _classify(exc: BaseException) -> str:
    """A transport error's reason: timeout, connection (refused, reset, DNS) or other."""
    import socket
    import urllib.error

    inner = exc.reason if isinstance(exc, urllib.error.URLError) and \
        isinstance(exc.reason, BaseException) else exc
    if isinstance(inner, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(inner, OSError) or type(inner).__module__ == "http.client":
        return "connection"
    return "other"


class WebhookNotifier:
    """The host listener: each event a receiver wants goes on that receiver's queue.

    ``receivers`` in order, each named (``Receiver.name``). ``pending_reports`` tells the
    linger after a kill what is still queued; ``close()`` flushes for at most
    ``flush_seconds`` in all.
    """

    name = COMPONENT

    def __init__(self, receivers: list[Receiver], ctx: Context,
                 flush_seconds: float = FLUSH_SECONDS) -> None:
        self.receivers = receivers
        self.ctx = ctx
        self.flush_seconds = flush_seconds
        self._closed = False
        self._wants = [(r, frozenset(r.spec.events), frozenset(r.spec.programs))
                       for r in receivers]

    def __call__(self, event: Event) -> None:
        """On the loop: never blocks (the poster drops on a full queue), never raises."""
        if self._closed:
            return
        cls = event_class(event)
        if cls is None:
            return
        by_format: dict[str, bytes] = {}
        for receiver, events, programs in self._wants:
            if cls not in events or (programs and event.program not in programs):
                continue
            fmt = receiver.spec.format
            data = by_format.get(fmt)
            if data is None:
                body = text_body(event, self.ctx, cls) if fmt == "text" else \
                    json_body(event, self.ctx, cls)
                # Redacted as a whole: a hook's output or an error text in the fields
                # must not carry a receiver's URL to another receiver.
                data = by_format[fmt] = logs.redact(json.dumps(body, default=str)).encode()
            receiver.submit(data)

    def status(self) -> list[dict]:
        """``Receiver.status()`` of each receiver, for ``status``."""
        return [r.status() for r in self.receivers]

    def pending_reports(self, since_mono: float) -> str | None:
        """For the linger after a kill: "N webhook message(s)" while any is queued."""
        n = sum(r.queue_length for r in self.receivers)
        return f"{n} webhook message(s)" if n else None

    def close(self) -> None:
        """Stop taking messages; post what is queued for at most ``flush_seconds`` in all
        (the receivers in parallel); log what was left."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + self.flush_seconds
        for r in self.receivers:
            r.poster.close(self.flush_seconds, wait=False)
        left = 0
        for r in self.receivers:
            left += r.poster.close(max(0.0, deadline - time.monotonic()))
        if left:
            log.warning("webhooks: %d message(s) not delivered after %.1fs; exiting without "
                        "waiting (a receiver is slow or down)", left, self.flush_seconds,
                        extra={"event": "webhooks"})


def receiver_names(specs) -> list[str]:
    """Each receiver's label: its ``name``, else its index among all receivers."""
    return [s.name if s.name else str(i) for i, s in enumerate(specs)]


def start(host, settings, environ=None) -> list:
    """Start the receivers of ``settings`` (env, then the URL file's lines, then the
    config file's); return ``[notifier]`` or ``[]`` when none is configured. Sets
    ``host.webhooks`` (for the metrics and ``status``) and ``components["webhooks"]``."""
    env_specs = [s for s in settings.webhooks if s.source == "SENTINEL_WEBHOOK_URL"]
    file_specs = [s for s in settings.webhooks if s.source != "SENTINEL_WEBHOOK_URL"]
    specs = env_specs + list(settings.webhook_url_file) + file_specs
    comps = host.state.components
    if not specs:
        comps[COMPONENT] = "off (no SENTINEL_WEBHOOK_URL, --webhook-url-file or webhooks:)"
        return []
    names = receiver_names(specs)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # two receivers with one label would mix their counters
        names = [f"{n}-{i}" if n in twice else n for i, n in enumerate(names)]
    receivers = [Receiver(s, n, timeout=settings.webhook_timeout_seconds,
                          version=host.state.version) for s, n in zip(specs, names)]
    notifier = WebhookNotifier(receivers, Context(host, environ))
    host.listeners.append(notifier)
    host.webhooks = notifier
    comps[COMPONENT] = f"on: {len(receivers)} receiver(s): " + ", ".join(
        f"{r.name} ({r.spec.format})" for r in receivers)
    log.info("webhooks: %d receiver(s): %s", len(receivers), ", ".join(
        f"{r.name} ({r.spec.format}; {','.join(r.spec.events)})" for r in receivers),
        extra={"event": "webhooks"})
    return [notifier]


__all__ = ["EVENT_CLASSES", "WebhookNotifier", "Receiver", "start", "event_class",
           "json_body", "text_body"]
