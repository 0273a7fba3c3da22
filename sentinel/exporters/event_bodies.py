"""Kubernetes Event bodies: which guardian events are reported, and as what. Pure.

``record_for(event, workload, multi=...)`` turns a guardian ``Event`` into a
``Record`` (type ``Normal``/``Warning``, a stable UpperCamelCase reason, the
action, a note of at most 1024 bytes, the program it is about) or ``None``;
``events_v1_body`` and ``core_v1_body`` make the API object about a pod
(``regarding`` / ``involvedObject``); ``event_name`` names it as client-go does.

An Event about a program (``Event.program``; "" is Sentinel's own) names it
twice. With several programs (``host.multi``) the note starts with
``"<program>: "``, for people. And always, for selectors, ``related`` is
``{"apiVersion": "sentinel.dev/v1", "kind": "Program", "name": <program>,
"namespace": <pod's>}``: ``regarding`` stays the pod (``kubectl describe pod``
and every Event tool find it there), ``reportingInstance`` stays the pod's name
(Sentinel's identity; client-go keys its series on it), ``action`` stays the
signal. ``related`` is the Event schema's place for a second object the action
was about; the API server stores it without resolving it (ValidateEventCreate
checks ``regarding``'s namespace, nothing of ``related``), so naming the program
there costs no RBAC and no CRD (none is served: it names, it does not point), and
``kubectl get events -o jsonpath='{.items[?(@.related.name=="web")]}'`` (or
``jq 'select(.related.name == "web")'``) picks one program's Events. No I/O, no
``kubernetes`` import: bodies are plain dicts (the client's models drop the
six fractional digits a ``MicroTime`` needs, kubernetes-client/python#730).
The limits are the API server's (k8s.io/kubernetes
pkg/apis/core/validation/events.go).
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from dataclasses import dataclass

from sentinel import logs

from sentinel.core.state import REASON_KERNEL_OOM, REASON_MEMORY, REASON_OPERATOR, Event
from sentinel.logs import fmt_bytes

# A domain-qualified name, as the API requires of reportingController.
REPORTING_CONTROLLER = "sentinel.dev/guardian"
# Limits the API server enforces (k8s.io/kubernetes pkg/apis/core/validation/events.go).
NOTE_MAX_BYTES = 1024
REASON_MAX = ACTION_MAX = REPORTING_INSTANCE_MAX = 128
NAME_MAX = 253
# client-go's tools/events keeps a series open this long after its last
# observation (finishTime = 6 minutes); a repeat after that starts a new Event.
SERIES_WINDOW_SECONDS = 360.0

# Event reasons: stable UpperCamelCase words.
EVENT_MEMORY = "MemoryLimitExceeded"
EVENT_OPERATOR_STOP = "OperatorStop"
EVENT_OPERATOR_KILL = "OperatorKill"
EVENT_TARGET_NOT_SIGNALABLE = "TargetNotSignalable"
EVENT_SIGNAL_REFUSED = "SignalRefused"  # a process of the workload refused a ladder signal
EVENT_SAMPLING_FAILED = "SamplingFailed"
EVENT_KERNEL_OOM = "KernelOOMKill"  # the kernel's OOM killer took a workload process first
EVENT_PRE_KILL_HOOK = "PreKillHook"  # the pre-kill hook ran before a memory kill's SIGTERM

API_EVENTS_V1 = "events.k8s.io/v1"
API_CORE_V1 = "v1"
# Where each API version's Events are created (POST) and patched (PATCH .../<name>).
EVENT_PATHS = {API_EVENTS_V1: "/apis/events.k8s.io/v1/namespaces/{ns}/events",
               API_CORE_V1: "/api/v1/namespaces/{ns}/events"}
PATCH_CONTENT_TYPE = "application/strategic-merge-patch+json"


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


def kernel_oom_note(fields: dict, workload: str) -> str:
    """What a ``kernel_oom_kill`` event's ``fields`` say, in words: the kernel killed PID N
    because the cgroup hit its limit (both numbers: the cgroup's limit, Sentinel's limit
    on its measure and the last sample of it), why (Sentinel's limit sits too close to or
    above the container's) and the fix. Shared by the Event and the termination message."""
    kill = fields.get("kill") or {}
    pid = fields.get("pid")
    cgroup_limit = fields.get("cgroup_limit_bytes")
    limit = kill.get("limit_bytes")
    measure = kill.get("measure") or "rss"
    delta = fields.get("oom_kills_delta")
    who = f"PID {pid}" if pid is not None else "a process"
    code = kill.get("exit_code")
    text = (f"The kernel's OOM killer killed {who} of workload {workload!r} (SIGKILL"
            f"{f', exit code {code}' if code is not None else ''}) because the container's "
            "cgroup hit its memory "
            f"limit ({_size(cgroup_limit) if cgroup_limit is not None else 'limit unknown'})"
            f" before Sentinel's limit did (limit {_size(limit)} on {measure}, last sample "
            f"{_size(kill.get('value_bytes'))}).")
    if delta and delta > 1:
        text += f" The cgroup's oom_kill counter rose by {delta}."
    if limit is None:
        where = "Sentinel had no limit set"
    elif cgroup_limit is not None and limit >= cgroup_limit:
        where = "Sentinel's limit sits above the container's"
    else:
        where = "Sentinel's limit sits too close to the container's (or its measure misses " \
                "what the cgroup is charged: page cache, tmpfs, kernel memory)"
    return (f"{text} {where}: lower --max-rss, or use --max-rss auto or --measure "
            "working-set so Sentinel stops it with SIGTERM first.")


@dataclass(frozen=True)
class Record:
    """What to report: an Event minus the pod and the API version."""

    type: str  # "Normal" or "Warning"
    reason: str  # UpperCamelCase, at most 128 characters
    action: str  # machine-readable, e.g. "SIGTERM", at most 128 characters
    note: str  # human-readable, at most NOTE_MAX_BYTES bytes
    at_wall: float
    program: str = ""  # the program it is about (``related``); "" for Sentinel's own


# The made-up object ``related`` names a program by (see the module's docstring).
PROGRAM_API_VERSION = "sentinel.dev/v1"
PROGRAM_KIND = "Program"


def program_reference(program: str, namespace: str) -> dict:
    """The ``related`` object reference naming ``program`` (in the pod's namespace)."""
    return {"apiVersion": PROGRAM_API_VERSION, "kind": PROGRAM_KIND, "name": program,
            "namespace": namespace}


def record_for(event: Event, workload: str, *, multi: bool = False) -> Record | None:
    """The ``Record`` for ``event`` (see ``_record``), about ``event.program`` (its name
    stands for ``workload`` in the note); with ``multi`` (several programs) the note
    starts with ``"<program>: "``. Sentinel's own events (``program`` "") are as
    they were: no prefix, no program."""
    program = event.program
    if logs.secrets_registered():  # redacted before any cut: never half a secret
        event = dataclasses.replace(event, message=logs.redact(event.message),
                                    fields=logs.redact_obj(event.fields))
    rec = _record(event, program or workload)
    if rec is None or not program:
        return rec
    note = truncate_utf8(f"{program}: {rec.note}", NOTE_MAX_BYTES) if multi else rec.note
    return Record(rec.type, rec.reason, rec.action, note, rec.at_wall, program)


def _record(event: Event, workload: str) -> Record | None:
    """The ``Record`` for a guardian ``Event``, or ``None`` if it is not reported.

    ``signal_sent`` (a kill step: SIGTERM starting the ladder, or SIGKILL),
    ``attach_failed`` (watch mode: a target Sentinel may not signal),
    ``sampling_failed`` (Warning ``SamplingFailed``: sampling fails persistently) and
    ``kernel_oom_kill`` (Warning ``KernelOOMKill``: the kernel's OOM killer took a
    workload process before Sentinel's limit was reached) are reported; everything
    else is not. Memory kills are ``Warning``s, operator stops ``Normal``; a SIGKILL
    after an ignored SIGTERM is always a ``Warning``.
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
    if event.kind == "kernel_oom_kill":  # the kernel got there first: Sentinel's limit is off
        return Record("Warning", EVENT_KERNEL_OOM, "SIGKILL",
                      truncate_utf8(kernel_oom_note(f, workload), NOTE_MAX_BYTES),
                      event.at_wall)
    if event.kind == "pre_kill_hook":
        return _hook_record(event, workload)
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
    if sig != "SIGKILL":  # the ladder's first signal: SIGTERM, or the program's stop-signal
        what = (f"Sent {sig} to workload {workload!r} (pids {_pids_text(pids)}); SIGKILL "
                f"after the {grace:.1f}s grace period unless it exits.")
        reaction = f.get("reaction_seconds")
        if reaction is not None:
            what += f" Reaction {reaction * 1000:.0f} ms after the crossing."
        ev_type = "Warning" if reason == REASON_MEMORY else "Normal"
    else:
        first = next((s for s in signals if s != "SIGKILL"), None)
        if first is not None:
            what = (f"Sent SIGKILL to workload {workload!r} (pids {_pids_text(pids)}): it was "
                    f"still running {grace:.1f}s after {first}.")
            ev_type = "Warning"
        else:
            what = f"Sent SIGKILL to workload {workload!r} (pids {_pids_text(pids)}), no grace."
            ev_type = "Warning" if reason == REASON_MEMORY else "Normal"
    if refused:
        what += (f" Not sent to pids {_pids_text([r['pid'] for r in refused])} (uid "
                 f"{_pids_text(sorted({str(r['uid']) for r in refused}))}): permission denied.")
    if f.get("dry_run"):  # --dry-run: the same Event, saying nothing was sent
        what = "DRY RUN, no signal sent: would have s" + what[1:]
    return Record(ev_type, ev_reason, sig, truncate_utf8(f"{why} {what}", NOTE_MAX_BYTES),
                  event.at_wall)


def _hook_record(event: Event, workload: str) -> Record:
    """The ``pre_kill_hook`` event as its own Event (``PreKillHook``): ``Normal`` when
    the hook exited 0, else ``Warning``; the note says how it ended, then as much of its
    output (``fields["output"]``, already at most 4 KiB) as the 1024 bytes leave."""
    f = event.fields
    kill = f.get("kill") or {}
    command = " ".join(f.get("command") or [])
    if f.get("error"):
        how = f"could not be started ({f['error']})"
    elif f.get("timed_out"):
        how = f"timed out after {f.get('seconds', 0):.1f}s and was killed"
    else:
        how = f"exited with code {f.get('exit_code')} after {f.get('seconds', 0):.1f}s"
    ok = not f.get("error") and not f.get("timed_out") and f.get("exit_code") == 0
    head = (f"Pre-kill hook {command!r} for workload {workload!r} (pid "
            f"{_pids_text((kill.get('pids') or [])[:1])}, {kill.get('measure') or 'rss'} "
            f"{_size(kill.get('value_bytes'))}, limit {_size(kill.get('limit_bytes'))}) {how}"
            + (" (dry run)" if kill.get("dry_run") else "") + ". Output: ")
    output = (f.get("output") or "").strip() or "(none)"
    return Record("Normal" if ok else "Warning", EVENT_PRE_KILL_HOOK, "PreKillHook",
                  truncate_utf8(head + output, NOTE_MAX_BYTES), event.at_wall)


def events_v1_body(rec: Record, pod: PodRef, name: str) -> dict:
    """An ``events.k8s.io/v1`` Event for ``rec`` about ``pod``."""
    return {
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name, "namespace": pod.namespace},
        "eventTime": micro_time(rec.at_wall),
        "type": rec.type, "reason": rec.reason[:REASON_MAX], "action": rec.action[:ACTION_MAX],
        "note": rec.note,
        "regarding": pod.reference(),
        **({"related": program_reference(rec.program, pod.namespace)} if rec.program else {}),
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
        **({"related": program_reference(rec.program, pod.namespace)} if rec.program else {}),
        "type": rec.type, "reason": rec.reason[:REASON_MAX], "message": rec.note,
        "action": rec.action[:ACTION_MAX],
        "source": {"component": "sentinel"},
        "reportingComponent": REPORTING_CONTROLLER,
        "reportingInstance": pod.name[:REPORTING_INSTANCE_MAX],
        "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
    }


def series_patch(api_version: str, count: int, at_wall: float) -> dict:
    """The PATCH that bumps an Event's series to ``count``, last observed at ``at_wall``:
    ``series`` for ``events.k8s.io/v1``, ``count``/``lastTimestamp`` for core v1."""
    if api_version == API_EVENTS_V1:
        return {"series": {"count": count, "lastObservedTime": micro_time(at_wall)}}
    return {"count": count, "lastTimestamp": rfc3339(at_wall)}
