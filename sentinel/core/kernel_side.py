"""The kernel's side of a kill (issue 9): what the supervisor does about the kernel.

Four duties, each a short hook in ``sentinel.core.supervisor``:

- **Kernel OOM kills told apart.** The cgroup's ``oom_kill`` counter (v2
  ``memory.events``, v1 ``memory.oom_control``; the sample's ``cgroup_oom_kills``)
  is kept per run; when the main process dies of a SIGKILL Sentinel did not send
  (by any path: ladder, ``signal KILL`` verb, a rewrite) while the counter rose,
  ``sentinel.core.oom.classify_death`` says ``kernel_oom`` and a
  ``KillRecord(reason="kernel_oom")`` is recorded, counted and announced as a
  ``kernel_oom_kill`` Event (logged at ERROR with the fix). A rise that the main
  process outlives by ``OOM_RISE_SETTLE_SECONDS`` was the kernel killing another
  process of the group: the same record, without a PID.
- **Racing the kernel.** During a grace period, ``early_sigkill_reason`` (pure)
  projects the cgroup's working set (usage less inactive page cache, which the kernel
  reclaims before it kills) at the working set's own growth (its samples'
  ``sampler.growth_rate``); when the container's effective hard limit (the lowest
  ``memory.max`` / ``memory.limit_in_bytes`` of the group and its parents) comes before
  the SIGKILL, the ladder escalates now (``Ladder.escalate_now``): the kernel's
  OOM killer would otherwise take the workload (and with ``memory.oom.group=1``
  Sentinel too) with no report. ``--no-early-sigkill`` turns it off.
- **process_mrelease(2) after every SIGKILL Sentinel sends**, on a pidfd of each
  victim opened when the ladder started (a reused PID is never hit), in a short-lived
  thread (the loop keeps reaping): a frozen or slow victim's private memory is freed
  now rather than when it runs again.
- **Self-protection.** After each spawn (and on attaching in watch mode) the
  workload's ``oom_score_adj`` is raised to Sentinel's + ``--oom-score-adj-margin``
  (default 100, capped at 1000), after Sentinel tried once to lower its own by the
  margin (needs CAP_SYS_RESOURCE; never below -999: -1000 is OOM-immune). With the
  capability, the workload keeps the value the kubelet gave the container (its QoS
  class: Guaranteed -997, BestEffort 1000, Burstable in between) and only Sentinel
  goes below it; without it, the workload is raised by a modest margin, not to 1000,
  so the node-level ordering the kubelet set between pods stays nearly as it was.

What the kernel allowed or refused is one line each in ``GuardianState.kernel_notes``
("oom_score_adj", "mrelease").
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque

from sentinel.core import kernel, sampler
from sentinel.core.oom import KERNEL_OOM, classify_death
from sentinel.core.state import REASON_KERNEL_OOM, REASON_MEMORY, KillRecord
from sentinel import logs
from sentinel.logs import LOGGER_NAME, fmt_bytes
from sentinel.probes.cgroup import discover
from sentinel.probes.tree import status_field

log = logging.getLogger(LOGGER_NAME)

# A rise of oom_kill that the main process outlives this long was the kernel killing
# another process of the group. Within it, a SIGKILL death of the main process counts
# as the kernel's: the counter rises when the OOM killer sends its SIGKILL
# (mm/oom_kill.c __oom_kill_process), a big victim can take a while to exit, and a
# sample may see the rise before the death is reaped.
OOM_RISE_SETTLE_SECONDS = 1.0
# At most this many pidfds are opened when a ladder starts (the rest are opened right
# after their SIGKILL): a 10,000-process tree must not exhaust RLIMIT_NOFILE.
MAX_PIDFDS = 256
OOM_SCORE_ADJ_MARGIN_DEFAULT = 100
# Sentinel never lowers itself below this: -1000 (OOM_SCORE_ADJ_MIN) makes a process
# OOM-immune (mm/oom_kill.c oom_badness skips it), and a memory.oom.group kill skips
# it too, which would leave Sentinel alive with its workload gone.
OWN_OOM_SCORE_ADJ_FLOOR = kernel.OOM_SCORE_ADJ_MIN + 1
# The effective hard limit (CgroupMemory.limits(): the group's and its parents') is
# re-read at most this often during a grace period: it reads files, and it changes
# only when an operator or the kubelet resizes the container.
HARD_LIMIT_REFRESH_SECONDS = 2.0
# Working-set points kept for the early-SIGKILL's growth (sampler.growth_rate uses
# the last sampler.RATE_WINDOW_SECONDS of them).
_WS_POINTS = 64


# How long after a spawn the workload's other processes get its oom_score_adj too (those
# forked before Sentinel raised the main one's inherited Sentinel's).
EARLY_PROTECT_SECONDS = 2.0
# The early SIGKILL comes this long (or three sampling periods) before the projected
# crossing of the container's hard limit, not at once.
EARLY_SIGKILL_LEAD_SECONDS = 0.3


def oom_score_adj_plan(own: int, margin: int) -> int:
    """The ``oom_score_adj`` Sentinel asks for itself, from its own ``own`` (-1000..1000)
    and ``margin`` (> 0): ``own - margin``, never below ``OWN_OOM_SCORE_ADJ_FLOOR`` (-999:
    -1000 is OOM-immune). Equal to ``own`` (nothing to lower) when ``own`` is already at
    or below the floor. Pure."""
    return min(own, max(OWN_OOM_SCORE_ADJ_FLOOR, own - margin))


def workload_oom_score_adj_target(own_before: int, own_now: int, margin: int) -> int:
    """The ``oom_score_adj`` the workload is raised to (never lowered: the caller
    compares with its current value), from Sentinel's value before its one try
    (``own_before``, which the workload inherited: the kubelet's for the container),
    after it (``own_now``) and ``margin``.

    Not lowered (no CAP_SYS_RESOURCE, or nothing to lower): ``own_now + margin``, at
    most 1000. Lowered: ``own_now + margin`` but never above ``own_before``: the
    workload keeps the kubelet's value and only Sentinel goes below it (with the
    -999 floor a Guaranteed pod's -997 stays -997, not -899). Pure."""
    target = min(kernel.OOM_SCORE_ADJ_MAX, own_now + margin)
    if own_now < own_before:
        target = min(target, own_before)
    return target


def _guard(errors: set, name: str, fn, *args, default=None):
    """Run the hook ``fn(*args)``; an exception is logged once per ``name`` (WARNING, with
    the traceback at DEBUG) and gives ``default``: a kernel-side bug must never skip
    the core's path (the exit status, the cleanup, the finish)."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - the workload must outlive our bugs
        if name not in errors:
            errors.add(name)
            log.warning("kernel side %s failed: %r (reported once; Sentinel goes on without "
                        "it)", name, exc, extra={"event": "internal_error"})
        log.debug("kernel side %s failed", name, exc_info=True)
        return default


def early_sigkill_reason(usage_bytes: int | None, hard_limit_bytes: int | None,
                         growth_bytes_per_second: float | None, now: float,
                         sigkill_at: float | None,
                         within_seconds: float | None = None) -> str | None:
    """Why SIGKILL should come now rather than at ``sigkill_at``, or ``None``.

    ``usage_bytes`` is what the kernel judges (the cgroup's working set: ``memory.current``
    / ``memory.usage_in_bytes`` less ``inactive_file``), ``hard_limit_bytes`` its ``memory.max`` /
    ``memory.limit_in_bytes`` (``None``: unlimited or unknown), ``growth_bytes_per_second``
    the growth of that same figure (``sentinel.core.sampler.growth_rate``), ``now`` and
    ``sigkill_at`` monotonic seconds (the ladder's ``grace_deadline``). At that rate the
    usage reaches the hard limit in ``(limit - usage) / rate`` seconds; if that is before
    the grace period ends, the kernel's OOM killer would act first. With
    ``within_seconds``, not yet while the crossing is further away than that: the
    workload keeps its grace until shortly before (the caller samples again sooner).
    Pure; never raises.
    """
    if usage_bytes is None or hard_limit_bytes is None or sigkill_at is None:
        return None
    grace_left = sigkill_at - now
    if grace_left <= 0:
        return None  # the SIGKILL is due anyway
    headroom = hard_limit_bytes - usage_bytes
    if headroom <= 0:
        return (f"the container's usage {fmt_bytes(usage_bytes)} is at its hard limit "
                f"{fmt_bytes(hard_limit_bytes)} with {grace_left:.2f}s of the grace period left")
    if not growth_bytes_per_second or growth_bytes_per_second <= 0:
        return None
    projected = headroom / growth_bytes_per_second
    if projected >= grace_left or (within_seconds is not None and projected > within_seconds):
        return None
    return (f"growing {fmt_bytes(int(growth_bytes_per_second))}/s, the workload reaches the "
            f"container's hard limit {fmt_bytes(hard_limit_bytes)} in {projected:.2f}s, "
            f"before the grace period ends in {grace_left:.2f}s")


def _write(path: str, value: str) -> None:
    # os.write on a raw fd: the kernel's EINVAL/EROFS reaches us (a buffered write hides it).
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)  # O_TRUNC: as a shell's >
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_oom_score_adj(pid: int | str) -> int | None:
    try:
        with open(f"/proc/{pid}/oom_score_adj", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


class KernelSide:
    """The supervisor's kernel duties (see the module). ``supervisor`` is the
    ``Supervisor`` it serves: its ``state``, ``settings``, ``probe``, ``emit`` and
    clock are used; it calls the hooks below."""

    def __init__(self, supervisor) -> None:
        self.sup = supervisor
        self._oom_base: int | None = None  # oom_kill as this run began (or last settled)
        self._rise_at: float | None = None  # when a sample first saw it above the base
        self._pidfds: dict[int, int] = {}  # victim pid -> pidfd, from the ladder's start
        self.mrelease_results: dict[str, int] = {}  # kernel.MRELEASE_* -> count
        # Sentinel's own oom_score_adj, tried once per Sentinel: with several programs
        # (sentinel.core.group) every program's KernelSide shares this one dict, so the
        # second program neither lowers it again nor says so again. "tried", "adj" (after
        # the try), "before" (before it), "note" (why it could not be lowered).
        self.own: dict = {"tried": False, "adj": None, "before": None, "note": ""}
        self._high_saved: tuple[str, str] | None = None  # (cgroup dir, memory.high before)
        # (mono, bytes) of this run's cgroup working set: the early SIGKILL's own growth
        self._ws_points: deque[tuple[float, int]] = deque(maxlen=_WS_POINTS)
        self._hard: tuple[float, int | None] | None = None  # (read at mono, effective limit)
        self._sigkill_sent = False  # Sentinel sent SIGKILL to the main process this run
        self._mrelease_lock = threading.Lock()
        self._mrelease_thread: threading.Thread | None = None
        self._hook_errors: set[str] = set()
        self._last_pids: frozenset[int] = frozenset()  # the workload's, at the last sample
        self._rise_pids: frozenset[int] = frozenset()  # ... when oom_kill was seen rising
        self._last_value: int | None = None  # the measure at the last sample with processes
        self._run_started: float | None = None  # monotonic, for the early tree protection
        self._protected: set[int] = set()
        self._target_adj: int | None = None  # the workload's oom_score_adj target
        self._limit_warned: tuple | None = None  # (Sentinel's limit, the cgroup's) said

    def hook(self, name: str, *args, default=None):
        """Call the hook method ``name`` with ``args`` from the supervisor, guarded
        (``_guard``): an exception is logged once and gives ``default``."""
        return _guard(self._hook_errors, name, getattr(self, name), *args, default=default)

    @property
    def high_clamped(self) -> bool:
        """True while ``--clamp-high`` holds the workload's ``memory.high`` at its usage
        (the sampling side's re-read of the limits ignores ``memory.high`` meanwhile)."""
        return self._high_saved is not None

    def note_sigkill(self) -> None:
        """Sentinel sent SIGKILL to the main process by a path other than a ladder (the
        ``signal KILL`` control verb): its death is then Sentinel's, never the kernel's."""
        self._sigkill_sent = True

    # ------------------------------------------------------------------ oom_kill
    def _cgroup(self):
        return getattr(self.sup.probe, "cgroup", None)

    def _read_oom_kills(self) -> int | None:
        cg = self._cgroup()
        if cg is None:
            return None
        try:
            return cg.events().get("oom_kill")
        except Exception:  # a probe bug must never lose the exit status
            return None

    def new_run(self, pid: int) -> None:
        """A new workload process: take the counter as it is now (a direct read)
        and protect Sentinel from the OOM killer (``protect``)."""
        self._oom_base = self._read_oom_kills()
        self._rise_at = None
        self._ws_points.clear()
        self._hard = None
        self._sigkill_sent = False
        self._last_pids = self._rise_pids = frozenset()
        self._last_value = None
        self._run_started = self.sup._clock()
        self._protected = set()
        self.close_pidfds()
        self.restore_high()
        self.protect(pid)

    def on_sample(self, sample) -> None:
        """Follow ``sample.cgroup_oom_kills``; a rise the main process outlives by
        ``OOM_RISE_SETTLE_SECONDS`` is announced as another process's kernel OOM kill.
        Keeps ``sample.cgroup_working_set_bytes`` for the early SIGKILL's growth."""
        ws = sample.cgroup_working_set_bytes
        if ws is not None:
            self._ws_points.append((sample.at_mono, ws))
        pids = frozenset(sample.pids)
        if pids:
            self._last_value = sample.measure_bytes
        self._protect_early_children(sample)
        self._warn_limit_above_the_containers(sample)
        count = sample.cgroup_oom_kills
        if count is None:
            self._last_pids = pids
            return
        if self._oom_base is None or count < self._oom_base:  # first, or the group was recreated
            self._oom_base, self._rise_at = count, None
        elif count != self._oom_base:
            if self._rise_at is None:
                self._rise_at, self._rise_pids = sample.at_mono, self._last_pids
            elif sample.at_mono - self._rise_at >= OOM_RISE_SETTLE_SECONDS:
                delta, self._oom_base, self._rise_at = count - self._oom_base, count, None
                if self._rise_pids - pids:  # a process of the workload's tree is gone
                    self._announce(None, delta, sample)
                else:
                    # No process of the workload's tree went: the kernel killed another
                    # process of the cgroup (a `kubectl exec` shell, a sibling program).
                    self._note_once("oom_other", f"the kernel's OOM killer killed {delta} "
                                    "process(es) of the cgroup that are not the workload's; "
                                    "the container's memory limit is nearly used up")
        self._last_pids = pids

    def _protect_early_children(self, sample) -> None:
        """In the first ``EARLY_PROTECT_SECONDS`` of a run, give the workload's other
        processes the main one's ``oom_score_adj`` too: those it forked before Sentinel
        raised it (a shell's ``cmd &``) inherited Sentinel's own value."""
        if (self._target_adj is None or self._run_started is None
                or self.sup._clock() - self._run_started > EARLY_PROTECT_SECONDS):
            return
        for pid in sample.pids:
            if pid in self._protected:
                continue
            self._protected.add(pid)
            current = _read_oom_score_adj(pid)
            if current is not None and current < self._target_adj:
                kernel.raise_oom_score_adj(pid, self._target_adj)  # gone or refused: left

    def _warn_limit_above_the_containers(self, sample) -> None:
        """Say once (per pair of figures) when Sentinel's limit is at or above the
        container's hard limit: the kernel's OOM killer would act first."""
        limit, hard = self.sup.state.limit_bytes, sample.cgroup_memory_max_bytes
        if limit is None or hard is None or limit < hard or self._limit_warned == (limit, hard):
            return
        self._limit_warned = (limit, hard)
        text = (f"Sentinel's limit {fmt_bytes(limit)} on {self.sup.state.measure} is at or above "
                f"the container's memory limit {fmt_bytes(hard)}: the kernel's OOM killer will "
                "act first; lower --max-rss, or use --max-rss auto")
        self.sup.state.kernel_notes["limit_above_container"] = text
        log.warning("%s", text, extra={"event": "kernel_note", "topic": "limit_above_container"})

    def main_died(self, status: int, sentinel_sent_sigkill: bool) -> KillRecord | None:
        """The main process was reaped with ``status``: if the kernel's OOM killer
        did it (``classify_death``), record, count and announce it and return the
        record (also ``state.last_kill``); else ``None``. ``sentinel_sent_sigkill``
        (the ladder's) is or-ed with any SIGKILL Sentinel sent it otherwise this run
        (``note_sigkill``, ``after_sigkill``)."""
        sentinel_sent_sigkill = sentinel_sent_sigkill or self._sigkill_sent
        self.close()  # the workload's ladder is over: no pidfd outlives it (a restart back-off)
        after = self._read_oom_kills()
        last = self.sup.state.last_sample
        if after is None and last is not None:
            after = last.cgroup_oom_kills
        before = self._oom_base
        ebpf = getattr(self.sup.sampling_side, "ebpf", None)
        chosen = ebpf is not None and self.sup.state.main_pid in ebpf.victims
        if classify_death(status, sentinel_sent_sigkill, before, after,
                          chosen_by_oom_killer=chosen) != KERNEL_OOM:
            return None
        self._oom_base, self._rise_at = after, None
        # (without a counter on both sides, the eBPF probe's victim is one kill)
        delta = after - before if after is not None and before is not None else 1
        return self._announce(self.sup.state.main_pid, max(1, delta), last)

    def _announce(self, pid: int | None, delta: int, sample) -> KillRecord:
        sup, st = self.sup, self.sup.state
        cg_limit = sample.cgroup_memory_max_bytes if sample is not None else None
        if cg_limit is None and self._cgroup() is not None:
            try:
                cg_limit = self._cgroup().limits()[0]
            except Exception:
                cg_limit = None
        record = KillRecord(
            reason=REASON_KERNEL_OOM, started_wall=time.time(), started_mono=sup._clock(),
            measure=st.measure, value_bytes=self._last_value if self._last_value is not None
            else (sample.measure_bytes if sample else None),
            limit_bytes=st.limit_bytes, pids=(pid,) if pid else (), grace_period_seconds=0.0,
            exit_code=128 + signal.SIGKILL if pid else None, confirmed=True if pid else None)
        key = (REASON_KERNEL_OOM, "SIGKILL")
        st.kills[key] = st.kills.get(key, 0) + 1
        if pid:
            st.last_kill = record
        who = f"pid {pid}" if pid else f"{delta} process(es) of the workload (not the main one)"
        hit = f"its limit {fmt_bytes(cg_limit)}" if cg_limit else "its limit"
        ours = (f"Sentinel's limit {fmt_bytes(st.limit_bytes)} on {st.measure}"
                if st.limit_bytes else "Sentinel has no limit set")
        if st.current_kill is not None and st.current_kill.signals:
            # Sentinel had acted: the kernel came during the grace period.
            why = (f" during the grace period after Sentinel's {st.current_kill.signals[0]}: "
                   f"the container's cgroup hit {hit} while the workload shut down. Fix: a "
                   "shorter --grace-period"
                   + (", or leave the early SIGKILL on (no --no-early-sigkill)"
                      if sup.settings.no_early_sigkill else ", or a lower --max-rss"))
        else:
            why = (f": the container's cgroup hit {hit} before Sentinel acted; {ours} sits too "
                   "close to it or above it. Fix: lower --max-rss, use --max-rss auto, or "
                   "--measure working-set")
        sup.emit("kernel_oom_kill", f"the kernel's OOM killer killed {who}{why}",
                 logging.ERROR, kill=record.to_dict(), pid=pid, oom_kills_delta=delta,
                 cgroup_limit_bytes=cg_limit)
        return record

    # ------------------------------------------------------------------ racing the kernel
    @property
    def working_set_growth(self) -> float | None:
        """The cgroup working set's growth over the last ``sampler.RATE_WINDOW_SECONDS``,
        bytes/second (``sampler.growth_rate`` of this run's samples), or ``None`` with
        too few of them."""
        points = self._ws_points
        if not points:
            return None
        return sampler.growth_rate(sampler.recent_points(points, points[-1][0]))

    def _hard_limit(self, sample) -> int | None:
        """The effective hard limit (``CgroupMemory.limits()``: the lowest ``memory.max``
        / ``memory.limit_in_bytes`` of the group and its parents), re-read at most every
        ``HARD_LIMIT_REFRESH_SECONDS``; the sample's own-group figure without a cgroup."""
        cg = self._cgroup()
        if cg is None or not hasattr(cg, "limits"):
            return sample.cgroup_memory_max_bytes
        now = self.sup._clock()
        if self._hard is None or now - self._hard[0] >= HARD_LIMIT_REFRESH_SECONDS:
            try:
                limit = cg.limits()[0]
            except Exception:  # a probe bug: the sample's own figure
                limit = sample.cgroup_memory_max_bytes
            self._hard = (now, limit)
        return self._hard[1]

    def check_early_sigkill(self, sample, ladder) -> bool:
        """During a grace period: SIGKILL (``ladder.escalate_now``) when the cgroup's
        working set, at its own growth (``working_set_growth``; never the enforced
        measure's slope, which is another figure: page cache with ``--measure cgroup``,
        shared pages counted per process with ``rss``), reaches the effective hard limit
        before the grace period ends, shortly before the crossing. True if sent."""
        if self.sup.settings.no_early_sigkill or ladder is None or ladder.sigkill_sent:
            return False
        # The working set (usage - inactive_file), not the usage: page cache fills a
        # group up to its limit in normal operation and the kernel reclaims it before
        # any OOM kill; a full cache must not cut a grace period short. Unknown (no
        # memory.stat): no check, never the usage in its place.
        ws = sample.cgroup_working_set_bytes
        if ws is None:
            return False
        # Not at the first sign: shortly before the projected crossing (three sampling
        # periods, at least EARLY_SIGKILL_LEAD_SECONDS), so the workload keeps most of
        # the time it has to clean up; samples come every --interval during the grace.
        lead = max(EARLY_SIGKILL_LEAD_SECONDS, 3 * self.sup.settings.interval_seconds)
        reason = early_sigkill_reason(ws, self._hard_limit(sample), self.working_set_growth,
                                      self.sup._clock(), ladder.grace_deadline, lead)
        if reason is None:
            return False
        log.warning("SIGKILL before the grace period ends: %s (the kernel's OOM killer would "
                    "act first; --no-early-sigkill waits the full grace period)", reason,
                    extra={"event": "early_sigkill", "reason": reason})
        return ladder.escalate_now(reason) is not None

    # ------------------------------------------------------------------ memory.high
    def clamp_high(self) -> None:
        """``--clamp-high``, at a memory kill's SIGTERM: set the workload's cgroup v2
        ``memory.high`` to its ``memory.current`` so it cannot grow while it cleans up
        (the kernel throttles and reclaims above it: mm/memcontrol.c); ``restore_high``
        puts the old value back at every end of the stop (exit, give-up, close); a
        Sentinel killed meanwhile leaves the clamp (docs/kernel.md). Only where it
        cannot hurt: cgroup v2, a writable cgroupfs (delegated; a pod's is read-only:
        EROFS), and Sentinel outside that cgroup (the sidecar layout): inside it, the
        throttling (up to 2 s per allocation) would stall Sentinel's own SIGKILL.
        Otherwise one line in ``kernel_notes["clamp_high"]``, once. Never raises."""
        if not self.sup.settings.clamp_high or self._high_saved is not None:
            return
        cg = self._cgroup()
        why = None
        if cg is None or cg.version != 2:
            why = "memory.high exists on cgroup v2 only" + (
                f"; this cgroup is v{cg.version}" if cg is not None else
                "; no cgroup memory controller is visible")
        elif os.path.realpath(getattr(discover("self"), "path", "") or "/") == \
                os.path.realpath(cg.path):
            why = ("Sentinel runs in the workload's cgroup, where memory.high would throttle "
                   "Sentinel's own SIGKILL too; clamp only with Sentinel outside it")
        if why is None:
            try:
                with open(os.path.join(cg.path, "memory.high"), "rb") as f:
                    old = f.read().strip().decode()
                current = cg.read().current_bytes
                if current is None:
                    raise FileNotFoundError("memory.current unreadable")
                _write(os.path.join(cg.path, "memory.high"), str(current))
                self._high_saved = (cg.path, old)
                log.info("memory.high clamped to %s (was %s) for the grace period: the "
                         "workload cannot grow while it cleans up", fmt_bytes(current), old,
                         extra={"event": "clamp_high"})
                return
            except OSError as exc:
                why = (f"memory.high is not writable ({exc.strerror or exc}: a read-only "
                       "cgroupfs, as in a pod unless privileged, or a cgroup not delegated)")
        self._note_once("clamp_high", f"--clamp-high: not clamped: {why}")

    def restore_high(self) -> None:
        """Put back the ``memory.high`` that ``clamp_high`` replaced (once)."""
        saved, self._high_saved = self._high_saved, None
        if saved is None:
            return
        path, old = saved
        try:
            _write(os.path.join(path, "memory.high"), old)
            log.info("memory.high restored to %s", old, extra={"event": "clamp_high"})
        except OSError as exc:  # the group may be gone with its workload
            log.debug("memory.high not restored to %s: %s", old, exc)

    def _note_once(self, topic: str, note: str) -> None:
        notes = self.sup.state.kernel_notes
        if topic not in notes:
            notes[topic] = note
            log.info("%s", note, extra={"event": "kernel_note"})

    # ------------------------------------------------------------------ process_mrelease
    def ladder_starting(self, kill) -> None:
        """A ladder for ``kill`` (a ``KillRecord``) is about to send its first signal:
        pidfds for its PIDs, and ``clamp_high`` for a memory kill."""
        self.open_pidfds(kill.pids)
        if kill.reason == REASON_MEMORY and not getattr(kill, "dry_run", False):
            self.clamp_high()

    def open_pidfds(self, pids) -> None:
        """A ladder starts: a pidfd for each of ``pids`` (up to ``MAX_PIDFDS``), so the
        SIGKILL's process_mrelease names these processes even if a PID is reused."""
        for pid in pids:
            if pid in self._pidfds or len(self._pidfds) >= MAX_PIDFDS:
                continue
            try:
                fd = kernel.pidfd_open(pid)
            except OSError:  # EMFILE, ENODEV: mrelease is a bonus, never a failure
                continue
            if fd is not None:
                self._pidfds[pid] = fd

    def after_sigkill(self, pids: list[int]) -> None:
        """Right after a SIGKILL reached ``pids``: process_mrelease(2) on each, in a
        short-lived daemon thread.

        A pid without a pidfd from the ladder's start gets one now (on the loop): it
        was just SIGKILLed and is still unreaped (Sentinel reaps on this loop), and were
        it another process with a reused PID, the kernel would refuse (EINVAL: not
        dying) and free nothing. The calls take ~48 ms per GiB (a 32 GiB tree: ~1.5 s),
        so they run off the loop, which keeps reaping and answering meanwhile: a pidfd
        names its process even once reaped (then ESRCH, "already"), so the thread is
        safe; it closes the pidfds after. The counts and the one-time note are
        updated on the loop (``call_soon_threadsafe``)."""
        if self.sup.state.main_pid in pids:
            self._sigkill_sent = True
        fds: list[int] = []
        for pid in pids:
            fd = self._pidfds.pop(pid, None)
            if fd is None:
                try:
                    fd = kernel.pidfd_open(pid)
                except OSError:
                    fd = None
                if fd is None:
                    continue
            fds.append(fd)
        self.close_pidfds()  # SIGKILL was the last signal: the others are not needed
        if not fds:
            return
        loop = getattr(self.sup, "loop", None)
        post = getattr(loop, "call_soon_threadsafe", None)
        thread = threading.Thread(target=self._mrelease_all, args=(fds, post),
                                  name="sentinel-mrelease", daemon=True)
        self._mrelease_thread = thread
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: on the loop, as before
            self._mrelease_all(fds, None)

    def _mrelease_all(self, fds: list[int], post) -> None:
        """The thread's body: process_mrelease on each of ``fds``, each closed after;
        the results handed to ``_record_mrelease`` through ``post`` (the loop's
        ``call_soon_threadsafe``; without a loop, called here, under the lock)."""
        results: list[str] = []
        for fd in fds:
            try:
                results.append(kernel.process_mrelease(fd))
            except Exception:  # never a traceback from a helper thread
                results.append(kernel.MRELEASE_ERROR)
            finally:
                try:
                    os.close(fd)
                except OSError:
                    pass
        try:
            if post is not None:
                post(self._record_mrelease, results)
            else:
                self._record_mrelease(results)
        except RuntimeError:  # the loop closed: Sentinel is ending
            pass

    def _record_mrelease(self, results: list[str]) -> None:
        """Count ``results`` in ``mrelease_results``; ENOSYS/EPERM ("unavailable") is
        said once in ``kernel_notes["mrelease"]``. EINVAL ("not_dying": this victim was
        not dying yet, or shared its mm after vfork) is counted, never blamed on the
        kernel."""
        with self._mrelease_lock:
            for result in results:
                self.mrelease_results[result] = self.mrelease_results.get(result, 0) + 1
                if result == kernel.MRELEASE_UNAVAILABLE and "mrelease" not in \
                        self.sup.state.kernel_notes:
                    note = ("process_mrelease(2) unavailable (a kernel before 5.15, or a "
                            "seccomp filter or LSM refusing it): a killed process's memory "
                            "is freed as it exits")
                    self.sup.state.kernel_notes["mrelease"] = note
                    log.info("%s", note, extra={"event": "kernel_note"})
            log.debug("process_mrelease results so far: %s", self.mrelease_results)

    def close(self) -> None:
        """Sentinel is ending (or the run): pidfds closed, memory.high restored."""
        self.close_pidfds()
        self.restore_high()

    def close_pidfds(self) -> None:
        for fd in self._pidfds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._pidfds.clear()

    # ------------------------------------------------------------------ oom_score_adj
    def protect(self, pid: int) -> None:
        """Make the kernel's OOM killer pick the workload ``pid`` before Sentinel.

        Once: lower Sentinel's own ``oom_score_adj`` by the margin (needs
        CAP_SYS_RESOURCE). Each time: raise ``pid``'s to Sentinel's + the margin
        (capped at 1000; never lowered). ``--oom-score-adj-margin 0`` does nothing.
        The outcome is one line in ``kernel_notes["oom_score_adj"]``."""
        margin = self.sup.settings.oom_score_adj_margin
        if not margin:
            return
        if self.sup.source is None and status_field(pid, b"PPid:") != os.getpid():
            return  # run mode: only Sentinel's own child (never a PID it does not hold)
        notes = self.sup.state.kernel_notes
        mine = self.own
        if not mine["tried"]:
            mine["tried"] = True
            own = _read_oom_score_adj("self")
            mine["before"] = own
            if own is not None:
                wanted = oom_score_adj_plan(own, margin)
                err = kernel.lower_own_oom_score_adj(wanted) if wanted < own else None
                mine["adj"] = own if err else wanted
                if err:
                    mine["note"] = "; " + err
                    token = logs.PROGRAM.set("")  # Sentinel's own score, not a program's
                    try:
                        log.info("%s", err, extra={"event": "kernel_note"})
                    finally:
                        logs.PROGRAM.reset(token)
        own = mine["adj"]
        if own is None:
            own = _read_oom_score_adj("self")
        if own is None:
            return
        before = mine["before"] if mine["before"] is not None else own
        target = workload_oom_score_adj_target(before, own, margin)
        self._target_adj = target
        self._protected.add(pid)
        current = _read_oom_score_adj(pid)
        if current is not None and current >= target:
            note = f"workload pid {pid} at oom_score_adj {current}, Sentinel at {own}"
        else:
            err = kernel.raise_oom_score_adj(pid, target)
            if err:
                log.warning("%s: the kernel's OOM killer may pick Sentinel before the "
                            "workload", err, extra={"event": "kernel_note"})
                note = err
            else:
                note = (f"workload pid {pid} raised to oom_score_adj {target}, Sentinel at "
                        f"{own} (margin {margin})")
        if target <= own:
            note += "; Sentinel is already at 1000: the workload cannot be ranked above it"
        notes["oom_score_adj"] = note + mine["note"]
