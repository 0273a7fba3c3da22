"""The pod's counters across container restarts: a small JSON file in ``--state-dir``.

In Kubernetes the kubelet restarts a container that exited, and a new
Sentinel starts with its counters at zero. A kill seen by nobody before
Sentinel exited (it exits a few milliseconds after the workload) is then lost
to Prometheus: ``increase(sentinel_kills_total[...])`` stays 0. So the
counters that describe the pod's life are carried over in
``<state-dir>/sentinel-state.json`` (the chart mounts an ``emptyDir`` that
outlives container restarts, ``/shared``): read at start, added to this
Sentinel's own counts on ``/metrics``, written after each kill step and
restart, and once more at exit.

The file (schema 1)::

    {"schema": 1, "pod_uid": "0b6e...", "written": 1764590000.5,
     "counters": {"kills": [{"labels": {"program": "web", "reason": "memory_limit",
                                        "signal": "SIGTERM"}, "value": 3}, ...],
                  "restarts": [{"labels": {"program": "web"}, "value": 0}, ...]},
     "last_kill_timestamp_seconds": 1764589990.1,
     "last_kill_timestamp_seconds_by_program": {"web": 1764589990.1}}

``counters`` maps a counter name to its labelled values, as Prometheus does,
so a new counter (kernel OOM kills) is a new key, not a new schema; keys this
version does not know are kept as they were when the file is rewritten.
Each value names its ``program`` (``GuardianState.program``: the one workload
of the single-command form, or a program of ``--config``), so every program
keeps its own counters across container restarts. A value without one (a file
written before programs existed) belongs to the main program, and so does the
top-level ``last_kill_timestamp_seconds`` when there is no ``..._by_program``;
that top-level figure stays the pod's latest kill, so an older Sentinel
still reads the file (adding all programs up). Programs no longer supervised
keep their counters in the file.

Rules:

- A file from another pod (its ``pod_uid`` differs from ``$POD_UID``, the
  downward API's ``metadata.uid``) is not carried over: one line says so and
  the counters start at zero (the chart's ``emptyDir`` is per pod, a
  ``hostPath`` or a PVC may not be).
- An unreadable, corrupt or unknown-schema file is one warning line; the
  counters start at zero and the file is rewritten.
- Within a pod a counter never goes backwards: every Sentinel writes what it
  read plus what it counted.
- Writes never block or break enforcement: they run on a thread of their own
  (the newest snapshot wins), atomically (a temporary file in the same
  directory, ``fsync``, ``rename``, ``fsync`` of the directory). A directory
  that is read-only or full gives one warning; Sentinel carries on without
  the file.

Standard library only (``json``, ``threading``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from sentinel.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

COMPONENT = "state-file"
FILE_NAME = "sentinel-state.json"
SCHEMA = 1
# A state file is a few hundred bytes; anything much bigger is not ours.
MAX_BYTES = 1 << 20
# close() waits this long for the last write (a slow network volume must not
# hold up Sentinel's exit for more).
FLUSH_SECONDS = 2.0
# The guardian events after which the counters have changed.
_CHANGED = ("signal_sent", "kill_finished", "restart_scheduled",
            "kernel_oom_kill")  # counted in state.kills[("kernel_oom", "SIGKILL")]


@dataclass
class Carried:
    """Counters of earlier containers of this pod, as read from the file.

    ``kills``: ``(reason, signal name) -> count``; ``restarts``: a count;
    ``last_kill_wall``: Unix seconds of the last kill, ``None`` if none;
    ``other``: counters this version does not know, kept verbatim.
    """

    kills: dict = field(default_factory=dict)
    restarts: int = 0
    last_kill_wall: float | None = None
    other: dict = field(default_factory=dict)


def parse(data: bytes, pod_uid: str | None,
          main: str = "") -> tuple[dict[str, Carried], str | None]:
    """``(carried, problem)`` for the file's bytes ``data``: ``carried`` maps each
    program's name to its ``Carried``; values that name no program go to ``main``
    (the main program: a file from before programs), which also gets ``other``.

    ``problem`` is ``None`` when the file is usable, else the reason it is not
    (words that follow "the state file"): then ``carried`` is empty.
    """
    try:
        doc = json.loads(data)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        return {}, f"is not valid JSON ({exc})"
    if not isinstance(doc, dict):
        return {}, "is not a JSON object"
    if doc.get("schema") != SCHEMA:
        return {}, (f"has schema {doc.get('schema')!r}, this Sentinel reads schema "
                    f"{SCHEMA}")
    file_uid = doc.get("pod_uid")
    if file_uid != pod_uid:
        return {}, (f"is from another pod (pod UID {file_uid or 'unset'}, this pod's "
                    f"POD_UID is {pod_uid or 'unset'})")
    out: dict[str, Carried] = {}

    def of(labels) -> Carried:
        name = labels.get("program")
        return out.setdefault(main if name is None else str(name), Carried())

    try:
        counters = doc.get("counters") or {}
        for item in counters.get("kills", []):
            labels = item["labels"]
            key = (str(labels["reason"]), str(labels["signal"]))
            carried = of(labels)
            carried.kills[key] = carried.kills.get(key, 0) + _count(item["value"])
        for item in counters.get("restarts", []):
            of(item.get("labels") or {}).restarts += _count(item["value"])
        other = {k: v for k, v in counters.items() if k not in ("kills", "restarts")}
        if other:
            out.setdefault(main, Carried()).other = other
        by_program = doc.get("last_kill_timestamp_seconds_by_program")
        if by_program is None:
            last = doc.get("last_kill_timestamp_seconds")
            by_program = {main: last} if last else {}
        for name, last in dict(by_program).items():
            if last:
                out.setdefault(str(name), Carried()).last_kill_wall = float(last)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return {}, f"has a malformed counter ({type(exc).__name__}: {exc})"
    return out, None


def _count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


def _name(state) -> str:
    """A program's key in the file: ``state.program``, else its workload's name."""
    return state.program or state.workload


def render(carried: dict[str, Carried], states, pod_uid: str | None,
           main: str = "") -> bytes:
    """The file's contents: ``carried`` (program name -> ``Carried``) plus the counts in
    ``states`` (each program's ``GuardianState``; one state alone is taken as a list of
    one). ``main`` names the program whose ``Carried.other`` holds unknown counters."""
    if not isinstance(states, (list, tuple)):
        states = [states]
    live = {_name(st): st for st in states}
    kills, restarts, last_kill = [], [], {}
    for name in sorted(set(carried) | set(live)):
        old, st = carried.get(name) or Carried(), live.get(name)
        counts = dict(old.kills)
        for key, n in (dict(st.kills).items() if st is not None else ()):
            counts[key] = counts.get(key, 0) + n
        kills += [{"labels": {"program": name, "reason": r, "signal": s}, "value": n}
                  for (r, s), n in sorted(counts.items())]
        restarts.append({"labels": {"program": name},
                         "value": old.restarts + (st.restarts if st is not None else 0)})
        kill = (st.current_kill or st.last_kill) if st is not None else None
        if kill is not None and getattr(kill, "dry_run", False):
            kill = None  # --dry-run: nothing was stopped
        last = kill.started_wall if kill is not None else old.last_kill_wall
        if last:
            last_kill[name] = last
    counters = dict((carried.get(main) or Carried()).other)
    counters["kills"] = kills
    counters["restarts"] = restarts
    doc = {"schema": SCHEMA, "pod_uid": pod_uid, "written": time.time(), "counters": counters,
           "last_kill_timestamp_seconds": max(last_kill.values()) if last_kill else None,
           "last_kill_timestamp_seconds_by_program": last_kill}
    return (json.dumps(doc, sort_keys=True) + "\n").encode()


def write_atomically(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data``: a temporary file beside it, ``fsync``, ``rename``,
    ``fsync`` of the directory. Raises ``OSError``; the old file is intact on failure."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # the rename is done; a directory we may not open is no reason to fail
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


class StateFile:
    """The pod's counters in ``<directory>/sentinel-state.json``; a host listener.

    ``carried_by_program`` holds what earlier containers counted, per program name
    (read once, here; ``carried_for(name)`` for one, ``carried`` for the main
    program's); ``writes_total`` and ``write_errors_total`` count this Sentinel's
    writes. ``close()`` writes the final counts, waiting at most ``flush_seconds``.

    ``state`` is the host's ``GuardianState``; ``host`` (a ``Guardian`` or a
    ``Group``) gives the programs whose counts are written (``host.programs``, read
    at each write, so a program added by a reload is kept too) and the main one
    (``host.program(None)``); without it ``state`` is the one program.
    """

    name = COMPONENT

    def __init__(self, directory: str, state, *, pod_uid: str | None,
                 flush_seconds: float = FLUSH_SECONDS, components: dict | None = None,
                 host=None) -> None:
        self.directory = directory
        self.path = os.path.join(directory, FILE_NAME)
        self.state = state
        self.host = host
        self.pod_uid = pod_uid
        self.flush_seconds = flush_seconds
        self.components = components  # guardian.state.components: a failed write shows there
        self.carried_by_program: dict[str, Carried] = {}
        self.writes_total = 0
        self.write_errors_total = 0
        self._warned_write = False
        self._cond = threading.Condition()
        self._pending: bytes | None = None
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- the programs ---------------------------------------------------------
    def program_states(self) -> list:
        """Each program's ``GuardianState``, read now (``[state]`` without a host)."""
        programs = getattr(self.host, "programs", None)
        if programs is None:
            return [self.state]
        return [p.state for p in list(programs)]

    def main_program(self) -> str:
        """The main program's name: old files' counters are its."""
        find = getattr(self.host, "program", None)
        if callable(find):
            try:
                return _name(find(None).state)
            except Exception:  # no main program: the first one
                pass
        states = self.program_states()
        return _name(states[0] if states else self.state)

    def carried_for(self, program: str) -> Carried | None:
        """What earlier containers counted for the program called ``program``, or
        ``None`` (nothing carried for it)."""
        return self.carried_by_program.get(program)

    @property
    def carried(self) -> Carried:
        """The main program's carried counters (empty when none)."""
        return self.carried_by_program.get(self.main_program()) or Carried()

    # -- reading, once at start ---------------------------------------------
    def load(self) -> str:
        """Read the file into ``carried``; return a one-line status for ``components``.

        Never raises: a problem is one warning line and empty ``carried``.
        """
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return f"on: {self.path} (new: no earlier container in this pod)"
        except NotADirectoryError:
            self._warned_write = True  # this one line says it all
            message = (f"state file {self.path}: {self.directory} is not a directory; the "
                       "pod's counters are not carried over (enforcement goes on). Fix: give "
                       "--state-dir a writable directory (the chart's /shared emptyDir)")
            log.warning("%s", message, extra={"event": "state_file", "path": self.path})
            return f"off: {self.directory} is not a directory"
        except OSError as exc:
            return self._bad(f"cannot be read ({exc.strerror or exc})")
        if len(data) > MAX_BYTES:
            return self._bad(f"is bigger than {MAX_BYTES} bytes: not a Sentinel state file")
        carried, problem = parse(data, self.pod_uid, self.main_program())
        if problem is not None:
            return self._bad(problem)
        self.carried_by_program = carried
        kills = sum(sum(c.kills.values()) for c in carried.values())
        restarts = sum(c.restarts for c in carried.values())
        log.info("state file %s: carrying over %d kill signal(s) and %d restart(s) from "
                 "earlier containers of this pod", self.path, kills, restarts,
                 extra={"event": "state_file", "path": self.path, "kills": kills,
                        "restarts": restarts, "programs": sorted(carried)})
        return f"on: {self.path} (carried {kills} kill signal(s), {restarts} restart(s))"

    def _bad(self, problem: str) -> str:
        message = " ".join(f"state file {self.path} {problem}; the pod's counters start at "
                           "zero and the file is rewritten".split())
        log.warning("%s", message, extra={"event": "state_file", "path": self.path})
        return f"on: {self.path} (started fresh: {' '.join(problem.split())})"

    # -- writing, off the loop ----------------------------------------------
    def __call__(self, event) -> None:
        """The guardian listener: after a counter changed, queue a write (never blocks)."""
        if event.kind in _CHANGED:
            self.save()

    def save(self) -> None:
        """Queue a write of the current counts; the writer thread takes the newest."""
        data = render(self.carried_by_program, self.program_states(), self.pod_uid,
                      self.main_program())
        with self._cond:
            if self._closed:
                return
            self._pending = data
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="sentinel-state-file",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                data, self._pending = self._pending, None
                if data is None:
                    return
                self._busy = True
            try:
                self._write(data)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, data: bytes) -> None:
        try:
            os.makedirs(self.directory, exist_ok=True)
            write_atomically(self.path, data)
        except OSError as exc:
            self.write_errors_total += 1
            if self.components is not None:  # one key replaced: safe from this thread
                self.components[COMPONENT] = (f"error: cannot write {self.path}: "
                                              f"{' '.join(str(exc.strerror or exc).split())} "
                                              f"({self.write_errors_total} failed)")
            if not self._warned_write:
                self._warned_write = True
                log.warning("cannot write the state file %s: %s; kills of this container are "
                            "not carried over to the next one (enforcement goes on). Fix: give "
                            "--state-dir a writable directory (the chart's /shared emptyDir)",
                            self.path, " ".join(str(exc.strerror or exc).split()),
                            extra={"event": "state_file", "path": self.path})
            return
        self.writes_total += 1

    def pending(self) -> bool:
        """``True`` while a write is queued or under way."""
        with self._cond:
            return self._pending is not None or self._busy

    def close(self) -> None:
        """Write the final counts and stop the writer, waiting at most ``flush_seconds``."""
        self.save()
        deadline = time.monotonic() + self.flush_seconds
        with self._cond:
            while self._pending is not None or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._closed = True
            self._cond.notify_all()


def start(guardian, settings, environ=None) -> list:
    """Read the state file for ``guardian`` when ``settings.state_dir`` is set; subscribe it.

    ``guardian`` is the host (one program or several, ``host.programs``). Sets
    ``guardian.pod_state`` (the ``StateFile``, for the metrics exporter: ``carried_for``)
    and ``guardian.state.components["state-file"]``; returns ``[state_file]``
    or ``[]`` when off.
    """
    directory = getattr(settings, "state_dir", None)
    comps = guardian.state.components
    if not directory:
        comps[COMPONENT] = "off (no --state-dir)"
        return []
    env = os.environ if environ is None else environ
    sf = StateFile(directory, guardian.state, pod_uid=env.get("POD_UID") or None,
                   components=comps, host=guardian)
    comps[COMPONENT] = sf.load()
    guardian.pod_state = sf
    guardian.listeners.append(sf)
    return [sf]
