"""Where the Kubernetes API server is, which pod we are, and a thin client for it.

Discovery, as kubectl decides (``find_cluster``): ``--kubeconfig`` (or
``SENTINEL_KUBECONFIG``) when given, else ``$KUBECONFIG``, else the pod's
service account (in-cluster), else ``~/.kube/config``; ``find_pod`` reads the
downward API. ``discover`` is the ``--k8s-events auto|on`` decision with the
one line to log when Events stay off. All of this is standard library (PyYAML
for a kubeconfig's syntax): ``kubernetes`` is imported only by
``KubeClient.connect``, which runs in the posting worker once the workload
runs (about 25 MiB of RSS and 0.3-0.6 s of imports).

``KubeClient.request`` is one call through the client's auth and TLS with
short timeouts and no retry of a request the server may have acted on;
``classify`` turns its failures into a reason (``ERROR_REASONS``, the labels
of ``sentinel_k8s_event_errors_total``) and a one-line message with the fix:
for 403, the RBAC rule to add (``RBAC_RULE``, the rule the chart's Role grants).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

from sentinel.exporters.event_bodies import PodRef
from sentinel.exporters.kubeenv import absolute_kubeconfig_env  # noqa: F401 - re-exported

CONNECT_TIMEOUT_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 5.0

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# A bigger file is refused as a kubeconfig, so that a wrong path to a huge file
# is not read into memory at start (kubectl's are a few KiB; a multi-cluster
# one with inline certificates some hundred KiB).
KUBECONFIG_MAX_BYTES = 16 * 2**20

# Where a kubeconfig came from (ClusterSource.origin).
FROM_FLAG = "--kubeconfig"
FROM_ENV = "$KUBECONFIG"
FROM_HOME = "~/.kube/config"

RBAC_RULE = ('{apiGroups: ["events.k8s.io", ""], resources: ["events"], '
             'verbs: ["create", "patch"]}')

# Failure kinds, the label values of sentinel_k8s_event_errors_total{reason}.
ERROR_REASONS = ("config", "forbidden", "unauthorized", "not_found", "invalid", "conflict",
                 "throttled", "server_error", "timeout", "unreachable", "queue_full", "other")


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


def discover(kubeconfig: str | None, mode: str, environ=None):
    """Where Events go under ``--k8s-events auto|on``: ``(source, pod, None, None)`` when on,
    else ``(None, None, why_off, warning)`` where ``warning`` is the one line to log at
    warning level (``None``: log ``why_off`` at debug only).

    A kubeconfig that cannot be used is a warning whatever the mode when named by
    ``--kubeconfig``, and when Events would be on otherwise; a missing cluster or pod is a
    warning under ``on`` only.
    """
    env = os.environ if environ is None else environ
    source = find_cluster(kubeconfig, env)
    pod = find_pod(source, env)
    if source is not None and (source.origin == FROM_FLAG or pod is not None):
        problems = kubeconfig_problems(source)
        if problems:
            message = kubeconfig_warning(source, problems)
            return None, None, message, f"Kubernetes Events off: {message}"
    if source is not None and pod is not None:
        return source, pod, None, None
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
    warning = one_line(f"--k8s-events on: {why}; kills will not be recorded as Events. "
                       f"Fix: {fix}") if mode == "on" else None
    return None, None, why, warning


def kubeconfig_warning(source: ClusterSource, problems: list[tuple[str, str]]) -> str:
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


class KubeClient:
    """The API server of ``source``, through the ``kubernetes`` client (imported by
    ``connect``, never before). ``request`` raises the client's ``ApiException`` for a
    non-2xx answer and urllib3's errors for timeouts and refused connections.
    ``timeout``: (connect, read) seconds."""

    def __init__(self, source: ClusterSource, *, version: str = "",
                 timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)) -> None:
        self.source = source
        self.version = version
        self.timeout = timeout
        self.api = None  # kubernetes.client.ApiClient once connected
        self.exceptions = None  # the client's exception classes
        self._urllib3 = None

    def connect(self) -> None:
        """Import the client and load the configuration. Raises whatever loading raises
        (a broken kubeconfig, a missing token, a bad certificate)."""
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
        self.exceptions = exceptions
        self._urllib3 = urllib3
        self.api = api

    def request(self, method: str, path: str, body=None, content_type="application/json"):
        """One call through the client's auth and TLS; returns the decoded JSON answer.

        Raises the client's ``ApiException`` for a non-2xx answer, urllib3
        errors for timeouts and connection failures.
        """
        api = self.api
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = api.param_serialize(method=method, resource_path=path, header_params=headers,
                                     body=body, auth_settings=["BearerToken"])
        resp = api.call_api(*params, _request_timeout=self.timeout)
        resp.read()
        text = (resp.data or b"").decode("utf-8", errors="replace")
        if not 200 <= resp.status <= 299:
            raise self.exceptions.ApiException(http_resp=resp, body=text, data=None)
        return json.loads(text) if text else {}

    def group_missing(self, exc) -> bool:
        """After a 404 on create: is it the API group that is missing (not the namespace)?"""
        details = _status_of(exc).get("details") or {}
        if details.get("kind") == "namespaces":
            return False
        try:
            self.request("GET", "/apis/events.k8s.io/v1")
        except Exception as disc:
            return getattr(disc, "status", None) == 404
        return False

    def close(self) -> None:
        api, self.api = self.api, None
        if api is not None:
            try:
                api.close()
            except Exception:
                pass

    def classify(self, exc, verb: str, namespace: str) -> tuple[str, str]:
        """A failed request as ``(reason, message)``: ``reason`` one of ``ERROR_REASONS``, the
        message one line with the fix (for 403, the RBAC rule to add)."""
        status = getattr(exc, "status", None)
        ns = namespace
        if status is not None and self.exceptions is not None and isinstance(exc, self.exceptions.ApiException):
            st = _status_of(exc)
            msg = st.get("message") or (getattr(exc, "body", "") or "").strip()[:300] \
                or getattr(exc, "reason", "")
            if status == 403:
                return ("forbidden", f"the API server refused to {verb} Events in namespace "
                        f"{ns} (403 Forbidden: {msg}); kills are enforced but not recorded. "
                        f"Fix: add the rule {RBAC_RULE} to a Role bound (RoleBinding) to the "
                        "pod's service account")
            elif status == 401:
                return ("unauthorized", f"the API server rejected Sentinel's credentials "
                        f"(401 Unauthorized: {msg}). Fix: in a pod, keep "
                        "automountServiceAccountToken on; outside, check the kubeconfig's "
                        f"user ({self.source.describe()})")
            elif status == 404:
                return ("not_found", f"cannot {verb} Events in namespace {ns} (404: {msg}). "
                        "Fix: set POD_NAMESPACE from the downward API (fieldRef "
                        "metadata.namespace)")
            elif status == 422 or status == 400:
                return ("invalid", f"the API server rejected an Event as invalid ({status}: "
                        f"{msg}); this is a Sentinel bug, please report it with this line")
            elif status == 409:
                return ("conflict", f"an Event with the same name already exists (409: {msg})")
            elif status == 429:
                return ("throttled", f"the API server is throttling requests (429: {msg}); "
                        "Events are dropped meanwhile")
            elif status >= 500:
                return ("server_error", f"the API server failed ({status}: {msg}); Events "
                        "are dropped meanwhile")
            elif status == 0:
                return ("unreachable", f"cannot reach the API server: {msg}")
            else:
                return ("other", f"the API server answered {status} to {verb}: {msg}")
        u3 = self._urllib3
        root = getattr(exc, "reason", None) if isinstance(exc, u3.exceptions.MaxRetryError) \
            else exc
        # NewConnectionError subclasses ConnectTimeoutError in urllib3: test it first.
        if isinstance(root, (u3.exceptions.TimeoutError, TimeoutError)) and not isinstance(
                root, u3.exceptions.NewConnectionError):
            return ("timeout", f"the API server did not answer within "
                    f"{self.timeout[1]:.0f}s; Events are dropped while it is slow (kills are "
                    "not delayed)")
        elif isinstance(root, (u3.exceptions.HTTPError, OSError)):
            return ("unreachable", f"cannot reach the API server via "
                    f"{self.source.describe()}: {root}. Fix: check the pod's network policy "
                    "allows egress to the API server")
        else:
            return ("other", f"sending an Event failed: {exc!r}")


def _status_of(exc) -> dict:
    """The ``Status`` object in an API error's body, or ``{}``."""
    try:
        body = json.loads(getattr(exc, "body", None) or "{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) and body.get("kind") == "Status" else {}
