"""A bounded posting queue: hand items to one worker thread that sends them, never blocking.

Generic on purpose (Kubernetes Events and webhooks use it): it knows
nothing about what is sent or where. The model is kopf's posting of Events,
a queue that never blocks the operator:

- ``submit(item)`` puts the item on a bounded queue and returns at once; when
  the queue is full the item is dropped and counted (``dropped_total``), and
  ``submit`` returns ``False`` so the caller can say why once.
- One daemon worker thread calls ``send(item)``. ``send`` raising ``Retry``
  asks for another attempt after an exponential back-off
  (``backoff_seconds * 2**n``, capped at ``max_backoff_seconds``, or the
  ``Retry``'s own ``after_seconds``), at most ``max_attempts`` attempts in
  all; any other exception, or the last ``Retry``, gives the item up:
  ``failed_total`` and ``on_error(item, exc)``. The worker never dies of an
  item.
- ``prepare()`` runs once in the worker before the first item is sent (for
  an import that must not run on the caller's thread: the ``kubernetes``
  client is 0.3-0.6 s of imports). By default at the first item;
  ``prepare_now()`` starts it early (the Events preload once the workload runs).
- ``close(timeout)`` lets the worker finish what is queued for at most
  ``timeout`` seconds (the flush of the linger), then returns how many items
  were left. A back-off that would end after that deadline is not waited for:
  the item is given up. ``finish()`` runs in the worker after the last item.

Hand-written rather than a library (``concurrent.futures`` has an unbounded
queue and no drop, back-off or bounded flush; ``tenacity`` retries but does
not queue): about 150 lines of standard library, nothing imported at start.
The clock and the sleep are injectable for tests.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable

from sentinel.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

QUEUE_SIZE = 64
MAX_ATTEMPTS = 3
BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 5.0


class Retry(Exception):
    """Raised by ``send`` to ask for another attempt (after ``after_seconds``, or the
    poster's back-off when ``None``). Raise it ``from`` the underlying error: that error is
    what ``on_error`` gets once the attempts are used up."""

    def __init__(self, message: str = "retry", after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.after_seconds = after_seconds


class Poster:
    """One worker thread sending the items of a bounded queue. See the module docstring.

    ``send(item)``: the work (raises ``Retry`` for another attempt); ``on_error(item, exc)``:
    called in the worker when an item is given up; ``prepare()``/``finish()``: once, in the
    worker, before the first item and after the last. Counters (read from any thread):
    ``sent_total``, ``dropped_total`` (queue full), ``failed_total`` (given up),
    ``retries_total``. ``clock`` is monotonic seconds; ``sleep(seconds)`` waits (default:
    a wait that ``close`` cuts short).
    """

    def __init__(self, send: Callable[[Any], None], *, name: str = "sentinel-poster",
                 queue_size: int = QUEUE_SIZE, max_attempts: int = MAX_ATTEMPTS,
                 backoff_seconds: float = BACKOFF_SECONDS,
                 max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
                 on_error: Callable[[Any, BaseException], None] | None = None,
                 prepare: Callable[[], None] | None = None,
                 finish: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None) -> None:
        if queue_size < 1 or max_attempts < 1:
            raise ValueError("queue_size and max_attempts must be at least 1")
        self.queue_size = queue_size
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.sent_total = 0
        self.dropped_total = 0
        self.failed_total = 0
        self.retries_total = 0
        self._send = send
        self._on_error = on_error
        self._prepare = prepare
        self._finish = finish
        self._clock = clock
        self._sleep = sleep if sleep is not None else self._interruptible_sleep
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._busy = 0  # items taken by the worker and not yet done
        self._prepare_now = threading.Event()
        self._closing = threading.Event()
        self._deadline: float | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    # -- the caller's side (never blocks) --------------------------------------
    def submit(self, item: Any) -> bool:
        """Queue ``item``; ``False`` (and ``dropped_total`` + 1) if the queue is full or the
        poster is closed."""
        with self._cond:
            if self._closing.is_set() or len(self._items) >= self.queue_size:
                self.dropped_total += 1
                return False
            self._items.append(item)
            self._cond.notify()
        return True

    @property
    def pending(self) -> int:
        """Items queued or being sent."""
        with self._cond:
            return len(self._items) + self._busy

    def prepare_now(self) -> None:
        """Run ``prepare`` in the worker now rather than at the first item."""
        self._prepare_now.set()
        with self._cond:
            self._cond.notify()

    def close(self, timeout: float, wait: bool = True) -> int:
        """Stop taking items; let the worker send what is queued for at most ``timeout``
        seconds. Returns the number of items not sent by then (0: all out). Idempotent
        (a second call keeps the first deadline). ``wait=False`` sets the deadline and
        returns at once (several posters closed in parallel, then each joined)."""
        with self._cond:
            if not self._closing.is_set():
                self._deadline = self._clock() + timeout
                self._closing.set()
            self._cond.notify()
        if not wait:
            return self.pending
        self._thread.join(timeout)
        return self.pending if self._thread.is_alive() else 0

    # -- the worker -------------------------------------------------------------
    def _interruptible_sleep(self, seconds: float) -> None:
        self._closing.wait(seconds)

    def _next(self):
        """The next item, or ``None`` once closing with nothing left. Runs ``prepare``
        first when ``prepare_now`` was called."""
        with self._cond:
            while True:
                if self._prepare is not None and self._prepare_now.is_set() \
                        and not self._closing.is_set():
                    return _PREPARE
                if self._items:
                    self._busy += 1
                    return self._items.popleft()
                if self._closing.is_set():
                    return None
                self._cond.wait()

    def _run_prepare(self) -> None:
        prepare, self._prepare = self._prepare, None
        if prepare is not None:
            prepare()  # it reports its own errors; a bug is logged by _guarded

    def _work(self) -> None:
        try:
            while True:
                item = self._next()
                if item is None:
                    break
                if item is _PREPARE:
                    self._guarded(self._run_prepare)
                    continue
                try:
                    self._guarded(self._run_prepare)
                    self._deliver(item)
                finally:
                    with self._cond:
                        self._busy -= 1
        finally:
            if self._finish is not None:
                self._guarded(self._finish)

    def _guarded(self, fn) -> None:
        try:
            fn()
        except Exception as exc:  # prepare/finish must not take the worker down
            log.warning("%s: %r failed: %r", self._thread.name, fn, exc,
                        extra={"event": "poster_error"})

    def _deliver(self, item) -> None:
        attempt = 1
        while True:
            try:
                self._send(item)
            except Retry as exc:
                delay = exc.after_seconds if exc.after_seconds is not None else min(
                    self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
                deadline = self._deadline
                if attempt >= self.max_attempts or (
                        deadline is not None and self._clock() + delay > deadline):
                    self._give_up(item, exc.__cause__ or exc)
                    return
                self.retries_total += 1
                attempt += 1
                wake_at = self._clock() + delay
                self._sleep(delay)
                # close() cuts the default sleep short: the rest of the back-off is slept
                # only if it ends before close's deadline, else the item is given up.
                while (left := wake_at - self._clock()) > 0:
                    deadline = self._deadline
                    if deadline is not None and wake_at > deadline:
                        self._give_up(item, exc.__cause__ or exc)
                        return
                    time.sleep(left)
                continue
            except Exception as exc:
                self._give_up(item, exc)
                return
            self.sent_total += 1
            return

    def _give_up(self, item, exc: BaseException) -> None:
        self.failed_total += 1
        if self._on_error is not None:
            try:
                self._on_error(item, exc)
            except Exception as hook_exc:  # a bug in the hook must not stop the worker
                log.warning("%s: on_error failed: %r", self._thread.name, hook_exc,
                            extra={"event": "poster_error"})


_PREPARE = object()  # _next's answer: run prepare() now
