"""Relaying programs' stdout/stderr to Sentinel's own, one line at a time (issue 10).

With several programs under one Sentinel each program's fd 1 and 2 are pipes;
an ``OutputRelay`` per program and stream reads one and writes every line to
Sentinel's fd 1 or 2 with the program's name in front, as docker-compose does::

    web    | GET / 200
    worker | job 17 done

Hand-written on the standard library (layer 2; no library does this without an
event loop of its own): a thread per relay that reads with ``poll(2)`` and
``read(2)`` and writes with blocking ``write(2)``, so Sentinel's loop never
waits on output, and a reader that does not keep up (a full stdout pipe) slows
the program exactly as it would without Sentinel: the relay blocks in its
write, stops reading, the program's pipe fills and its own write blocks.
Nothing is buffered beyond one unfinished line and nothing is dropped, except
what cannot be written at all (Sentinel's stdout closed or gone: EPIPE, EBADF,
ENOSPC), which is counted in ``lines_dropped``.

Sentinel does not buffer, but the program may: C stdio and Python buffer a
pipe in blocks (a terminal they buffer by line). For output that shows at once,
set ``PYTHONUNBUFFERED=1``, run the program under ``stdbuf -oL``, or use
``output: plain`` (the program then writes to Sentinel's fds itself).
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time

PIPE_BUF = select.PIPE_BUF  # 4096 on Linux: writes up to this size are atomic on a pipe
MAX_LINE_BYTES = 64 * 1024  # a longer line is cut into prefixed pieces of this size
PARTIAL_LINE_SECONDS = 0.1  # an unfinished line is written after this long without data
_READ_BYTES = 64 * 1024  # one pipe's default capacity
_FINAL_READ_BYTES = 1 << 20  # at close: what is read from a pipe whose writer is still alive

# docker-compose's colours, in its order: cyan, yellow, green, magenta, blue, red.
_COLORS = ("36", "33", "32", "35", "34", "31")


def prefix_for(names: list[str], *, color: bool | None = None) -> dict[str, str]:
    """``{name: "name   | "}`` for each program, names padded to the longest.

    ``color``: put each program's prefix in one of 6 ANSI colours (by position,
    as docker-compose does); ``None`` decides: only when Sentinel's stdout is a
    terminal and ``NO_COLOR`` is unset or empty (https://no-color.org).
    """
    width = max((len(n) for n in names), default=0)
    if color is None:
        color = not os.environ.get("NO_COLOR") and _isatty(1)
    out = {}
    for i, name in enumerate(names):
        padded = name.ljust(width)
        out[name] = (f"\x1b[{_COLORS[i % len(_COLORS)]}m{padded} |\x1b[0m " if color
                     else f"{padded} | ")
    return out


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


class _Target:
    """One file that relays write to, shared by every relay writing there.

    ``dangling`` is the source whose unfinished line was written last (no
    newline yet): the next writer of another line ends it with a newline
    first, so a prompt-like partial line never has another program's line
    glued to it; its own continuation then comes without a prefix.
    """

    __slots__ = ("lock", "dangling")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dangling: _Source | None = None


_targets: dict[tuple, _Target] = {}
_targets_lock = threading.Lock()


def _target_of(fd: int) -> _Target:
    # By the open file's identity, not its number: fd 1 and 2 are often the same
    # terminal or pipe, and their lines must not be mixed either.
    try:
        st = os.fstat(fd)
        key: tuple = (st.st_dev, st.st_ino)
    except OSError:
        key = ("fd", fd)
    with _targets_lock:
        target = _targets.get(key)
        if target is None:
            target = _targets[key] = _Target()
        return target


class _Source:
    """One pipe a relay reads: the read end, the start of a line not yet written
    (``pending``, no newline in it), and how many bytes of the current line were
    already written (``written``: after a partial-line flush)."""

    __slots__ = ("fd", "pending", "written", "deadline")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = b""
        self.written = 0
        self.deadline: float | None = None


class OutputRelay:
    """One program's stream (stdout or stderr) relayed to ``target_fd`` line by line.

    ``OutputRelay(name, prefix, target_fd)`` creates a close-on-exec pipe and
    starts the relay's thread (with every signal blocked, whatever the caller's
    mask: signals are the main loop's, through its signalfd). Give
    ``write_fd`` to ``spawn`` (as ``stdout_fd`` or ``stderr_fd``), then call
    ``started()`` (also when the spawn failed), which closes Sentinel's copy of
    the write end: the pipe's EOF then means every process of that run has
    closed it. Each complete line goes out in one ``write(2)`` as ``prefix +
    line`` (several lines may share a write of at most ``PIPE_BUF`` bytes, so a
    line up to ``PIPE_BUF`` is never mixed with another program's); an
    unfinished line is written after ``PARTIAL_LINE_SECONDS`` without data, and
    at EOF with a newline added; a line longer than ``MAX_LINE_BYTES`` is cut
    into prefixed pieces, each ended by a newline. ``target_fd`` is not owned
    (never closed here). Counters, read from any thread: ``lines_relayed``,
    ``bytes_relayed`` (the program's bytes, prefixes not counted) and
    ``lines_dropped`` (lines a failed write lost: Sentinel's fd closed or gone).
    """

    def __init__(self, name: str, prefix: str, target_fd: int) -> None:
        self.name = name
        self.prefix = prefix
        self.target_fd = target_fd
        self.lines_relayed = 0
        self.bytes_relayed = 0
        self.lines_dropped = 0
        self._prefix = prefix.encode()
        self._target = _target_of(target_fd)
        self._lock = threading.Lock()
        self._new: list[int] = []  # read ends the thread has not taken up yet
        self._write_fd: int | None = None
        self._stopping = False
        self._at_eof = threading.Event()  # every pipe at EOF and no write end held here
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._open_pipe()
        self._thread = threading.Thread(target=self._run, name=f"output-{name}", daemon=True)
        # Started with every signal blocked, so it never has one unblocked (it
        # inherits the mask at creation); Sentinel's main thread already blocks all.
        given = signal.pthread_sigmask(signal.SIG_BLOCK, _catchable())
        try:
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, given)

    @property
    def native_id(self) -> int | None:
        """The relay thread's kernel thread ID (``/proc/self/task/<id>``), once it runs."""
        return self._thread.native_id

    # ------------------------------------------------------------------ the spawner's side
    @property
    def write_fd(self) -> int:
        """The pipe's write end (close-on-exec) for the next process of this program;
        a fresh pipe (``reopen``) when the last one was already handed out. Raises
        ``ValueError`` once the relay is closed."""
        self.reopen()
        fd = self._write_fd
        if fd is None:
            raise ValueError(f"the output relay of {self.name!r} is closed")
        return fd

    def started(self) -> None:
        """Close Sentinel's copy of the write end (after the spawn, failed or not). Idempotent."""
        with self._lock:
            fd, self._write_fd = self._write_fd, None
        if fd is not None:
            os.close(fd)
        self._wake()

    def reopen(self) -> None:
        """Prepare a fresh pipe for the next process (a restart); no-op while one is unused.

        A fresh pipe rather than one kept across restarts: Sentinel then never holds
        a write end while the program runs, so EOF says the run has finished
        writing (what ``drain`` waits for, and what ends its last partial line),
        and leftovers of the previous run that still hold the old pipe are read
        to the end, with the same prefix, without delaying the new run's EOF.
        """
        with self._lock:
            if self._write_fd is not None or self._stopping:
                return
            self._open_pipe()
        self._wake()

    def _open_pipe(self) -> None:  # with self._lock held (or in __init__)
        read_fd, self._write_fd = os.pipe2(os.O_CLOEXEC)
        self._new.append(read_fd)
        self._at_eof.clear()

    # ------------------------------------------------------------------ the end
    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every pipe of this relay reached EOF (every writer closed) and
        was written out; at most ``timeout`` seconds. True if so."""
        return self._at_eof.wait(timeout)

    def close(self, timeout: float = 1.0) -> bool:
        """Stop: write what was read (and what the pipes hold now, up to 1 MiB each:
        a leftover may still be writing), end an unfinished line, close the pipes
        and join the thread for at most ``timeout`` seconds. True if it ended (not
        when it is blocked writing to a target nobody reads; it is a daemon thread)."""
        self._stop()
        return self._join(timeout)

    def _stop(self) -> None:
        self.started()
        with self._lock:
            self._stopping = True
        self._wake()

    def _join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1
        return True

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # full (it is awake anyway) or closed (it has ended)
            pass

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        sources: dict[int, _Source] = {}
        while True:
            with self._lock:
                for fd in self._new:
                    sources[fd] = _Source(fd)
                    poller.register(fd, select.POLLIN)
                self._new.clear()
                stopping = self._stopping
                if not sources and self._write_fd is None:
                    self._at_eof.set()
            if stopping:
                self._finish(sources)
                return
            deadlines = [s.deadline for s in sources.values() if s.deadline is not None]
            timeout = None if not deadlines else \
                max(0.0, min(deadlines) - time.monotonic()) * 1000
            for fd, _event in poller.poll(timeout):
                if fd == self._wake_r:
                    try:
                        os.read(fd, 512)
                    except OSError:
                        pass
                    continue
                source = sources[fd]
                try:
                    data = os.read(fd, _READ_BYTES)  # poll said readable: does not block
                except OSError:
                    data = b""
                if data:
                    self._feed(source, data)
                    source.deadline = time.monotonic() + PARTIAL_LINE_SECONDS \
                        if source.pending else None
                else:  # EOF: every writer closed it
                    self._flush(source, eof=True)
                    poller.unregister(fd)
                    os.close(fd)
                    del sources[fd]
            now = time.monotonic()
            for source in sources.values():
                if source.deadline is not None and source.deadline <= now:
                    self._flush(source, eof=False)

    def _finish(self, sources: dict[int, _Source]) -> None:
        for source in sources.values():
            taken = 0
            while taken < _FINAL_READ_BYTES:
                ready = select.poll()
                ready.register(source.fd, select.POLLIN)
                if not ready.poll(0):
                    break
                try:
                    data = os.read(source.fd, _READ_BYTES)
                except OSError:
                    break
                if not data:
                    break
                taken += len(data)
                self._feed(source, data)
            self._flush(source, eof=True)
            os.close(source.fd)
        sources.clear()
        self._at_eof.set()

    def _feed(self, source: _Source, data: bytes) -> None:
        """Write every complete line (or long piece) of ``pending + data``; keep the rest."""
        buf = source.pending + data if source.pending else data
        bodies: list[tuple[bytes, bool]] = []  # (a line's rest, its newline added here)
        start, written = 0, source.written
        while True:
            room = MAX_LINE_BYTES - written  # bytes this line may still have
            nl = buf.find(b"\n", start, start + room + 1)
            if nl >= 0:
                bodies.append((buf[start:nl + 1], False))
            elif len(buf) - start > room:  # no newline within reach: cut the line here
                nl = start + room - 1
                bodies.append((buf[start:nl + 1] + b"\n", True))
            else:
                break
            start, written = nl + 1, 0
        source.pending = buf[start:]
        if bodies:
            self._write(source, bodies, complete=True)

    def _flush(self, source: _Source, eof: bool) -> None:
        """Write the unfinished line (at EOF ended with a newline)."""
        source.deadline = None
        body, source.pending = source.pending, b""
        if eof:
            if body or source.written:
                self._write(source, [(body + b"\n", True)], complete=True)
        elif body:
            self._write(source, [(body, False)], complete=False)

    def _write(self, source: _Source, bodies: list[tuple[bytes, bool]], complete: bool) -> None:
        """Write ``bodies`` (each the rest of a line, ending in a newline unless
        ``complete`` is false) with the prefix, in writes of at most PIPE_BUF bytes
        that hold whole lines (a longer line alone). Counts what went out."""
        target = self._target
        with target.lock:
            continuing = source.written > 0 and target.dangling is source
            if source.written > 0 and not continuing and bodies[0] == (b"\n", True):
                bodies = bodies[1:]  # another writer has already ended our unfinished line
            chunks: list[bytes] = []
            counts: list[tuple[int, int]] = []  # per chunk: (lines, the program's bytes)
            parts: list[bytes] = []
            size = lines = nbytes = 0
            if target.dangling is not None and not continuing:
                parts.append(b"\n")  # end another source's unfinished line first
                size = 1
            for i, (body, added) in enumerate(bodies):
                piece = body if (i == 0 and continuing) else self._prefix + body
                if size and size + len(piece) > PIPE_BUF:
                    chunks.append(b"".join(parts))
                    counts.append((lines, nbytes))
                    parts, size, lines, nbytes = [], 0, 0, 0
                parts.append(piece)
                size += len(piece)
                lines += body.endswith(b"\n")
                nbytes += len(body) - added
            if parts:
                chunks.append(b"".join(parts))
                counts.append((lines, nbytes))
            for chunk, (lines, nbytes) in zip(chunks, counts):
                if self._write_all(chunk):
                    self.lines_relayed += lines
                    self.bytes_relayed += nbytes
                else:
                    self.lines_dropped += lines
            if complete:
                target.dangling, source.written = None, 0
            elif bodies:
                target.dangling = source
                source.written = (source.written if continuing else 0) + len(bodies[-1][0])

    def _write_all(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.target_fd, view)  # blocks while the target is full
            except OSError:  # EPIPE, EBADF, ENOSPC, EIO: the target is gone; drop
                return False
            view = view[n:]
        return True


def drain(relays, timeout: float) -> bool:
    """At Sentinel's exit: wait until every relay's pipes reached EOF, at most ``timeout``
    seconds in all, then stop them (``close``) and join their threads.

    Sentinel's own write ends are closed first. A leftover that outlives its
    program may hold a pipe open: then what was read (and what the pipe holds
    now) is written and the relay stops; nothing already read is lost. Returns
    True if every relay reached EOF and ended. Takes ``timeout`` plus at most
    0.2 s for the final writes (more only if a target nobody reads blocks them:
    those threads are left behind as daemons).
    """
    relays = list(relays)
    deadline = time.monotonic() + timeout
    for relay in relays:
        relay.started()
    at_eof = all([relay.wait(max(0.0, deadline - time.monotonic())) for relay in relays])
    for relay in relays:
        relay._stop()
    join_by = max(deadline, time.monotonic()) + 0.2
    ended = all([relay._join(max(0.0, join_by - time.monotonic())) for relay in relays])
    return at_eof and ended


def _catchable() -> set[int]:
    return set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
