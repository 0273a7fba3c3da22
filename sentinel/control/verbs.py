"""The control socket's verbs: one table, one entry per verb, and the dispatcher.

As circus's ``circus/commands/`` does, each verb is one ``Verb``: its name,
its argument grammar (usage line and argument count), its help text and its
handler ``handler(guardian, args, socket_info) -> dict | bytes`` (the reply's
fields, or the raw bytes of the ``status text`` form). ``help`` and the
"Commands" section of docs/control-socket.md come from ``VERBS`` (a unit test
keeps the doc equal to ``verbs_markdown()``). Adding a verb is adding one
handler and one entry.

The handlers use only the host's public surface (``sentinel.core.guardian.Guardian``
for one program, ``Group`` for several from a config file): ``host.program(NAME)``
(``None``: the main program; raises ``UnknownProgram``), each program's ``stop()``,
``kill()``, ``send_signal(sig)``, ``set_limit(bytes | None)``, ``pause()``,
``resume()``, the host's ``start_program(NAME)``, ``restart_program(NAME)``,
``reload()`` (each returns a message or raises ``StateError``, a ``ValueError``,
when it cannot act now: ``invalid_state``), and the ``state`` they read.
``UnknownProgram`` answers ``unknown_program`` with several programs. With several
programs the verbs of ``NAME_REQUIRED`` need a NAME. ``Dispatcher.handle`` turns
one command line into one ``Reply`` and never raises.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Union

from sentinel.config.settings import NO_LIMIT_WORDS, parse_limit, parse_signal, signal_name
from sentinel.control.client import status_text
from sentinel.control.snapshot import alerts_view
from sentinel.control.snapshot import (
    host_programs, is_multi, kernel_view, main_program, memory_dict, program_entry, program_name,
    program_names,
)
from sentinel.control.protocol import (
    PROTOCOL_VERSION, CommandError, Peer, Reply, encode, error_reply, split_words,
)
from sentinel.errors import UnknownProgram
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
    """Run a host or program command: its ``StateError`` (a ``ValueError``: it cannot act
    now) is ``invalid_state``, ``UnknownProgram`` is ``unknown_program``."""
    try:
        return {"message": method(*args)}
    except UnknownProgram as exc:
        raise CommandError("unknown_program", str(exc)) from None
    except ValueError as exc:
        raise CommandError("invalid_state", str(exc)) from None


# ---------------------------------------------------------------- programs
# A host (``sentinel.core.guardian.Guardian``, one program; ``Group``, several from a
# config file) has ``programs`` (start order), ``program(name | None)`` and ``multi``.
# An object with only a ``state`` (a test's stand-in) counts as one program.

# Verbs that, with several programs, need a NAME: acting on "the main program" by
# default would stop, kill, signal or re-limit a program the operator may not have
# meant. ``pause``/``resume`` act on the main program without one (they never
# signal anything), and ``limit`` without a size only shows.
NAME_REQUIRED = ("stop", "kill", "signal", "limit")


def target(host, name: str | None, verb: str):
    """The program ``verb`` acts on: ``host.program(name)``; without a name the main
    program, refused (``bad_argument``) for the verbs of ``NAME_REQUIRED`` when the
    host runs several programs. Raises ``CommandError`` (``unknown_program``)."""
    if name is None and is_multi(host) and verb in NAME_REQUIRED:
        usage = VERBS[verb].usage
        raise CommandError("bad_argument", f"{verb}: several programs run here; name one "
                           f"({usage}): {', '.join(program_names(host))}")
    finder = getattr(host, "program", None)
    try:
        if finder is None:
            if name is None:
                return host
            raise UnknownProgram(name, tuple(program_names(host)))
        return finder(name)
    except UnknownProgram as exc:
        if name is None:  # a config without a main program: the operator must name one
            raise CommandError("bad_argument", f"{verb}: no main program; name one "
                               f"({VERBS[verb].usage}): {', '.join(program_names(host))}"
                               ) from None
        raise _unknown(host, exc, verb) from None
    except ValueError as exc:  # no main program: a StateError of the host
        raise CommandError("invalid_state", str(exc)) from None


def _unknown(host, exc: UnknownProgram, verb: str) -> CommandError:
    """``unknown_program`` with several programs. With one (the single-command form) a
    word other than its name is a usage mistake (``stop now``), ``bad_argument`` as it
    always was there."""
    if is_multi(host):
        return CommandError("unknown_program", str(exc))
    one = f", {exc.known[0]!r}" if exc.known and exc.known[0] else ""
    return CommandError("bad_argument", f"no program named {exc.name!r}: one program runs "
                        f"here{one}; usage: {VERBS[verb].usage}")


def _is_program(host, word: str) -> bool:
    return word in program_names(host)


def _named(host, program, out: dict) -> dict:
    """A reply about ``program``: with several programs its name first (every reply that
    acts on one names it); with one, the reply as it has always been (scripts compare
    whole replies)."""
    if not is_multi(host):
        return out
    return {"program": program_name(program), **out}


# ---------------------------------------------------------------- handlers

_STATUS_FORMS = ("text", "json", "dashboard")


def _status(guardian, args: list[str], socket_info: Callable[[], dict]) -> dict | bytes:
    forms = [a for a in args if a.lower() in _STATUS_FORMS]
    names = [a for a in args if a.lower() not in _STATUS_FORMS]
    if len(forms) > 1 or len(names) > 1 or (names and args[0] != names[0]):
        raise CommandError("bad_argument", "usage: " + VERBS["status"].usage)
    name = names[0] if names else None
    if name is not None:
        target(guardian, name, "status")  # unknown_program for a name it does not have
    status = status_dict(guardian, socket_info(), program=name)
    form = forms[0].lower() if forms else "json"
    if form == "text":
        return (status_text(status) + "\n\n").encode("utf-8", "backslashreplace")
    if form == "dashboard":  # sentinel top: history, events, command lines
        from sentinel.control import snapshot  # stdlib only; psutil loads off the loop

        return {"status": status,
                "dashboard": snapshot.host_snapshot(guardian, snapshot.SERVER_NAMES,
                                                    program=name)}
    return {"status": status}


def _name_arg(args: list[str]) -> str | None:
    return args[0] if args else None


def _stop(guardian, args: list[str], socket_info) -> dict:
    program = target(guardian, _name_arg(args), "stop")
    return _named(guardian, program, _call(program.stop))


def _kill(guardian, args: list[str], socket_info) -> dict:
    program = target(guardian, _name_arg(args), "kill")
    return _named(guardian, program, _call(program.kill))


def _signal(guardian, args: list[str], socket_info) -> dict:
    # 'signal SIG' or 'signal NAME SIG'. A program may not be named like a signal
    # (TERM, SIGHUP, 15): a lone word that is a program's name is that program.
    if len(args) == 1 and _is_program(guardian, args[0]):
        raise CommandError("bad_argument", f"signal: which signal to send to {args[0]!r}? "
                           "usage: " + VERBS["signal"].usage)
    name, word = (None, args[0]) if len(args) == 1 else (args[0], args[1])
    try:
        sig = parse_signal(word)
    except ValueError as exc:
        raise CommandError("bad_argument", str(exc)) from None
    program = target(guardian, name, "signal")
    out = {"signal": signal_name(sig), **_call(program.send_signal, sig)}
    return _named(guardian, program, out)


def _limit_of(program) -> dict:
    st = program.state
    return {"limit_bytes": st.limit_bytes, "measure": st.measure}


def _limit_text(program) -> str:
    st = program.state
    return (f"limit {fmt_bytes(st.limit_bytes)} on {st.measure}"
            if st.limit_bytes is not None else "no limit (watching only)")


def _limit(guardian, args: list[str], socket_info) -> dict:
    if not args:  # show: the main program's, and with several, each one's
        program = main_program(guardian)
        out = {**_limit_of(program), "message": _limit_text(program)}
        if is_multi(guardian):
            out = _named(guardian, program, out)
            out["programs"] = [_named(guardian, p, _limit_of(p))
                               for p in host_programs(guardian)]
            out["message"] = "; ".join(f"{program_name(p)}: {_limit_text(p)}"
                                       for p in host_programs(guardian))
        return out
    if len(args) == 1 and _is_program(guardian, args[0]):  # 'limit NAME': show one
        program = target(guardian, args[0], "limit")
        out = {**_limit_of(program), "message": _limit_text(program)}
        return _named(guardian, program, out)
    name, word = (None, args[0]) if len(args) == 1 else (args[0], args[1])
    if word.lower() in NO_LIMIT_WORDS:
        limit = None
    else:
        try:
            limit = parse_limit(word)
        except ValueError as exc:
            raise CommandError("bad_argument", f"{exc}, or 'none'") from None
    program = target(guardian, name, "limit")
    out = _call(program.set_limit, limit)
    if limit is None:
        out["message"] = "no limit (watching only)"
    return _named(guardian, program, {**_limit_of(program), **out})


def _pause(guardian, args: list[str], socket_info) -> dict:
    program = target(guardian, _name_arg(args), "pause")
    out = _call(program.pause)
    return _named(guardian, program, {"enforcing": program.state.enforcing, **out})


def _resume(guardian, args: list[str], socket_info) -> dict:
    program = target(guardian, _name_arg(args), "resume")
    out = _call(program.resume)
    return _named(guardian, program, {"enforcing": program.state.enforcing, **out})


def _host_call(guardian, method: str, verb: str, *args) -> dict:
    fn = getattr(guardian, method, None)
    if fn is None:  # a host without several-program support
        raise CommandError("invalid_state", f"{verb!r} needs several programs "
                           "(sentinel run --config)")
    try:
        return {"message": fn(*args)}
    except UnknownProgram as exc:
        raise _unknown(guardian, exc, verb) from None
    except ValueError as exc:  # StateError: the program's state, or one program only
        raise CommandError("invalid_state", str(exc)) from None


def _start(guardian, args: list[str], socket_info) -> dict:
    return {"program": args[0], **_host_call(guardian, "start_program", "start", args[0])}


def _restart(guardian, args: list[str], socket_info) -> dict:
    return {"program": args[0], **_host_call(guardian, "restart_program", "restart", args[0])}


def _reload(guardian, args: list[str], socket_info) -> dict:
    return _host_call(guardian, "reload", "reload")


def _help(guardian, args: list[str], socket_info) -> dict:
    return {"protocol": PROTOCOL_VERSION,
            "commands": [{"name": v.name, "usage": v.usage, "help": v.help}
                         for v in VERBS.values()],
            "message": "commands: " + ", ".join(v.usage for v in VERBS.values())}


# ---------------------------------------------------------------- the table
# The order is the order of 'help' and of the docs. NAME is a program's name
# (several programs, sentinel run --config); without it a verb acts on the main
# program, the only one in the single-command form (see NAME_REQUIRED).

VERBS: dict[str, Verb] = {v.name: v for v in (
    Verb("status", "status [NAME] [text|json|dashboard]", "state, workload, memory figures, "
         "limit, kills, and 'programs' (one entry per program); NAME: that program only; "
         "'text': readable lines ending with an empty line; 'dashboard': also the "
         "snapshot `sentinel top` draws", 0, 2, _status, False),
    Verb("stop", "stop [NAME]", "stop the program: SIGTERM, then SIGKILL after the grace "
         "period (an operator kill; no restart)", 0, 1, _stop, True),
    Verb("kill", "kill [NAME]", "SIGKILL the program's whole tree now (no restart)", 0, 1,
         _kill, True),
    Verb("signal", "signal [NAME] SIG", "send one signal to the program (TERM, SIGHUP, 10, "
         "...)", 1, 2, _signal, True),
    Verb("limit", "limit [NAME] [SIZE|none]", "show the limit (each program's, with "
         "several); with SIZE (200Mi, 1.5Gi, 512M, ...) set it; 'none' removes it", 0, 2,
         _limit, True),
    Verb("pause", "pause [NAME]", "stop enforcing the program's limit (sampling goes on)",
         0, 1, _pause, True),
    Verb("resume", "resume [NAME]", "enforce the program's limit again", 0, 1, _resume, True),
    Verb("start", "start NAME", "start a program that is stopped, exited or given up "
         "(several programs only)", 1, 1, _start, True),
    Verb("restart", "restart NAME", "stop the program with its ladder, then start it again "
         "(several programs only)", 1, 1, _restart, True),
    Verb("reload", "reload", "re-read the config file and apply the difference: programs "
         "whose definition did not change are left alone (as SIGHUP)", 0, 0, _reload, True),
    Verb("help", "help", "list the commands", 0, 0, _help, False),
)}


def _shows_only(host, verb: str, args: list[str]) -> bool:
    """``limit`` and ``limit NAME`` only show: not logged as a command that acts."""
    return verb == "limit" and (not args or (len(args) == 1 and _is_program(host, args[0])))


def verbs_markdown() -> str:
    """The verb table as the Markdown table docs/control-socket.md holds (one row a verb)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")  # GitHub's tables: an escaped pipe, even in code

    rows = ["| Verb | Usage | What it does |", "|---|---|---|"]
    rows += [f"| `{v.name}` | `{cell(v.usage)}` | {cell(v.help)} |" for v in VERBS.values()]
    return "\n".join(rows) + "\n"


