"""The control socket's verbs: one table, one entry per verb, and the dispatcher.

As circus's ``circus/commands/`` does, each verb is one ``Verb``: its name,
its argument grammar (usage line and argument count), its help text and its
handler ``handler(guardian, args, socket_info) -> dict | bytes`` (the reply's
fields, or the raw bytes of the ``status text`` form). ``help`` and the
"Commands" section of docs/control-socket.md come from ``VERBS`` (a unit test
keeps the doc equal to ``verbs_markdown()``). Adding a verb is adding one
handler and one entry.

The handlers use only the guardian's public surface: ``stop()``, ``kill()``,
``send_signal(sig)``, ``set_limit(bytes | None)``, ``pause()``, ``resume()``
(each returns a message or raises ``ValueError`` when it cannot act now) and
the ``state`` they read. ``Dispatcher.handle`` turns one command line into
one ``Reply`` and never raises.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Union

from sentinel.config.settings import NO_LIMIT_WORDS, parse_limit, parse_signal, signal_name
from sentinel.control.client import status_text
from sentinel.control.snapshot import kernel_view
from sentinel.probes.figures import FIGURES
from sentinel.control.protocol import (
    PROTOCOL_VERSION, CommandError, Peer, Reply, encode, error_reply, split_words,
)
from sentinel.logs import LOGGER_NAME, fmt_bytes

log = logging.getLogger(LOGGER_NAME)

# handler(guardian, args, socket_info) -> the reply's fields, or a raw reply (status text)
Handler = Callable[[Any, list, Callable[[], dict]], Union[dict, bytes]]


@dataclass(frozen=True)
class Verb:
    """One control verb. ``usage`` and ``min_args``..``max_args`` are its argument grammar
    (the handler parses the arguments themselves); ``changes``: it acts on the workload or
    the limit, so it is logged with the peer."""

    name: str
    usage: str
    help: str
    min_args: int
    max_args: int
    handler: Handler
    changes: bool


def _call(method: Callable[..., str], *args) -> dict:
    """Run a guardian command; its ``ValueError`` (it cannot act now) is ``invalid_state``."""
    try:
        return {"message": method(*args)}
    except ValueError as exc:
        raise CommandError("invalid_state", str(exc)) from None


# ---------------------------------------------------------------- handlers


def _status(guardian, args: list[str], socket_info: Callable[[], dict]) -> dict | bytes:
    status = status_dict(guardian, socket_info())
    if not args:
        return {"status": status}
    if args[0].lower() == "text":
        return (status_text(status) + "\n\n").encode("utf-8", "backslashreplace")
    if args[0].lower() == "json":
        return {"status": status}
    if args[0].lower() == "dashboard":  # sentinel top: history, events, command lines
        from sentinel.control import snapshot  # stdlib only; psutil loads off the loop

        return {"status": status,
                "dashboard": snapshot.snapshot(guardian.state, snapshot.SERVER_NAMES)}
    raise CommandError("bad_argument", "usage: status [text|json|dashboard]")


def _stop(guardian, args: list[str], socket_info) -> dict:
    return _call(guardian.stop)


def _kill(guardian, args: list[str], socket_info) -> dict:
    return _call(guardian.kill)


def _signal(guardian, args: list[str], socket_info) -> dict:
    try:
        sig = parse_signal(args[0])
    except ValueError as exc:
        raise CommandError("bad_argument", str(exc)) from None
    return {"signal": signal_name(sig), **_call(guardian.send_signal, sig)}


def _limit(guardian, args: list[str], socket_info) -> dict:
    st = guardian.state
    if args:
        if args[0].lower() in NO_LIMIT_WORDS:
            limit = None
        else:
            try:
                limit = parse_limit(args[0])
            except ValueError as exc:
                raise CommandError("bad_argument", f"{exc}, or 'none'") from None
        out = _call(guardian.set_limit, limit)
        if limit is None:
            out["message"] = "no limit (watching only)"
    else:
        out = {"message": f"limit {fmt_bytes(st.limit_bytes)} on {st.measure}"
               if st.limit_bytes is not None else "no limit (watching only)"}
    return {"limit_bytes": st.limit_bytes, "measure": st.measure, **out}


def _pause(guardian, args: list[str], socket_info) -> dict:
    out = _call(guardian.pause)
    return {"enforcing": guardian.state.enforcing, **out}


def _resume(guardian, args: list[str], socket_info) -> dict:
    out = _call(guardian.resume)
    return {"enforcing": guardian.state.enforcing, **out}


def _help(guardian, args: list[str], socket_info) -> dict:
    return {"protocol": PROTOCOL_VERSION,
            "commands": [{"name": v.name, "usage": v.usage, "help": v.help}
                         for v in VERBS.values()],
            "message": "commands: " + ", ".join(v.usage for v in VERBS.values())}


# ---------------------------------------------------------------- the table
# The order is the order of 'help' and of the docs.

VERBS: dict[str, Verb] = {v.name: v for v in (
    Verb("status", "status [text|json|dashboard]", "state, workload, memory figures, limit, "
         "kills; 'text': readable lines ending with an empty line; 'dashboard': also the "
         "snapshot `sentinel top` draws", 0, 1, _status, False),
    Verb("stop", "stop", "stop the workload: SIGTERM, then SIGKILL after the grace period "
         "(an operator kill; no restart)", 0, 0, _stop, True),
    Verb("kill", "kill", "SIGKILL the workload's whole tree now (no restart)", 0, 0,
         _kill, True),
    Verb("signal", "signal NAME", "send one signal to the workload (TERM, SIGHUP, 10, ...)",
         1, 1, _signal, True),
    Verb("limit", "limit [SIZE|none]", "show the limit; with SIZE (200Mi, 1.5Gi, 512M, "
         "...) set it; 'none' removes it", 0, 1, _limit, True),
    Verb("pause", "pause", "stop enforcing the limit (sampling goes on)", 0, 0, _pause, True),
    Verb("resume", "resume", "enforce the limit again", 0, 0, _resume, True),
    Verb("help", "help", "list the commands", 0, 0, _help, False),
)}


def verbs_markdown() -> str:
    """The verb table as the Markdown table docs/control-socket.md holds (one row a verb)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")  # GitHub's tables: an escaped pipe, even in code

    rows = ["| Verb | Usage | What it does |", "|---|---|---|"]
    rows += [f"| `{v.name}` | `{cell(v.usage)}` | {cell(v.help)} |" for v in VERBS.values()]
    return "\n".join(rows) + "\n"


