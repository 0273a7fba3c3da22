"""The sampling side of issue 9: kernel wake-ups into the sampler, ``--max-rss auto``
followed when the container's limit changes, and the shared-pages cross-check.

One ``SamplingSide`` per ``Supervisor``, fed by three short hooks there:

- ``on_run()`` when a run begins (spawned workload, watch target): the probe's cgroup
  (``TreeProbe.cgroup``, a ``sentinel.probes.cgroup.CgroupMemory``) gets a
  ``sentinel.probes.wakeups.Wakeups`` on the loop: v2 ``memory.events``; v1
  ``UsageThreshold`` (armed where the measure would reach the limit) and ``OomNotify``
  where ``cgroup.event_control`` is writable; a system PSI ``PressureTrigger`` as a
  hint. Each wake-up is counted in ``state.wakeups[kind]`` (``memory_events``,
  ``usage_threshold``, ``oom_notify``, ``pressure``) and calls ``sample_now``. A source
  that is unavailable is said once at INFO (``state.kernel_notes``), never an error.
- ``on_sample(sample)`` after each sample, before the kill decision: the auto limit
  re-read (the sample's own ``cgroup_memory_max_bytes``/``high``: no extra read),
  the threshold kept ahead of the measure, and the shared-pages check.
- ``on_limit(limit)`` when the limit changed (``limit`` command, auto re-read): the
  v1 threshold is re-armed.

``covered(sample)`` says whether a kernel wake-up fires before the measure can reach
the limit: then ``sentinel.core.sampler.relaxed_interval`` may stretch the tick.
"""

from __future__ import annotations

import logging
import os
import time

from sentinel import logs
from sentinel.logs import LOGGER_NAME, fmt_bytes

log = logging.getLogger(LOGGER_NAME)

# state.wakeups keys, by the Wakeup.kind of sentinel.probes.wakeups.
WAKEUP_KEYS = {"memory.events": "memory_events", "usage_threshold": "usage_threshold",
               "oom_control": "oom_notify", "pressure": "pressure"}
# The shared-pages check: summed RSS this many times the cgroup's usage or the tree's
# PSS means RSS counts shared pages many times over (fork()ed workers, shared memory).
SHARED_RATIO = 1.5
SHARED_CHECK_SECONDS = 60.0  # the cheap check (cgroup usage) at most this often
SHARED_NEAR_SHARE = 0.8  # the once-only check (PSS too) when RSS first passes this
# --max-rss auto: the effective limit (ancestors included) is re-read at least this often.
LIMIT_REREAD_SECONDS = 10.0
# The v1 threshold is re-armed when where it should be is this much below where it is
# (the gap between the cgroup's usage and the measure shrank): it would fire late.
_REARM_SLACK_BYTES = 1 << 20
# The first registration (on the loop: ~5 ms) waits for a sample this share of the limit
# away from it; later moves are made by a helper thread (_rearm).
_REARM_HEADROOM_SHARE = 0.25
# v1 covers the limit only while its threshold is this far below the hard (effective)
# limit: the kernel reclaims page cache at the limit, so usage may never pass a threshold
# at or near it while anonymous memory grows (a group full of cache).
_HARD_MARGIN_BYTES = 4 << 20
# The one-time PSS check reads smaps_rollup per process on the loop (~9.5 ms per GiB
# mapped, under each process's mmap lock): it stops after this long and decides on
# what it read (200 backends mapping 8 GiB would otherwise hold the loop ~15 s).
SHARED_PSS_BUDGET_SECONDS = 0.02
# v2 memory.events wakes on nearly every charge at memory.max/high (the kernel
# rate-limits it to ~10-20 ms): at most one wake-driven sample per --interval, and at
# least one per WAKE_SAMPLE_GAP_SECONDS (a 5 s --interval must not delay a wake-up 5 s);
# a later wake-up within the gap is sampled at its end; oom/oom_kill always at once.
WAKE_SAMPLE_GAP_SECONDS = 0.1
_URGENT_EVENTS = ("oom", "oom_kill")
# The PSI hint: 150 ms of stall in 1 s (2 s when 1 s is refused, KERNEL.md).
_PSI_STALL_US, _PSI_WINDOW_US = 150_000, 1_000_000


