"""The pre-kill hook: a command run before a memory kill's SIGTERM, for evidence.

``--pre-kill-hook 'py-spy dump --pid $SENTINEL_PID'`` (through ``sh -c`` for the
variable) takes a stack dump of the process about to die. The supervisor starts a
``PreKillHook`` when a memory kill begins and holds the ladder's SIGTERM until the
hook ends or its timeout passes; the SIGKILL deadline is not moved (the ladder's
``start_held``), so a hook that hangs or fails never delays the SIGKILL.

The hook is spawned as a workload is (``sentinel.core.spawn.spawn``: its own
session, the signal mask Sentinel was given), its stdout and stderr into one pipe
read on the loop (``OUTPUT_KEPT_BYTES`` kept, the rest counted and dropped, so a
flood costs Sentinel no memory), its whole process group SIGKILLed at the timeout.
It is Sentinel's direct child: ``Init.helpers`` routes its status here (not to a
program, not as an orphan), and the trees of the programs leave it out. Written
here rather than with ``asyncio.create_subprocess_exec``: asyncio's child watcher
would reap on its own and race the init's ``waitpid(-1)``.
"""

from __future__ import annotations

import codecs
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Callable

from sentinel import logs
from sentinel.core.spawn import spawn
from sentinel.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

# What is read of the hook's output and kept; the rest is counted, never stored.
OUTPUT_KEPT_BYTES = 64 * 1024
# What an Event, a webhook and the kill's record carry of it.
OUTPUT_REPORTED_BYTES = 4 * 1024
_READ_CHUNK = 16 * 1024
# Read passes per readable wake-up: a hook that floods its pipe cannot hold the loop.
_READS_PER_WAKEUP = 8
# Set in the hook's environment to a token of this run: a process that left the hook's
# session and process group (``setsid cmd &``) and was reparented to Sentinel when its
# parent exited is still known as the hook's by its inherited environment
# (/proc/<pid>/environ, read once per new direct child of Sentinel while the hook runs).
HOOK_ID_VARIABLE = "SENTINEL_PRE_KILL_HOOK_ID"
# How often, while the hook runs, Sentinel's direct children are checked for the hook's
# strays (and once more when it is reaped): a reparented stray is counted in a program's
# tree at most this long. A hook lives at most its timeout (seconds).
STRAY_SCAN_SECONDS = 0.1


