"""Finding the process ``sentinel watch`` guards (sidecar mode), with psutil.

A target is given by name (``--target-name``), command-line regular
expression (``--target-cmdline``) or PID (``--target-pid``).

Name matching finds a process by the name it was started as, as ``pidof -x``
does. The kernel keeps only 15 characters of a process's name (``comm``), and
a script's ``comm`` is its interpreter's (``python3 my-long-worker-name.py``),
so a name matches, from the best match to the weakest, when it equals

1. the ``comm`` (a name of at most 15 characters), the basename of ``argv[0]``,
   or the basename of the executable (``/proc/<pid>/exe``, readable only for the
   same user or with CAP_SYS_PTRACE);
2. the basename of the script argument in ``/proc/<pid>/cmdline``: the first
   argument after ``argv[0]`` that is not an option (``python3 -u worker.py``,
   and a ``#!`` script, which the kernel runs as ``python3 ./worker.py``); none
   after ``-c``, ``-m`` or ``-e`` (code or a module follows, not a script);
3. the name's first 15 characters, equal to the cut ``comm``, when neither
   ``argv[0]`` nor the executable can be read.

Command lines are matched with ``re.search`` against the arguments joined
by spaces. Zombies, Sentinel itself and its ancestors (e.g. the shell that
started it, whose command line mentions the pattern) never match; a
``--target-pid`` naming one of them is refused at start (``check_target_pid``).

Several matches. A match whose parent also matches is part of a bigger
match's tree (a server's workers), so only the roots count. Among the roots
that match best, the oldest (earliest start time, then lowest PID) is the
target; when several match equally well ``sentinel watch`` warns on one line
that lists them, so the choice can be checked and made explicit.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

import psutil

from sentinel.errors import SentinelError, UsageError
from sentinel.probes.tree import status_field

COMM_MAX = 15  # TASK_COMM_LEN - 1
# How well a name matches (TargetSpec.quality); 0 is no match.
MATCH_EXACT = 3  # comm (<= 15 characters), argv[0]'s or the executable's basename
MATCH_SCRIPT = 2  # the script argument's basename
MATCH_CUT = 1  # only the cut comm is known
_CODE_FOLLOWS = ("-c", "-m", "-e")  # python -c/-m, perl/ruby/node -e: no script file


def script_argument(cmdline: tuple[str, ...]) -> str | None:
    """The script an interpreter runs: the first argument after ``argv[0]`` that is not an
    option (``("python3", "-u", "w.py")`` -> ``"w.py"``); ``None`` when there is none or
    code follows ``-c``/``-m``/``-e``. Options that take a value (``-W ignore``) are not
    known here: their value is taken for the script and simply matches no name."""
    for arg in cmdline[1:]:
        if arg in _CODE_FOLLOWS:
            return None
        if arg.startswith("-"):
            continue
        return arg
    return None


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
        return self.quality(c) > 0

    def quality(self, c: Candidate) -> int:
        """How well ``c`` matches: ``MATCH_EXACT``, ``MATCH_SCRIPT``, ``MATCH_CUT`` or 0
        (no match). A PID or a command line matches exactly or not at all."""
        if self.pid is not None:
            return MATCH_EXACT if c.pid == self.pid else 0
        if self.cmdline is not None:
            found = bool(c.cmdline) and re.search(self.cmdline, " ".join(c.cmdline)) is not None
            return MATCH_EXACT if found else 0
        name = self.name or ""
        argv0 = os.path.basename(c.cmdline[0]) if c.cmdline and c.cmdline[0] else None
        exe = os.path.basename(c.exe) if c.exe else None
        if name in (argv0, exe) or (len(name) <= COMM_MAX and name == c.comm):
            return MATCH_EXACT
        script = script_argument(c.cmdline)
        if script and os.path.basename(script) == name:
            return MATCH_SCRIPT
        if (len(name) > COMM_MAX and c.comm == name[:COMM_MAX]
                and argv0 is None and exe is None):
            return MATCH_CUT
        return 0


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
    return status_field(pid, b"Tgid:")


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


def choose(matches: list[Candidate], quality=None) -> tuple[Candidate | None, list[Candidate]]:
    """``(target, tied)``: among the matches whose parent does not match (the roots), those
    that match best (``quality(c)``, e.g. ``TargetSpec.quality``; all alike without it),
    oldest first; the target is the first of them."""
    pids = {c.pid for c in matches}
    roots = [c for c in matches if c.ppid not in pids]
    if quality is not None and roots:
        best = max(quality(c) for c in roots)
        roots = [c for c in roots if quality(c) == best]
    roots.sort(key=lambda c: (c.create_time, c.pid))
    return (roots[0] if roots else None), roots


def age_seconds(pid: int, proc_root: str = "/proc") -> float | None:
    """How long ago ``pid`` started, in seconds: ``CLOCK_BOOTTIME`` now minus field 22 of
    ``/proc/<pid>/stat`` (``starttime``, clock ticks since boot, on the same clock;
    ``None`` when gone). psutil's ``create_time`` adds the boot time from
    ``/proc/stat``'s ``btime``, whole seconds, so a just-started process can look up to
    a second old (or younger than zero): fine as an identity, wrong as an age."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - start)


def check_signalable(c: Candidate) -> None:
    """Raise ``TargetPermissionError`` if this process may not signal ``c``
    (``kill(pid, 0)``: EPERM without CAP_KILL for another user's process)."""
    try:
        os.kill(c.pid, 0)
    except PermissionError:
        raise TargetPermissionError(c.pid, c.uid, os.getuid()) from None
    except ProcessLookupError:
        pass  # gone: the caller notices through its pidfd
