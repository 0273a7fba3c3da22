"""``--probe ebpf``: the kernel follows each program's tree and wakes its supervisor.

``EbpfHub`` is one per Sentinel (one BPF object, one ring buffer on the loop);
``EbpfSide`` is one per ``Supervisor`` (a tree slot), fed by ``SamplingSide``:

- ``on_run()``: the slot starts over and is seeded with the workload's main PID (the
  task iterator finds it at once, idle or not); forks, execs and exits are followed by
  the kernel from then on, and each sample seeds any process of the tree the kernel
  does not follow yet (one forked before the seed);
- the threshold is the limit, lowered by what the kernel's sum was behind the measure
  at the last sample (its batched counters' lag, processes it cannot follow) and by one
  counter's per-CPU batch per followed process (how far the growing counter's lag may
  move since; on the CPUs the workload may run on, at most ``MAX_MARGIN_SHARE`` of the
  limit): at it the kernel sends a ``limit`` record, and another at each new high while
  the sum stays above it; each makes the supervisor sample (``statm``, exact) at once,
  and near the limit a sample is also planned for when the measured growth reaches it;
- ``step`` records (the sum moved by ``STEP_SHARE`` of the limit, at most one per
  ``--interval``) keep the metrics fresh, so the tick is only a back-stop
  (``EBPF_TICK_SECONDS``): idle, Sentinel wakes twice a minute;
- a ``victim`` record (the kernel's OOM killer chose a process of the tree) is said
  at once (``oom_victim``) and tells the main process's SIGKILL apart even without a
  cgroup counter; a gap in the sequence numbers (lost records) makes every program
  sample at once.

The kernel's sum is resident pages (statm's): it covers ``--measure rss``. With the
other measures the probe follows the tree and OOM victims, and the limit is left to
polling and the cgroup's own wake-ups. Nothing here raises into the loop: a failed map
call is one line and the program goes on polling.
"""

from __future__ import annotations

import logging
import os
import time

from sentinel.logs import LOGGER_NAME, fmt_bytes

log = logging.getLogger(LOGGER_NAME)

# The tick while the kernel follows the tree (records wake Sentinel): a back-stop.
EBPF_TICK_SECONDS = 30.0
# A step record each time the sum moved by this share of the limit (at least STEP_MIN).
STEP_SHARE = 0.02
STEP_MIN_BYTES = 1 << 20
# A planned sample near the limit comes at least this soon after the last one.
NEAR_MIN_SECONDS = 0.0005
# The kernel's sum is resident pages: it covers --measure rss only. PSS/USS can grow
# with no RSS change (a forked child writing its copy-on-write pages): those measures
# keep the polling cadence, and the probe follows the tree and OOM victims.
COVERED_MEASURES = ("rss",)
# Record-driven samples at most this often (a fold every 128 KiB at 1 GiB/s is 8,000
# records a second); and the records' growth plans the next sample only while fresh.
RECORD_SAMPLE_GAP_SECONDS = 0.001
# The margin below the limit is at most this share of it (a node with many CPUs).
MAX_MARGIN_SHARE = 0.125
_CPUS = os.cpu_count() or 1