class Dispatcher:
    """Turns one command line into one ``Reply`` by running its verb from ``VERBS``.

    ``guardian`` is a ``sentinel.core.guardian.Guardian`` (only its ``state`` and
    command methods are used). ``socket_info`` returns the server's part of
    ``status`` (path, clients). Runs on the guardian's loop.
    """

    def __init__(self, guardian, socket_info: Callable[[], dict] | None = None) -> None:
        self.guardian = guardian
        self.socket_info = socket_info or (lambda: {})

    def handle(self, line: bytes, peer: Peer | None = None) -> Reply:
        """Parse and run ``line`` (without its newline). Never raises."""
        verb_name = None
        try:
            words = split_words(line)
            verb_name = words[0].lower()
            verb = VERBS.get(verb_name)
            if verb is None:
                verb_name = None
                raise CommandError("unknown_command", f"unknown command {words[0][:40]!r}; "
                                   "commands: " + ", ".join(VERBS) + " (see 'help')")
            args = words[1:]
            if not verb.min_args <= len(args) <= verb.max_args:
                raise CommandError("bad_argument", f"usage: {verb.usage}")
            if verb.changes and (args or verb.name != "limit"):
                log.info("control socket: %r from %s", " ".join(words)[:200],
                         peer or "an unknown peer", extra={"event": "control_command"})
            result = verb.handler(self.guardian, args, self.socket_info)
            if isinstance(result, bytes):
                return Reply(result, ok=True)
            return Reply(encode({"ok": True, "command": verb.name, **result}), ok=True)
        except CommandError as exc:
            return error_reply(exc.code, exc.message, verb_name)
        except Exception as exc:  # a bug here must not reach the client as a traceback
            log.warning("control socket: command %r failed: %r", line[:80], exc,
                        exc_info=log.isEnabledFor(logging.DEBUG),
                        extra={"event": "control_error"})
            return error_reply("internal", f"internal error ({type(exc).__name__}); see "
                               "Sentinel's log", verb_name)


# ---------------------------------------------------------------- the status object


def _sampling_status(guardian) -> dict:
    """Whether sampling works, and Sentinel's descriptors: its RLIMIT_NOFILE now and
    as given (the workload's), and how many the probe keeps open."""
    from sentinel.core import fdlimit

    st = guardian.state
    (soft, hard), given = fdlimit.limits(), fdlimit.given()
    return {"failing": st.sampling_failing, "failure": st.sampling_failure,
            "failing_since": st.sampling_failing_since_wall,
            "nofile_soft_limit": soft, "nofile_hard_limit": hard,
            "nofile_given_soft_limit": given[0],
            "kept_descriptors": getattr(getattr(guardian, "probe", None), "kept_descriptors",
                                        None)}


