"""Several programs under one Sentinel: the init once, a supervisor per program.

``sentinel run --config sentinel.yaml`` supervises the programs of a config file
(``sentinel.config.programs``) the way s6 and circus do: one ``Init`` does the PID-1
duties for all of them (the signalfd, reaping every child and orphan), and each
program has its own ``Supervisor`` (its limit, its ladder, its restart policy), all
on one asyncio loop. ``Group`` is the host the exporters and the control socket talk
to, as ``Guardian`` is for one program.

What the group decides (the documented policy, docs/config.md):

* **Start**: in the config's start order (its ``depends-on`` first, then list order);
  a program starts once the ones it depends on have been spawned.
* **The end**: when the *main* program ends for good (it exited and is not restarted,
  it gave up, or the operator stopped it), Sentinel stops the others and exits with
  the main program's exit code (after a shutdown too; 128+N if a signal N came before
  the main program ever started). When another program *gives up* (it ended with a
  failure and will not be restarted: ``--max-restarts`` reached, or a failure under
  ``restart: never``), its ``on-give-up`` says: ``exit`` (Sentinel stops the rest and
  exits with that program's code) or ``continue``. A program that exits cleanly, or
  that the operator stopped, just stays ended (``start NAME`` starts it again).
* **Shutdown** (SIGTERM/SIGINT): every program is stopped in *reverse* start order,
  one after another, each with its own ladder (its ``stop-signal``, its grace period,
  then SIGKILL); Sentinel then exits with the main program's code.
* **Other signals** go to every live program (``--rewrite`` applied), except SIGHUP,
  which re-reads the config (``reload``).
* **Orphans**: a process reparented to Sentinel belongs to the program whose session
  it came from (every program leads its own session), else to the program whose tree
  it was last seen in; it is measured, stopped and reaped as that program's. One that
  is no program's (it left its session unseen: a double-forking daemon) is reaped, not
  measured, and stopped by a last sweep once every program has stopped.
* **Reload** (SIGHUP or ``reload``): the config is read again; programs whose
  definition did not change are not touched, removed ones are stopped, changed ones are
  stopped and started with their new definition, new ones are started. Global
  settings cannot change without a restart of Sentinel: each such change is logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Callable

from sentinel import logs
from sentinel.config.settings import Settings, signal_name
from sentinel.config.webhooks import child_environ
from sentinel.core import kernel
from sentinel.core.init import Init, exit_code_of, loop_error_handler, run_host
from sentinel.core.spawn import Child, spawn
from sentinel.core.state import REASON_OPERATOR, GuardianState
from sentinel.core.supervisor import ProgramState, Supervisor, tell_listeners
from sentinel.errors import SentinelError, StateError, UnknownProgram
from sentinel.logs import LOGGER_NAME
from sentinel.probes.tree import CgroupProbe, TreeProbe, walk_period_for

log = logging.getLogger(LOGGER_NAME)

_SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# At exit, how long the programs' output may take to reach Sentinel's stdout/stderr
# once every program has ended (a leftover that outlived its program may hold the pipe).
OUTPUT_DRAIN_SECONDS = 1.0
_ENDED = frozenset({ProgramState.EXITED, ProgramState.STOPPED, ProgramState.GIVEN_UP})
# Idle samples of several programs are aligned (Group.piggyback): a program whose next
# sample is due within this share of its period (and this many seconds) takes it when
# another program samples. Only periods of PIGGYBACK_MIN_PERIOD or more (far from the
# limit: the idle cadence); a program near its limit keeps its own fast timer.
PIGGYBACK_SHARE = 0.3
PIGGYBACK_SECONDS = 0.5
PIGGYBACK_MIN_PERIOD = 0.25
# The container's cgroup files are read at most once per this many seconds for all the
# programs (each program's probe shares one reader: its figures are the container's).
CGROUP_SHARE_SECONDS = 0.005


class _SharedCgroup:
    """One program's view of the container's cgroup reader (``CgroupMemory``), shared by
    every program: ``read()`` answers from the last reading when it is younger than
    ``CGROUP_SHARE_SECONDS`` (the programs that sample on one wake-up read it once);
    everything else is the reader's own. ``close()`` is the group's, at exit."""

    def __init__(self, memory, clock) -> None:
        self._memory = memory
        self._clock = clock

    def read(self):
        now = self._clock()
        last = self._memory_last()
        if last is not None and now - last[0] < CGROUP_SHARE_SECONDS:
            return last[1]
        reading = self._memory.read()
        self._memory.shared_last = (now, reading)
        return reading

    def _memory_last(self):
        return getattr(self._memory, "shared_last", None)

    def close(self) -> None:
        pass  # the group closes the reader once

    def __getattr__(self, name):
        return getattr(self._memory, name)


def session_of(pid: int, proc: str = "/proc") -> int | None:
    """The session ID of ``pid`` (``/proc/<pid>/stat`` field 6), or ``None`` if it is gone."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


