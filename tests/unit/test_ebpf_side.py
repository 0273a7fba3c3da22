"""sentinel.core.ebpf_side without the kernel: records are dispatched to their tree's
supervisor, a victim to every program, a gap in the sequence numbers makes every
program sample at once; the tick is a back-stop while covered and planned near the
limit from the records' growth; limit records during a stop are throttled."""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

import pytest

from sentinel.core.ebpf_side import EBPF_TICK_SECONDS, EbpfHub, EbpfSide
from sentinel.probes.ebpf import Record

MiB = 1 << 20


class FakeTracker:
    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self.fd = self.r
        self.lost = 0
        self.batches: list[tuple[int, list]] = []
        self.configured: dict = {}
        self.followed: dict[int, dict] = {}
        self.obj = object()
        self.sums: dict[int, int] = {}

    def sum_bytes(self, tree):
        return self.sums.get(tree, 0)

    def drain(self):
        lost, recs = self.batches.pop(0) if self.batches else (0, [])
        self.lost += lost
        return recs

    def configure(self, tree, threshold, **kw):
        self.configured[tree] = (threshold, kw)

    def processes(self, tree):
        return self.followed.get(tree, {})

    def seed(self, tree, pids):
        self.followed.setdefault(tree, {}).update({p: p + 1000 for p in pids})
        return len(pids)

    def forget(self, tree):
        self.followed.pop(tree, None)
        self.configured[tree] = (None, {})  # as the real one: the kernel's copy cleared

    def read(self):
        pass

    def close(self):
        os.close(self.r)
        os.close(self.w)


@pytest.fixture
def ebpf():
    """(loop, tracker, hub): a real event loop, a FakeTracker and an EbpfHub on them."""
    loop = asyncio.new_event_loop()
    tracker = FakeTracker()
    try:
        yield loop, tracker, EbpfHub(loop, tracker)
    finally:
        loop.close()


def rec(kind, tree=0, ts=0, total=0, ns=0):
    return Record(1, ts, kind, tree, ns + 1000, ns, 0, total, 0)


def fake_sup(loop, *, limit=100 * MiB, measure="rss"):
    woke = []
    sup = SimpleNamespace(
        loop=loop, child=SimpleNamespace(pid=42), emitted=[],
        state=SimpleNamespace(limit_bytes=limit, measure=measure, enforcing=True,
                              current_kill=None, last_sample=None, main_pid=42,
                              probe_info={}),
        settings=SimpleNamespace(interval_seconds=0.1, max_interval_seconds=1.0),
        sampling_side=SimpleNamespace(ebpf_woke=lambda key, why: woke.append(key)))
    sup.emit = lambda kind, msg, level=0, **f: sup.emitted.append((kind, f))
    return sup, woke


def sample(pids_rss, measure=None):
    procs = tuple(pids_rss)
    total = sum(r for _, r in procs)
    return SimpleNamespace(pids=tuple(p for p, _ in procs), processes=procs, rss_bytes=total,
                           measure_bytes=total if measure is None else measure)


def test_records_go_to_their_tree_victims_to_all_and_lost_records_sample_everyone(ebpf):
    loop, tracker, hub = ebpf
    (a, wa), (b, wb) = fake_sup(loop), fake_sup(loop)
    sa, sb = EbpfSide(a, hub), EbpfSide(b, hub)
    assert (sa.slot, sb.slot) == (0, 1)
    a.state.last_sample = sample([(42, 10 * MiB)])
    tracker.batches.append((0, [rec("limit", tree=1, ts=1, total=99 * MiB),
                                rec("victim", tree=0xFFFFFFFF, ns=42)]))
    hub.read()
    assert wb == ["limit"] and wa == []
    assert [k for k, _ in a.emitted] == ["oom_victim"] and b.emitted == []  # 42 is a's
    assert sa.victims == {42}
    tracker.batches.append((3, []))
    hub.read()
    assert wa == ["lost"] and wb == ["limit", "lost"]
    assert sa.lost_total == sb.lost_total == 3
    sa.close()
    sb.close()
    assert hub.sides == {}


