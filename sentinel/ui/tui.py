"""The live dashboard: ``sentinel run --tui`` and ``sentinel top``.

``run --tui``: the dashboard owns the terminal, so before the spawn
(``detach_output``, called by ``sentinel.entry``) fds 1 and 2 that are the
terminal are pointed at ``--tui-log`` (default /tmp/sentinel-workload.log):
the workload, its restarts and descendants all write there. Sentinel keeps a
private duplicate of the terminal for the dashboard, and while the dashboard
is up its own log lines go to the same file (they are also in the event
pane). Before and after, its messages reach the terminal as usual.

Drawing never runs on the guardian's loop: every 250 ms the loop takes a
``sentinel.ui.dashboard.snapshot`` (a fraction of a millisecond) and hands it to
a render thread, which draws it with rich ``Live`` on the alternate screen
and is the only one to write to the terminal, so a slow or stopped terminal
can never stall enforcement.

``top`` polls the control socket's ``status`` and draws the same view. When
stdout is not a terminal neither writes escape codes: ``run --tui`` logs a
plain status line at most once per interval, ``top`` prints one per interval.

This module imports only the standard library at load time (``entry`` loads
it before the spawn); rich is loaded by the render thread.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque

from sentinel.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

FRAMES_PER_SECOND = 4
DEFAULT_TUI_LOG = "/tmp/sentinel-workload.log"
RUN_HINT = "Ctrl-C: stop the workload"
WATCH_HINT = "Ctrl-C: stop watching (the target keeps running)"
TOP_HINT = "Ctrl-C: quit (the workload keeps running)"


def can_draw(fd: int) -> bool:
    """True when ``fd`` is a terminal rich can drive (not TERM=dumb)."""
    try:
        tty = os.isatty(fd)
    except OSError:
        return False
    return tty and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")


class Terminal:
    """What ``detach_output`` set aside: the terminal's fd for drawing, the log file,
    and a stream on the terminal for Sentinel's own messages (None if stderr was
    not the terminal)."""

    def __init__(self, fd: int, log_path: str, err_stream) -> None:
        self.fd = fd
        self.log_path = log_path
        self.err_stream = err_stream


_terminal: Terminal | None = None


def detach_output(log_path: str | None) -> bool:
    """Give the terminal to the dashboard before the workload is spawned.

    When fd 1 is a terminal: duplicate it (close-on-exec, for drawing), open
    ``log_path`` (append, 0600, no symlink followed: it is usually in /tmp)
    and put it on fd 1, and on fd 2 if that is the terminal too, so every
    process spawned from now on writes there. ``sys.stderr`` is pointed at a
    duplicate of the terminal, so Sentinel's messages stay visible until the
    dashboard starts. Returns False, changing nothing, when fd 1 is not a
    terminal. Raises ``UsageError`` when the log cannot be opened. Idempotent.
    """
    global _terminal
    if _terminal is not None:
        return True
    if not can_draw(1):
        return False
    path = os.path.abspath(log_path or DEFAULT_TUI_LOG)  # Sentinel chdirs to / later
    try:
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        from sentinel.errors import UsageError

        raise UsageError(f"--tui-log: cannot open {path!r} for the workload's output "
                         f"({exc.strerror}); pass --tui-log with a writable file") from None
    draw_fd = os.dup(1)  # os.dup: not inherited by the workload
    err_stream = None
    if os.isatty(2):
        err_stream = open(os.dup(2), "w", buffering=1, encoding="utf-8",
                          errors="backslashreplace")
        sys.stderr.flush()
        os.dup2(log_fd, 2)
        sys.stderr = err_stream
    sys.stdout.flush()
    os.dup2(log_fd, 1)
    os.close(log_fd)
    _terminal = Terminal(draw_fd, path, err_stream)
    return True


class LiveView:
    """rich ``Live`` on the alternate screen of terminal ``fd``; ``draw`` one snapshot
    at a time from a single thread. ``stop`` leaves the alternate screen and shows
    the cursor again; with a final snapshot it prints that last view and a one-line
    summary inline, where they stay (the alternate screen is gone with its frames)."""

    def __init__(self, fd: int, hint: str) -> None:
        from rich.console import Console
        from rich.live import Live

        self.fd = fd
        self.hint = hint
        self._file = open(fd, "w", encoding="utf-8", errors="replace", closefd=False)
        self.console = Console(file=self._file, force_terminal=True, force_interactive=True)
        self.live = Live(console=self.console, screen=True, auto_refresh=False,
                         redirect_stdout=False, redirect_stderr=False)

    def start(self) -> None:
        self.live.start()

    def draw(self, snap: dict, banner: str | None = None) -> None:
        from sentinel.ui.dashboard import render

        # The size is read from our own fd on every frame, so a resize shows
        # in the next frame; rich would ask fds 0-2, which are not ours here.
        width, height = os.get_terminal_size(self.fd)
        self.console.size = (width, height)
        self.live.update(render(snap, width=width, height=height, banner=banner,
                                hint=self.hint), refresh=True)

    def stop(self, final: dict | None = None, note: str | None = None) -> None:
        try:
            self.live.stop()
            if final is not None:
                from rich.text import Text

                from sentinel.ui.dashboard import render, state_line

                label, detail, style = state_line(final)
                self.console.size = os.get_terminal_size(self.fd)
                self.console.print(render(final, width=self.console.size.width))
                line = Text("sentinel: ", style="bold")
                line.append(label, style=style)
                line.append(f" {detail}" if detail else "")
                self.console.print(line, soft_wrap=True)
                if note:
                    self.console.print(Text(note, style="dim"), soft_wrap=True)
        finally:
            self._file.flush()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Dashboard:
    """``run --tui``: snapshots on the guardian's loop, drawing on a render thread."""

    def __init__(self, guardian, terminal: Terminal) -> None:
        from sentinel.ui.dashboard import ProcessNames

        self.guardian = guardian
        self.terminal = terminal
        self.names = ProcessNames()
        self._latest: dict | None = None
        self._final: dict | None = None
        self._wake = threading.Event()
        self._ready = threading.Event()
        self._stopping = False
        self._failed = False  # the render thread gave up (terminal gone)
        self._handle = None
        self._thread = threading.Thread(target=self._render_loop, name="sentinel-dashboard",
                                        daemon=True)
        self._log_file = None
        self._swapped: list = []  # (handler, previous stream)
        self._saved_stderr = None
        # Measurements, reported in the log when the dashboard closes.
        self._snapshot_seconds: list[float] = []
        self._frame_seconds: list[float] = []
        self._gaps: deque = deque(maxlen=100_000)  # seconds between samples of one run
        self._seen_wall: float | None = None
        self._started_mono = time.monotonic()

    def start(self) -> None:
        # Sentinel's log lines would scribble over the screen: send them to
        # the log file while the dashboard is up.
        err = self.terminal.err_stream
        if err is not None:
            self._log_file = open(self.terminal.log_path, "a", buffering=1, encoding="utf-8")
            logger = logging.getLogger(LOGGER_NAME)
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is err:
                    self._swapped.append((handler, handler.setStream(self._log_file)))
            if sys.stderr is err:
                self._saved_stderr, sys.stderr = sys.stderr, self._log_file
        self._thread.start()
        self._handle = self.guardian.loop.call_soon(self._tick)

    # ---------------------------------------------------------------- the loop side
    def _tick(self) -> None:
        """On the guardian's loop, 4 times a second: one snapshot, no drawing."""
        if self._failed:
            self._handle = None
            return
        self._handle = self.guardian.loop.call_later(1 / FRAMES_PER_SECOND, self._tick)
        if not self._ready.is_set():  # the render thread is still importing rich
            return
        from sentinel.ui.dashboard import host_snapshot

        t0 = time.perf_counter()
        snap = host_snapshot(self.guardian, self.names)  # each program when there are several
        self._snapshot_seconds.append(time.perf_counter() - t0)
        self._measure_gaps()
        self._latest = snap
        self._wake.set()

    def _measure_gaps(self) -> None:
        """Track the longest gap between samples of one run since the dashboard started
        (the main program's, whose panels the view shows)."""
        from sentinel.control.snapshot import main_program

        st = main_program(self.guardian).state
        fresh = []
        for t, _ in reversed(st.history):
            if self._seen_wall is not None and t <= self._seen_wall:
                fresh.append(t)
                break
            fresh.append(t)
        fresh.reverse()
        started = st.started_wall or 0.0
        for a, b in zip(fresh, fresh[1:]):
            if a >= started:
                self._gaps.append(b - a)
        if fresh:
            self._seen_wall = fresh[-1]

    # ---------------------------------------------------------------- the render thread
    def _render_loop(self) -> None:
        view = None
        try:
            from sentinel.ui.dashboard import load_psutil

            load_psutil()  # here, not on the loop's first snapshot (about 20 ms)
            watching = self.guardian.state.mode == "watch"
            view = LiveView(self.terminal.fd, WATCH_HINT if watching else RUN_HINT)
            view.start()
            self._ready.set()
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    if self._final is not None:  # the end state, drawn once more
                        view.draw(self._final)
                    break
                snap = self._latest
                if snap is None:
                    continue
                t0 = time.perf_counter()
                view.draw(snap)
                self._frame_seconds.append(time.perf_counter() - t0)
        except Exception as exc:  # a dead terminal must never touch enforcement
            log.warning("dashboard stopped drawing: %r; Sentinel and the workload keep running",
                        exc, extra={"event": "dashboard"})
            self._failed = True
            self._set_component(f"off (terminal error: {exc.__class__.__name__})")
        finally:
            self._ready.set()
            if view is not None:
                try:
                    what = "Sentinel's log" if self.guardian.state.mode == "watch" else \
                        "workload output and Sentinel's log"
                    view.stop(self._final, f"{what}: {self.terminal.log_path}")
                except Exception:
                    pass

    def _set_component(self, text: str) -> None:
        try:
            self.guardian.loop.call_soon_threadsafe(
                self.guardian.state.components.__setitem__, "dashboard", text)
        except RuntimeError:  # the loop is closed
            pass

    # ---------------------------------------------------------------- closing
    def close(self) -> None:
        """Called after the loop has stopped: draw the end state, restore the terminal."""
        if self._handle is not None:
            self._handle.cancel()
        from sentinel.ui.dashboard import host_snapshot

        self._final = host_snapshot(self.guardian, self.names)
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=3.0)
        self._report()
        for handler, previous in self._swapped:
            handler.setStream(previous)
        if self._saved_stderr is not None:
            sys.stderr = self._saved_stderr
        if self._log_file is not None:
            self._log_file.close()

    def _report(self) -> None:
        """One log line on what drawing cost: per frame on the render thread, per snapshot
        on the loop, and the sampling cadence meanwhile (gaps between samples; a gap
        over twice the interval counts as late)."""
        snaps, frames, gaps = self._snapshot_seconds, self._frame_seconds, list(self._gaps)
        interval = self.guardian.state.interval_seconds
        late = sum(1 for g in gaps if g > 2 * interval)
        log.info(
            "dashboard closed: %d frames in %.1fs; event loop per snapshot p50 %.2f ms, "
            "max %.2f ms; render thread per frame p50 %.2f ms, max %.2f ms; sampling "
            "(interval %.1f ms): %d gaps, p50 %.1f ms, p99 %.1f ms, max %.1f ms, %d late",
            len(frames), time.monotonic() - self._started_mono,
            _percentile(snaps, 0.5) * 1e3, max(snaps, default=0) * 1e3,
            _percentile(frames, 0.5) * 1e3, max(frames, default=0) * 1e3, interval * 1e3,
            len(gaps), _percentile(gaps, 0.5) * 1e3, _percentile(gaps, 0.99) * 1e3,
            max(gaps, default=0) * 1e3, late,
            extra={"event": "dashboard", "frames": len(frames),
                   "snapshot_p50_seconds": _percentile(snaps, 0.5),
                   "snapshot_max_seconds": max(snaps, default=0.0),
                   "frame_p50_seconds": _percentile(frames, 0.5),
                   "frame_max_seconds": max(frames, default=0.0),
                   "sample_gaps": len(gaps), "sample_gaps_late": late,
                   "sample_gap_p50_seconds": _percentile(gaps, 0.5),
                   "sample_gap_p99_seconds": _percentile(gaps, 0.99),
                   "sample_gap_max_seconds": max(gaps, default=0.0)})