class Group:
    """The init plus one ``Supervisor`` per program of ``config`` (a
    ``sentinel.config.programs.ProgramsConfig``). ``program_settings`` maps each
    program's name to its resolved ``Settings`` (``--max-rss auto`` already resolved);
    ``reload_config()`` reads the config file again and returns the same pair (raises
    ``ConfigError`` or another ``SentinelError``). Create, then ``run()`` until it
    returns Sentinel's exit code.

    The host interface of ``sentinel.core.guardian.Guardian``: ``state`` (Sentinel's
    own figures), ``programs``, ``program(name)``, ``start_program``,
    ``restart_program``, ``reload``, ``listeners``, ``sample_listeners``, ``emit``.
    """

    multi = True

    def __init__(self, config, program_settings: dict[str, Settings], original_mask: set[int],
                 *, pid1: bool = False, subreaper: bool = False, version: str = "",
                 loop: asyncio.AbstractEventLoop | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 reload_config: Callable[[], tuple] | None = None,
                 environ: dict[str, str] | None = None, proc_root: str = "/proc") -> None:
        self.config = config
        # What Sentinel runs with: a reload's changed global settings are told against it
        # (they apply only at a restart), not against the previous reload's file.
        self._boot_config = config
        self.settings: Settings = config.settings
        self.loop = loop or asyncio.new_event_loop()
        self._clock = clock
        self.original_mask = original_mask
        self.version = version
        self.pid1, self.subreaper = pid1, subreaper
        self._proc = proc_root
        # Programs inherit the environment Sentinel was started with (plus their env:).
        self.environ = dict(os.environ if environ is None else environ)
        try:
            self._cwd = os.getcwd()  # a program without cwd: starts where Sentinel started
        except OSError:
            self._cwd = "/"
        s = self.settings
        # Sentinel's own figures; ``workload`` (the legacy label of its own metrics, e.g.
        # log lines dropped) is the main program's name.
        self.state = GuardianState(
            mode="run", workload=config.main, command=(), measure="", limit_bytes=None,
            grace_period_seconds=s.grace_period_seconds, interval_seconds=s.interval_seconds,
            version=version, pid1=pid1, subreaper=subreaper, program="")
        self.listeners: list = []
        self.sample_listeners: list = []
        self.linger: Callable | None = None
        self.init = Init(self.loop, pid1=pid1, subreaper=subreaper, rewrite=dict(s.rewrite),
                         tty_fd=None, self_caused=self.state.self_caused_signals)
        self.init.router = self._on_signal
        self.init.on_orphan = self._on_orphan
        self.init.on_reaped = self._on_reaped
        self.late_signal_listeners = self.init.late_signal_listeners
        self._reload_config = reload_config
        self._programs: dict[str, Supervisor] = {}  # in start order
        self._main = config.main
        # Sentinel's direct children -> the program (supervisor) they belong to (None:
        # none), and the session each program's current run leads (its main PID).
        self._owner: dict[int, Supervisor | None] = {}
        self._sessions: dict[int, Supervisor] = {}
        self._relays: dict[str, list] = {}  # program -> its OutputRelay(s) (prefixed output)
        self._retired: list = []  # relays of removed programs, closed at exit
        # The output mode is Sentinel's own: it does not change on a reload.
        self._output = config.output
        self._prefixes: dict[str, str] = {}
        self._done: asyncio.Future | None = None
        self._stopping = False  # Sentinel is ending: programs stop in reverse order
        self._stop_task: asyncio.Task | None = None
        self._exit_code: int | None = None
        self._main_code: int | None = None  # the main program's code during a shutdown
        self._shutdown_signo: int | None = None
        self._ending: Supervisor | None = None  # the program whose end ends Sentinel
        # Keyed by supervisor, never by name: a program removed (or replaced) by a reload
        # and added again keeps its old run apart from the new one.
        self._waiters: dict[Supervisor, asyncio.Future] = {}  # its end (shutdown)
        self._then_start: set[Supervisor] = set()  # restart NAME: start once stopped
        self._replacements: dict[Supervisor, tuple] = {}  # reload: (spec, settings) next
        self._removing: set[Supervisor] = set()  # reload: dropped once ended
        self._listener_errors: set[str] = set()
        self._own_oom: dict = {"tried": False, "adj": None, "before": None, "note": ""}
        # The container's cgroup reader, one for every program (by --cgroup-root).
        self._cgroups: dict = {}
        self._notes_said: set[str] = set()
        self._set_prefixes([spec.name for spec in config.programs])
        for spec in config.programs:
            self._add(spec, program_settings[spec.name])

    # ------------------------------------------------------------------ the host
    @property
    def programs(self) -> list[Supervisor]:
        """The supervised programs in start order."""
        return list(self._programs.values())

    def program(self, name: str | None = None) -> Supervisor:
        """The program called ``name`` (``None``: the main program). Raises
        ``UnknownProgram`` for a name there is not."""
        sup = self._programs.get(self._main if name is None else name)
        if sup is None:
            raise UnknownProgram(name or "", tuple(self._programs))
        return sup

    def is_main(self, sup: Supervisor) -> bool:
        return sup.state.program == self._main

    def emit(self, kind: str, message: str, level: int = logging.INFO, **fields):
        """An event of Sentinel itself (``Event.program`` ""): logged, recorded in
        ``state.events``, told to the listeners."""
        from sentinel.core.state import Event

        event = Event(kind, message, fields=fields)
        self.state.events.append(event)
        log.log(level, message, extra={"event": kind, **fields})
        tell_listeners(self.listeners, event, self._listener_errors)
        return event

    # ------------------------------------------------------------------ programs
    def _add(self, spec, settings: Settings) -> Supervisor:
        """A supervisor for ``spec``, not started (``ended``: nothing to wait for)."""
        name = spec.name
        if settings.cgroup_root not in self._cgroups:
            self._cgroups[settings.cgroup_root] = CgroupProbe.for_pid(
                "self", cgroup_root=settings.cgroup_root)
        memory = self._cgroups[settings.cgroup_root]
        probe = TreeProbe(os.getpid(), include_root=False, measure=settings.measure,
                          proc_root=self._proc, root_threads=(os.getpid(),),
                          smaps_min_period=settings.interval_seconds,
                          walk_period=walk_period_for(settings.measure),
                          cgroup=_SharedCgroup(memory, time.monotonic)
                          if memory is not None else None)
        sup = Supervisor(settings, None, self.original_mask, pid1=self.pid1,
                         subreaper=self.subreaper, loop=self.loop, probe=probe,
                         version=self.version, clock=self._clock, host=self)
        # The supervisor itself, not its name: an old run of a program being removed or
        # replaced by a reload keeps its own processes apart from the new one's.
        probe.root_filter = lambda pid, sup=sup: self.owner(pid) is sup
        sup.launcher = lambda sup=sup: self._launch(sup)
        sup.spec = spec  # type: ignore[attr-defined]
        sup.ended = True  # not started yet
        sup.kernel_side.own = self._own_oom  # Sentinel's own oom_score_adj: lowered once
        sup.sampling_side._said = self._notes_said  # noqa: SLF001 - a kernel note, said once
        sup.state.program = name
        sup.listeners = self.listeners  # one list: exporters subscribe once
        sup.sample_listeners = self.sample_listeners
        sup.init = self.init
        self.init.programs.append(sup)
        self._programs[name] = sup
        return sup

    def _drop(self, sup: Supervisor, *, keep_output: bool = False) -> None:
        """Forget ``sup`` (removed or replaced by a reload, once ended)."""
        name = sup.state.program
        if self._programs.get(name) is sup:
            del self._programs[name]
        if sup in self.init.programs:
            self.init.programs.remove(sup)
        for table in (self._then_start, self._removing):
            table.discard(sup)
        self._replacements.pop(sup, None)
        self._waiters.pop(sup, None)
        for pid in [pid for pid, owner in self._owner.items() if owner is sup]:
            self._owner[pid] = None  # a leftover that outlived it: no program's now
        for sid in [sid for sid, owner in self._sessions.items() if owner is sup]:
            del self._sessions[sid]
        if not keep_output and name not in self._programs:
            # Not closed here (a relay may be blocked writing to a slow stdout: joining
            # it would stall the loop); it still relays what leftovers write, and the
            # drain at exit closes it.
            self._retired.extend(self._relays.pop(name, []))
        sup.close()

    def _set_prefixes(self, names: list[str]) -> None:
        if self._output != "prefixed":
            self._prefixes = {}
            return
        from sentinel.core.output import prefix_for

        self._prefixes = prefix_for(names)

    def _launch(self, sup: Supervisor) -> Child:
        """Spawn ``sup``'s program (its command, env, cwd, user; its output prefixed or
        Sentinel's own fds); remember its session. Raises ``SpawnError``."""
        name = sup.state.program
        spec = sup.spec  # type: ignore[attr-defined]
        out = err = None
        relays = self._relays.get(name)
        if name in self._prefixes:
            from sentinel.core.output import OutputRelay

            if relays is None:
                relays = self._relays[name] = [
                    OutputRelay(name, self._prefixes[name], 1),
                    OutputRelay(name, self._prefixes[name], 2)]
            out, err = relays[0].write_fd, relays[1].write_fd  # a fresh pipe each run
        user = (spec.uid, spec.gid, tuple(spec.groups)) if spec.uid is not None else None
        try:
            # Without the variables of the webhook URLs (SENTINEL_WEBHOOK_URL, url-env:),
            # also of a file reloaded since; the program's own env: still applies.
            base = child_environ(self.environ, tuple(self.settings.webhooks)
                                 + tuple(self.config.settings.webhooks))
            child = spawn(spec.command, self.original_mask, environ=spec.environ(base),
                          cwd=spec.cwd or self._cwd, stdout_fd=out, stderr_fd=err, user=user)
        finally:
            for relay in relays or ():
                relay.started()  # Sentinel's copy of the write end is closed either way
        # The previous run's session is over (its leftovers were swept before a restart):
        # its ID may be reused by an unrelated session leader.
        for sid in [sid for sid, owner in self._sessions.items() if owner is sup]:
            del self._sessions[sid]
        self._owner[child.pid] = sup
        self._sessions[child.pid] = sup
        return child

    def owner(self, pid: int) -> Supervisor | None:
        """The program (supervisor) Sentinel's direct child ``pid`` belongs to, or
        ``None``: a program's main process; else the program whose session it is in (each
        program leads its own); else the program in whose tree it was last seen (it left
        the session with setsid before it was reparented). Read once per process
        (``/proc/<pid>/stat``), forgotten when it is reaped (a reused PID is asked again)."""
        if pid in self.init.helpers:  # a pre-kill hook is no program's, never measured
            return None
        if pid in self._owner:
            return self._owner[pid]
        owner = self._owner[pid] = self._attribute(pid)
        return owner

    def _attribute(self, pid: int) -> Supervisor | None:
        token = logs.PROGRAM.set("")  # Sentinel's own line, whichever program's walk asks
        try:
            sid = session_of(pid, self._proc)
            owner = self._sessions.get(sid) if sid is not None else None
            if owner is None:
                owner = next((sup for sup in self.init.programs
                              if pid in getattr(sup.probe, "_nodes", ())), None)
            if owner is None:
                log.info("pid %d (session %s) is a child of Sentinel but of no program's "
                         "session or tree (it left its session before Sentinel saw it): it is "
                         "not measured; it is reaped, and stopped when Sentinel ends", pid, sid,
                         extra={"event": "orphan_unattributed", "pid": pid})
            else:
                log.debug("orphan pid %d is %s's (session %s)", pid, owner.state.program, sid,
                          extra={"event": "orphan", "pid": pid, "program": owner.state.program})
            return owner
        finally:
            logs.PROGRAM.reset(token)

    def _on_orphan(self, pid: int, status: int) -> None:
        """The init reaped ``pid``, which was no program's main process."""
        owner = self._owner.get(pid)
        name = owner.state.program if owner is not None else ""
        log.debug("reaped orphan pid %d (%s)%s", pid, exit_code_of(status),
                  f" of {name}" if name else "", extra={"event": "orphan_reaped", "pid": pid,
                                                        **({"program": name} if name else {})})

    def _on_reaped(self, pid: int) -> None:
        """Every reaped PID (a main process or an orphan): its attribution is over."""
        self._owner.pop(pid, None)

    def output_stats(self) -> dict[str, dict[str, dict[str, int]]]:
        """The prefixed output's counters (``output: prefixed``), by program and stream:
        ``{"web": {"stdout": {"lines_relayed", "bytes_relayed", "lines_dropped"},
        "stderr": {...}}}``; ``{}`` with plain output. Read from any thread."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for name, relays in list(self._relays.items()):
            out[name] = {stream: {"lines_relayed": r.lines_relayed,
                                  "bytes_relayed": r.bytes_relayed,
                                  "lines_dropped": r.lines_dropped}
                         for stream, r in zip(("stdout", "stderr"), relays)}
        return out

    def piggyback(self, leader: Supervisor) -> None:
        """``leader`` just sampled: every other program whose next sample is due within
        ``PIGGYBACK_SHARE`` of its own period (and at most ``PIGGYBACK_SECONDS``) samples
        now too, so idle programs converge on one wake-up a period, and the cgroup's
        files (the container's, shared) are read once for all (``_SharedCgroup``).
        Only idle samples move (a period of ``PIGGYBACK_MIN_PERIOD`` or more): near a
        limit each program keeps its own fast cadence."""
        for sup in list(self.init.programs):
            if sup is leader or sup.ended:
                continue
            due = sup.sample_due_in()
            period = sup.sample_delay
            if due is None or period < PIGGYBACK_MIN_PERIOD:
                continue
            if due <= min(PIGGYBACK_SHARE * period, PIGGYBACK_SECONDS):
                # One callback each: a program near its limit, whose fast timer is due
                # too, is not held up behind all the idle programs' walks.
                self.loop.call_soon(sup.sample_early)

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        """Run the loop until Sentinel ends; return its exit code."""
        return run_host(self)

    async def serve(self) -> int:
        self._done = self.loop.create_future()
        self.loop.set_exception_handler(loop_error_handler(self.settings.debug))
        self.init.open()
        names = list(self._programs)
        log.info("starting %d programs in this order: %s; main program: %s", len(names),
                 ", ".join(names), self._main, extra={"event": "startup"})
        for sup in self.programs:
            if self._stopping:  # a SIGTERM, or the main program's end: start no more
                break
            sup.start()
            self.init.read_signals()  # a SIGTERM or an exit during the start-up
        self.init.read_signals()
        return await self._done

    def close(self) -> None:
        for sup in list(self.init.programs):
            sup.close()
        relays = [r for rs in self._relays.values() for r in rs] + self._retired
        if relays:
            from sentinel.core.output import drain

            drain(relays, OUTPUT_DRAIN_SECONDS)
            for relay in relays:
                relay.close()
        for memory in self._cgroups.values():
            if memory is not None:
                memory.close()
        self.init.close()

    def _finish(self, code: int) -> None:
        self.init.finish()
        ending = self._ending
        if ending is not None:  # the linger and the termination message read these
            self.state.last_kill = ending.state.last_kill
            self.state.started_wall = ending.state.started_wall
            self.state.last_exit_code = ending.state.last_exit_code
        if self._done is not None and not self._done.done():
            self._done.set_result(code)

    @property
    def finished(self) -> bool:
        return self._done is not None and self._done.done()

    # ------------------------------------------------------------------ ends
    def program_ended(self, sup: Supervisor, code: int) -> None:
        """A program's run ended for good (``Supervisor._finish``): its ``code`` is the
        exit code it reports (``--success-exit-code``/``--memory-kill-exit-code``
        applied). Decide what follows (see the module's policy)."""
        token = logs.PROGRAM.set("")  # the group's lines (and its tasks) are Sentinel's own
        try:
            self._program_ended(sup, code)
        finally:
            logs.PROGRAM.reset(token)

    def _program_ended(self, sup: Supervisor, code: int) -> None:
        name = sup.state.program
        if self._stopping and self.is_main(sup) and self._programs.get(name) is sup:
            self._main_code = code  # Sentinel's code after a shutdown, whenever it ends
            if self._ending is None:
                self._ending = sup
        waiter = self._waiters.pop(sup, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(code)
        if sup in self._removing:
            self._drop(sup)
            log.info("program %s removed", name, extra={"event": "reload", "program": name})
            return
        if sup in self._replacements:
            spec, settings = self._replacements.pop(sup)
            self._drop(sup, keep_output=True)
            new = self._add(spec, settings)
            self._reorder()
            if not self._stopping:
                new.start()
            return
        if sup in self._then_start:
            self._then_start.discard(sup)
            if not self._stopping:
                sup.start()
                return
        if self._stopping:
            return  # the shutdown sequence goes on (its waiter)
        state = sup.program_state
        if self.is_main(sup):
            self._end(sup, code, f"the main program {name} ended ({state.value}, exit code "
                      f"{code})")
            return
        # Given up: its restart budget is used up (whatever its last code), or it failed
        # and its policy does not restart it. Not: a clean exit, an operator's stop.
        gave_up = state is ProgramState.GIVEN_UP or (code != 0 and state is not
                                                     ProgramState.STOPPED)
        if gave_up and state is not ProgramState.GIVEN_UP:
            # A failure its policy does not restart: given up as surely as a used-up
            # budget (the supervisor reported that one itself): said the same way.
            sup._restarts_exhausted = True  # noqa: SLF001 - its state is given_up now
            sup.emit("gave_up", f"not restarting after exit code {code} (restart: "
                     f"{sup.settings.restart}); giving up", logging.ERROR,
                     restarts=sup.state.restarts, exit_code=code)
        spec = sup.spec  # type: ignore[attr-defined]
        if gave_up and spec.on_give_up == "exit":
            self._end(sup, code, f"program {name} gave up (exit code {code}; on-give-up: exit)")
        elif gave_up:
            log.error("%s gave up (exit code %d); the other programs go on (on-give-up: "
                      "continue; 'sentinel start %s' starts it again)", name, code, name,
                      extra={"event": "program_ended", "exit_code": code, "gave_up": True})
        else:
            log.info("%s %s (exit code %d); the other programs go on", name,
                     "was stopped" if state is ProgramState.STOPPED else "exited", code,
                     extra={"event": "program_ended", "exit_code": code})

    def _halt(self) -> None:
        """Sentinel is ending: no program is restarted from now on (a pending back-off
        is cancelled, ending that program at once)."""
        self._stopping = True
        for sup in list(self.init.programs):
            sup.no_restart()

    def _end(self, sup: Supervisor | None, code: int, why: str) -> None:
        """Sentinel ends with ``code``: stop the live programs in reverse order first."""
        if self._stopping:
            return
        self._ending = sup
        self._exit_code = code
        live = [s.state.program for s in self.programs if not s.ended]
        log.log(logging.WARNING if code else logging.INFO, "%s: %s; Sentinel exits with code "
                "%d", why, f"stopping {', '.join(reversed(live))} first" if live
                else "no other program is running", code, extra={"event": "ending",
                                                                  "exit_code": code})
        self._halt()
        self._stop_task = self.loop.create_task(self._stop_all())

    async def _stop_all(self) -> None:
        """Stop every live program in reverse start order, each with its own ladder,
        one after another; then whatever is left of Sentinel's children; then finish."""
        for sup in reversed(list(self.init.programs)):
            if sup.ended:
                continue
            waiter = self._waiters[sup] = self.loop.create_future()
            sup.shutdown()
            await waiter
        try:
            await self._sweep_leftovers()
        except Exception as exc:  # the exit code must not depend on it
            log.error("stopping the leftover processes failed: %r", exc,
                      extra={"event": "cleanup"})
        code = self._exit_code
        if code is None:  # a shutdown: the main program's code
            code = self._main_code
        if code is None:  # it had ended before the shutdown (made main by a reload)
            main = self._programs.get(self._main)
            if main is not None and main.state.last_exit_code is not None:
                code = main._exit_code  # noqa: SLF001 - the code it reported
        if code is None:  # the main program never ran (a SIGTERM during the start-up)
            code = 128 + (self._shutdown_signo or signal.SIGTERM)
        self._finish(code)

    async def _sweep_leftovers(self) -> None:
        """Every program has ended: stop the processes still under Sentinel that no
        program's sweep reached (they left their program's session and were never seen
        in its tree: a daemon that double-forked with setsid). SIGTERM, the main
        settings' grace period, SIGKILL; as PID 1 the kernel would kill them as Sentinel
        exits, as a subreaper they would outlive it."""
        probe = TreeProbe(os.getpid(), include_root=False, proc_root=self._proc,
                          root_threads=(os.getpid(),))
        try:
            def left() -> list[int]:
                out, stack = [], list(probe.children(os.getpid()) or [])
                while stack:
                    pid = stack.pop()
                    if session_of(pid, self._proc) is None:
                        continue
                    out.append(pid)
                    stack.extend(probe.children(pid) or [])
                return out

            pids = left()
            if not pids:
                return
            grace = self.settings.grace_period_seconds
            log.warning("%d process(es) under Sentinel belong to no program (they left their "
                        "session): SIGTERM, SIGKILL after %.1fs: %s", len(pids), grace,
                        ", ".join(map(str, pids[:10])) + (" ..." if len(pids) > 10 else ""),
                        extra={"event": "cleanup", "pids": pids})
            for sig in (signal.SIGTERM, signal.SIGCONT):
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except OSError:
                        pass
            deadline = self._clock() + grace
            while self._clock() < deadline and left():
                await asyncio.sleep(0.05)
            pids = left()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if pids:
                log.warning("SIGKILL to %d leftover process(es): %s", len(pids),
                            ", ".join(map(str, pids[:10])), extra={"event": "cleanup"})
            deadline = self._clock() + 2.0
            while self._clock() < deadline and left():
                await asyncio.sleep(0.05)
        finally:
            probe.close()

    def _on_signal(self, info: kernel.SignalInfo, target: int) -> bool:
        """The init's router: what a signal Sentinel received means for the programs."""
        sig = info.signo
        name = signal_name(sig)
        if sig in _SHUTDOWN_SIGNALS:
            first = self.state.shutdown_signal is None
            if first:
                self.state.shutdown_signal = name
                self._shutdown_signo = sig
                for sup in self.programs:
                    sup.state.shutdown_signal = name
            if not self._stopping:
                order = [s.state.program for s in reversed(self.programs) if not s.ended]
                log.info("received %s from pid %d: stopping the programs in reverse start "
                         "order (%s), each with its own stop signal and grace period; then "
                         "exiting with the main program's code", name, info.pid,
                         ", ".join(order) or "none running", extra={"event": "shutdown"})
                self._exit_code = None  # the main program's code, once it has stopped
                self._halt()
                self._stop_task = self.loop.create_task(self._stop_all())
            elif not first:
                log.info("received %s from pid %d again: the programs are being stopped",
                         name, info.pid, extra={"event": "shutdown"})
            return True
        if sig == signal.SIGHUP and target == signal.SIGHUP and self._reload_config is not None:
            log.info("received SIGHUP from pid %d: reloading %s", info.pid, self.config.path,
                     extra={"event": "reload"})
            try:
                self.reload()
            except StateError as exc:
                log.error("%s", exc, extra={"event": "reload"})
            return True
        if target == 0:
            log.debug("dropped %s (rewritten to 0)", name)
            return True
        for sup in self.programs:
            if sup.main_pid is not None:
                if target == signal.SIGKILL:  # Sentinel's SIGKILL: never the kernel's
                    sup.kernel_side.hook("note_sigkill")
                sup.signal_workload(target)
        log.debug("forwarded %s%s to every running program", name,
                  f" as {signal_name(target)}" if target != sig else "",
                  extra={"event": "signal_forwarded"})
        return True

    # ------------------------------------------------------------------ commands
    def _require_running(self, command: str) -> None:
        if self._stopping:
            raise StateError("Sentinel is stopping: its programs are being stopped",
                             state="stopping", command=command)

    def start_program(self, name: str | None = None) -> str:
        """``start NAME``: start a program that has ended (exited, stopped, given up, or
        never started) with a fresh restart budget. Raises ``StateError`` while it runs
        or is being stopped (or replaced by a reload), or while Sentinel is stopping;
        ``UnknownProgram``."""
        self._require_running("start")
        sup = self.program(name)
        if not sup.ended or sup in self._replacements or sup in self._removing:
            state = sup.program_state
            why = ("a reload is replacing it" if sup in self._replacements
                   else "a reload is removing it" if sup in self._removing
                   else "its leftover processes are still being stopped; try again in a "
                   "moment" if state in _ENDED
                   else "it is being stopped" if state is ProgramState.STOPPING
                   else "it is already running (restart NAME restarts it)")
            raise StateError(f"cannot start {sup.state.program}: {why}", state=state.value,
                             command="start")
        sup.start()
        pid = sup.state.main_pid
        return f"{sup.state.program} started" + (f" as pid {pid}" if pid else
                                                 ": its start failed, see Sentinel's log")

    def restart_program(self, name: str | None = None) -> str:
        """``restart NAME``: stop the program with its ladder (an operator stop), then
        start it again with a fresh restart budget; an ended one just starts. Raises
        ``StateError`` while it is already being stopped, or while Sentinel is stopping."""
        self._require_running("restart")
        sup = self.program(name)
        if sup.ended:
            return self.start_program(sup.state.program)
        prog = sup.state.program
        if sup in self._replacements or sup in self._removing or sup in self._then_start:
            raise StateError(f"cannot restart {prog}: it is already being stopped (a reload "
                             "or an earlier restart)", state=sup.program_state.value,
                             command="restart")
        if sup.program_state is ProgramState.BACKING_OFF:
            sup.no_restart()  # ends it now (its end comes on the loop); then start it
            self._then_start.add(sup)
            return f"{prog}'s restart back-off cut short: it starts now"
        sup.stop(REASON_OPERATOR)  # raises StateError when it does not fit
        self._then_start.add(sup)
        return f"stopping {prog} ({sup._stop_name}, then SIGKILL after its grace period); " \
               "it starts again once stopped"  # noqa: SLF001

    def reload(self) -> str:
        """Re-read the config file and apply the difference (see the module's policy).
        Returns what changed. Raises ``StateError`` when there is no config file to
        read, while Sentinel is stopping, or when the new config has an error (then
        nothing changes)."""
        if self._reload_config is None:
            raise StateError("no config file to reload", state="running", command="reload")
        self._require_running("reload")
        try:
            new, new_settings = self._reload_config()
        except SentinelError as exc:  # ConfigError, or an auto limit that cannot resolve
            raise StateError(f"reload: {exc}; nothing changed", state="running",
                             command="reload") from None
        from sentinel.config.programs import diff

        d = diff(self.config, new)
        d_settings = diff(self._boot_config, new).settings_changed
        waiting = []  # a program a reload already stops: this reload's change follows it
        for key in d_settings:
            log.warning("reload: %s differs in %s from what Sentinel runs with; Sentinel's own settings apply only when "
                        "Sentinel restarts (this change waits for that)", key, new.path,
                        extra={"event": "reload", "key": key})
        self.config = new
        self._main = new.main
        self.state.workload = new.main
        specs = {spec.name: spec for spec in new.programs}
        self._set_prefixes(sorted(set(self._programs) | set(specs)))
        removed_now = {s.state.program: s for s in self._removing}
        for name in d.removed:
            sup = self._programs[name]
            if sup.ended:
                self._drop(sup)
            else:
                self._replacements.pop(sup, None)
                self._removing.add(sup)
                self._stop_for_reload(sup)
        for name in d.changed:
            sup = self._programs[name]
            if sup.ended and sup not in self._replacements:
                start = self._started_before(sup)
                self._drop(sup, keep_output=True)
                new_sup = self._add(specs[name], new_settings[name])
                if start:
                    new_sup.start()
            else:
                self._replacements[sup] = (specs[name], new_settings[name])
                self._stop_for_reload(sup)
        for name in d.added:
            old = removed_now.get(name)
            if old is not None and old in self._removing:  # removed, not yet stopped:
                self._removing.discard(old)  # it comes back as a replacement
                self._replacements[old] = (specs[name], new_settings[name])
                waiting.append(name)
                continue
            self._add(specs[name], new_settings[name]).start()
        self._reorder()
        text = ", ".join(f"{what} {', '.join(names)}" for what, names in (
            ("added", d.added), ("removed", d.removed), ("changed", d.changed)) if names)
        text = f"reloaded {new.path}: " + (text or "no program changed") + \
            f"; unchanged: {len(d.unchanged)}" + \
            (f"; {', '.join(waiting)} start(s) once the old run has stopped" if waiting
             else "") + \
            (f"; needs a restart of Sentinel: {', '.join(d_settings)}" if d_settings else "")
        self.emit("reloaded", text, logging.WARNING if d_settings else logging.INFO,
                  added=list(d.added), removed=list(d.removed), changed=list(d.changed),
                  settings_changed=list(d_settings))
        return text

    @staticmethod
    def _started_before(sup: Supervisor) -> bool:
        """A changed program that had ended: start it again only if it had ended by
        itself (a program the operator stopped, or never started, stays so)."""
        return sup.program_state not in (ProgramState.STOPPED, ProgramState.STARTING)

    def _stop_for_reload(self, sup: Supervisor) -> None:
        """Stop ``sup`` for a reload's sake, whatever its state (never raises): a live one
        gets its ladder, a back-off is cancelled, one being stopped or whose leftovers are
        being swept just ends, without a restart."""
        sup.no_restart()
        sup._end_dry_kill("a reload replaces or removes it; its stop is real")  # noqa: SLF001
        if sup.program_state in (ProgramState.RUNNING, ProgramState.STOPPED_BY_SIGNAL):
            sup.stop(REASON_OPERATOR)

    def _reorder(self) -> None:
        """Programs in the config's start order; those being removed at the end."""
        order = [spec.name for spec in self.config.programs]
        rest = [n for n in self._programs if n not in order]
        self._programs = {n: self._programs[n] for n in order + rest if n in self._programs}
        live = list(self._programs.values())
        self.init.programs[:] = live + [s for s in self.init.programs if s not in live]