class EbpfHub:
    """The loaded tracker and its ring buffer on ``loop``; ``join(side)`` hands out a
    tree slot. Made once per loop by ``for_loop``; ``None`` when it cannot load."""

    _by_loop: dict[int, EbpfHub | None] = {}

    def __init__(self, loop, tracker) -> None:
        self.loop = loop
        self.tracker = tracker
        self.sides: dict[int, EbpfSide] = {}
        loop.add_reader(tracker.fd, self.read)

    @classmethod
    def for_loop(cls, loop, mode: str) -> EbpfHub | None:
        """The hub of ``loop``, loading the tracker on the first call. ``mode`` is the
        ``--probe`` value: with ``ebpf`` a failed load is one WARNING naming what is
        missing; with ``auto`` an INFO line. Either way ``None``: polling goes on."""
        key = id(loop)
        if key in cls._by_loop:
            return cls._by_loop[key]
        hub = None
        from sentinel import logs

        token = logs.PROGRAM.set("")  # one probe for the whole Sentinel, no program's
        try:
            from sentinel.probes.ebpf import EbpfUnavailable, MemoryTracker

            try:
                t0 = time.monotonic()
                tracker = MemoryTracker()
                hub = cls(loop, tracker)
                log.info("eBPF probe loaded in %.0f ms: the kernel follows the workload's "
                         "memory", (time.monotonic() - t0) * 1e3,
                         extra={"event": "ebpf", "loaded": True})
                for program, why in tracker.without.items():
                    log.info("eBPF probe: %s not loaded (%s); kernel OOM kills are told "
                             "by the cgroup's counters", program, why,
                             extra={"event": "ebpf", "without": program})
            except EbpfUnavailable as exc:
                log.log(logging.WARNING if mode == "ebpf" else logging.INFO,
                        "eBPF probe not loaded: %s; polling /proc instead", exc,
                        extra={"event": "ebpf", "loaded": False, "reason": exc.reason})
        except Exception as exc:  # a bug of ours: never fatal, polling goes on
            log.warning("eBPF probe not loaded: %r; polling /proc instead", exc,
                        extra={"event": "ebpf", "loaded": False, "reason": "error"})
        finally:
            logs.PROGRAM.reset(token)
        cls._by_loop[key] = hub
        return hub

    def join(self, side: EbpfSide) -> int | None:
        from sentinel.probes.ebpf import MAX_TREES

        for slot in range(MAX_TREES):
            if slot not in self.sides:
                self.sides[slot] = side
                return slot
        return None

    def leave(self, slot: int) -> None:
        self.sides.pop(slot, None)

    def read(self) -> None:
        """Handle the records waiting now (the loop's reader; a sample calls it too, for
        the quiet records that woke nobody)."""
        t = self.tracker
        try:
            lost = t.lost
            records = t.drain()
        except Exception as exc:
            log.warning("eBPF ring buffer read failed: %r; sampling on the tick", exc,
                        extra={"event": "ebpf"})
            for side in list(self.sides.values()):
                side.lost(0)
            return
        if t.lost != lost:
            for side in list(self.sides.values()):
                side.lost(t.lost - lost)
        for rec in records:
            if rec.kind == "victim":
                for side in list(self.sides.values()):
                    side.on_victim(rec)
                continue
            side = self.sides.get(rec.tree)
            if side is not None:
                side.on_record(rec)

    def close(self) -> None:
        try:
            self.loop.remove_reader(self.tracker.fd)
        except Exception:
            pass
        self.tracker.close()
        self._by_loop.pop(id(self.loop), None)


