"""The termination message: why Sentinel killed the workload, for ``kubectl describe pod``.

When a kill Sentinel made is over (``kill_finished``), a short summary (the
reason, the measure against the limit, the PIDs, SIGTERM and/or SIGKILL with
the grace used, the exit code) replaces the contents of the termination-log
file. The kubelet reads that file when the container ends and shows it as
the container's ``lastState.terminated.message``; it keeps at most 4096
bytes, so the summary is cut to that. A kernel OOM kill (``kernel_oom_kill``)
is written too, named ``KernelOOMKill`` as its Event is. Nothing is written when no kill
happened, so a workload's own exit leaves the file as it was.

The default path, ``/dev/termination-log``, is used only when it already
exists (the kubelet mounts it into every container), so Sentinel never
creates files in ``/dev`` outside Kubernetes. A path given with
``--termination-log`` / ``SENTINEL_TERMINATION_LOG`` is created if needed.
A write that fails is logged once as a warning and never changes the exit
code.
"""

from __future__ import annotations

import logging
import os

from sentinel.logs import LOGGER_NAME, fmt_bytes
from sentinel.core.state import REASON_KERNEL_OOM, REASON_MEMORY, REASON_OPERATOR, Event
from sentinel.exporters.event_bodies import kernel_oom_note

log = logging.getLogger(LOGGER_NAME)

COMPONENT = "termination-log"
DEFAULT_PATH = "/dev/termination-log"
MAX_BYTES = 4096  # what the kubelet reads of it (terminationMessagePath)

_WHY = {REASON_MEMORY: "memory limit exceeded", REASON_OPERATOR: "operator request"}


def kernel_oom_summary(fields: dict, workload: str, kills_total: int | None = None) -> str:
    """The message for a kernel OOM kill (a ``kernel_oom_kill`` event's ``fields``),
    named as the Event names it (``KernelOOMKill``), at most ``MAX_BYTES``."""
    text = f"KernelOOMKill: {kernel_oom_note(fields, workload)}"
    if kills_total:
        text += f" Kills so far (Sentinel's and the kernel's): {kills_total}."
    data = (text + "\n").encode()
    if len(data) > MAX_BYTES:
        return data[: MAX_BYTES - 4].decode(errors="ignore") + "...\n"
    return text + "\n"


def summary(kill: dict, workload: str, kills_total: int | None = None) -> str:
    """The message for one finished kill (``KillRecord.to_dict()``), at most ``MAX_BYTES``."""
    why = _WHY.get(kill.get("reason"), str(kill.get("reason")))
    measure = kill.get("measure") or "rss"
    value, limit = kill.get("value_bytes"), kill.get("limit_bytes")
    signals = kill.get("signals") or []
    confirmed = kill.get("confirmed") is not False
    verb = "stopped" if signals and confirmed else "tried to stop"
    parts = [f"Sentinel {verb} {workload!r}: {why}."]
    if value is not None or limit is not None:
        parts.append(f"{measure} {fmt_bytes(value)} ({value} bytes), limit {fmt_bytes(limit)} "
                     f"({limit} bytes).")
    grace = kill.get("grace_period_seconds") or 0.0
    if not signals:
        parts.append("No signal reached it.")
    elif signals == ["SIGTERM"] and confirmed:
        parts.append(f"Sent SIGTERM; it exited within the {grace:.1f}s grace period.")
    elif signals == ["SIGTERM", "SIGKILL"]:
        parts.append(f"Sent SIGTERM, then SIGKILL after the {grace:.1f}s grace period.")
    elif signals:
        parts.append("Sent " + " then ".join(signals) + ".")
    reached = kill.get("reached") or {}
    for sig, pids in reached.items():  # which processes each signal actually reached
        shown = ", ".join(map(str, pids[:50]))
        parts.append(f"{sig} reached PIDs {shown}" + (f" and {len(pids) - 50} more."
                                                       if len(pids) > 50 else "."))
    pids = list(kill.get("pids") or [])
    if pids and not reached:
        shown = ", ".join(map(str, pids[:50]))
        parts.append(f"PIDs {shown}" + (f" and {len(pids) - 50} more." if len(pids) > 50
                                        else "."))
    refused = kill.get("refused") or []
    if refused:
        parts.append("Refused (permission denied) by " + ", ".join(
            f"pid {r['pid']} (uid {r['uid']})" for r in refused[:20]) + ".")
    if not confirmed:
        left = kill.get("survivors") or []
        parts.append("Not confirmed: still there " + ", ".join(
            f"pid {p['pid']} (state {p.get('state')}, rss {fmt_bytes(p.get('rss_bytes'))})"
            for p in left[:20]) + ".")
    if kill.get("exit_code") is not None:
        parts.append(f"Exit code {kill['exit_code']}.")
    elif not confirmed:
        parts.append("Exit status unknown.")
    if kills_total:
        parts.append(f"Kills by Sentinel so far: {kills_total}.")
    text = " ".join(parts) + "\n"
    data = text.encode()
    if len(data) > MAX_BYTES:
        text = data[: MAX_BYTES - 4].decode(errors="ignore") + "...\n"
    return text


class TerminationLog:
    """A guardian listener that writes ``summary()`` to ``path`` after each kill."""

    name = COMPONENT

    def __init__(self, path: str, *, create: bool, workload: str) -> None:
        self.path = path
        self.create = create
        self.workload = workload
        self.kills = 0
        self.written = 0
        self._warned = False

    def __call__(self, event: Event) -> None:
        if event.kind == "kernel_oom_kill":
            self.kills += 1
            self.write(kernel_oom_summary(event.fields, self.workload, self.kills))
            return
        if event.kind != "kill_finished":
            return
        kill = event.fields.get("kill") or {}
        if kill.get("reason") == REASON_KERNEL_OOM:  # written at its kernel_oom_kill
            return
        self.kills += 1
        self.write(summary(kill, self.workload, self.kills))

    def write(self, text: str) -> bool:
        """Replace the file's contents with ``text``; ``False`` (logged once) on failure."""
        flags = os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | (os.O_CREAT if self.create else 0)
        try:
            fd = os.open(self.path, flags, 0o644)
            try:
                os.write(fd, text.encode()[:MAX_BYTES])
            finally:
                os.close(fd)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot write the termination message to %s: %s; the kill summary "
                            "is only in this log. Fix: pass a writable --termination-log PATH "
                            "(or an empty one to turn it off)", self.path, exc.strerror or exc,
                            extra={"event": "termination_log"})
            return False
        self.written += 1
        return True

    def close(self) -> None:
        pass


def start(guardian, settings) -> list:
    """Subscribe a ``TerminationLog`` to ``guardian`` when a path is usable; return it in a list."""
    path = settings.termination_log
    comps = guardian.state.components
    if not path:
        comps[COMPONENT] = "off (empty --termination-log)"
        return []
    explicit = path != DEFAULT_PATH
    if not explicit and not os.path.exists(path):
        comps[COMPONENT] = f"off ({path} does not exist: not in a Kubernetes container)"
        return []
    writer = TerminationLog(path, create=explicit, workload=settings.workload_name)
    guardian.listeners.append(writer)
    comps[COMPONENT] = f"on: {path}"
    return [writer]