# Off a terminal, --tui prints a plain status line this often at most (or
# once per --interval if that is longer): a line per 100 ms sample would be
# 36000 lines an hour in a container's log.
PLAIN_PERIOD_SECONDS = 1.0


class PlainStatus:
    """``--tui`` without a terminal: one plain status line (``dashboard.format_line``,
    no escape codes) in Sentinel's log every ``period`` seconds, from the guardian's
    loop. It goes through the log's bounded writer, so a stuck stderr never stalls it."""

    def __init__(self, guardian, period: float) -> None:
        self.guardian = guardian
        self.period = period
        self._handle = guardian.loop.call_later(period, self._tick)

    def _tick(self) -> None:
        self._handle = self.guardian.loop.call_later(self.period, self._tick)
        from sentinel.ui.dashboard import format_line, host_snapshot

        # format_line starts with its own timestamp; the log line has one already.
        line = format_line(host_snapshot(self.guardian)).partition(" ")[2]
        log.info("%s", line, extra={"event": "status_line"})

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def start_tui(guardian, settings):
    """Start the dashboard for ``run --tui``/``watch --tui``; returns an object with
    ``close()``. Without a terminal on stdout it logs why and prints a plain status line
    at most once per ``--interval`` (and at most once a second) instead."""
    if not detach_output(getattr(settings, "tui_log", None)):
        period = max(PLAIN_PERIOD_SECONDS, guardian.state.interval_seconds)
        guardian.state.components["dashboard"] = \
            f"off (stdout is not a terminal): a status line every {period:g}s"
        log.warning("--tui: stdout is not a terminal, so no dashboard; a plain status line "
                    "every %gs instead", period, extra={"event": "dashboard"})
        return PlainStatus(guardian, period)
    assert _terminal is not None
    dashboard = Dashboard(guardian, _terminal)
    guardian.state.components["dashboard"] = f"on (workload output in {_terminal.log_path})"
    log.info("dashboard on; the workload's output and Sentinel's log go to %s",
             _terminal.log_path, extra={"event": "dashboard"})
    dashboard.start()
    return dashboard