class EbpfSide:
    """One supervisor's tree in the hub (see the module). ``sup`` is the
    ``Supervisor``; ``hub`` its ``EbpfHub``."""

    def __init__(self, sup, hub: EbpfHub) -> None:
        self.sup = sup
        self.hub = hub
        self.slot = hub.join(self)
        self.failed: str | None = None
        if self.slot is None:
            from sentinel.probes.ebpf import MAX_TREES

            self.failed = f"more programs than the eBPF probe's {MAX_TREES} tree slots"
            log.warning("eBPF probe: %s; this program is polled", self.failed,
                        extra={"event": "ebpf", "loaded": False, "reason": "slots"})
        self.followed: dict[int, int] = {}  # ns pid -> host pid, as of the last sample
        # What the kernel's sum fell short of the measure by at the last sample (its
        # counters' lag, processes it cannot follow): negative or 0; the threshold is
        # lowered by it.
        self.offset_bytes = 0
        self.threshold: int | None = None  # bytes, as configured
        self._written: tuple | None = None  # (threshold, step) last written to the kernel
        self.counts: dict[str, int] = {}  # records by kind
        self.lost_total = 0
        self._near: list[tuple[int, int]] = []  # (ts_ns, sum bytes) of the last limit records
        self._last_record_sample = 0.0  # loop time of the last record-driven sample
        self.victims: set[int] = set()  # ns pids the OOM killer chose this run
        self._clock = time.monotonic  # CLOCK_MONOTONIC, the records' clock (tests: fake)
        self._deferred = None  # the loop handle of a sample after the record gap
        self.margin_capped = False  # the batch margin was cut to MAX_MARGIN_SHARE

    # ------------------------------------------------------------------ state
    @property
    def active(self) -> bool:
        return self.slot is not None and self.failed is None

    def publish(self) -> None:
        """``state.probe_info`` = ``stats()`` (status, the dashboard)."""
        self.sup.state.probe_info = self.stats()

    def _fail(self, what: str, exc: Exception) -> None:
        if self.failed is None:
            self.failed = f"{what}: {exc}"
            self.publish()
            log.warning("eBPF probe stopped for this program (%s: %s); polling /proc "
                        "instead", what, exc, extra={"event": "ebpf", "loaded": False})

    def covers_measure(self) -> bool:
        return self.sup.state.measure in COVERED_MEASURES

    # ------------------------------------------------------------------ hooks
    def on_run(self) -> None:
        """A new run: the slot starts over, seeded with the main PID."""
        if not self.active:
            return
        self.followed = {}
        self.offset_bytes = 0
        self.threshold = self._written = None  # forget() cleared the kernel's copy too
        self._near.clear()
        self.victims.clear()
        child = self.sup.child
        try:
            self.hub.tracker.forget(self.slot)
            if child is not None:
                self.hub.tracker.seed(self.slot, [child.pid])
            self.configure()
        except Exception as exc:
            self._fail("seeding the tree", exc)

    def configure(self) -> None:
        """Write the slot's threshold and steps from the current limit."""
        if not self.active:
            return
        from sentinel.probes.ebpf import PAGE

        st, s = self.sup.state, self.sup.settings
        limit = st.limit_bytes
        threshold = None
        step = 0
        if limit is not None and self.covers_measure():
            threshold = max(PAGE, limit - self._margin() + self.offset_bytes)
            step = max(STEP_MIN_BYTES, int(limit * STEP_SHARE))
        if (threshold, step) == self._written:
            return
        try:
            self.hub.tracker.configure(self.slot, threshold, near_bytes=PAGE, step_bytes=step,
                                       step_seconds=s.interval_seconds)
        except Exception as exc:
            self._fail("setting the threshold", exc)
            return
        self.threshold, self._written = threshold, (threshold, step)

    def _margin(self) -> int:
        """How far the kernel's batched sum may move against ``statm`` after a sample,
        bytes: one counter's per-CPU batch (the growing one; the others' lag is measured
        at the sample, ``offset_bytes``) per followed process, on the CPUs the workload
        may run on."""
        from sentinel.probes.ebpf import PAGE, batch_error_pages

        try:  # per-CPU deltas build up only on the CPUs the workload may run on
            cpus = len(os.sched_getaffinity(self.sup.state.main_pid or 0))
        except OSError:
            cpus = _CPUS
        node = _CPUS
        batch = batch_error_pages(node) // 3 // node * min(cpus, node)
        margin = batch * PAGE * max(1, len(self.followed))
        limit = self.sup.state.limit_bytes
        # Capped (many processes, many CPUs): growth inside the per-CPU batches may then
        # pass the limit unseen by the kernel's sum, so it no longer covers it (covered()).
        self.margin_capped = bool(limit) and margin > int(limit * MAX_MARGIN_SHARE)
        return min(margin, int(limit * MAX_MARGIN_SHARE)) if limit else margin

    def on_sample(self, sample) -> None:
        """Seed the tree's processes the kernel does not follow yet (the fork, exec and
        exit records keep ``followed`` current, so the maps are read only then); keep
        the threshold where the measure reaches the limit (``offset_bytes``)."""
        if not self.active or self.sup.child is None:
            return
        self.hub.read()  # the quiet records (fork, exit, seeded) first
        tracker = self.hub.tracker
        try:
            missing = [pid for pid in sample.pids if pid not in self.followed]
            if missing:
                tracker.seed(self.slot, missing)
                self.followed = tracker.processes(self.slot)
            diff = tracker.sum_bytes(self.slot) - sample.measure_bytes
        except Exception as exc:
            self._fail("following the tree", exc)
            return
        # How far the kernel's sum is behind the measure now (its batched counters'
        # lag, processes it cannot follow): the threshold comes that much earlier. Only
        # ever lowered: a kernel sum above the measure (processes the sample leaves out)
        # wakes Sentinel early, never late.
        self.offset_bytes = min(diff, 0)
        self.configure()
        self.publish()
        if self._near and self.threshold is not None and \
                sample.rss_bytes < self.threshold - (self.sup.state.limit_bytes or 0) // 20:
            self._near.clear()  # well below the threshold again: back to the back-stop

    def on_limit(self, _limit_bytes) -> None:
        self.configure()

    def covered(self, sample) -> bool:
        """The kernel wakes Sentinel before ``sample``'s measure can reach the limit:
        loaded, a covered measure, a threshold set, the batch margin not capped, and
        every process of the sample followed."""
        return (self.active and self.threshold is not None and sample is not None
                and self.covers_measure() and bool(self.followed) and not self.margin_capped
                and all(pid in self.followed for pid in sample.pids))

    def interval(self, sample, value: int, limit: int | None) -> float | None:
        """The next tick while covered: planned for when the growth seen in the
        kernel's records reaches the limit, while the sum is past the threshold; else
        the back-stop. ``None``: not covered, or over the limit (the usual cadence)."""
        st = self.sup.state
        if (not self.covered(sample) or limit is None or not st.enforcing or value >= limit
                or st.current_kill is not None):
            return None
        s = self.sup.settings
        if self._near and self._clock() - self._near[-1][0] / 1e9 < s.interval_seconds:
            # Past the threshold and growing (fresh limit records): plan the sample for
            # when that growth reaches the limit. Without fresh records the sum is not
            # moving (any fold past the threshold sends one): the back-stop.
            rate = self._rate()
            if rate:
                return min(s.interval_seconds, max(NEAR_MIN_SECONDS, (limit - value) / rate))
            return None  # one record, no rate yet: the sampler's own cadence near a limit
        return max(EBPF_TICK_SECONDS, s.max_interval_seconds)

    def _rate(self) -> float | None:
        """Bytes per second between the first and last of the recent limit records."""
        if len(self._near) < 2:
            return None
        (t0, b0), (t1, b1) = self._near[0], self._near[-1]
        if t1 <= t0 or b1 <= b0:
            return None
        return (b1 - b0) / ((t1 - t0) / 1e9)

    # ------------------------------------------------------------------ records
    def on_record(self, rec) -> None:
        self.counts[rec.kind] = self.counts.get(rec.kind, 0) + 1
        sup = self.sup
        if sup.child is None or not self.active:  # (stopped: polling alone decides)
            return
        if rec.kind == "limit":
            self._near.append((rec.ts_ns, rec.sum_bytes))
            del self._near[:-8]
            st = sup.state
            now = sup.loop.time()
            busy = (st.current_kill is not None or not st.enforcing or
                    (st.last_sample is not None and st.limit_bytes is not None
                     and st.last_sample.measure_bytes > st.limit_bytes))
            gap = sup.settings.interval_seconds if busy else RECORD_SAMPLE_GAP_SECONDS
            if now - self._last_record_sample < gap:
                # (a stop or a dry run under way: the usual cadence is enough); else one
                # sample when the gap ends, for this record and any after it
                if not busy and self._deferred is None:
                    self._deferred = sup.loop.call_at(self._last_record_sample + gap,
                                                      self._deferred_sample)
                return
            self._last_record_sample = now
            sup.sampling_side.ebpf_woke("limit", f"the kernel's sum {fmt_bytes(rec.sum_bytes)}"
                                        f" reached the threshold {fmt_bytes(self.threshold)}")
        elif rec.kind == "step":
            self._near.clear()
            sup.sampling_side.ebpf_woke("step", f"the kernel's sum moved to "
                                        f"{fmt_bytes(rec.sum_bytes)}")
        elif rec.kind in ("fork", "seeded"):
            if rec.ns_tgid:
                self.followed[rec.ns_tgid] = rec.tgid
        elif rec.kind == "exit":
            self.followed.pop(rec.ns_tgid, None)

    def _deferred_sample(self) -> None:
        self._deferred = None
        if self.sup.child is not None and self.active:
            self._last_record_sample = self.sup.loop.time()
            self.sup.sampling_side.ebpf_woke("limit", "limit records within "
                                             f"{RECORD_SAMPLE_GAP_SECONDS * 1e3:.0f} ms")

    def on_victim(self, rec) -> None:
        """The kernel's OOM killer chose ``rec``'s process: say so at once if it is this
        program's (its tree slot, or a PID of its last sample)."""
        sample = self.sup.state.last_sample
        ours = (rec.tree == self.slot and self.slot is not None) or (
            rec.ns_tgid and sample is not None and rec.ns_tgid in sample.pids)
        if not ours or self.sup.child is None:
            return
        self.counts["victim"] = self.counts.get("victim", 0) + 1
        pid = rec.ns_tgid or rec.tgid
        self.victims.add(pid)
        main = pid == self.sup.state.main_pid
        self.sup.emit("oom_victim", f"the kernel's OOM killer chose pid {pid}"
                      f"{' (the main process)' if main else ''} of this program "
                      f"(resident {fmt_bytes(rec.mm_bytes)} by the kernel's count); it "
                      "will be killed with SIGKILL", logging.WARNING, pid=pid, main=main,
                      host_pid=rec.tgid, uid=rec.other,
                      chosen_mono=rec.ts_ns / 1e9)

    def lost(self, n: int) -> None:
        """Records were lost: sample now (the tick would otherwise be late)."""
        self.lost_total += n
        if self.sup.child is not None:
            self.sup.sampling_side.ebpf_woke("lost", f"{n} eBPF record(s) lost")

    def stats(self) -> dict:
        """For ``status``: whether the kernel follows the tree, and how."""
        out = {"probe": "ebpf" if self.active else "poll",
               "followed": len(self.followed), "records": dict(self.counts),
               "lost": self.lost_total}
        if self.threshold is not None:
            out["threshold_bytes"] = self.threshold
        if self.failed:
            out["failed"] = self.failed
        return out

    def close(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        if self.slot is None:
            return
        try:
            if self.hub.tracker.obj is not None:
                self.hub.tracker.forget(self.slot)
        except Exception:
            pass
        self.hub.leave(self.slot)
        self.slot = None
        if not self.hub.sides:  # the last program gone: the programs leave the kernel
            self.hub.close()
