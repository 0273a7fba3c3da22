"""A stand-in for the Kubernetes API server, enough for Sentinel's Events.

A stdlib ``ThreadingHTTPServer`` on 127.0.0.1 in a thread. It serves what
Sentinel uses and checks each request as the real server would:

- ``POST /apis/events.k8s.io/v1/namespaces/{ns}/events`` and the core
  ``POST /api/v1/namespaces/{ns}/events``: bearer token (401), RBAC (403 with
  the real ``Status`` text), content type (415), JSON (400), apiVersion/kind
  and namespace against the path (400), the namespace exists (404 with
  ``details.kind: namespaces``), the body against the Kubernetes JSON schema
  of ``K8S_VERSION`` from ``kubernetes-validate`` (strict: unknown fields are
  errors) and the API server's own Event rules (``ValidateEventCreate`` in
  pkg/apis/core/validation/events.go: required fields, length limits, the
  MicroTime format, a qualified reportingController, type Normal|Warning,
  deprecated fields unset, regarding in the same namespace) -> 422 Invalid;
  an existing name -> 409 AlreadyExists; else 201 with the stored object.
- ``PATCH .../events/{name}`` (strategic-merge or merge patch): 404 if
  absent; the result is validated like a create plus the update rules
  (immutable fields; series.count >= 2 and lastObservedTime set) -> 200.
- ``GET /apis/events.k8s.io/v1`` (discovery): an ``APIResourceList``, or
  ``404 page not found`` when the group is switched off (``events_group=False``),
  which also makes every events.k8s.io path 404 as on a server without it.

``delay_seconds`` holds every Events answer back (a slow server);
``forbid`` is a set of ``(api_group, verb)`` pairs the service account lacks.
Every request is recorded in ``requests`` for assertions.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kubernetes_validate

K8S_VERSION = "1.33"
TOKEN = "sentinel-test-token"
SERVICE_ACCOUNT = "system:serviceaccount:demo:sentinel"

_MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_PATH = re.compile(r"^/(?:apis/(?P<group>events\.k8s\.io)/v1|api/v1)/namespaces/(?P<ns>[^/]+)"
                   r"/events(?:/(?P<name>[^/]+))?$")
_PATCH_TYPES = ("application/strategic-merge-patch+json", "application/merge-patch+json")
# Fields an update may not change (ValidateEventUpdate), in events.k8s.io/v1 terms.
_IMMUTABLE_V1 = ("regarding", "related", "reason", "note", "type", "eventTime", "action",
                 "reportingController", "reportingInstance", "deprecatedSource",
                 "deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount")


@dataclass
class Request:
    method: str
    path: str
    headers: dict  # names in lower case
    body: object
    status: int = 0
    answered_at: float = 0.0  # time.monotonic() when the answer was sent


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def _qualified_name_errors(value: str) -> list[str]:
    """``ValidateQualifiedName``: ``[prefix/]name``, prefix a DNS subdomain, name <= 63."""
    if not value:
        return ["Required value"]
    parts = value.split("/")
    if len(parts) > 2:
        return ["a qualified name must consist of alphanumeric characters, '-', '_' or '.', "
                "with an optional DNS subdomain prefix and '/'"]
    name = parts[-1]
    errs = []
    if len(parts) == 2 and (not parts[0] or len(parts[0]) > 253
                            or not _DNS_SUBDOMAIN.match(parts[0])):
        errs.append("prefix part must be a lowercase RFC 1123 subdomain")
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        errs.append("name part must be at most 63 alphanumeric characters, '-', '_' or '.'")
    return errs


def validate_event(body: dict, group: str | None, ns: str) -> list[str]:
    """The API server's rules for a new Event (beyond the schema); ``[]`` when valid."""
    errs: list[str] = []
    meta = body.get("metadata") or {}
    name = meta.get("name", "")
    if not name or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        errs.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain")
    if group == "events.k8s.io":
        ref = body.get("regarding") or {}
        if "eventTime" not in body or not body["eventTime"]:
            errs.append("eventTime: Required value")
        elif not _MICRO_TIME.match(str(body["eventTime"])):
            errs.append(f"eventTime: Invalid value: {body['eventTime']!r}: parsing time as "
                        "\"2006-01-02T15:04:05.000000Z07:00\"")
        for fld in ("deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount",
                    "deprecatedSource"):
            if body.get(fld):
                errs.append(f"{fld}: Invalid value: needs to be unset")
        controller, instance = body.get("reportingController", ""), body.get("reportingInstance",
                                                                              "")
        reason, action, note = body.get("reason", ""), body.get("action", ""), body.get("note", "")
        series = body.get("series")
    else:
        ref = body.get("involvedObject") or {}
        if body.get("eventTime") and not _MICRO_TIME.match(str(body["eventTime"])):
            errs.append("eventTime: Invalid value: not a MicroTime")
        for fld in ("firstTimestamp", "lastTimestamp"):
            if body.get(fld) and not _TIME.match(str(body[fld])):
                errs.append(f"{fld}: Invalid value: {body[fld]!r}: not RFC 3339")
        controller = body.get("reportingComponent", "")
        instance = body.get("reportingInstance", "")
        reason, action, note = body.get("reason", ""), body.get("action", ""), body.get("message",
                                                                                        "")
        series = None
    if ref.get("namespace") and ref["namespace"] != ns:
        errs.append(f"involvedObject.namespace: Invalid value: {ref['namespace']!r}: does not "
                    "match event.namespace")
    # legacyValidateEvent: Events that carry an eventTime ("new" Events) need these.
    if body.get("eventTime"):
        if not ref.get("namespace") and ns not in ("default", "kube-system"):
            errs.append("involvedObject.namespace: does not match event.namespace")
        errs += [f"reportingController: {e}" for e in _qualified_name_errors(controller)]
        if not instance:
            errs.append("reportingInstance: Required value")
        if len(instance) > 128:
            errs.append("reportingInstance: Invalid value: can have at most 128 characters")
        if not action:
            errs.append("action: Required value")
        if len(action) > 128:
            errs.append("action: Invalid value: can have at most 128 characters")
        if not reason:
            errs.append("reason: Required value")
        if len(reason) > 128:
            errs.append("reason: Invalid value: can have at most 128 characters")
        if len(note.encode()) > 1024:
            errs.append("note: Invalid value: can have at most 1024 characters")
    if group == "events.k8s.io" and body.get("type") not in ("Normal", "Warning"):
        errs.append(f"type: Invalid value: {body.get('type')!r}: has invalid value")
    if series is not None:
        errs += _series_errors(series)
    return errs


