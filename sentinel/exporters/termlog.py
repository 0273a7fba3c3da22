"""The termination message: why Sentinel killed the workload, for ``kubectl describe pod``.

When a kill Sentinel made is over (``kill_finished``), a short summary (the
reason, the measure against the limit, the PIDs, SIGTERM and/or SIGKILL with
the grace used, the exit code) replaces the contents of the termination-log
file. The kubelet reads that file when the container ends and shows it as
the container's ``lastState.terminated.message``; it keeps at most 4096
bytes, so the summary is cut to that. A kernel OOM kill (``kernel_oom_kill``)
is written too, named ``KernelOOMKill`` as its Event is. Nothing is written when no kill
happened, so a workload's own exit leaves the file as it was. With several programs
(``sentinel run --config``) the message names the program whose kill or exit ended
the container and lists the other programs' kills briefly (``TerminationLog``).

The default path, ``/dev/termination-log``, is used only when it already
exists (the kubelet mounts it into every container), so Sentinel never
creates files in ``/dev`` outside Kubernetes. A path given with
``--termination-log`` / ``SENTINEL_TERMINATION_LOG`` is created if needed.
A write that fails is logged once as a warning and never changes the exit
code.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from sentinel import logs
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
    dry = bool(kill.get("dry_run"))
    parts = [f"DRY RUN: Sentinel would have stopped {workload!r}: {why}." if dry
             else f"Sentinel {verb} {workload!r}: {why}."]
    if value is not None or limit is not None:
        parts.append(f"{measure} {fmt_bytes(value)} ({value} bytes), limit {fmt_bytes(limit)} "
                     f"({limit} bytes).")
    grace = kill.get("grace_period_seconds") or 0.0
    if dry:  # --dry-run: the ladder ran on schedule and sent nothing
        parts.append("Would have sent " + (" then ".join(signals) or "no signal")
                     + f" ({grace:.1f}s grace period); dry run: no signal was sent.")
        signals = []
        kill = {**kill, "reached": {}}
    elif not signals:
        parts.append("No signal reached it.")
    elif len(signals) == 1 and signals[0] != "SIGKILL" and confirmed:  # SIGTERM or stop-signal
        parts.append(f"Sent {signals[0]}; it exited within the {grace:.1f}s grace period.")
    elif len(signals) == 2 and signals[1] == "SIGKILL" and signals[0] != "SIGKILL":
        parts.append(f"Sent {signals[0]}, then SIGKILL after the {grace:.1f}s grace period.")
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
    if kills_total and not dry:
        parts.append(f"Kills by Sentinel so far: {kills_total}.")
    hook = kill.get("pre_kill_hook")
    if hook:  # the evidence comes last: what is left of the 4096 bytes
        how = ("timed out" if hook.get("timed_out") else f"exit code {hook.get('exit_code')}")
        parts.append(f"Pre-kill hook ({how}, {hook.get('seconds', 0):.1f}s) output: "
                     + (hook.get("output") or "").strip())
    text = " ".join(parts) + "\n"
    data = text.encode()
    if len(data) > MAX_BYTES:
        text = data[: MAX_BYTES - 4].decode(errors="ignore") + "...\n"
    return text


def _brief(kill: dict) -> str:
    """A few words on one kill, for the list of other programs' kills."""
    why = _WHY.get(kill.get("reason"), str(kill.get("reason")))
    signals = " then ".join(kill.get("signals") or []) or "no signal reached it"
    code = kill.get("exit_code")
    return f"{why} ({signals}" + (f", exit code {code})" if code is not None else ")")


class _Outcome:
    """A program's latest kill (or, for the main program, exit) as the message tells it."""

    __slots__ = ("reason", "text", "brief", "seq")

    def __init__(self, reason: str, text: str, brief: str, seq: int) -> None:
        self.reason, self.text, self.brief, self.seq = reason, text, brief, seq