# --------------------------------------------------------------------------
# sentinel top
# --------------------------------------------------------------------------

class StatusSource:
    """Replies from the control socket at ``path`` on one kept-open connection,
    reconnecting after a failure. Asks ``status dashboard`` (the full snapshot);
    a Sentinel whose socket does not know that form gets plain ``status``."""

    def __init__(self, path: str) -> None:
        from sentinel.ui.dashboard import ProcessNames, StatusAdapter

        self.path = path
        self.adapter = StatusAdapter(ProcessNames())
        self._conn = None
        self._command = "status dashboard"

    def fetch(self) -> dict:
        """The next snapshot. Raises ``ControlError`` when no Sentinel answers."""
        from sentinel.control.client import Connection
        from sentinel.errors import ControlError

        if self._conn is None:
            self._conn = Connection(self.path)
        try:
            reply = self._conn.request(self._command)
            if not reply.get("ok") and self._command != "status":
                self._command = "status"
                reply = self._conn.request(self._command)
        except ControlError:
            self.close()
            raise
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise ControlError(f"{self.path}: {error.get('code')}: {error.get('message')}")
        return self.adapter.update(reply)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def run_top(socket_path: str, interval: float | None = None) -> int:
    """Draw a running Sentinel's status from its control socket until Ctrl-C.

    On a terminal: the live view every ``interval`` seconds (default 0.25).
    Otherwise: one plain status line every ``interval`` (default 1 s), never
    an escape code. If the first request fails: one error line, exit code 1.
    A connection lost later is shown (a banner, or one line) and retried.
    Ctrl-C or SIGTERM leaves the screen as it was; returns the exit code.
    """
    import signal

    from sentinel.ui.dashboard import format_line
    from sentinel.errors import SentinelError

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    tui = can_draw(1)
    if tui:
        from sentinel.ui.dashboard import load_psutil

        load_psutil()  # before the first reply, so the first frame has command lines
    source = StatusSource(socket_path)
    try:
        snap = source.fetch()
    except SentinelError as exc:
        sys.stderr.write(f"sentinel: error: {exc}\n")
        return 1
    previous = signal.signal(signal.SIGTERM, on_term)
    period = interval if interval else (1 / FRAMES_PER_SECOND if tui else 1.0)
    banner = None
    view = None
    try:
        if tui:
            view = LiveView(1, TOP_HINT)
            view.start()
        while True:
            if view is not None:
                view.draw(snap, banner)
            elif banner is None:
                sys.stdout.write(format_line(snap) + "\n")
                sys.stdout.flush()
            time.sleep(period)  # pacing the polls
            try:
                snap = source.fetch()
                if banner is not None and view is None:
                    sys.stdout.write(f"sentinel top: reconnected to {socket_path}\n")
                banner = None
            except SentinelError as exc:
                if banner is None and view is None:
                    sys.stdout.write(f"sentinel top: connection lost ({exc}); retrying\n")
                    sys.stdout.flush()
                banner = f"connection lost, retrying; last state below. {exc}"
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `sentinel top | head`: the reader is gone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # so the flush at exit does not complain again
        os.close(devnull)
        return 0
    finally:
        if view is not None:
            view.stop()
        source.close()
        signal.signal(signal.SIGTERM, previous)
