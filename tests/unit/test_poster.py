"""The generic bounded poster alone: bounded, drop counting, retry with back-off on an
injected clock and sleep, the flush timeout of close, and a worker that never dies."""

from __future__ import annotations

import threading
import time

import pytest

from sentinel.exporters.poster import Poster, Retry


class Gate:
    """A send() that blocks each item until the test lets it through."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.sent: list = []

    def __call__(self, item) -> None:
        self.started.set()
        assert self.release.wait(10), "the test never released the worker"
        self.sent.append(item)


class FakeTime:
    """A clock that only moves when the poster sleeps; records each sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_full_queue_drops_and_counts_without_blocking_the_caller():
    gate = Gate()
    p = Poster(gate, queue_size=2)
    assert p.submit("a")
    assert gate.started.wait(5)  # "a" is with the worker; the queue is empty again
    t0 = time.monotonic()
    results = [p.submit(x) for x in ("b", "c", "d", "e")]
    elapsed = time.monotonic() - t0
    assert results == [True, True, False, False]
    assert p.dropped_total == 2 and p.pending == 3  # b, c queued; a being sent
    assert elapsed < 0.05, elapsed  # never waits for the worker
    gate.release.set()
    assert p.close(5) == 0
    assert gate.sent == ["a", "b", "c"] and p.sent_total == 3 and p.pending == 0


def test_retry_backs_off_exponentially_up_to_the_cap_then_gives_up():
    ft = FakeTime()
    calls: list[float] = []
    errors: list = []

    def send(item):
        calls.append(ft.now)
        try:
            raise ConnectionError("server down")
        except ConnectionError as exc:
            raise Retry() from exc

    p = Poster(send, max_attempts=5, backoff_seconds=0.5, max_backoff_seconds=1.5,
               clock=ft.clock, sleep=ft.sleep, on_error=lambda item, exc: errors.append((item, exc)))
    p.submit("ev")
    assert p.close(30) == 0  # a fake 30 s deadline: every back-off fits (4.5 s in all)
    assert ft.sleeps == [0.5, 1.0, 1.5, 1.5]  # 0.5 * 2**n, capped at 1.5
    assert len(calls) == 5 and p.retries_total == 4
    assert p.failed_total == 1 and p.sent_total == 0
    [(item, exc)] = errors
    assert item == "ev" and isinstance(exc, ConnectionError)  # the cause, not the Retry


def test_a_retry_that_succeeds_counts_as_sent_and_honours_retry_after():
    ft = FakeTime()
    attempts = []

    def send(item):
        attempts.append(item)
        if len(attempts) < 3:
            raise Retry(after_seconds=7.0 if len(attempts) == 1 else None)

    p = Poster(send, max_attempts=3, backoff_seconds=0.25, clock=ft.clock, sleep=ft.sleep)
    p.submit("x")
    assert p.close(30) == 0  # the fake clock's deadline: the 7 s Retry-After fits
    assert ft.sleeps == [7.0, 0.5]  # the server's Retry-After, then the back-off of attempt 2
    assert p.sent_total == 1 and p.failed_total == 0 and p.retries_total == 2


def test_close_is_bounded_and_reports_what_is_left():
    gate = Gate()
    p = Poster(gate, queue_size=8)
    for i in range(3):
        p.submit(i)
    assert gate.started.wait(5)
    t0 = time.monotonic()
    left = p.close(0.3)
    took = time.monotonic() - t0
    assert left == 3 and 0.25 <= took < 1.0, (left, took)
    assert not p.submit("late") and p.dropped_total == 1  # closed: taken no more
    gate.release.set()


def test_while_closing_a_back_off_past_the_deadline_is_not_waited_for():
    ft = FakeTime()
    started = threading.Event()
    proceed = threading.Event()
    errors = []

    def send(item):
        started.set()
        proceed.wait(10)
        raise Retry(after_seconds=60.0)

    p = Poster(send, max_attempts=10, clock=ft.clock, sleep=ft.sleep,
               on_error=lambda item, exc: errors.append(item))
    p.submit("x")
    assert started.wait(5)
    closer = threading.Thread(target=p.close, args=(2.0,))
    closer.start()
    while p._deadline is None:  # close() has set its deadline
        time.sleep(0.001)
    proceed.set()
    closer.join(5)
    assert ft.sleeps == [] and errors == ["x"] and p.failed_total == 1


def test_close_cuts_a_real_back_off_short_when_it_would_end_after_the_deadline():
    attempts = []
    retrying = threading.Event()

    def send(item):
        attempts.append(item)
        retrying.set()
        raise Retry(after_seconds=30.0)

    p = Poster(send, max_attempts=100)
    p.submit("x")
    assert retrying.wait(5)
    t0 = time.monotonic()
    p.close(0.5)
    assert time.monotonic() - t0 < 0.5
    assert attempts == ["x"] and p.failed_total == 1


def test_close_lets_a_real_back_off_that_fits_finish_and_the_item_go_out():
    attempts = []
    retrying = threading.Event()

    def send(item):
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            retrying.set()
            raise Retry(after_seconds=0.3)

    p = Poster(send, max_attempts=2)
    p.submit("x")
    assert retrying.wait(5)
    assert p.close(5) == 0
    assert p.sent_total == 1 and len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.29  # the back-off was kept, not skipped by close


def test_a_failing_send_or_hook_never_kills_the_worker(caplog):
    seen = []

    def send(item):
        if item == "bad":
            raise RuntimeError("boom")
        seen.append(item)

    def on_error(item, exc):
        raise ValueError("the hook is broken too")

    p = Poster(send, on_error=on_error)
    for item in ("bad", "good"):
        p.submit(item)
    assert p.close(5) == 0
    assert seen == ["good"] and p.failed_total == 1 and p.sent_total == 1
    assert any("on_error failed" in r.getMessage() for r in caplog.records)


def test_prepare_runs_once_in_the_worker_early_or_at_the_first_item_and_finish_at_the_end():
    order = []
    main = threading.current_thread()

    def prepare():
        order.append(("prepare", threading.current_thread() is not main))

    lazy = Poster(lambda item: order.append(("send", item)), prepare=prepare,
                  finish=lambda: order.append(("finish", None)))
    time.sleep(0)  # nothing prepares without an item or prepare_now
    assert order == []
    lazy.submit(1)
    lazy.submit(2)
    lazy.close(5)
    assert order == [("prepare", True), ("send", 1), ("send", 2), ("finish", None)]

    ready = threading.Event()
    early = Poster(lambda item: None, prepare=ready.set)
    early.prepare_now()
    assert ready.wait(5)  # without any item
    assert early.close(5) == 0


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError):
        Poster(lambda item: None, queue_size=0)
