"""Sentinel's log handler: a full stderr never blocks the caller, what cannot be
written is dropped and counted, and closing drains within a bound."""

from __future__ import annotations

import fcntl
import logging
import os
import time

from sentinel import logs
from tests.conftest import full_pipe



def _record(i: int) -> logging.LogRecord:
    return logging.makeLogRecord({"msg": f"line {i}", "levelname": "INFO", "name": "sentinel"})


def test_a_full_stderr_never_blocks_and_overflow_is_counted():
    r, w = full_pipe()
    stream = open(w, "w", closefd=True)
    handler = logs.BoundedHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        t0 = time.monotonic()
        for i in range(logs.QUEUE_LINES + 200):
            handler.emit(_record(i))
        assert time.monotonic() - t0 < 1.0  # never waited for the pipe
        # One line may be in the writer's hands, blocked; the queue holds QUEUE_LINES.
        assert 199 <= handler.stats()["lines_dropped"] <= 200
        t0 = time.monotonic()
        handler.close()  # stderr stays full: gives up after FLUSH_SECONDS
        assert logs.FLUSH_SECONDS - 0.1 <= time.monotonic() - t0 <= logs.FLUSH_SECONDS + 0.5
        assert handler.stats()["lines_dropped"] >= logs.QUEUE_LINES + 199 - 1
    finally:
        os.close(r)  # the blocked writer now gets EPIPE and ends
        stream.close()


def test_queued_lines_get_out_in_order_at_close():
    r, w = os.pipe()
    stream = open(w, "w", closefd=True)
    handler = logs.BoundedHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for i in range(50):
        handler.emit(_record(i))
    handler.close()
    stream.close()
    with open(r, "rb") as f:
        assert f.read().decode().splitlines() == [f"line {i}" for i in range(50)]
    assert handler.stats() == {"lines_dropped": 0, "lines_queued": 0, "last_error": None}


def test_a_reader_gone_is_epipe_counted_not_raised():
    r, w = os.pipe()
    os.close(r)
    stream = open(w, "w", closefd=True)
    handler = logs.BoundedHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for i in range(3):
        handler.emit(_record(i))  # SIGPIPE is ignored in a CPython test process
    handler.close()
    stream.close()
    assert handler.stats()["lines_dropped"] == 3 and handler.stats()["last_error"] == "EPIPE"


def test_a_stderr_someone_made_nonblocking_waits_for_room_instead_of_dropping():
    import threading

    r, w = full_pipe()
    fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)  # EAGAIN
    stream = open(w, "w", closefd=True)
    handler = logs.BoundedHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    drained = []
    reader = threading.Timer(0.3, lambda: drained.append(os.read(r, 1 << 20)))
    reader.start()
    handler.emit(_record(1))
    handler.close()
    reader.join()
    stream.close()
    with open(r, "rb") as f:
        assert f.read() == b"line 1\n"  # written once there was room, within the wait
    assert handler.stats()["lines_dropped"] == 0


def test_set_stream_writes_what_was_queued_for_the_old_stream_there():
    # The dashboard swaps stderr for its log file and back (tui.Dashboard).
    (r1, w1), (r2, w2) = os.pipe(), os.pipe()
    first, second = open(w1, "w"), open(w2, "w")
    handler = logs.BoundedHandler(first)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for i in range(20):
        handler.emit(_record(i))
    handler.setStream(second)
    handler.emit(_record(99))
    handler.close()
    first.close()
    second.close()
    with open(r1, "rb") as f1, open(r2, "rb") as f2:
        assert f1.read().decode().splitlines() == [f"line {i}" for i in range(20)]
        assert f2.read() == b"line 99\n"


def test_shutdown_on_a_stuck_stderr_waits_once():
    r, w = full_pipe()
    stream = open(w, "w")
    handler = logs.BoundedHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.emit(_record(1))
    handler.emit(_record(2))
    t0 = time.monotonic()
    handler.flush()  # what logging.shutdown does: flush(), then close()
    handler.close()
    assert time.monotonic() - t0 <= logs.FLUSH_SECONDS + 0.5
    os.close(r)
    stream.close()