def truncate_utf8(data: bytes, most: int) -> str:
    """The first ``most`` bytes of ``data`` as text: invalid UTF-8 replaced (U+FFFD), a
    character cut by the bound dropped whole, so the result is valid and never more
    than ``most`` bytes plus replacements' growth (each bad byte becomes 3)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    return decoder.decode(data[:most], final=len(data) <= most)


def reported_output(data: bytes) -> bytes:
    """``data`` (the hook's kept output) with every registered secret (``logs.redact``:
    the webhook URLs) replaced, before any cut: the hook may print its environment or a
    config, and its output goes to the log, the Event, the termination message, ``status``
    and the webhooks. Invalid UTF-8 is replaced (U+FFFD) when anything is registered."""
    if not logs.secrets_registered():
        return data
    return logs.redact(data.decode("utf-8", "replace")).encode()


@dataclass
class HookResult:
    """How one run of the hook ended. ``exit_code``: its exit status, 128+N for death by
    signal N, ``None`` if it could not be started (``error`` says why); ``timed_out``:
    killed at its timeout; ``seconds``: start to end (its exit, or the spawn failure);
    ``output``: what it wrote to stdout and stderr, the first ``OUTPUT_KEPT_BYTES``
    bytes; ``output_bytes``: how much it wrote in all (``dropped_bytes`` beyond that)."""

    command: tuple[str, ...]
    pid: int | None
    exit_code: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    output: bytes = b""
    output_bytes: int = 0
    error: str | None = None

    @property
    def dropped_bytes(self) -> int:
        return self.output_bytes - len(self.output)

    def fields(self) -> dict:
        """The ``pre_kill_hook`` Event's fields (the kill record added by the caller):
        ``command``, ``exit_code``, ``timed_out``, ``seconds``, ``output`` (the first
        4 KiB, UTF-8 safe), ``output_bytes``, ``dropped_bytes``, ``pid``, ``error``."""
        return {"command": list(self.command), "exit_code": self.exit_code,
                "timed_out": self.timed_out, "seconds": round(self.seconds, 3),
                "output": truncate_utf8(reported_output(self.output), OUTPUT_REPORTED_BYTES),
                "output_bytes": self.output_bytes, "dropped_bytes": self.dropped_bytes,
                "pid": self.pid, "error": self.error}


def _children(pid: int, proc: str = "/proc") -> list[int]:
    """Direct children of ``pid`` over all its threads (``/proc/<pid>/task/*/children``);
    empty if it is gone."""
    out: list[int] = []
    try:
        tids = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"{proc}/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(x) for x in f.read().split())
        except (OSError, ValueError):
            continue
    return out


def _has_token(pid: int, needle: bytes, proc: str = "/proc") -> bool:
    """Whether ``pid``'s initial environment (``/proc/<pid>/environ``) holds ``needle``
    (``NAME=value``). False if it is gone or unreadable."""
    try:
        with open(f"{proc}/{pid}/environ", "rb") as f:
            return needle in b"\0" + f.read()
    except OSError:
        return False


def hook_environment(base, *, pid: int, pids, program: str, measure: str,
                     value_bytes: int | None, limit_bytes: int | None, reason: str) -> dict:
    """``base`` (Sentinel's environment) plus what the hook is about: ``SENTINEL_PID``
    (the workload's main process), ``SENTINEL_PIDS`` (every process of its tree,
    space-separated), ``SENTINEL_PROGRAM``, ``SENTINEL_MEASURE``, ``SENTINEL_VALUE_BYTES``
    and ``SENTINEL_LIMIT_BYTES`` (bytes; empty when unknown), ``SENTINEL_REASON``."""
    env = dict(base)
    env.update({
        "SENTINEL_PID": str(pid), "SENTINEL_PIDS": " ".join(map(str, pids)),
        "SENTINEL_PROGRAM": program, "SENTINEL_MEASURE": measure,
        "SENTINEL_VALUE_BYTES": "" if value_bytes is None else str(value_bytes),
        "SENTINEL_LIMIT_BYTES": "" if limit_bytes is None else str(limit_bytes),
        "SENTINEL_REASON": reason})
    return env


class PreKillHook:
    """One run of the hook on ``loop``. ``start()`` spawns it (returns False, with
    ``result.error`` set, if it could not be started); ``reaped(status)`` is called by
    the init with its ``waitpid`` status. ``on_ended()`` comes once, when it exited or
    was killed at ``timeout_seconds`` (the ladder's SIGTERM goes then); ``on_result(
    HookResult)`` once it is reaped and its pipe read. ``close()`` kills it (Sentinel
    is ending)."""

    def __init__(self, command: tuple[str, ...], environ: dict, original_mask: set[int], *,
                 loop, timeout_seconds: float, on_ended: Callable[[], None],
                 on_result: Callable[[HookResult], None],
                 clock: Callable[[], float] = time.monotonic,
                 helpers: dict | None = None) -> None:
        self.command = tuple(command)
        self.environ = environ
        self.original_mask = original_mask
        self.loop = loop
        self.timeout_seconds = timeout_seconds
        self.on_ended = on_ended
        self.on_result = on_result
        self.clock = clock
        self.result = HookResult(self.command, None)
        self.pid: int | None = None
        self.ended = False  # exited or killed: the SIGTERM may go
        self.done = False  # reaped and reported
        self._started = 0.0
        self._fd: int | None = None
        self._timer = None
        self._status: int | None = None
        # The hook's strays: Sentinel's direct children that carry this run's token (see
        # HOOK_ID_VARIABLE), registered in ``helpers`` (the init's: excluded from every
        # program's tree, their status routed here) and SIGKILLed with the hook.
        self.helpers: dict | None = helpers
        self.token = os.urandom(8).hex()
        self.strays: set[int] = set()
        self._checked: set[int] = set()
        self._scan_timer = None

    def start(self) -> bool:
        """Spawn the hook; schedule its kill at the timeout. False if it could not be
        started (not found, not executable: ``result.error``, ``exit_code`` 127/126);
        ``on_result`` is then called at once, ``on_ended`` not."""
        self._started = self.clock()
        try:
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        except OSError as exc:  # EMFILE/ENFILE: reported like a spawn failure, and done,
            # so the next kill tries again (never "the previous one is still running")
            return self._not_started(f"no pipe for its output: {exc}", 127)
        try:
            child = spawn(self.command, self.original_mask,
                          environ={**self.environ, HOOK_ID_VARIABLE: self.token},
                          stdout_fd=write_fd, stderr_fd=write_fd)
        except Exception as exc:  # SpawnError; the kill proceeds without evidence
            os.close(read_fd)
            return self._not_started(str(exc), getattr(exc, "exit_code", 127))
        finally:
            os.close(write_fd)  # the hook holds the only write end now
        self.pid = self.result.pid = child.pid
        os.set_blocking(read_fd, False)
        self._fd = read_fd
        self.loop.add_reader(read_fd, self._read)
        self._timer = self.loop.call_later(self.timeout_seconds, self._time_out)
        if self.helpers is not None:
            self._scan_timer = self.loop.call_later(STRAY_SCAN_SECONDS, self._scan)
        return True

    def _scan(self) -> None:
        """While the hook runs: find its strays now, and again in STRAY_SCAN_SECONDS."""
        self._scan_timer = None
        if self.ended:
            return
        self.find_strays()
        self._scan_timer = self.loop.call_later(STRAY_SCAN_SECONDS, self._scan)

    def find_strays(self) -> set[int]:
        """Sentinel's direct children that are the hook's (its token in their
        environment) but no longer under it: each is added to ``strays`` and to
        ``helpers``. Each new child is read once. Returns ``strays``."""
        if self.helpers is None:
            return self.strays
        needle = f"{HOOK_ID_VARIABLE}={self.token}\0".encode()
        for pid in _children(os.getpid()):
            if pid in self._checked or pid == self.pid:
                continue
            self._checked.add(pid)
            if pid not in self.helpers and _has_token(pid, needle):
                self.strays.add(pid)
                self.helpers[pid] = lambda status, pid=pid: self.strays.discard(pid)
                log.info("pre-kill hook (pid %s): pid %d left its session; it is the "
                         "hook's, not the workload's, and is killed with it", self.pid, pid,
                         extra={"event": "pre_kill_hook_stray", "pid": pid})
        return self.strays

    def _not_started(self, error: str, exit_code: int) -> bool:
        self.result.error = error
        self.result.exit_code = exit_code
        self.result.seconds = self.clock() - self._started
        self.done = self.ended = True
        self.on_result(self.result)
        return False

    def _read(self) -> None:
        for _ in range(_READS_PER_WAKEUP):
            if self._fd is None:
                return
            try:
                data = os.read(self._fd, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                data = b""
            if not data:  # EOF: every writer (the hook, its children) is gone
                self._close_pipe()
                self._maybe_report()
                return
            res = self.result
            room = OUTPUT_KEPT_BYTES - len(res.output)
            if room > 0:
                res.output += data[:room]
            res.output_bytes += len(data)

    def _close_pipe(self) -> None:
        if self._fd is None:
            return
        try:
            self.loop.remove_reader(self._fd)
        except Exception:
            pass
        os.close(self._fd)
        self._fd = None

    def _time_out(self) -> None:
        self._timer = None
        if self.ended:
            return
        self.result.timed_out = True
        self._kill_group()
        self._end()

    def _kill_group(self) -> None:
        """SIGKILL the hook's process group (its own session) and its strays with their
        descendants. Also once it was reaped: its background children must not outlive
        it, and Linux keeps a group's ID from reuse while any member lives."""
        if self.pid is None:
            return
        self.find_strays()  # those reparented to Sentinel so far (at its exit: all)
        victims = []
        for stray in sorted(self.strays):  # Sentinel's children: no reused PID yet
            victims.append(stray)
            todo = _children(stray)
            while todo and len(victims) < 4096:
                pid = todo.pop()
                victims.append(pid)
                todo.extend(_children(pid))
        try:
            os.killpg(self.pid, signal.SIGKILL)  # its own session: the whole group
        except OSError:
            if self._status is None:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except OSError:
                    pass
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._scan_timer is not None:
            self._scan_timer.cancel()
            self._scan_timer = None
        self.on_ended()

    def reaped(self, status: int) -> None:
        """The init reaped the hook with ``status`` (a raw ``waitpid`` status)."""
        from sentinel.core.init import exit_code_of

        self._status = status
        self.result.exit_code = exit_code_of(status)
        self.result.seconds = self.clock() - self._started
        # Its children may still hold the pipe: take what is there now, then let go.
        self._kill_group()
        self._read()
        self._close_pipe()
        self._maybe_report()  # its report first, then the SIGTERM it held
        self._end()

    def _maybe_report(self) -> None:
        if self.done or self._status is None or self._fd is not None:
            return
        self.done = True
        self.on_result(self.result)

    def abort(self, why: str) -> None:
        """Kill the hook now (the workload is gone: no evidence left to take); ``why``
        goes into ``result.error``. It is still reaped and reported."""
        if self.ended or self.pid is None:
            return
        self.result.error = why
        self._kill_group()
        self._end()

    def close(self) -> None:
        """Sentinel is ending: kill the hook's group, stop reading (no report)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._scan_timer is not None:
            self._scan_timer.cancel()
            self._scan_timer = None
        if not self.done or self.strays:
            self._kill_group()
        self._close_pipe()
