"""What the guardian publishes: samples, kill records, events and its state.

The guardian owns and mutates these objects on the main loop; the metrics
exporter, control socket, Kubernetes Events and dashboard only read them (or
subscribe to ``Event``s). Sizes are bytes, times are seconds; ``*_mono`` are
``time.monotonic()`` readings, ``*_wall`` are Unix times (``time.time()``).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from sentinel.probes.contract import MemorySample  # noqa: F401 - re-exported: core.state.MemorySample

# Kill reasons: stable words used as metric label values and Event reasons.
REASON_MEMORY = "memory_limit"  # the measure crossed the limit
REASON_OPERATOR = "operator"  # `stop`/`kill` on the control socket
REASON_SHUTDOWN = "shutdown"  # Sentinel itself got SIGTERM/SIGINT (docker stop, pod deletion)
KILL_REASONS = (REASON_MEMORY, REASON_OPERATOR, REASON_SHUTDOWN)
# The kernel's OOM killer got there first: a workload process died of a SIGKILL Sentinel
# did not send while the cgroup's oom_kill counter rose (issue 9). Recorded as a
# KillRecord(reason="kernel_oom", signals=[], exit_code=137, ...), counted in
# state.kills[("kernel_oom", "SIGKILL")], announced by Event(kind="kernel_oom_kill",
# fields={"kill": record.to_dict(), "pid": int, "oom_kills_delta": int,
# "cgroup_limit_bytes": int | None}).
REASON_KERNEL_OOM = "kernel_oom"
KILL_REASONS = (*KILL_REASONS, REASON_KERNEL_OOM)

# Phases of the workload as the guardian sees it.
PHASE_STARTING = "starting"
PHASE_RUNNING = "running"
PHASE_TERMINATING = "terminating"  # SIGTERM sent, grace period running
PHASE_RESTARTING = "restarting"  # waiting out the restart back-off
PHASE_WAITING = "waiting"  # watch mode: no target yet
PHASE_EXITED = "exited"
PHASES = (PHASE_STARTING, PHASE_RUNNING, PHASE_TERMINATING, PHASE_RESTARTING,
          PHASE_WAITING, PHASE_EXITED)


@dataclass
class KillRecord:
    """One stop of the workload by Sentinel, updated as the ladder proceeds."""

    reason: str  # one of KILL_REASONS
    started_wall: float
    started_mono: float
    measure: str  # "rss", "pss", "uss" or "cgroup"
    value_bytes: int | None  # the measure when the ladder started
    limit_bytes: int | None
    pids: tuple[int, ...]
    grace_period_seconds: float
    # Signals that reached at least one process, in order, e.g. ["SIGTERM", "SIGKILL"];
    # a step that every process refused (EPERM) is not listed.
    signals: list[str] = field(default_factory=list)
    reaction_seconds: float | None = None  # estimated limit crossing -> SIGTERM
    sigkill_wall: float | None = None
    exit_code: int | None = None  # the workload's status once it was reaped
    # Which processes each signal reached: {"SIGTERM": [pid, ...], "SIGKILL": [...]}.
    reached: dict[str, list[int]] = field(default_factory=dict)
    # Processes that refused Sentinel's signals (kill(2) gave EPERM: another user, e.g.
    # a setuid program), each with its real UID (/proc/<pid>/status, None if unread).
    refused: dict[int, int | None] = field(default_factory=dict)
    # None while the ladder runs; True once the workload's whole tree is gone; False
    # when Sentinel gave up with processes still there (refused, or alive after
    # SIGKILL: uninterruptible sleep, a frozen cgroup), listed in ``survivors``.
    confirmed: bool | None = None
    survivors: list[dict] = field(default_factory=list)  # process_facts() of each
    # Why SIGKILL came before the grace period ended because the workload would reach
    # the container's hard limit first (sentinel.core.kernel_side.early_sigkill_reason).
    early_sigkill_reason: str | None = None
    # --dry-run: the ladder's steps were reported ("would have sent"), none was sent;
    # ``signals`` then lists what would have been sent.
    dry_run: bool = False
    # The pre-kill hook's report (sentinel.core.hook.HookResult.fields(): command,
    # exit_code, timed_out, seconds, output (4 KiB), ...), once it ended; None: no hook.
    pre_kill_hook: dict | None = None

    def to_dict(self) -> dict:
        return {
            "reason": self.reason, "started": self.started_wall, "measure": self.measure,
            "value_bytes": self.value_bytes, "limit_bytes": self.limit_bytes,
            "pids": list(self.pids), "grace_period_seconds": self.grace_period_seconds,
            "signals": list(self.signals), "reaction_seconds": self.reaction_seconds,
            "sigkill": self.sigkill_wall, "exit_code": self.exit_code,
            "reached": {sig: list(pids) for sig, pids in self.reached.items()},
            "refused": [{"pid": pid, "uid": uid} for pid, uid in self.refused.items()],
            "confirmed": self.confirmed, "survivors": [dict(p) for p in self.survivors],
            "early_sigkill_reason": self.early_sigkill_reason,
            "dry_run": self.dry_run,
            "pre_kill_hook": dict(self.pre_kill_hook) if self.pre_kill_hook else None,
        }


@dataclass(frozen=True)
class Event:
    """Something that happened, for logs, the dashboard and exporters.

    ``kind`` is one of: spawned, exited, stopped, continued, limit_crossed, signal_sent,
    signal_refused, signal_forwarded, kill_started, kill_finished, restart_scheduled,
    limit_changed, enforcement_paused, enforcement_resumed, restart_cancelled,
    attached, attach_failed, detached, component, sampling_failed, sampling_recovered,
    oom_victim (the eBPF probe saw the kernel's OOM killer choose a process of the tree),
    pre_kill_hook (the hook's end: sentinel.core.hook.HookResult.fields() and ``kill``).
    With ``--dry-run``, signal_sent, limit_crossed and kill_finished carry ``dry_run: True``.
    """

    kind: str
    message: str
    at_wall: float = field(default_factory=time.time)
    fields: dict = field(default_factory=dict)
    # The program it is about (``GuardianState.program``); "" for Sentinel itself.
    program: str = ""


@dataclass
class GuardianState:
    """The guardian's live state. Mutated only by the guardian, on the main loop."""

    mode: str
    workload: str
    command: tuple[str, ...]
    measure: str
    limit_bytes: int | None
    grace_period_seconds: float
    interval_seconds: float
    version: str
    phase: str = PHASE_STARTING
    main_pid: int | None = None
    started_wall: float | None = None  # when the current workload process started
    sentinel_started_wall: float = field(default_factory=time.time)
    enforcing: bool = True  # False while paused through the control socket
    last_sample: MemorySample | None = None
    history: deque = field(default_factory=lambda: deque(maxlen=600))  # (wall, measure_bytes)
    kills: dict = field(default_factory=dict)  # (reason, signal name) -> count
    restarts: int = 0
    last_kill: KillRecord | None = None
    current_kill: KillRecord | None = None  # the ladder in progress
    grace_deadline_mono: float | None = None
    last_exit_code: int | None = None
    sample_errors: dict = field(default_factory=dict)  # (probe, reason) -> count
    # Set after several samples in a row failed (a read error in the walk, e.g.
    # EMFILE): the limit may not be enforced. ``sampling_failure`` says what failed.
    sampling_failing: bool = False
    sampling_failure: str | None = None
    sampling_failing_since_wall: float | None = None
    events: deque = field(default_factory=lambda: deque(maxlen=200))
    components: dict = field(default_factory=dict)  # "metrics"/"socket"/... -> status text
    subreaper: bool = False
    pid1: bool = False
    # The main process is stopped (state T: SIGSTOP, SIGTSTP, ...), from waitpid's
    # WUNTRACED/WCONTINUED reports; stop_signal names the signal that stopped it.
    stopped: bool = False
    stop_signal: str | None = None
    # Signals the kernel raised at Sentinel for its own action (SIGPIPE for a write
    # to a gone peer, SIGXFSZ, SIGXCPU), never forwarded: signal name -> count.
    self_caused_signals: dict = field(default_factory=dict)
    # The first SIGTERM/SIGINT Sentinel received ("SIGTERM"; docker stop, pod
    # deletion), or None: forwarded, and Sentinel exits once the workload is gone.
    shutdown_signal: str | None = None
    # Kernel wake-ups that made Sentinel sample at once, by source: "memory_events"
    # (v2 memory.events POLLPRI), "pressure" (a PSI trigger), "usage_threshold" (v1
    # cgroup.event_control eventfd), "oom_notify" (v1 OOM eventfd) -> count.
    wakeups: dict = field(default_factory=dict)
    # How the memory is followed (sentinel.core.ebpf_side.EbpfSide.stats): {"probe":
    # "ebpf" | "poll", "followed": processes the kernel follows, "records": kind -> count,
    # "lost": records lost, "threshold_bytes", "failed": why it stopped}; {} when polling.
    probe_info: dict = field(default_factory=dict)
    # What the kernel's side could not give, one line per topic: "pressure", "mrelease",
    # "oom_score_adj", "cgroup" (why no cgroup is visible) -> text for status and the TUI.
    kernel_notes: dict = field(default_factory=dict)
    # The workload's cgroup as discovered: {"version": 1 | 2, "path": its directory,
    # "read_only": bool}; {} when none is visible (kernel_notes["cgroup"] says why).
    cgroup: dict = field(default_factory=dict)
    # The program's name: the ``program`` label of its metrics, ``NAME`` in control
    # commands. The single-command form has one program named after its workload
    # (``--workload-name``, default the command's basename); a config file names each.
    program: str = ""
    # --dry-run: memory kills send no signal (KillRecord.dry_run); what they would have
    # sent is counted here, (reason, signal name) -> count, never in ``kills``.
    dry_run: bool = False
    dry_run_signals: dict = field(default_factory=dict)
    # Issue 11's alert rules (sentinel.core.alerts): rule ("warning", "leak", "prediction")
    # -> {"state": "firing"|"resolved", "since_wall", and the alert's last figures:
    # "value_bytes", "limit_bytes", "share", "growth_bytes_per_second",
    # "seconds_to_limit", "window_seconds"}; a rule that never fired is absent.
    alerts: dict = field(default_factory=dict)
    # The rules' robust growth over --leak-window (bytes/s; None: not enough history of
    # this run) and the time to the limit at it (seconds; None: no limit, not growing).
    growth_bytes_per_second: float | None = None
    seconds_to_limit: float | None = None

    def kills_total(self) -> int:
        return sum(self.kills.values())


Listener = Callable[[Event], None]
