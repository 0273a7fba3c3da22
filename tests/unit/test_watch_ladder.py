"""The watch-mode ladder (a ``Guardian`` fed by a ``WatchSource``) on an injected loop, with fake kill(2):
a process of the target's tree that refuses (EPERM) is named one way, as in run
mode (``signal_refused``, into ``kill.refused``, at SIGKILL too), and a ladder
that gives up on the target leaves it watched (phase running: a new kill may start)."""

from __future__ import annotations

import logging
import os
import signal

from sentinel.core import supervisor as supervisor_module
from sentinel.core import watch as watch_module
from sentinel.config.settings import Settings
from sentinel.core.spawn import Child
from sentinel.core.state import PHASE_RUNNING, PHASE_TERMINATING, MemorySample
from sentinel.core.watch import watch_guardian
from tests.unit.test_guardian_clock import MiB, FakeLoop

TARGET, CHILD, LATE = 4242, 4243, 4244


class TreeFake:
    """The target's tree as the probe sees it: ``tree`` maps a PID to its children."""

    root_pid = TARGET
    include_root = True

    def __init__(self, loop: FakeLoop, tree: dict[int, list[int]]) -> None:
        self.loop, self.tree = loop, tree
        self.errors: dict = {}
        self.value = 10 * MiB

    def children(self, pid):
        return list(self.tree.get(pid, []))

    def sample(self) -> MemorySample:
        procs = [TARGET] + [p for kids in self.tree.values() for p in kids]
        return MemorySample(at_mono=self.loop.now, measure_bytes=self.value,
                            rss_bytes=self.value, processes=tuple((p, 0) for p in procs),
                            duration_seconds=1e-5)

    def close(self) -> None:
        pass


def _watching(monkeypatch, refusing: set[int]):
    """A watch-mode guardian attached to TARGET (tree TARGET -> CHILD), grace 1 s; kill(2)
    is recorded, ``refusing`` PIDs give EPERM, PIDs not in the tree ESRCH."""
    loop = FakeLoop()
    s = Settings(mode="watch", command=(), workload_name="app", target_pid=TARGET,
                 max_rss_bytes=None, grace_period_seconds=1.0)
    g = watch_guardian(s, set(), loop=loop)  # type: ignore[arg-type]
    probe = TreeFake(loop, {TARGET: [CHILD]})
    g._reap = lambda: None  # type: ignore[method-assign]  # nothing of ours to reap
    sent: list[tuple[int, int]] = []

    def kill(pid, sig):
        alive = {TARGET} | {p for kids in probe.tree.values() for p in kids}
        if pid not in alive:
            raise ProcessLookupError(pid)
        if pid in refusing:
            raise PermissionError(pid)
        if sig:
            sent.append((pid, sig))

    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(supervisor_module, "real_uid", lambda pid, proc="/proc": 0)
    monkeypatch.setattr(watch_module, "real_uid", lambda pid, proc="/proc": 0, raising=False)
    monkeypatch.setattr(supervisor_module, "process_facts", lambda pid, proc="/proc": {
        "pid": pid, "state": "D", "uid": 0, "rss_bytes": 4096})
    # Attached as the source does, without a pidfd: signalled by PID, like its descendants.
    g.begin_run(Child(TARGET, ("app",), None, loop.now, 0.0), probe)  # type: ignore[arg-type]
    assert g.state.main_pid == TARGET and g.state.phase == PHASE_RUNNING
    events: list = []
    g.listeners.append(events.append)
    return g, loop, probe, sent, events


def test_a_refusal_is_one_signal_refused_report_and_sigkill_refusals_are_recorded(
        monkeypatch, caplog):
    g, loop, probe, sent, events = _watching(monkeypatch, {CHILD, LATE})
    caplog.set_level(logging.DEBUG, logger="sentinel")
    g.stop()
    kill = g.state.current_kill
    assert kill.reached == {"SIGTERM": [TARGET]} and kill.refused == {CHILD: 0}
    probe.tree[CHILD] = [LATE]  # a process of another user that appeared during the grace
    loop.advance(1.0)
    assert (TARGET, signal.SIGKILL) in sent
    assert kill.signals == ["SIGTERM", "SIGKILL"] and kill.reached["SIGKILL"] == [TARGET]
    assert kill.refused == {CHILD: 0, LATE: 0}  # the SIGKILL's refusal is in the record
    refused = [e for e in events if e.kind == "signal_refused"]
    assert [(e.fields["signal"], [r["pid"] for r in e.fields["refused"]]) for e in refused] \
        == [("SIGTERM", [CHILD]), ("SIGKILL", [LATE])]  # each process named once
    assert [r for r in caplog.records if getattr(r, "event", None) == "signal_error"] == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_operator_signal_that_is_refused_is_a_signal_refused_report(monkeypatch, caplog):
    g, loop, probe, sent, events = _watching(monkeypatch, {CHILD})
    caplog.set_level(logging.DEBUG, logger="sentinel")
    g.send_signal(signal.SIGUSR1)
    assert sent == [(TARGET, signal.SIGUSR1)]
    refused = [e for e in events if e.kind == "signal_refused"]
    assert len(refused) == 1 and refused[0].fields["refused"] == [{"pid": CHILD, "uid": 0}]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_target_given_up_on_is_still_watched_and_can_be_stopped_again(monkeypatch):
    g, loop, probe, sent, events = _watching(monkeypatch, set())
    g.stop()
    loop.advance(1.0)  # SIGKILL; the fake target never dies (a frozen process)
    loop.advance(2.0)  # named at 2 s, not confirmed yet
    assert g.state.phase == PHASE_TERMINATING and g.state.current_kill is not None
    loop.advance(8.1)  # 10 s after SIGKILL: given up on, not confirmed
    assert g.state.current_kill is None and g.state.last_kill.confirmed is False
    assert g.state.phase == PHASE_RUNNING  # still watched
    assert g.stop() == "SIGTERM sent; SIGKILL after the grace period"  # not "already"
    assert g.state.current_kill is not g.state.last_kill
    # and the limit is enforced again: a sample over it starts a memory kill
    g2, loop2, probe2, _, _ = _watching(monkeypatch, set())
    g2.stop()
    loop2.advance(11.2)
    g2.set_limit(5 * MiB)  # samples at once
    loop2.advance(0.0)
    assert g2.state.current_kill is not None and g2.state.current_kill.reason == "memory_limit"


def test_leftovers_of_a_killed_target_get_the_same_ladder(monkeypatch):
    # The target dies during its stop; CHILD (seen in the last sample) outlives it
    # and ignores SIGTERM: SIGTERM now, SIGKILL one grace period (1 s) later, and
    # the SIGKILL hook (process_mrelease's place) is told which PIDs it reached.
    g, loop, probe, sent, events = _watching(monkeypatch, set())
    released: list[list[int]] = []
    g.sigkill_listeners.append(released.append)
    g.sample_now()
    loop.advance(0.0)  # the tree seen: TARGET -> CHILD
    g.stop()

    class Same:
        create_time = 0.0  # the start time seen: not a reused PID

    monkeypatch.setattr(watch_module, "candidate", lambda pid: Same() if pid == CHILD else None)
    sent.clear()
    g.source.target_exited()
    assert sent == [(CHILD, signal.SIGTERM)]
    loop.advance(0.9)
    assert sent == [(CHILD, signal.SIGTERM)]
    loop.advance(0.2)
    assert sent == [(CHILD, signal.SIGTERM), (CHILD, signal.SIGKILL)]
    assert released == [[CHILD]]
    loop.advance(10.0)
    assert len(sent) == 2  # nothing more: not Sentinel's children, no status to wait for