class Dispatcher:
    """Turns one command line into one ``Reply`` by running its verb from ``VERBS``.

    ``guardian`` is the host: a ``sentinel.core.guardian.Guardian`` or a ``Group`` (only
    its ``state``, ``programs``, ``program(name)`` and command methods are used).
    ``socket_info`` returns the server's part of ``status`` (path, clients). Runs on the
    host's loop.
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
            if verb.changes and not _shows_only(self.guardian, verb.name, args):
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


def status_dict(guardian, socket_info: dict | None = None, program: str | None = None) -> dict:
    """The ``status`` reply's object: numbers numeric, sizes in bytes, times in seconds
    (``*_seconds`` durations, Unix times for ``started``/``sigkill`` of a kill).

    ``guardian`` is the host. Sentinel's own parts (version, pid1/subreaper, mode,
    components, shutdown, log, socket) come from ``host.state``; the program keys at the
    top level (``workload``, ``main_pid``, ``memory``, ``limit_bytes``, ``kills``, ...)
    describe the main program (the only one in the single-command form, so these are
    the keys scripts have always read), or the program called ``program``. ``programs``
    lists ``program_entry`` for every program in start order (only ``program`` when
    given). Raises ``CommandError`` (``unknown_program``) for a name the host lacks."""
    host_st = guardian.state
    chosen = target(guardian, program, "status") if program is not None else \
        main_program(guardian)
    main = main_program(guardian, fallback=False)  # None: no program is the main one
    st = chosen.state
    now_wall, now_mono = time.time(), time.monotonic()
    sample = st.last_sample
    memory = memory_dict(sample, now_mono)
    live = st.main_pid is not None
    pids = list(sample.pids) if sample is not None and live else (
        [st.main_pid] if live else [])
    headroom = (st.limit_bytes - sample.measure_bytes
                if sample is not None and st.limit_bytes is not None and live else None)
    grace_left = (round(max(0.0, st.grace_deadline_mono - now_mono), 3)
                  if st.grace_deadline_mono is not None and st.current_kill is not None
                  else None)
    programs = [chosen] if program is not None else host_programs(guardian)
    return {
        "protocol": PROTOCOL_VERSION,
        "version": host_st.version,
        "sentinel_pid": os.getpid(),
        "pid1": host_st.pid1,
        "subreaper": host_st.subreaper,
        "mode": host_st.mode,
        # True with several programs from a config file (sentinel run --config).
        "multi": is_multi(guardian),
        "program": program_name(chosen),  # the program the keys below describe
        "phase": st.phase,
        "stopped": st.stopped and live,  # the main process is in state T (SIGSTOP, SIGTSTP, ...)
        "stop_signal": st.stop_signal if live else None,
        "self_caused_signals": dict(host_st.self_caused_signals),  # raised by Sentinel's own writes
        # "SIGTERM" once Sentinel was told to shut down: it exits when the workload is gone.
        "shutdown_signal": host_st.shutdown_signal,
        "enforcing": st.enforcing,
        # --dry-run: memory kills are reported, no signal is sent (what would have been:
        # "reason/SIGNAL" -> count); operator stop/kill and the shutdown are real.
        "dry_run": getattr(st, "dry_run", False),
        "dry_run_signals": {f"{reason}/{sig}": n for (reason, sig), n
                            in sorted(getattr(st, "dry_run_signals", {}).items())},
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
        "uptime_seconds": round(max(0.0, now_wall - host_st.sentinel_started_wall), 3),
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
        "sampling": _sampling_status(chosen),
        "log": _log_status(),
        "components": {str(k): str(v) for k, v in host_st.components.items()},
        "socket": socket_info or {},
        # Each webhook receiver's counters (sentinel.exporters.webhooks); never its URL.
        "webhooks": guardian.webhooks.status() if getattr(guardian, "webhooks", None) else [],
        # Several programs, output prefixed: each program's stdout/stderr lines relayed
        # and dropped (sentinel.core.group.Group.output_stats); {} otherwise.
        "output": guardian.output_stats() if hasattr(guardian, "output_stats") else {},
        "programs": [program_entry(p, main=p is main, now_wall=now_wall, now_mono=now_mono)
                     for p in programs],
        # The alert rules (issue 11): firing, growth, seconds_to_limit, rules.
        "alerts": alerts_view(st),
        # cgroup (version, path, read_only, limit_bytes, high_bytes), kernel_oom_kills,
        # wakeups, kernel_notes: see control.snapshot.kernel_view.
        **kernel_view(st),
    }
