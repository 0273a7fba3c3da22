"""Sentinel's own errors.

Each carries the facts (pid, path, value) and a message that says what
happened, what it means, and the fix. ``cli``/``entry`` turn them into one line
on stderr and an exit code from the README's table; they never reach a user as
a traceback.
"""

from __future__ import annotations

import re

# Sentinel's own exit codes (the README's table). Anything else is the
# workload's status passed through (128+N when it died of signal N).
EXIT_USAGE = 2
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
EXIT_MEMORY_KILL_DEFAULT = 137
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in Sentinel, never the workload's fault
# EX_OSERR: the ladder ended and the workload's main process is still there (it
# refused Sentinel's signals, or did not die after SIGKILL): its status is unknown.
EXIT_NOT_ENDED = 71


# Anything that looks like a URL (scheme://...): a webhook URL carries its token, and a
# message about a bad option or file must never echo it (docs/webhooks.md).
# A quote or angle bracket ends it: the message's own quoting stays ('<url redacted>').
_URL_IN_TEXT = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)
URL_MASK = "<url redacted>"


def mask_urls(text: str) -> str:
    """``text`` with every ``scheme://...`` word replaced by ``URL_MASK`` (for the exit-2
    messages: ``UsageError``, ``ConfigError``, argparse's errors)."""
    return _URL_IN_TEXT.sub(URL_MASK, text) if "://" in text else text


class SentinelError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(SentinelError):
    """A bad flag, environment variable or value (exit code 2)."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str = "", *args) -> None:
        super().__init__(mask_urls(str(message)), *args)


class SpawnError(SentinelError):
    """The command could not be started (126 not executable, 127 not found)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ProcessGone(SentinelError):
    """The process exited (or its PID was reused) while it was being read."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"process {pid} is gone")
        self.pid = pid


class ProbeAccessDenied(SentinelError):
    """/proc of a process could not be read: another user, no CAP_SYS_PTRACE."""

    def __init__(self, pid: int, path: str) -> None:
        super().__init__(
            f"cannot read {path} of process {pid}: permission denied; run Sentinel as the "
            "workload's user or grant CAP_SYS_PTRACE"
        )
        self.pid = pid
        self.path = path


class ControlError(SentinelError):
    """A control-socket client could not reach a Sentinel."""


class StateError(SentinelError, ValueError):
    """An operator command that does not fit the program's state (``stop`` while it is
    already being stopped, ``signal`` with no workload running). ``state`` is the
    program's phase or condition (``"terminating"``, ``"no_workload"``), ``command``
    the verb refused. A ``ValueError`` too: the control socket answers it as
    ``{code: "invalid_state", message}`` with this message."""

    def __init__(self, message: str, *, state: str, command: str) -> None:
        super().__init__(message)
        self.state = state
        self.command = command


class UnknownProgram(SentinelError, LookupError):
    """A control command named a program Sentinel does not supervise. ``name`` is the
    name asked for, ``known`` the names there are (in start order). The control socket
    answers it as ``{code: "unknown_program", message}``."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"no program named {name!r}; the programs are: "
                         + (", ".join(known) or "none"))
        self.name = name
        self.known = known


class ConfigError(SentinelError):
    """The programs file (``sentinel run --config FILE``) is wrong: nothing was started
    (exit code 2). ``path`` is the file, ``line`` the 1-based line at fault (None when
    the file could not be read at all), ``key`` the dotted key (``programs[1].max-rss``,
    None for the file as a whole), ``problem`` what is wrong and what to do. The message
    is one line: ``sentinel.yaml:12: programs[1].max-rss: '20 0Mi' is not a size ...``."""

    exit_code = EXIT_USAGE

    def __init__(self, path: str, line: int | None, key: str | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        problem = mask_urls(problem)  # a URL the user wrote where a path or name belongs
        super().__init__(mask_urls(f"{where}: " + (f"{key}: " if key else "") + problem))
        self.path = path
        self.line = line
        self.key = key
        self.problem = problem
