"""Finding the process ``sentinel watch`` guards (sidecar mode), with psutil.

A target is given by name (``--target-name``), command-line regular
expression (``--target-cmdline``) or PID (``--target-pid``).

Name matching. The kernel keeps only 15 characters of a process's name
(``comm``), so a name matches when it equals any of: the ``comm``, the
basename of ``argv[0]``, or the basename of the executable (``/proc/<pid>/exe``,
readable only for the same user or with CAP_SYS_PTRACE). When neither
``argv[0]`` nor the executable can be read, a ``comm`` equal to the name's
first 15 characters matches a longer name. Scripts run by an interpreter
(``python app.py``) are named after the interpreter: use
``--target-cmdline 'app\\.py'`` for them.

Command lines are matched with ``re.search`` against the arguments joined
by spaces. Zombies, Sentinel itself and its ancestors (e.g. the shell that
started it, whose command line mentions the pattern) never match; a
``--target-pid`` naming one of them is refused at start (``check_target_pid``).

Several matches. A match whose parent also matches is part of a bigger
match's tree (a server's workers), so only the roots count; among them the
oldest (earliest start time, then lowest PID) is the target, and every root
is listed in the log so the choice can be checked.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import psutil

from sentinel.errors import SentinelError, UsageError

COMM_MAX = 15  # TASK_COMM_LEN - 1


@dataclass(frozen=True)
class Candidate:
    """One process that could be the target. ``exe`` is ``None`` when unreadable."""

    pid: int
    ppid: int
    comm: str
    exe: str | None
    cmdline: tuple[str, ...]
    create_time: float  # Unix time, psutil's (from /proc/<pid>/stat starttime)
    uid: int | None

    def command(self, width: int = 120) -> str:
        """The command line joined by spaces (``[comm]`` for none), cut to ``width`` characters."""
        cmd = " ".join(self.cmdline) or f"[{self.comm}]"
        return cmd if len(cmd) <= width else cmd[:width - 3] + "..."

    def describe(self, width: int = 120) -> str:
        """``pid 12 (gunicorn app:wsgi)``, the command cut to ``width`` characters."""
        return f"pid {self.pid} ({self.command(width)})"


@dataclass(frozen=True)
class TargetSpec:
    """What to look for: exactly one of ``name``, ``cmdline`` (a regex) or ``pid``."""

    name: str | None = None
    cmdline: str | None = None
    pid: int | None = None

    @classmethod
    def from_settings(cls, settings) -> "TargetSpec":
        return cls(settings.target_name, settings.target_cmdline, settings.target_pid)

    def describe(self) -> str:
        if self.name is not None:
            return f"name {self.name!r}"
        if self.cmdline is not None:
            return f"command line matching {self.cmdline!r}"
        return f"pid {self.pid}"

    def matches(self, c: Candidate) -> bool:
        """Whether ``c`` is what this spec asks for (see the module docstring)."""
        if self.pid is not None:
            return c.pid == self.pid
        if self.cmdline is not None:
            return bool(c.cmdline) and re.search(self.cmdline, " ".join(c.cmdline)) is not None
        name = self.name or ""
        argv0 = os.path.basename(c.cmdline[0]) if c.cmdline and c.cmdline[0] else None
        exe = os.path.basename(c.exe) if c.exe else None
        if name in (c.comm, argv0, exe):
            return True
        return (len(name) > COMM_MAX and c.comm == name[:COMM_MAX]
                and argv0 is None and exe is None)


class TargetPermissionError(SentinelError):
    """The target runs as another user and Sentinel may not signal it."""

    def __init__(self, pid: int, target_uid: int | None, own_uid: int) -> None:
        who = f"user {target_uid}" if target_uid is not None else "another user"
        fix_uid = target_uid if target_uid is not None else "<the workload's uid>"
        super().__init__(
            f"cannot signal target pid {pid}: it runs as {who} and Sentinel runs as user "
            f"{own_uid} without CAP_KILL, so the memory limit cannot be enforced. Fix the "
            f"sidecar's securityContext: runAsUser: {fix_uid} (the workload's user), or "
            "capabilities: {add: [KILL]}; add SYS_PTRACE too to read /proc of another user's "
            "processes")
        self.pid = pid
        self.target_uid = target_uid
        self.own_uid = own_uid


class TargetIsSentinel(UsageError):
    """``--target-pid`` names Sentinel itself or one of its ancestors (exit code 2)."""

    def __init__(self, pid: int, who: str, describe: str) -> None:
        super().__init__(
            f"--target-pid {pid} is {who} ({describe}), which Sentinel never watches: its "
            "process tree holds Sentinel, so a kill would hit Sentinel too. A sidecar watches "
            "another container's "
            "process: give the workload's PID (ps -e in the pod, with shareProcessNamespace: "
            "true), or use --target-name / --target-cmdline, which skip Sentinel and its "
            "ancestors")
        self.pid = pid


def thread_group_id(pid: int) -> int | None:
    """``Tgid`` from ``/proc/<pid>/status``: ``pid`` for a process, its process's PID for
    a thread (whose ``/proc/<tid>`` is readable though not listed); ``None`` when gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_target_pid(pid: int, own_pid: int | None = None) -> None:
    """Raise ``UsageError`` (exit code 2) for a ``--target-pid`` that can never be watched:

    - a thread ID: the process is its thread group (``thread_group_id``);
    - ``own_pid`` (default: this process) or one of its ancestors (the shell that
      started it, PID 1 when Sentinel is not PID 1): ``TargetIsSentinel``. Such a
      process is excluded from matching, so Sentinel would wait for it forever.

    A PID with no process is fine: it may still start.
    """
    own_pid = os.getpid() if own_pid is None else own_pid
    tgid = thread_group_id(pid)
    if tgid is not None and tgid != pid:
        c = candidate(tgid)
        raise UsageError(f"--target-pid {pid} is a thread of pid {tgid} "
                         f"({c.command(60) if c else 'gone'}), not a process; give the "
                         f"process: --target-pid {tgid}")
    try:
        me = psutil.Process(own_pid)
        chain = [me, *me.parents()]
    except psutil.Error:
        return
    for level, proc in enumerate(chain):
        if proc.pid != pid:
            continue
        c = candidate(pid)
        describe = c.command(60) if c is not None else "gone"
        if level == 0:
            who = "Sentinel itself"
        elif level == 1:
            who = "Sentinel's parent"
        else:
            who = f"an ancestor of Sentinel, {level} levels up"
        raise TargetIsSentinel(pid, who, describe)


