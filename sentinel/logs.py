"""Sentinel's own log lines, on stderr: human lines or one JSON object a line.

The stdlib ``logging`` module does the work; this formats, and writes
without ever blocking the caller (``BoundedHandler``). Sentinel never writes
to stdout, which belongs to the workload.

Why a writer thread and not O_NONBLOCK: fd 2's open file description is
shared with the workload (it inherited it), so O_NONBLOCK on it would make
the workload's own writes fail with EAGAIN; a private description (reopening
/proc/self/fd/2) works for pipes, ttys and files but not for sockets
(journald's stderr is a socket). So log lines go into a bounded queue that
one daemon thread writes out with plain blocking ``write(2)``: a stderr pipe
nobody reads blocks that thread only, and the guardian's loop (sampling, the
ladder, the control socket) goes on. A line that finds the queue full, or
whose write fails (EPIPE, EBADF, ENOSPC, EIO), is dropped and counted
(``stats()``, ``sentinel_log_lines_dropped_total``), never raised. The
thread is started after every signal is blocked, so the SIGPIPE or SIGXFSZ a
failed write raises is pending on that thread alone: a signalfd reads only
its reader's and the process's pending signals, so it is never forwarded to
the workload, and with the signal blocked it never kills Sentinel. At exit
(``logging.shutdown``) the queue is written out for at most
``FLUSH_SECONDS``: the final lines matter, a stuck stderr must not hold up the exit.
"""

from __future__ import annotations

import collections
import contextvars
import errno
import json
import logging
import os
import sys
import signal
import threading
import time

LOGGER_NAME = "sentinel"
# Lines waiting for stderr; more are dropped (and counted). Sentinel writes
# a few lines a minute; 1000 lines (~200 KiB) ride out a slow reader.
QUEUE_LINES = 1000
# At exit, how long the queued lines may take to get out.
FLUSH_SECONDS = 1.0
# A stderr set O_NONBLOCK by someone else (the workload shares it) that
# stays full this long: the line is dropped.
_EAGAIN_WAIT_MS = 1000
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# The program a log line is about, with several programs under one Sentinel
# (sentinel.core.group): set while one program's supervisor runs, and inherited by
# every timer it schedules (asyncio copies the context into each callback), so the
# lines of every module the supervisor calls name it. "": Sentinel itself, or the
# single-command form (its one program is not named on each line).
PROGRAM: contextvars.ContextVar[str] = contextvars.ContextVar("sentinel_program", default="")


# Strings that must never reach the log (webhook URLs and their tokens): every formatted
# line has each replaced by REDACTED (BoundedHandler.emit), whatever put it there (an
# exception's text, a receiver's error body echoing its path). Longest first, so a URL
# is replaced whole before its path is.
REDACTED = "<redacted>"
_SECRETS: list[str] = []


def register_secret(text: str) -> None:
    """Redact ``text`` from every log line from now on (idempotent; ignores strings
    shorter than 4 characters, which would redact ordinary words)."""
    for form in (text, json.dumps(text)[1:-1]):  # as written, and as a JSON line shows it
        if len(form) >= 4 and form not in _SECRETS:
            _SECRETS.append(form)
    _SECRETS.sort(key=len, reverse=True)


def secrets_registered() -> bool:
    """Whether any secret is registered (``redact`` would change something)."""
    return bool(_SECRETS)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``REDACTED``."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_obj(obj):
    """``obj`` (a JSON-like value: str, dict, list, tuple, numbers) with ``redact`` applied
    to every string in it, keys included; returned as it is when no secret is registered.
    For the texts that leave Sentinel other than log lines: Event notes, the termination
    message, webhook bodies, control-socket replies."""
    if not _SECRETS:
        return obj
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v) for v in obj)
    return obj