def test_the_tick_is_a_back_stop_while_covered_and_planned_near_the_limit(ebpf):
    loop, tracker, hub = ebpf
    sup, woke = fake_sup(loop)
    side = EbpfSide(sup, hub)
    side.on_run()
    assert tracker.followed[0] == {42: 1042}  # the main pid seeded
    s = sample([(42, 20 * MiB)])
    tracker.sums[0] = 20 * MiB - 4096  # the kernel's count, a page behind
    side.on_sample(s)
    threshold, kw = tracker.configured[0]
    assert 90 * MiB < threshold < 100 * MiB and kw["step_bytes"] == 2 * MiB
    assert side.interval(s, s.measure_bytes, 100 * MiB) == EBPF_TICK_SECONDS
    # Two limit records 10 ms and 1 MiB apart: 100 MiB/s; 0.5 MiB left -> 5 ms.
    side._clock = lambda: 1.011
    side.on_record(rec("limit", ts=1_000_000_000, total=99 * MiB))
    side.on_record(rec("limit", ts=1_010_000_000, total=100 * MiB))
    near = sample([(42, 100 * MiB - MiB // 2)])
    assert abs(side.interval(near, near.measure_bytes, 100 * MiB) - 0.005) < 1e-6
    assert woke == ["limit"]  # the second came within RECORD_SAMPLE_GAP_SECONDS...
    loop.run_until_complete(asyncio.sleep(0.005))
    assert woke == ["limit", "limit"]  # ... and is sampled when the gap ends
    # The growth stopped (no record for an interval): the back-stop, no spinning.
    side._clock = lambda: 1.2
    assert side.interval(near, near.measure_bytes, 100 * MiB) == EBPF_TICK_SECONDS
    side._clock = lambda: 1.011
    # A step record (the sum went down past the threshold again): the back-stop.
    side.on_record(rec("step", total=50 * MiB))
    assert side.interval(s, s.measure_bytes, 100 * MiB) == EBPF_TICK_SECONDS
    # Not covered: paused, over the limit, a stop under way -> the usual cadence.
    sup.state.enforcing = False
    assert side.interval(s, s.measure_bytes, 100 * MiB) is None
    sup.state.enforcing = True
    over = sample([(42, 101 * MiB)])
    assert side.interval(over, over.measure_bytes, 100 * MiB) is None
    # A process of the sample the kernel does not follow: not covered.
    tracker.seed = lambda tree, pids: 0
    two = sample([(42, 20 * MiB), (77, MiB)])
    side.on_sample(two)
    assert not side.covered(two) and side.interval(two, two.measure_bytes, 100 * MiB) is None
    # A cgroup measure is not covered by resident pages.
    sup.state.measure = "working-set"
    assert not side.covered(s)
    side.close()


def test_limit_records_during_a_stop_are_throttled_to_the_interval(ebpf):
    loop, tracker, hub = ebpf
    sup, woke = fake_sup(loop)
    side = EbpfSide(sup, hub)
    side.on_run()
    sup.state.current_kill = object()  # SIGTERM sent, the workload still growing
    for i in range(50):
        side.on_record(rec("limit", ts=i, total=(101 + i) * MiB))
    assert woke == ["limit"]  # one sample per --interval, not one per fold
    side.close()


def test_processes_the_kernel_does_not_follow_lower_the_threshold(ebpf):
    loop, tracker, hub = ebpf
    sup, _ = fake_sup(loop)
    side = EbpfSide(sup, hub)
    side.on_run()
    tracker.seed = lambda tree, pids: 0  # the kernel cannot find them (gone, hidden)
    tracker.sums[0] = 10 * MiB
    side.on_sample(sample([(42, 10 * MiB), (43, 30 * MiB)]))
    assert side.followed == {42: 1042} and side.offset_bytes == -30 * MiB
    threshold, _ = tracker.configured[0]
    assert threshold < 70 * MiB  # 43's 30 MiB never reach the kernel's sum
    # The counters' measured lag moves the threshold by as much; a kernel sum above
    # the measure never raises it.
    tracker.sums[0] = 40 * MiB - 100 * 4096
    side.on_sample(sample([(42, 10 * MiB), (43, 30 * MiB)]))
    assert side.offset_bytes == -100 * 4096
    lagging, _ = tracker.configured[0]
    tracker.sums[0] = 41 * MiB
    side.on_sample(sample([(42, 10 * MiB), (43, 30 * MiB)]))
    assert side.offset_bytes == 0 and tracker.configured[0][0] == lagging + 100 * 4096
    side.close()


def test_pss_is_not_covered_it_can_grow_without_any_rss_change(ebpf):
    # A forked child writing its copy-on-write pages: PSS grows, RSS does not move.
    loop, tracker, hub = ebpf
    sup, _ = fake_sup(loop, measure="pss")
    side = EbpfSide(sup, hub)
    side.on_run()
    tracker.sums[0] = 60 * MiB
    s = sample([(42, 60 * MiB)], measure=45 * MiB)
    side.on_sample(s)
    assert tracker.configured[0][0] is None  # no threshold: polling decides
    assert not side.covered(s) and side.interval(s, s.measure_bytes, 100 * MiB) is None
    side.close()


def test_a_new_run_writes_the_threshold_again(ebpf):
    # forget() clears the kernel's threshold: the next run must write it again even
    # when it is the same as the last run's (a restart of the same program).
    loop, tracker, hub = ebpf
    sup, _ = fake_sup(loop)
    side = EbpfSide(sup, hub)
    side.on_run()
    first = tracker.configured[0][0]
    assert first is not None
    side.on_run()
    assert tracker.configured[0][0] == first
    side.close()


def test_past_the_last_tree_slot_a_program_is_polled_and_says_so(ebpf, caplog):
    from sentinel.probes.ebpf import MAX_TREES

    loop, tracker, hub = ebpf
    sides = [EbpfSide(fake_sup(loop)[0], hub) for _ in range(MAX_TREES)]
    assert all(side.active for side in sides)
    with caplog.at_level("WARNING", logger="sentinel"):
        extra = EbpfSide(fake_sup(loop)[0], hub)
    assert not extra.active and extra.stats()["probe"] == "poll"
    assert any(f"more programs than the eBPF probe's {MAX_TREES} tree slots" in r.message
               for r in caplog.records)
    for side in sides:
        side.close()


def test_a_capped_margin_no_longer_covers_the_limit(ebpf):
    # 300 followed processes x one counter's batch is far more than 1/8 of the limit:
    # growth inside the batches could pass the limit unseen, so the tick must not
    # stretch to the back-stop.
    loop, tracker, hub = ebpf
    sup, _ = fake_sup(loop, limit=58 * MiB)
    side = EbpfSide(sup, hub)
    side.on_run()
    procs = [(42, 54 * MiB)] + [(1000 + i, 4096) for i in range(300)]
    tracker.seed(0, [p for p, _ in procs])
    tracker.sums[0] = sum(r for _, r in procs)
    s = sample(procs)
    side.on_sample(s)
    assert side.margin_capped and not side.covered(s)
    assert side.interval(s, s.measure_bytes, 58 * MiB) is None
    side.close()
