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

# Kill reasons: stable words used as metric label values and Event reasons.
REASON_MEMORY = "memory_limit"  # the measure crossed the limit
REASON_OPERATOR = "operator"  # `stop`/`kill` on the control socket
REASON_SHUTDOWN = "shutdown"  # Sentinel itself got SIGTERM/SIGINT (docker stop, pod deletion)
KILL_REASONS = (REASON_MEMORY, REASON_OPERATOR, REASON_SHUTDOWN)

# Phases of the workload as the guardian sees it.
PHASE_STARTING = "starting"
PHASE_RUNNING = "running"
PHASE_TERMINATING = "terminating"  # SIGTERM sent, grace period running
PHASE_RESTARTING = "restarting"  # waiting out the restart back-off
PHASE_WAITING = "waiting"  # watch mode: no target yet
PHASE_EXITED = "exited"
PHASES = (PHASE_STARTING, PHASE_RUNNING, PHASE_TERMINATING, PHASE_RESTARTING,
          PHASE_WAITING, PHASE_EXITED)


@dataclass(frozen=True)
class MemorySample:
    """One reading of the workload's process tree.

    ``measure_bytes`` is the figure compared with the limit (per
    ``Settings.measure``). ``rss_bytes`` is the sum of resident set sizes over
    the tree (``/proc/<pid>/statm`` field 2 x page size). ``pss_bytes`` and
    ``uss_bytes`` come from ``/proc/<pid>/smaps_rollup`` and are ``None`` unless
    that measure is in use. The ``cgroup_*`` figures come from the cgroup v2
    files ``memory.current``, ``memory.max`` and ``memory.stat`` (working set
    = memory.current - inactive_file, as the kubelet computes it) and are
    ``None`` where there is no cgroup v2 memory controller.
    """

    at_mono: float
    measure_bytes: int
    rss_bytes: int
    processes: tuple[tuple[int, int], ...]  # (pid, rss_bytes), the root first
    duration_seconds: float  # what taking this sample cost
    pss_bytes: int | None = None
    uss_bytes: int | None = None
    cgroup_memory_current_bytes: int | None = None
    cgroup_memory_max_bytes: int | None = None
    cgroup_working_set_bytes: int | None = None

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(pid for pid, _ in self.processes)


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
    signals: list[str] = field(default_factory=list)  # e.g. ["SIGTERM", "SIGKILL"]
    reaction_seconds: float | None = None  # estimated limit crossing -> SIGTERM
    sigkill_wall: float | None = None
    exit_code: int | None = None  # the workload's status once it was reaped

    def to_dict(self) -> dict:
        return {
            "reason": self.reason, "started": self.started_wall, "measure": self.measure,
            "value_bytes": self.value_bytes, "limit_bytes": self.limit_bytes,
            "pids": list(self.pids), "grace_period_seconds": self.grace_period_seconds,
            "signals": list(self.signals), "reaction_seconds": self.reaction_seconds,
            "sigkill": self.sigkill_wall, "exit_code": self.exit_code,
        }


@dataclass(frozen=True)
class Event:
    """Something that happened, for logs, the dashboard and exporters.

    ``kind`` is one of: spawned, exited, limit_crossed, signal_sent,
    signal_forwarded, kill_started, kill_finished, restart_scheduled,
    limit_changed, enforcement_paused, enforcement_resumed, restart_cancelled,
    attached, attach_failed, detached, component, sampling_failed, sampling_recovered.
    """

    kind: str
    message: str
    at_wall: float = field(default_factory=time.time)
    fields: dict = field(default_factory=dict)


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

    def kills_total(self) -> int:
        return sum(self.kills.values())


Listener = Callable[[Event], None]