def _log_status() -> dict:
    """Sentinel's own log output: lines dropped (stderr full or gone) and the last write error."""
    from sentinel import logs

    return logs.stats()


def status_dict(guardian, socket_info: dict | None = None) -> dict:
    """The ``status`` reply's object: numbers numeric, sizes in bytes, times in seconds
    (``*_seconds`` durations, Unix times for ``started``/``sigkill`` of a kill)."""
    st = guardian.state
    now_wall, now_mono = time.time(), time.monotonic()
    sample = st.last_sample
    memory = None
    if sample is not None:
        memory = {
            "measure_bytes": sample.measure_bytes, "rss_bytes": sample.rss_bytes,
            "pss_bytes": sample.pss_bytes, "uss_bytes": sample.uss_bytes,
            "cgroup_memory_current_bytes": sample.cgroup_memory_current_bytes,
            "cgroup_memory_max_bytes": sample.cgroup_memory_max_bytes,
            "cgroup_working_set_bytes": sample.cgroup_working_set_bytes,
            # ... and every other figure of the table the sample has (None: not read).
            **{fig.name: getattr(sample, fig.name, None) for fig in FIGURES},
            "sample_age_seconds": round(max(0.0, now_mono - sample.at_mono), 6),
            "sample_duration_seconds": sample.duration_seconds,
        }
    live = st.main_pid is not None
    pids = list(sample.pids) if sample is not None and live else (
        [st.main_pid] if live else [])
    headroom = (st.limit_bytes - sample.measure_bytes
                if sample is not None and st.limit_bytes is not None and live else None)
    grace_left = (round(max(0.0, st.grace_deadline_mono - now_mono), 3)
                  if st.grace_deadline_mono is not None and st.current_kill is not None
                  else None)
    return {
        "protocol": PROTOCOL_VERSION,
        "version": st.version,
        "sentinel_pid": os.getpid(),
        "pid1": st.pid1,
        "subreaper": st.subreaper,
        "mode": st.mode,
        "phase": st.phase,
        "stopped": st.stopped and live,  # the main process is in state T (SIGSTOP, SIGTSTP, ...)
        "stop_signal": st.stop_signal if live else None,
        "self_caused_signals": dict(st.self_caused_signals),  # raised by Sentinel's own writes
        # "SIGTERM" once Sentinel was told to shut down: it exits when the workload is gone.
        "shutdown_signal": st.shutdown_signal,
        "enforcing": st.enforcing,
        "workload": st.workload,
        "command": list(st.command),
        "main_pid": st.main_pid,
        "pids": pids,
        "processes": [{"pid": pid, "rss_bytes": rss} for pid, rss in sample.processes]
        if sample is not None and live else [],
        "measure": st.measure,
        "memory": memory,
        "limit_bytes": st.limit_bytes,
        "headroom_bytes": headroom,
        "interval_seconds": st.interval_seconds,
        "grace_period_seconds": st.grace_period_seconds,
        "uptime_seconds": round(max(0.0, now_wall - st.sentinel_started_wall), 3),
        "workload_uptime_seconds": round(max(0.0, now_wall - st.started_wall), 3)
        if live and st.started_wall is not None else None,
        "kills_total": st.kills_total(),
        "kills": [{"reason": r, "signal": s, "count": n}
                  for (r, s), n in sorted(st.kills.items())],
        "restarts": st.restarts,
        "last_exit_code": st.last_exit_code,
        "last_kill": st.last_kill.to_dict() if st.last_kill is not None else None,
        "current_kill": st.current_kill.to_dict() if st.current_kill is not None else None,
        "grace_remaining_seconds": grace_left,
        "sample_errors": [{"probe": p, "reason": r, "count": n}
                          for (p, r), n in sorted(st.sample_errors.items())],
        "sampling": _sampling_status(guardian),
        "log": _log_status(),
        "components": {str(k): str(v) for k, v in st.components.items()},
        "socket": socket_info or {},
        # cgroup (version, path, read_only, limit_bytes, high_bytes), kernel_oom_kills,
        # wakeups, kernel_notes: see control.snapshot.kernel_view.
        **kernel_view(st),
    }