def program_of(record: logging.LogRecord) -> str:
    """The program ``record`` is about: its ``program`` field, else ``PROGRAM``'s."""
    return getattr(record, "program", None) or PROGRAM.get()


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class HumanFormatter(logging.Formatter):
    """``2026-11-29T22:01:02.345Z sentinel[7] WARNING memory limit crossed: ...``"""

    def format(self, record: logging.LogRecord) -> str:
        program = program_of(record)
        line = f"{_iso(record.created)} sentinel[{os.getpid()}] {record.levelname:<7} " \
               f"{program + ': ' if program else ''}{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``sentinel_pid``, ``msg``, and the event's
    fields (``event`` names the kind; ``pid`` there is the workload's)."""

    def format(self, record: logging.LogRecord) -> str:
        obj = {"ts": _iso(record.created), "level": record.levelname.lower(),
               "logger": record.name, "sentinel_pid": os.getpid(), "msg": record.getMessage()}
        program = program_of(record)
        if program:
            obj["program"] = program
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                obj[key] = value
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


class BoundedHandler(logging.StreamHandler):
    """A ``StreamHandler`` whose ``emit`` never blocks and never raises.

    For a stream with a descriptor (stderr), formatted lines go into a queue
    of at most ``QUEUE_LINES`` and a daemon thread ``write(2)``s them to the
    stream's descriptor (``setStream`` may change it); for one without (a
    ``StringIO``) they are written at once. ``dropped`` counts lines lost to a
    full queue or a failed write; ``last_error`` names the last write error
    (an errno name such as ``EPIPE``). ``flush`` and ``close`` wait at most
    ``FLUSH_SECONDS`` for the queue (once, when stderr is stuck).
    """

    def __init__(self, stream=None) -> None:
        super().__init__(stream)
        self._queue: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._busy = False
        self._closed = False
        self._stuck = False  # the last wait for the queue timed out
        self.dropped = 0
        self.last_error: str | None = None

    def _fd(self) -> int | None:
        try:
            return self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            return None

    def _drop(self, error: str | None = None) -> None:
        self.dropped += 1
        if error is not None:
            self.last_error = error

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + self.terminator
            if _SECRETS:
                text = redact(text)
        except Exception:
            self._drop("format")
            return
        if self._fd() is None:
            try:
                self.stream.write(text)
                self.stream.flush()
            except Exception as exc:
                self._drop(errno.errorcode.get(getattr(exc, "errno", None) or 0,
                                               type(exc).__name__))
            return
        with self._cond:
            if self._closed or len(self._queue) >= QUEUE_LINES:
                self._drop()
                return
            self._queue.append(text.encode("utf-8", "backslashreplace"))
            self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sentinel-log",
                                                daemon=True)
                self._thread.start()

    def _drain(self, seconds: float) -> None:
        """Wait (at most ``seconds``) until every queued line is written; caller holds
        ``_cond``."""
        deadline = time.monotonic() + seconds
        while (self._queue or self._busy) and self._thread is not None \
                and self._thread.is_alive():
            left = deadline - time.monotonic()
            if left <= 0:
                self._stuck = True  # logging.shutdown's close() after flush(): no 2nd wait
                return
            self._cond.wait(left)
        self._stuck = False

    def flush(self) -> None:
        """Wait at most ``FLUSH_SECONDS`` for the queue to be written. ``emit`` never
        calls it; ``setStream`` does (lines queued for the old stream go there), and
        so does ``logging.shutdown`` at exit."""
        with self._cond:
            self._drain(FLUSH_SECONDS)

    def _run(self) -> None:
        # This thread never takes a process-directed signal: Sentinel reads them
        # all from its signalfd on the main thread. (Started after the spawn it
        # inherits the block anyway; this keeps it so wherever it is started.)
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                data = self._queue.popleft()
                self._busy = True
            try:
                self._write(data)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write_failed(self, error: str) -> None:
        with self._cond:  # emit() counts under the same lock
            self._drop(error)

    def _write(self, data: bytes) -> None:
        fd = self._fd()
        if fd is None:
            self._write_failed("EBADF")
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                # O_NONBLOCK set on the shared description by someone else.
                import select  # rare: kept off the start-up path

                try:
                    ready = select.poll()
                    ready.register(fd, select.POLLOUT)
                    if ready.poll(_EAGAIN_WAIT_MS):
                        continue
                except (OSError, ValueError):
                    pass
                self._write_failed("EAGAIN")
                return
            except OSError as exc:  # EPIPE, EBADF, ENOSPC, EIO: drop it, go on
                self._write_failed(errno.errorcode.get(exc.errno or 0, type(exc).__name__))
                return

    def close(self) -> None:
        """Write out what is queued for at most ``FLUSH_SECONDS``; drop (and count) the rest."""
        with self._cond:
            self._drain(0.0 if self._stuck else FLUSH_SECONDS)
            self._closed = True
            self.dropped += len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        super().close()

    def stats(self) -> dict:
        with self._cond:
            queued = len(self._queue)
        return {"lines_dropped": self.dropped, "lines_queued": queued,
                "last_error": self.last_error}


_handler: BoundedHandler | None = None


def stats() -> dict:
    """``{"lines_dropped", "lines_queued", "last_error"}`` of Sentinel's log output (zeros
    before ``setup``)."""
    if _handler is None:
        return {"lines_dropped": 0, "lines_queued": 0, "last_error": None}
    return _handler.stats()


def _stderr_or_none():
    """``sys.stderr``; when fd 2 was closed (``2>&-``) it is taken with /dev/null,
    close-on-exec (so a descriptor Sentinel opens later never becomes fd 2 and gets
    its log lines, and a restarted workload still finds fd 2 closed), and ``None``
    is returned: every line is then dropped and counted."""
    try:
        os.fstat(2)
        return sys.stderr
    except OSError:
        pass
    try:
        fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        if fd != 2:
            os.dup2(fd, 2, inheritable=False)
            os.close(fd)
    except OSError:
        pass
    return None


class _Closed:
    """The stream of a handler for a stderr that was closed: every write is dropped."""

    def fileno(self) -> int:
        raise OSError(errno.EBADF, "stderr was closed when Sentinel started")

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "stderr was closed when Sentinel started")

    def flush(self) -> None:
        pass


def setup(fmt: str = "human", level: str = "info", stream=None) -> logging.Logger:
    """Configure and return the ``sentinel`` logger (idempotent). Lines go to ``stream``
    (default: stderr) through a ``BoundedHandler``."""
    global _handler
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    if stream is None:
        stream = _stderr_or_none()
        if stream is None:
            stream = _Closed()
    handler = BoundedHandler(stream)
    _handler = handler
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger


def fmt_bytes(n: int | None) -> str:
    """``209715200`` -> ``"200.0 MiB"``; for log lines and the dashboard only."""
    if n is None:
        return "n/a"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def printable(text: str) -> str:
    """``text`` made safe to encode as UTF-8, for metric labels, files and Events.

    A name that was not UTF-8 (Python decodes a command's file name with byte
    0xff as the surrogate escape ``\\udcff``, which no UTF-8 encoder accepts)
    shows its bytes as ``\\xff``; any other lone surrogate as ``\\udxxx``.
    Valid text is returned as it is.
    """
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