def _series_errors(series: dict) -> list[str]:
    errs = []
    if (series.get("count") or 0) < 2:
        errs.append("series.count: Invalid value: should be at least 2")
    last = series.get("lastObservedTime")
    if not last:
        errs.append("series.lastObservedTime: Required value")
    elif not _MICRO_TIME.match(str(last)):
        errs.append(f"series.lastObservedTime: Invalid value: {last!r}: not a MicroTime")
    return errs


def merge_patch(target: dict, patch: dict) -> dict:
    """RFC 7386 merge patch (what a strategic merge patch is for these scalar/map fields)."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class FakeApiServer:
    """Start with ``with FakeApiServer(...) as api:``; ``api.url``, ``api.kubeconfig(path)``."""

    token: str = TOKEN
    namespaces: tuple[str, ...] = ("demo",)
    events_group: bool = True
    forbid: set = field(default_factory=set)  # {(api_group, verb)}, api_group "" is core
    delay_seconds: float = 0.0
    requests: list = field(default_factory=list)
    store: dict = field(default_factory=dict)  # (group, ns, name) -> object

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.handler_errors: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: tests assert on `requests`
                pass

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

            def do_PATCH(self) -> None:
                server._handle(self, "PATCH")

            def do_PUT(self) -> None:
                server._handle(self, "PUT")

            def do_DELETE(self) -> None:
                server._handle(self, "DELETE")

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                # A client that hung up on a slow answer: recorded, not printed.
                import sys
                server.handler_errors.append(repr(sys.exc_info()[1]))

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-apiserver",
                                        daemon=True)

    # -- lifecycle -------------------------------------------------------------
    def __enter__(self) -> "FakeApiServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()  # cuts short any delayed answer
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def kubeconfig(self, path: Path, namespace: str = "demo", token: str | None = None) -> Path:
        """Write a kubeconfig whose current context points here; return ``path``."""
        path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {self.url}
users:
- name: sentinel
  user:
    token: {token or self.token}
contexts:
- name: fake
  context:
    cluster: fake
    user: sentinel
    namespace: {namespace}
current-context: fake
""")
        return path

    # -- queries for tests -------------------------------------------------------
    def events(self, group: str | None = "events.k8s.io") -> list[dict]:
        with self._lock:
            return [obj for (g, _, _), obj in self.store.items() if g == group]

    def calls(self, method: str | None = None, status: int | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method)
                    and (status is None or r.status == status)]

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError(f"fake API server: timed out after {timeout}s waiting for "
                             f"{what or predicate}; requests: {self.requests}")

    # -- serving -------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        path = h.path.split("?", 1)[0]
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        req = Request(method, h.path, {k.lower(): v for k, v in h.headers.items()}, body)
        with self._lock:
            self.requests.append(req)
        code, answer = self._route(h, method, path, raw, body)
        if code != 0 and self.delay_seconds and _PATH.match(path):
            self._stop.wait(self.delay_seconds)
        req.status = code
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        ctype = "text/plain; charset=utf-8" if isinstance(answer, bytes) else "application/json"
        try:
            h.send_response(code)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except OSError as exc:  # the client gave up waiting
            self.handler_errors.append(repr(exc))
        req.answered_at = time.monotonic()

    def _route(self, h, method: str, path: str, raw: bytes, body) -> tuple[int, object]:
        auth = h.headers.get("Authorization", "")
        if auth != f"Bearer {self.token}":
            return 401, status_body(401, "Unauthorized", "Unauthorized")
        if path.rstrip("/") == "/apis/events.k8s.io/v1" and method == "GET":
            if not self.events_group:
                return 404, b"404 page not found\n"
            return 200, {"kind": "APIResourceList", "apiVersion": "v1",
                         "groupVersion": "events.k8s.io/v1",
                         "resources": [{"name": "events", "singularName": "event",
                                        "namespaced": True, "kind": "Event",
                                        "verbs": ["create", "delete", "deletecollection", "get",
                                                  "list", "patch", "update", "watch"],
                                        "shortNames": ["ev"]}]}
        m = _PATH.match(path)
        if not m:
            return 404, b"404 page not found\n"
        group, ns, name = m.group("group"), m.group("ns"), m.group("name")
        if group and not self.events_group:
            return 404, b"404 page not found\n"
        verb = {"POST": "create", "PATCH": "patch", "GET": "get" if name else "list",
                "PUT": "update", "DELETE": "delete"}[method]
        if (group or "", verb) in self.forbid:
            resource = "events" + ("." + group if group else "")
            named = f' "{name}"' if name else ""
            return 403, status_body(
                403, "Forbidden",
                f'{resource}{named} is forbidden: User "{SERVICE_ACCOUNT}" cannot {verb} '
                f'resource "events" in API group "{group or ""}" in the namespace "{ns}"',
                {"group": group or "", "kind": "events", **({"name": name} if name else {})})
        if ns not in self.namespaces:
            return 404, status_body(404, "NotFound", f'namespaces "{ns}" not found',
                                    {"name": ns, "kind": "namespaces"})
        if method == "POST" and not name:
            return self._create(h, group, ns, body)
        if method == "PATCH" and name:
            return self._patch(h, group, ns, name, body)
        if method == "GET" and name:
            with self._lock:
                obj = self.store.get((group, ns, name))
            return (200, obj) if obj else (404, self._not_found(group, name))
        return 405, status_body(405, "MethodNotAllowed", f"{method} is not supported here")

    @staticmethod
    def _not_found(group, name) -> dict:
        return status_body(404, "NotFound", f'events{"." + group if group else ""} "{name}" '
                           "not found", {"name": name, "group": group or "", "kind": "events"})

    def _schema(self, obj: dict) -> list[str]:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            return [f"{where}: {exc.message}"]
        return []

    def _invalid(self, group, name, errs: list[str]) -> tuple[int, dict]:
        return 422, status_body(
            422, "Invalid", f'Event.{"events.k8s.io" if group else ""} "{name}" is invalid: '
            + ", ".join(errs), {"name": name, "group": group or "", "kind": "Event",
                                "causes": [{"message": e} for e in errs]})

    def _create(self, h, group, ns, body) -> tuple[int, object]:
        if h.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return 415, status_body(415, "UnsupportedMediaType",
                                    "the body of the request was in an unknown format - "
                                    "accepted media types include: application/json")
        if not isinstance(body, dict):
            return 400, status_body(400, "BadRequest", "the body is not a JSON object")
        want = "events.k8s.io/v1" if group else "v1"
        if body.get("apiVersion") != want or body.get("kind") != "Event":
            return 400, status_body(400, "BadRequest",
                                    f"the API version in the data ({body.get('apiVersion')}) "
                                    f"does not match the expected API version ({want})")
        meta = body.get("metadata") or {}
        if meta.get("namespace", ns) != ns:
            return 400, status_body(400, "BadRequest", "the namespace of the provided object "
                                    "does not match the namespace sent on the request")
        name = meta.get("name", "")
        errs = self._schema(body) or validate_event(body, group, ns)
        if errs:
            return self._invalid(group, name, errs)
        with self._lock:
            if (group, ns, name) in self.store:
                return 409, status_body(409, "AlreadyExists",
                                        f'events{"." + group if group else ""} "{name}" '
                                        "already exists",
                                        {"name": name, "group": group or "", "kind": "events"})
            obj = json.loads(json.dumps(body))
            obj["metadata"] = {**meta, "namespace": ns, "uid": str(uuid.uuid4()),
                               "resourceVersion": str(len(self.store) + 1),
                               "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                  time.gmtime())}
            self.store[(group, ns, name)] = obj
        return 201, obj

    def _patch(self, h, group, ns, name, body) -> tuple[int, object]:
        ctype = h.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype not in _PATCH_TYPES:
            return 415, status_body(415, "UnsupportedMediaType",
                                    "the body of the request was in an unknown format - "
                                    f"accepted media types include: {', '.join(_PATCH_TYPES)}, "
                                    "application/json-patch+json, application/apply-patch+yaml")
        if not isinstance(body, dict):
            return 400, status_body(400, "BadRequest", "the patch is not a JSON object")
        with self._lock:
            old = self.store.get((group, ns, name))
        if old is None:
            return 404, self._not_found(group, name)
        new = merge_patch(old, body)
        errs = self._schema(new) or validate_event(new, group, ns)
        if group:
            errs += [f"{f}: Invalid value: field is immutable" for f in _IMMUTABLE_V1
                     if new.get(f) != old.get(f)]
        else:
            for f in ("involvedObject", "reason", "type", "source", "firstTimestamp"):
                if new.get(f) != old.get(f):
                    errs.append(f"{f}: Invalid value: field is immutable")
        if errs:
            return self._invalid(group, name, errs)
        with self._lock:
            new["metadata"]["resourceVersion"] = str(int(old["metadata"]["resourceVersion"]) + 1)
            self.store[(group, ns, name)] = new
        return 200, new