class SamplingSide:
    """The supervisor's kernel wake-ups, auto limit re-read and shared-pages check (see
    the module). ``sup`` is the ``Supervisor``; ``proc_pressure`` the system PSI file.
    Never raises into the loop: a failure is one log line and the tick goes on."""

    def __init__(self, sup, *, proc_pressure: str = "/proc/pressure/memory") -> None:
        self.sup = sup
        self.proc_pressure = proc_pressure
        self.wakeups = None  # a probes.wakeups.Wakeups while attached
        self.threshold = None  # the v1 UsageThreshold, when armed
        self.events_watch = None  # the v2 MemoryEventsWatch, when watched
        self._cgroup_path: str | None = None
        self._said: set[str] = set()
        self._limits_seen: tuple[int | None, int | None] | None = None  # effective
        self._own_limits_seen: tuple[int | None, int | None] | None = None  # the group's
        self._limits_next = 0.0  # monotonic time of the next effective-limit re-read
        self._own_bytes = 0  # Sentinel's footprint, as --max-rss auto took it off
        self._own_known = False  # _own_bytes taken (kept for a re-attached cgroup)
        self._shared_done = False  # warned, or the near-limit check ran
        self._shared_next = 0.0  # monotonic time of the next cheap check
        self._rearm_pending = False  # the threshold fired: move it after the sample
        self._arm_pending = False  # a v1 cgroup: arm the threshold at the next good sample
        self._rearming = False  # a helper thread is registering a moved threshold
        self._want: int | None = None  # where the threshold should be, bytes
        self._clock = time.monotonic  # a test's fake clock
        self._woke_at: float | None = None  # loop time of the last wake-driven sample
        self._deferred = None  # the loop handle of a debounced wake-up's sample
        self._clamp_high: int | None = None  # memory.high seen while Sentinel clamped it
        # --probe ebpf/auto: this program's tree in the kernel (sentinel.core.ebpf_side).
        self.ebpf = None
        self._ebpf_tried = False

    # ------------------------------------------------------------------ notes
    def note(self, topic: str, text: str, level: int = logging.INFO) -> None:
        """``kernel_notes[topic] = text`` and one log line, once per text."""
        self.sup.state.kernel_notes[topic] = text
        if text not in self._said:
            self._said.add(text)
            # The machine's PSI file is no program's: Sentinel's own line among several.
            token = logs.PROGRAM.set("") if topic == "pressure" else None
            try:
                log.log(level, text, extra={"event": "kernel_note", "topic": topic})
            finally:
                if token is not None:
                    logs.PROGRAM.reset(token)

    # ------------------------------------------------------------------ wake-ups
    def on_run(self) -> None:
        """(Re)attach the wake-ups to the current probe's cgroup; kept when it is the
        same cgroup as before (a restart in run mode)."""
        self._ebpf_run()
        memory = getattr(self.sup.probe, "cgroup", None)
        path = memory.path if memory is not None else None
        if self.wakeups is not None and path == self._cgroup_path:
            return
        self.close()
        self._cgroup_path = path
        try:
            self._attach(memory)
        except Exception as exc:  # never harm the workload: the tick still samples
            log.warning("kernel wake-ups not attached: %r; sampling on the tick only", exc,
                        extra={"event": "kernel_note"})

    def _ebpf_run(self) -> None:
        """--probe ebpf/auto: join the Sentinel's eBPF hub (loaded on first use) and
        seed this run's tree; a failure is said once by the hub, and polling goes on."""
        mode = getattr(self.sup.settings, "probe", "poll")
        if mode == "poll":
            return
        if not self._ebpf_tried:
            self._ebpf_tried = True
            from sentinel.core.ebpf_side import EbpfHub, EbpfSide

            hub = EbpfHub.for_loop(self.sup.loop, mode)
            if hub is not None:
                self.ebpf = EbpfSide(self.sup, hub)
                if not self.ebpf.covers_measure():
                    self.note("ebpf", f"the eBPF probe follows resident pages (RSS): with "
                              f"--measure {self.sup.state.measure} it follows the tree and "
                              "OOM victims, and the limit is enforced at polling's cadence "
                              "(with the cgroup's wake-ups where there are any)")
        if self.ebpf is not None:
            self.ebpf.on_run()

    def ebpf_woke(self, key: str, reason: str) -> None:
        """A record of the eBPF probe (``limit``, ``step``, ``lost``): counted in
        ``state.wakeups["ebpf_" + key]``, and a sample now."""
        st = self.sup.state
        st.wakeups["ebpf_" + key] = st.wakeups.get("ebpf_" + key, 0) + 1
        if self.sup.child is None:
            return
        log.debug("woken by the eBPF probe (%s): sampling now", reason,
                  extra={"event": "wakeup", "source": "ebpf_" + key})
        self._sample_now(f"ebpf {key}: {reason}")

    def ebpf_interval(self, value: int, limit: int | None) -> float | None:
        """The next tick while the eBPF probe covers the limit (``EbpfSide.interval``),
        else ``None``."""
        if self.ebpf is None:
            return None
        try:
            return self.ebpf.interval(self.sup.state.last_sample, value, limit)
        except Exception:
            return None

    def close_ebpf(self) -> None:
        if self.ebpf is not None:
            self.ebpf.close()
            self.ebpf = None

    def _attach(self, memory) -> None:
        from sentinel.probes import wakeups as wk  # small, standard library only

        w = wk.Wakeups()
        if memory is not None and memory.version == 2:
            try:
                self.events_watch = wk.MemoryEventsWatch(f"{memory.path}/memory.events")
                self._add(w, self.events_watch, "memory_events")
            except OSError as exc:
                self.note("memory_events", f"memory.events of {memory.path} cannot be "
                          f"watched ({exc.strerror}); sampling on the tick only")
        elif memory is not None and memory.version == 1:
            # The usage threshold is armed by the first sample far from the limit
            # (on_sample): where usage will be when the measure reaches the limit.
            self._arm_pending = True
            self._add(w, wk.OomNotify(memory.path), "oom_notify")
        pressure = wk.PressureTrigger(self.proc_pressure, _PSI_STALL_US, _PSI_WINDOW_US)
        if pressure.note:
            self.note("pressure", pressure.note)
        self._add(w, pressure, "pressure")
        try:
            w.attach(self.sup.loop, self._woke)
        except Exception:
            w.close()
            self.threshold = self.events_watch = None
            raise
        self.wakeups = w

    def _add(self, w, source, key: str) -> bool:
        why = w.add(source)
        if why is None:
            return True
        source.close()
        self.note(key, why + "; sampling on the tick "
                  "for this (not an error)")
        return False

    def _woke(self, wake) -> None:
        if wake.kind == "error":
            self.note("wakeups", wake.reason, logging.WARNING)
            return
        key = WAKEUP_KEYS.get(wake.kind, wake.kind)
        st = self.sup.state
        st.wakeups[key] = st.wakeups.get(key, 0) + 1
        live = self.sup.child is not None
        log.log(logging.DEBUG if key == "pressure" and st.wakeups[key] > 1 else logging.INFO,
                "woken by %s (%s)%s", key, wake.reason, ": sampling now" if live else "",
                extra={"event": "wakeup", "source": key, "rose": dict(wake.rose)})
        if not live:
            return
        if key == "usage_threshold":
            self._rearm_pending = True  # after the sample (on_sample), off the loop
        why = f"{key}: {wake.reason}"
        if key == "memory_events" and not any(k in wake.rose for k in _URGENT_EVENTS):
            # Debounced (see _URGENT_EVENTS): the last wake-driven sample was less than
            # the gap ago: one sample when it ends, the wake-ups between merged.
            loop = self.sup.loop
            gap = min(self.sup.settings.interval_seconds, WAKE_SAMPLE_GAP_SECONDS)
            now = loop.time()
            if self._woke_at is not None and now - self._woke_at < gap:
                if self._deferred is None:
                    self._deferred = loop.call_at(self._woke_at + gap, self._debounced, why)
                return
            self._woke_at = now
        self._sample_now(why)

    def _debounced(self, why: str) -> None:
        self._deferred = None
        self._woke_at = self.sup.loop.time()
        if self.sup.child is not None:
            self._sample_now(why + " (debounced)")

    def _sample_now(self, why: str) -> None:
        if self._deferred is not None:  # this sample serves the deferred one too
            self._deferred.cancel()
            self._deferred = None
        self.sup.sample_now(why)

    # ------------------------------------------------------------------ the v1 threshold
    def _threshold_for(self, sample) -> int:
        """Where usage will be when the measure reaches the limit: the limit itself for
        ``--measure cgroup``; else the cgroup's usage plus the measure's headroom (usage
        grows at least as fast as the tree's resident pages: they are charged to it)."""
        limit = self.sup.state.limit_bytes or 0  # (never armed without a limit: on_sample)
        if sample is None or self.sup.state.measure == "cgroup":
            return limit
        usage = sample.cgroup_memory_current_bytes
        if usage is None:
            return limit
        return max(1, usage + (limit - sample.measure_bytes))

    def _rearm(self, sample) -> None:
        """Move the threshold to where the measure would reach the limit now. The
        registration blocks in the kernel's synchronize_rcu() (~5 ms here; in the loop it
        delayed the benchmark's SIGTERM from 1-4 ms to 6-16 ms), so a helper thread makes
        it and the loop adopts the new eventfd; one at a time, the latest wish last."""
        thr = self.threshold
        if thr is None or self.sup.state.limit_bytes is None:
            return  # (no limit: on_limit dropped it)
        want = self._threshold_for(sample or self.sup.state.last_sample)
        self._want = want
        if self._rearming:
            return
        loop = self.sup.loop

        def register() -> None:
            fd, err = -1, None
            try:
                fd = thr.register_at(want)
            except OSError as exc:
                err = thr.why(exc)
            except Exception as exc:  # whatever it is, the loop must hear of it
                err = f"cgroup v1 usage threshold not moved: {exc!r}"
            finally:
                try:
                    loop.call_soon_threadsafe(self._rearmed, thr, want, fd, err)
                except RuntimeError:  # the loop is closed: Sentinel is ending
                    if fd >= 0:
                        os.close(fd)

        import threading

        try:
            threading.Thread(target=register, name="sentinel-threshold", daemon=True).start()
        except Exception as exc:  # no thread (pids.max reached): no threshold, not covered
            self._drop_threshold(f"cgroup v1 usage threshold not moved: no helper thread "
                                 f"({exc}); sampling on the tick")
            return
        self._rearming = True  # after the start: a failed one never leaves it set

    def _drop_threshold(self, why: str | None) -> None:
        """The threshold cannot be kept where it must be: drop it (``covered()`` says
        no, the tick samples at its normal cadence) and say why; armed again (on the
        loop) at the next sample far from the limit."""
        thr, self.threshold = self.threshold, None
        self._rearming = False
        if why:
            self.note("usage_threshold", why)
        if thr is not None:
            if self.wakeups is not None:
                self.wakeups.remove(thr)
            thr.close()
        if self.wakeups is not None:
            self._arm_pending = True

    def _rearmed(self, thr, want: int, fd: int, err: str | None) -> None:
        self._rearming = False
        if thr is not self.threshold or self.wakeups is None:  # closed meanwhile
            if fd >= 0:
                os.close(fd)
            return
        if err:  # the old registration is in the wrong place now: not relied on
            self._drop_threshold(err)
            return
        thr.adopt(fd, want)
        log.debug("cgroup v1 usage threshold moved to %d bytes (limit %s)", want,
                  self.sup.state.limit_bytes, extra={"event": "threshold", "threshold_bytes":
                                                     want, "limit_bytes":
                                                     self.sup.state.limit_bytes})
        if self._want != want:
            self._rearm(None)  # a newer wish came while this one registered

    def on_limit(self, limit_bytes: int | None) -> None:
        """The limit changed: re-arm the v1 threshold at the next sample (or arm it at the
        next one far from the new limit); no limit (``limit none``): none armed."""
        if self.ebpf is not None:
            self.ebpf.on_limit(limit_bytes)
        if limit_bytes is None:
            self._rearm_pending = False
            if self.threshold is not None:
                self._drop_threshold(None)  # armed again with the next limit
            return
        if self.threshold is not None:
            self._rearm_pending = True
        elif self.wakeups is not None and getattr(getattr(self.sup.probe, "cgroup", None),
                                                  "version", None) == 1:
            self._arm_pending = True

    def _arm(self, sample) -> None:
        from sentinel.probes import wakeups as wk

        self._arm_pending = False
        memory = getattr(self.sup.probe, "cgroup", None)
        if memory is None or self.wakeups is None:
            return
        self.threshold = wk.UsageThreshold(memory.path, self._threshold_for(sample))
        if not self._add(self.wakeups, self.threshold, "usage_threshold"):
            self.threshold = None
            return
        log.debug("cgroup v1 usage threshold armed at %d bytes (limit %s)",
                  self.threshold.threshold_bytes, self.sup.state.limit_bytes,
                  extra={"event": "threshold", "threshold_bytes": self.threshold.threshold_bytes,
                         "limit_bytes": self.sup.state.limit_bytes})

    def covered(self, sample) -> bool:
        """A kernel wake-up fires before ``sample``'s measure can reach the limit: the v1
        threshold is armed where usage can still cross it (see ``_v1_covered``), or v2
        ``memory.events`` is watched and the cgroup's ``memory.high``/``memory.max`` is
        nearer in usage than the limit in the measure."""
        limit = self.sup.state.limit_bytes
        if limit is None or sample is None:
            return False
        if self.ebpf is not None and self.ebpf.covered(sample):
            return True
        if self.threshold is not None:
            return self._v1_covered(sample)
        if self.events_watch is None or self.events_watch.fd < 0:
            return False
        usage = sample.cgroup_memory_current_bytes
        bounds = [b for b in (sample.cgroup_memory_high_bytes, sample.cgroup_memory_max_bytes)
                  if b is not None]
        if usage is None or not bounds:
            return False
        return min(bounds) - usage <= limit - sample.measure_bytes

    def _v1_covered(self, sample) -> bool:
        """The v1 threshold (``memory.usage_in_bytes``) fires first: registered, usage
        (the sample's) below it, it at most ``_REARM_SLACK_BYTES`` above where it should
        be (``_threshold_for``), and ``_HARD_MARGIN_BYTES`` below the hard limit (the
        sample's ``memory.limit_in_bytes``, and the effective one last read): usage
        never rises past the hard limit, the kernel reclaims there."""
        thr = self.threshold
        usage = sample.cgroup_memory_current_bytes
        if thr is None or thr.fd < 0 or self._rearming or usage is None:
            return False
        at = thr.threshold_bytes
        hard = [b for b in (sample.cgroup_memory_max_bytes,
                            (self._limits_seen or (None, None))[0]) if b is not None]
        if hard and at > min(hard) - _HARD_MARGIN_BYTES:
            return False
        return usage < at <= self._threshold_for(sample) + _REARM_SLACK_BYTES

    # ------------------------------------------------------------------ each sample
    def on_sample(self, sample) -> None:
        """After each sample, before the kill decision (see the module)."""
        if self.ebpf is not None:
            try:
                self.ebpf.on_sample(sample)
            except Exception as exc:  # never stops enforcement: polling goes on
                self.ebpf._fail("after a sample", exc)
        try:
            self._follow_auto_limit(sample)
            limit = self.sup.state.limit_bytes
            far = (limit is not None and sample.cgroup_memory_current_bytes is not None
                   and limit - sample.measure_bytes > _REARM_HEADROOM_SHARE * limit)
            if self.ebpf is not None and self.ebpf.covered(sample):
                # The kernel's own sum covers the limit: the v1 usage threshold would only
                # add wake-ups (the cgroup's page cache moves its usage) and re-arms.
                if self.threshold is not None:
                    self._drop_threshold(None)
            elif far and self._arm_pending:
                self._arm(sample)
            elif self.threshold is not None and sample.cgroup_memory_current_bytes is not None:
                # Moved off the loop (_rearm): after each crossing, and when the gap between
                # usage and the measure shrank (it would fire late).
                want = self._threshold_for(sample)
                if self._rearm_pending or \
                        want < self.threshold.threshold_bytes - _REARM_SLACK_BYTES:
                    self._rearm_pending = False
                    self._rearm(sample)
            self._shared_pages(sample)
        except Exception as exc:  # a bug here must not stop enforcement
            key = f"sampling side: {exc!r}"
            if key not in self._said:
                self._said.add(key)
                log.warning("%s (reported once)", key, extra={"event": "kernel_note"})

    def _follow_auto_limit(self, sample) -> None:
        """``--max-rss auto``: re-resolve when the container's limit changes (an in-place
        pod resize). The group's own ``memory.max``/``memory.high`` are in every sample
        (no extra read); the effective limit (``CgroupMemory.limits``: the lowest of the
        group's and its ancestors', as at start-up) is re-read when those change and
        every ``LIMIT_REREAD_SECONDS``. A new value is applied as the ``limit`` command
        does (a ``limit_changed`` event), less the same footprint as at start-up."""
        s = self.sup.settings
        memory = getattr(self.sup.probe, "cgroup", None)
        if s.limit_auto_share is None or memory is None or self.sup.state.current_kill:
            return  # (not during a stop: --clamp-high's memory.high is no resize)
        # --clamp-high's memory.high is Sentinel's own, no resize: while it is in place
        # (the kernel side's high_clamped) and whenever memory.high still equals it, the
        # high last seen before it stands in.
        high = sample.cgroup_memory_high_bytes
        if getattr(getattr(self.sup, "kernel_side", None), "high_clamped", False):
            self._clamp_high = high
        own_high = high is not None and high == self._clamp_high
        if own_high:
            high = (self._own_limits_seen or (None, None))[1]
        own_now = (sample.cgroup_memory_max_bytes, high)
        now = self._clock()
        if own_now == self._own_limits_seen and now < self._limits_next:
            return
        self._own_limits_seen, self._limits_next = own_now, now + LIMIT_REREAD_SECONDS
        effective = memory.limits()
        if own_high:
            effective = (effective[0], (self._limits_seen or (None, None))[1])
        before, self._limits_seen = self._limits_seen, effective
        bounds = [b for b in effective if b is not None]
        if before is None and not self._own_known:
            self._own_known = True
            # Sentinel's footprint as start-up took it off (launch.own_footprint_bytes,
            # layer 4): what the share of this limit exceeds the resolved one by.
            cgroup_measure = s.measure in ("cgroup", "working-set")
            limit = self.sup.state.limit_bytes
            self._own_bytes = 0 if cgroup_measure or not bounds or limit is None else \
                max(0, int(min(bounds) * s.limit_auto_share) - limit)
            return
        if before == effective:
            return
        from sentinel.errors import UsageError
        from sentinel.probes.cgroup import auto_limit, share_text

        try:
            value = auto_limit(effective[0], effective[1], s.limit_auto_share,
                               self._own_bytes, version=memory.version)
        except UsageError as exc:
            log.warning("the container's memory limit changed, but %s; the limit stays "
                        "%s", str(exc).replace("; set", ". Set", 1),
                        fmt_bytes(self.sup.state.limit_bytes), extra={"event": "limit_auto"})
            return
        if value != self.sup.state.limit_bytes:
            why = (f"--max-rss auto:{share_text(s.limit_auto_share)} of the container's new "
                   f"limit {fmt_bytes(min(bounds))}")
            self.sup.apply_limit(value, why=why)
            # status shows the resolution now in force, not the start-up one
            self.sup.state.kernel_notes["auto"] = f"{why}: limit {fmt_bytes(value)}"

    def _shared_pages(self, sample) -> None:
        """``--measure rss``: summed RSS against the cgroup's usage (cheap, every
        ``SHARED_CHECK_SECONDS``) and, once, when RSS first passes ``SHARED_NEAR_SHARE``
        of the limit, against the tree's PSS (one smaps_rollup per process). One
        WARNING when RSS is over ``SHARED_RATIO`` times either."""
        st = self.sup.state
        if st.measure != "rss" or self._shared_done or not sample.processes:
            return
        limit = st.limit_bytes
        near = limit is not None and sample.rss_bytes >= SHARED_NEAR_SHARE * limit
        now = self._clock()
        if not near and now < self._shared_next:
            return
        self._shared_next = now + SHARED_CHECK_SECONDS
        usage = sample.cgroup_memory_current_bytes
        if usage and sample.rss_bytes > SHARED_RATIO * usage:
            self._warn_shared(sample.rss_bytes, usage, "the cgroup's usage")
            return
        if not near:
            return
        self._shared_done = True  # the PSS check runs once
        read_pss = getattr(self.sup.probe, "smaps_rollup", None)
        if read_pss is None:
            return  # a probe without PSS (a test's): only the cgroup comparison
        # Within SHARED_PSS_BUDGET_SECONDS (a time budget, not a process count: one
        # process's read costs by its mappings): the processes read decide, their RSS
        # against their PSS.
        pss = rss_read = read = 0
        deadline = self._clock() + SHARED_PSS_BUDGET_SECONDS
        for pid, rss in sample.processes:
            if read and self._clock() >= deadline:
                log.debug("shared-pages check: %d of %d processes read within %.0f ms",
                          read, len(sample.processes), SHARED_PSS_BUDGET_SECONDS * 1e3,
                          extra={"event": "shared_pages"})
                break
            read += 1
            got = read_pss(pid)
            if got is None:
                continue  # gone
            rss_read += rss
            pss += got[0] if got[0] is not None else rss  # unreadable: its RSS, no alarm
        if pss and rss_read > SHARED_RATIO * pss:
            whose = "the tree's PSS" if read == len(sample.processes) else \
                f"the PSS of the {read} of {len(sample.processes)} processes read in time"
            self._warn_shared(rss_read, pss, whose)

    def _warn_shared(self, rss: int, other: int, what: str) -> None:
        self._shared_done = True
        self.note("shared_pages", (
            f"the tree's summed RSS {fmt_bytes(rss)} is {rss / other:.1f}x {what} "
            f"({fmt_bytes(other)}): its processes share pages (fork()ed workers, shared "
            "memory) that RSS counts once per process, so --measure rss may stop the "
            "workload far below its real use; use --measure pss (shared pages split) or "
            "--measure working-set (what the kubelet evicts on)"), logging.WARNING)

    def close(self) -> None:
        if self.wakeups is not None:
            try:
                self.wakeups.close()
            except Exception:
                pass
        self.wakeups = self.threshold = self.events_watch = None
        if self._deferred is not None:
            self._deferred.cancel()
        self._deferred = self._woke_at = None
        # Nothing of the old cgroup carries over to the next (a re-attached watch target):
        self._arm_pending = self._rearm_pending = self._rearming = False
        self._limits_seen = self._own_limits_seen = self._want = None
        self._limits_next = 0.0