def own_lineage(pid: int | None = None) -> set[int]:
    """``pid`` (default: this process) and all its ancestors: never a target."""
    pid = os.getpid() if pid is None else pid
    out = {pid}
    try:
        out.update(p.pid for p in psutil.Process(pid).parents())
    except psutil.Error:
        pass
    return out


_ATTRS = ["pid", "ppid", "exe", "cmdline", "create_time", "uids", "status"]


def _comm(pid: int) -> str | None:
    """The kernel's name of ``pid`` (at most 15 characters). psutil's ``name()``
    lengthens a cut name from the command line, which would hide the cut."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n").decode(errors="replace")
    except OSError:
        return None


def _candidate(info: dict) -> Candidate | None:
    if info.get("status") == psutil.STATUS_ZOMBIE or info.get("create_time") is None:
        return None
    uids = info.get("uids")
    comm = _comm(info["pid"]) or ""
    return Candidate(pid=info["pid"], ppid=info.get("ppid") or 0, comm=comm,
                     exe=info.get("exe") or None, cmdline=tuple(info.get("cmdline") or ()),
                     create_time=info["create_time"], uid=uids.real if uids else None)


def candidate(pid: int) -> Candidate | None:
    """The ``Candidate`` for ``pid``, or ``None`` when it is gone or a zombie."""
    try:
        info = psutil.Process(pid).as_dict(_ATTRS, ad_value=None)
    except psutil.Error:
        return None
    return _candidate(info)


def scan(spec: TargetSpec, exclude: set[int] | None = None) -> list[Candidate]:
    """Every live process ``spec`` matches, less ``exclude`` (default: ``own_lineage()``)."""
    exclude = own_lineage() if exclude is None else exclude
    if spec.pid is not None:
        c = candidate(spec.pid)
        # A thread's /proc/<tid> is readable too; only a process is a target.
        ok = c is not None and c.pid not in exclude and thread_group_id(c.pid) == c.pid
        return [c] if ok else []
    out = []
    for proc in psutil.process_iter(_ATTRS, ad_value=None):
        c = _candidate(proc.info)
        if c is not None and c.pid not in exclude and spec.matches(c):
            out.append(c)
    return out


def choose(matches: list[Candidate]) -> tuple[Candidate | None, list[Candidate]]:
    """``(target, roots)``: the oldest match whose parent does not match, and all such roots."""
    pids = {c.pid for c in matches}
    roots = sorted((c for c in matches if c.ppid not in pids),
                   key=lambda c: (c.create_time, c.pid))
    return (roots[0] if roots else None), roots


def check_signalable(c: Candidate) -> None:
    """Raise ``TargetPermissionError`` if this process may not signal ``c``
    (``kill(pid, 0)``: EPERM without CAP_KILL for another user's process)."""
    try:
        os.kill(c.pid, 0)
    except PermissionError:
        raise TargetPermissionError(c.pid, c.uid, os.getuid()) from None
    except ProcessLookupError:
        pass  # gone: the caller notices through its pidfd
