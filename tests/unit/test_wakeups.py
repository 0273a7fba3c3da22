"""probes.wakeups on what this v1 host has for real (PSI, /proc/pressure/memory, epoll
in a running asyncio loop) and on fixture files for what it has not (a v2 cgroup's
memory.events; its POLLPRI is tested for real in the cgroup-v2 VM with
tests/vm/guest_memory_events.py). The v1 event_control sources are in
tests/integration/test_kernel_memory.py."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from sentinel.probes import wakeups

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EVENTS = FIXTURES / "cgroup" / "v2-memory-events"


def test_parse_flat_keyed_skips_odd_lines():
    assert wakeups.parse_flat_keyed("low 0\n\nmax 12\nbogus\nhigh x\noom_kill 3\n") == {
        "low": 0, "max": 12, "oom_kill": 3}


def test_memory_events_watch_reports_which_counters_rose(tmp_path):
    path = tmp_path / "memory.events"
    shutil.copy(EVENTS / "before" / "memory.events", path)
    watch = wakeups.MemoryEventsWatch(str(path))
    try:
        assert watch.counters["max"] == 10
        assert watch.ready() is None  # nothing changed
        # Rewritten in place: the watch keeps its fd and re-reads from offset 0.
        path.write_bytes((EVENTS / "after" / "memory.events").read_bytes())
        wake = watch.ready()
        assert wake == wakeups.Wakeup("memory.events", str(path), "max +4, oom +1, oom_kill +1",
                                      {"max": 4, "oom": 1, "oom_kill": 1})
        assert watch.ready() is None  # the new figures are the baseline now
    finally:
        watch.close()


def test_memory_events_low_alone_does_not_wake(tmp_path):
    path = tmp_path / "memory.events"
    path.write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    watch = wakeups.MemoryEventsWatch(str(path))
    try:
        path.write_text("low 5\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
        assert watch.ready() is None
    finally:
        watch.close()


def test_a_regular_file_cannot_be_polled_and_says_so(tmp_path):
    path = tmp_path / "memory.events"
    shutil.copy(EVENTS / "before" / "memory.events", path)
    w = wakeups.Wakeups()
    watch = wakeups.MemoryEventsWatch(str(path))
    try:
        reason = w.add(watch)
        assert reason == f"memory.events on {path} cannot be polled: Operation not permitted"
        assert w.sources == []
    finally:
        watch.close()
        w.close()


def test_read_pressure_parses_fixture_microseconds_to_seconds():
    assert wakeups.read_pressure(str(FIXTURES / "proc" / "pressure" / "memory")) == {
        "some": {"avg10": 1.53, "avg60": 0.87, "avg300": 0.20, "total_seconds": 2.837291},
        "full": {"avg10": 0.51, "avg60": 0.30, "avg300": 0.07, "total_seconds": 1.009881},
    }


def test_read_pressure_parses_the_real_file():
    figures = wakeups.read_pressure()
    raw = Path("/proc/pressure/memory").read_text().split("\n")[0]
    assert set(figures) == {"some", "full"}
    for level in ("some", "full"):
        assert set(figures[level]) == {"avg10", "avg60", "avg300", "total_seconds"}
        assert all(0.0 <= figures[level][k] <= 100.0 for k in ("avg10", "avg60", "avg300"))
    total_us = int(raw.rsplit("total=", 1)[1])
    assert figures["some"]["total_seconds"] >= total_us / 1e6  # read later: never less


def test_psi_one_second_window_falls_back_to_two_seconds_and_says_so():
    # Root here lacks CAP_SYS_RESOURCE (docs/kernel.md): the kernel refuses a 1 s window.
    trigger = wakeups.PressureTrigger("/proc/pressure/memory", stall_us=150_000,
                                      window_us=1_000_000)
    try:
        assert trigger.unavailable is None
        assert trigger.fd >= 0
        assert (trigger.stall_us, trigger.window_us) == (300_000, 2_000_000)
        assert trigger.note == (
            "PSI trigger window 1 s refused by /proc/pressure/memory (Invalid argument: "
            "without CAP_SYS_RESOURCE windows must be multiples of 2 s); "
            "using 0.3 s of stall in 2 s")
        w = wakeups.Wakeups()
        try:
            assert w.add(trigger) is None
            assert w.sources == [trigger]
        finally:
            w.close()  # closes the trigger too
        assert trigger.fd == -1
    finally:
        trigger.close()


def test_psi_two_second_window_registers_without_a_note():
    trigger = wakeups.PressureTrigger(stall_us=100_000, window_us=2_000_000)
    try:
        assert (trigger.fd >= 0, trigger.note, trigger.unavailable) == (True, None, None)
    finally:
        trigger.close()


def test_psi_unavailable_names_the_reason(tmp_path):
    trigger = wakeups.PressureTrigger(str(tmp_path / "memory.pressure"))
    assert trigger.fd == -1
    assert trigger.unavailable == (f"PSI trigger unavailable: {tmp_path}/memory.pressure "
                                   "does not exist")
    w = wakeups.Wakeups()
    try:
        assert w.add(trigger) == trigger.unavailable
    finally:
        w.close()


def test_idle_wakeups_in_a_running_loop_cost_no_callback_and_close_cleanly():
    # A real loop with the epoll fd in add_reader: an eventfd source that is never
    # written wakes nobody; once written, the callback gets it (a PSI-free check of
    # the add_reader path and of the drain).
    class EventSource:
        kind, path, events = "test", "eventfd", wakeups.POLL_IN

        def __init__(self):
            self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

        def ready(self, _events=0):
            return wakeups.Wakeup(self.kind, self.path, f"count {os.eventfd_read(self.fd)}")

        def close(self):
            os.close(self.fd)

    async def main():
        w = wakeups.Wakeups()
        src = EventSource()
        assert w.add(src) is None
        got: list = []
        woke = asyncio.Event()
        w.attach(asyncio.get_running_loop(), lambda wake: (got.append(wake), woke.set()))
        await asyncio.sleep(0.05)
        assert got == []
        os.eventfd_write(src.fd, 3)
        await asyncio.wait_for(woke.wait(), 2)
        w.close()
        return got

    assert asyncio.run(main()) == [wakeups.Wakeup("test", "eventfd", "count 3")]


class _ReadyNothing:
    """An fd that is ready (an eventfd with a count) whose re-read wakes nothing, as
    memory.events does when only ``low`` rose."""

    kind, path, events = "memory.events", "/fake/memory.events", 1  # EPOLLIN

    def __init__(self) -> None:
        self.fd = os.eventfd(1, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def ready(self, _events=0):
        os.eventfd_read(self.fd)
        return None

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _QuietPressure(wakeups.PressureTrigger):
    """A PSI trigger that never fires by itself (an eventfd at 0: the machine's real
    memory pressure cannot make this test flaky)."""

    def __init__(self) -> None:  # noqa: D107 (no registration: nothing to read)
        self.path, self.unavailable, self.note = "/fake/pressure", None, None
        self.level, self.stall_us, self.window_us = "some", 150_000, 2_000_000
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def test_a_ready_fd_that_wakes_nothing_is_no_psi_wakeup_but_no_fd_ready_is():
    w = wakeups.Wakeups()
    trigger = _QuietPressure()
    quiet = _ReadyNothing()
    got: list = []
    try:
        assert w.add(trigger) is None and w.add(quiet) is None
        w._callback = got.append
        w._on_readable()  # memory.events' `low` rose: nothing to report
        assert got == []
        w._on_readable()  # nothing ready at all: the loop's poll took a PSI event
        assert [g.kind for g in got] == ["pressure"]
    finally:
        w.close()