class TerminationLog:
    """A host listener that writes ``summary()`` to ``path`` after each kill.

    With several programs (``host.multi``) the message is about the program whose
    kill or exit ended the container, named first: the main program's latest kill or
    exit when it has one (its exit ends the container), else the latest kill that was
    not Sentinel's own shutdown (a shutdown stops every program: a consequence, not a
    cause). The other programs' kills follow in a few words each, within
    ``MAX_BYTES``. The main program's exit is written only once some program was
    killed (no kill: the file is left as it was, as with one program).
    """

    name = COMPONENT

    def __init__(self, path: str, *, create: bool, workload: str, host=None) -> None:
        self.path = path
        self.create = create
        self.workload = workload
        self.host = host
        self.multi = bool(getattr(host, "multi", False))
        self.kills = 0
        self.kills_by_program: dict[str, int] = {}
        self.written = 0
        self._warned = False
        self._outcomes: dict[str, _Outcome] = {}
        self._seq = 0

    def _main_program(self) -> str:
        find = getattr(self.host, "program", None)
        if callable(find):
            try:
                st = find(None).state
                return st.program or st.workload
            except Exception:  # no main program
                pass
        return self.workload

    def __call__(self, event: Event) -> None:
        if logs.secrets_registered():  # redacted before the message is cut to 4 KiB
            event = dataclasses.replace(event, message=logs.redact(event.message),
                                        fields=logs.redact_obj(event.fields))
        program = event.program or self.workload
        if event.kind == "kernel_oom_kill":
            self.kills += 1
            n = self.kills_by_program[program] = self.kills_by_program.get(program, 0) + 1
            if not self.multi:
                self.write(kernel_oom_summary(event.fields, self.workload, self.kills))
                return
            kill = event.fields.get("kill") or {}
            self._record(program, REASON_KERNEL_OOM,
                         kernel_oom_summary(event.fields, program, n),
                         f"the kernel's OOM killer (SIGKILL, exit code "
                         f"{kill.get('exit_code', 137)})")
            return
        if event.kind == "exited" and self.multi and self.kills \
                and program == self._main_program():
            code = event.fields.get("exit_code")
            self._record(program, "exit", f"Main program {program!r} exited with code {code}; "
                         "the container ends with it.\n", f"exited with code {code}")
            return
        if event.kind != "kill_finished":
            return
        kill = event.fields.get("kill") or {}
        if kill.get("reason") == REASON_KERNEL_OOM:  # written at its kernel_oom_kill
            return
        if not kill.get("dry_run"):  # a dry run killed nothing: not counted
            self.kills += 1
        n = self.kills_by_program[program] = self.kills_by_program.get(program, 0) + 1
        if not self.multi:
            self.write(summary(kill, self.workload, self.kills))
            return
        self._record(program, str(kill.get("reason")), summary(kill, program, n), _brief(kill))

    def _record(self, program: str, reason: str, text: str, brief: str) -> None:
        self._seq += 1
        self._outcomes[program] = _Outcome(reason, text, brief, self._seq)
        self.write(self.message())

    def message(self) -> str:
        """The message for several programs: the one that ended the container first, then
        the other programs' kills briefly; at most ``MAX_BYTES``."""
        outcomes = self._outcomes
        causes = {p: o for p, o in outcomes.items() if o.reason != "shutdown"} or outcomes
        main = self._main_program()
        first = main if main in causes else max(causes, key=lambda p: causes[p].seq)
        others = [f"{p}: {self.kills_by_program.get(p, 0)} kill(s), last {o.brief}"
                  for p, o in sorted(outcomes.items(), key=lambda item: -item[1].seq)
                  if p != first and self.kills_by_program.get(p)]
        tail = ""
        if others:
            tail = " Other programs: " + "; ".join(others) + "."
            if len(tail.encode()) > MAX_BYTES // 4:  # the cause keeps most of the room
                tail = tail.encode()[: MAX_BYTES // 4 - 4].decode(errors="ignore") + "..."
        head = f"{first}: {outcomes[first].text.rstrip()}"
        room = MAX_BYTES - len(tail.encode()) - 1
        if len(head.encode()) > room:
            head = head.encode()[: room - 3].decode(errors="ignore") + "..."
        return head + tail + "\n"

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
    writer = TerminationLog(path, create=explicit, workload=settings.workload_name,
                            host=guardian)
    guardian.listeners.append(writer)
    comps[COMPONENT] = f"on: {path}"
    return [writer]
