"""Talk to a running Sentinel over its control socket, and render its replies.

``request(path, command)`` sends one command line and returns the reply as a
dict (``{"ok": true, ...}`` or ``{"ok": false, "error": {"code", "message"}}``);
``Connection`` keeps one connection open for many commands (a dashboard that
polls ``status``). Both raise ``ControlError`` with a one-line message when
no Sentinel answers. The protocol is in docs/control-socket.md.

``status_rows`` turns a ``status`` reply into (label, text) rows: the CLI's
table, the dashboard and the socket's own ``status text`` form share it.
Standard library only (plus ``sentinel.logs.fmt_bytes``): ``rich`` is
imported by the CLI when it draws the table.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import stat
import time

from sentinel.errors import ControlError
from sentinel.logs import fmt_bytes

DEFAULT_SOCKET = "/tmp/sentinel.socket"
SOCKET_ENV = "SENTINEL_SOCKET"
DEFAULT_TIMEOUT_SECONDS = 5.0
MAX_LINE_BYTES = 4096  # the server refuses longer command lines (and disconnects)
# A status reply is ~2 KiB plus the workload's command line, which Linux lets grow
# to a quarter of the stack limit (2 MiB with the usual 8 MiB), more when JSON
# escapes it. The bound only keeps a client from reading forever from something
# that is not a Sentinel; SENTINEL_CLIENT_MAX_REPLY raises it.
MAX_REPLY_BYTES = 8 << 20
MAX_REPLY_ENV = "SENTINEL_CLIENT_MAX_REPLY"


class _ReplyTooLarge(Exception):
    pass


def max_reply_bytes(environ=None) -> int:
    """The longest reply this client reads: ``$SENTINEL_CLIENT_MAX_REPLY`` (a size such
    as ``32Mi``), else 8 MiB. Raises ``ValueError`` for a value that is not a size."""
    from sentinel.config.settings import parse_size

    raw = (os.environ if environ is None else environ).get(MAX_REPLY_ENV, "")
    if not raw.strip():
        return MAX_REPLY_BYTES
    try:
        return parse_size(raw)
    except ValueError as exc:
        raise ValueError(f"{MAX_REPLY_ENV}: {exc}") from None


def socket_path(explicit: str | None = None) -> str:
    """``explicit``, else ``$SENTINEL_SOCKET``, else ``/tmp/sentinel.socket``."""
    return explicit or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


class Connection:
    """One open connection to the control socket at ``path``; a context manager.

    ``timeout`` (seconds) bounds the connect and each reply; ``max_reply`` (bytes,
    default ``max_reply_bytes()``) the length of a reply. Raises ``ControlError``
    when no Sentinel answers or a reply is longer, ``ValueError`` for a command
    that is not one line of at most 4096 bytes (or a bad ``$SENTINEL_CLIENT_MAX_REPLY``).
    """

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 max_reply: int | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self.max_reply = max_reply_bytes() if max_reply is None else max_reply
        self._buf = b""
        self._sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except BaseException as exc:
            self.close()
            if isinstance(exc, OSError):
                raise ControlError(_connect_error(path, exc, timeout)) from None
            raise

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def request(self, command: str) -> dict:
        """Send ``command`` (e.g. ``"status"``, ``"limit 200Mi"``) and return the reply.

        A ``status [NAME] text`` reply (plain lines, not JSON) comes back as
        ``{"ok": true, "command": "status", "text": "..."}``.
        """
        data = command.encode()
        if b"\n" in data or b"\r" in data:
            raise ValueError("a command is one line; send several commands one by one")
        if len(data) > MAX_LINE_BYTES:
            raise ValueError(f"a command is at most {MAX_LINE_BYTES} bytes")
        if self._sock is None:
            raise ControlError(f"the connection to {self.path} is closed")
        deadline = time.monotonic() + self.timeout
        try:
            self._sock.sendall(data + b"\n")
            line = self._read_until(b"\n", deadline)
            words = [w.lower() for w in command.split()]
            text_form = words[:1] == ["status"] and words[-1:] == ["text"] and len(words) <= 3
            if text_form and not line.startswith(b"{"):
                # The text form of status: lines up to an empty line.
                self._buf = line + self._buf
                block = self._read_until(b"\n\n", deadline)
                text = block.decode("utf-8", "replace").rstrip("\n")
                return {"ok": True, "command": "status", "text": text}
        except _ReplyTooLarge:
            self.close()
            verb = (command.split() or ["status"])[0]
            bigger = max(4 * self.max_reply, 32 << 20) >> 20
            raise ControlError(
                f"the reply to {verb!r} from the Sentinel on {self.path} is longer than this "
                f"client's limit of {fmt_bytes(self.max_reply)} (a workload with a very long "
                f"command line or many processes makes a long status); raise the limit, e.g. "
                f"{MAX_REPLY_ENV}={bigger}Mi, or read the reply without it: echo {verb} | "
                f"nc -N -U {self.path}") from None
        except (TimeoutError, socket.timeout):
            self.close()
            raise ControlError(f"no reply from the Sentinel on {self.path} within "
                               f"{self.timeout:g}s") from None
        except OSError as exc:
            self.close()
            raise ControlError(f"the Sentinel on {self.path} dropped the connection: "
                               f"{exc.strerror or exc}") from None
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            self.close()
            raise ControlError(f"unexpected reply on {self.path} (is it a Sentinel control "
                               f"socket?): {line[:80]!r}")
        return reply

    def _read_until(self, end: bytes, deadline: float) -> bytes:
        assert self._sock is not None
        while end not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self._sock.settimeout(left)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionResetError(0, "closed without a reply")
            self._buf += chunk
            if len(self._buf) > self.max_reply:
                raise _ReplyTooLarge
        i = self._buf.index(end) + len(end)
        out, self._buf = self._buf[:i], self._buf[i:]
        return out


def request(path: str, command: str, timeout: float = DEFAULT_TIMEOUT_SECONDS,
            max_reply: int | None = None) -> dict:
    """Send one command to the Sentinel at ``path``; return its reply (see ``Connection``)."""
    with Connection(path, timeout, max_reply) as conn:
        return conn.request(command)


def _connect_error(path: str, exc: OSError, timeout: float) -> str:
    if isinstance(exc, FileNotFoundError):
        return (f"no Sentinel at {path}: the socket does not exist; is Sentinel running "
                f"with --socket {path}? (set --socket or SENTINEL_SOCKET)")
    if isinstance(exc, ConnectionRefusedError):
        kind = _not_a_socket(path)
        if kind is not None:  # connect() says ECONNREFUSED for these too
            return (f"no Sentinel at {path}: it is {kind}, not a socket; pass the path "
                    "Sentinel was started with (--socket)")
        return (f"no Sentinel answers on {path}: connection refused (a socket left by a "
                "Sentinel that is gone?)")
    if isinstance(exc, PermissionError):
        return (f"cannot connect to {path}: permission denied; run as Sentinel's user or "
                "root, or start Sentinel with --socket-group and --socket-mode 0660")
    if isinstance(exc, (TimeoutError, socket.timeout, BlockingIOError)):
        return f"no Sentinel answers on {path}: connect timed out after {timeout:g}s"
    if isinstance(exc, NotADirectoryError):
        return f"no Sentinel at {path}: a part of the path is not a directory"
    return f"cannot connect to {path}: {exc.strerror or exc}"


def _not_a_socket(path: str) -> str | None:
    """What ``path`` is ("a regular file", "a directory", ...) when it exists and is not a
    socket; ``None`` for a socket, or when it cannot be told."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISSOCK(mode):
        return None
    for test, kind in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return kind
    return "a special file"


# --------------------------------------------------------------------------
# Rendering (CLI table, dashboard, the socket's "status text")
# --------------------------------------------------------------------------


def one_line(text: str) -> str:
    """``text`` with control characters escaped, so it cannot break a line-based form."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace")
                   .decode("ascii") for c in text)


def fmt_duration(seconds: float | None) -> str:
    """``3725.2`` -> ``"1h 2m 5s"``; sub-second values in ms."""
    if seconds is None:
        return "n/a"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d"] * bool(d) + [f"{h}h"] * bool(h or d) + [f"{m}m", f"{s}s"]
    return " ".join(parts)


def fmt_wall(ts: float | None, now: float | None = None) -> str:
    """A Unix time as UTC ISO 8601 plus "(12s ago)"."""
    if ts is None:
        return "n/a"
    now = time.time() if now is None else now
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    return f"{iso} ({fmt_duration(max(0.0, now - ts))} ago)"


def _kill_text(kill: dict, now: float) -> str:
    parts = [f"{kill.get('reason')} at {fmt_wall(kill.get('started'), now)}"]
    if kill.get("dry_run"):
        parts.append("DRY RUN, would have sent " + (" then ".join(kill.get("signals") or [])
                                                    or "nothing yet"))
    elif kill.get("signals"):
        parts.append(" then ".join(kill["signals"]))
    if kill.get("value_bytes") is not None:
        parts.append(f"{kill.get('measure')} {fmt_bytes(kill['value_bytes'])}"
                     + (f" / limit {fmt_bytes(kill['limit_bytes'])}"
                        if kill.get("limit_bytes") is not None else ""))
    if kill.get("reaction_seconds") is not None:
        parts.append(f"reaction {kill['reaction_seconds'] * 1000:.1f} ms")
    if kill.get("exit_code") is not None:
        parts.append(f"exit code {kill['exit_code']}")
    hook = kill.get("pre_kill_hook")
    if hook:
        parts.append("pre-kill hook " + ("timed out" if hook.get("timed_out")
                                         else f"exit code {hook.get('exit_code')}"))
    refused = kill.get("refused") or []
    if refused:  # EPERM: these processes never got Sentinel's signals
        parts.append("refused by " + " ".join(f"pid {r['pid']} (uid {r['uid']})"
                                              for r in refused[:5])
                     + (f" and {len(refused) - 5} more" if len(refused) > 5 else ""))
    if kill.get("confirmed") is False:
        left = [str(p["pid"]) for p in kill.get("survivors") or []]
        parts.append("NOT CONFIRMED: still there pid " + " ".join(left[:5])
                     + (f" and {len(left) - 5} more" if len(left) > 5 else ""))
    return ", ".join(parts)


def status_rows(status: dict, now: float | None = None) -> list[tuple[str, str]]:
    """(label, text) rows for a ``status`` reply's ``status`` object; every text is one line."""
    now = time.time() if now is None else now
    s = status
    rows: list[tuple[str, str]] = []
    role = "PID 1" if s.get("pid1") else ("subreaper" if s.get("subreaper") else "parent")
    rows.append(("sentinel", f"{s.get('version')} (pid {s.get('sentinel_pid')}, {role}, "
                             f"{s.get('mode')} mode)"))
    programs = s.get("programs") or []
    if s.get("multi") or len(programs) > 1:  # the rows below are one program's
        main = next((p.get("name") for p in programs if p.get("main")), None)
        rows.append(("program", f"{s.get('program')}"
                     + (" (the main program)" if s.get("program") == main else "")
                     + f"; {len(programs)} listed below" * (len(programs) > 1)))
    phase = str(s.get("phase"))
    if s.get("stopped"):
        phase += f", STOPPED by {s.get('stop_signal') or 'a signal'} (state T; SIGCONT resumes it)"
    if s.get("shutdown_signal") and s.get("main_pid") is not None:
        phase += (f", SHUTTING DOWN ({s['shutdown_signal']} forwarded; exits when the workload "
                  "does)")
    if s.get("dry_run"):
        phase += ", DRY RUN (memory kills are reported, no signal is sent)"
    rows.append(("phase", phase + ("" if s.get("enforcing", True)
                                   else " (enforcement PAUSED: the limit is not applied)")))
    pids = s.get("pids") or []
    workload = f"{s.get('workload')}"
    if s.get("main_pid") is not None:
        workload += f", pid {s['main_pid']}"
    if len(pids) > 1:
        workload += f" ({len(pids)} processes: {', '.join(map(str, pids[:12]))}" \
                    + (", ..." if len(pids) > 12 else "") + ")"
    rows.append(("workload", workload))
    rows.append(("command", shlex.join(s.get("command") or []) or "n/a"))
    mem = s.get("memory") or {}
    measure = s.get("measure")
    if mem:
        rows.append(("memory", f"{measure} {fmt_bytes(mem.get('measure_bytes'))}"
                     + f" (sampled {fmt_duration(mem.get('sample_age_seconds'))} ago)"))
        from sentinel.control.snapshot import memory_figures  # names from the figures table

        rows.append(("figures", ", ".join(figure_text(f) for f in memory_figures(mem))))
    else:
        rows.append(("memory", f"{measure}: no sample yet"))
    limit = s.get("limit_bytes")
    rows.append(("limit", f"{fmt_bytes(limit)} on {measure}" if limit is not None
                 else "none (watching only)"))
    headroom = s.get("headroom_bytes")
    if headroom is not None:
        rows.append(("headroom", fmt_bytes(headroom) if headroom >= 0
                     else f"-{fmt_bytes(-headroom)} (over the limit)"))
    rows.append(("uptime", f"{fmt_duration(s.get('uptime_seconds'))}"
                 + (f" (workload {fmt_duration(s['workload_uptime_seconds'])})"
                    if s.get("workload_uptime_seconds") is not None else "")))
    kills = s.get("kills") or []
    rows.append(("kills", str(s.get("kills_total", 0)) + (
        " (" + ", ".join(f"{k['reason']} {k['signal']} x{k['count']}" for k in kills) + ")"
        if kills else "")))
    rows.append(("restarts", str(s.get("restarts", 0))))
    current = s.get("current_kill")
    if current:
        left = s.get("grace_remaining_seconds")
        rows.append(("stopping", _kill_text(current, now)
                     + (f", SIGKILL in {fmt_duration(left)}" if left is not None else "")))
    last = s.get("last_kill")
    rows.append(("last kill", _kill_text(last, now) if last else "none"))
    if s.get("last_exit_code") is not None:
        rows.append(("last exit", str(s["last_exit_code"])))
    errors = s.get("sample_errors") or []
    if errors:
        rows.append(("probe errors", ", ".join(f"{e['probe']}/{e['reason']} x{e['count']}"
                                               for e in errors)))
    sampling = s.get("sampling") or {}
    if sampling.get("failing"):
        rows.append(("SAMPLING", f"FAILING ({sampling.get('failure')}): the memory limit may "
                                 "not be enforced"))
    for line in alert_lines(s.get("alerts")):
        rows.append(("ALERT", line))
    dropped = (s.get("log") or {}).get("lines_dropped")
    if dropped:
        rows.append(("log", f"{dropped} line(s) dropped (stderr: "
                            f"{(s.get('log') or {}).get('last_error') or 'full'})"))
    rows.extend(kernel_rows(s))
    for name, text in sorted((s.get("components") or {}).items()):
        rows.append((str(name), str(text)))
    return [(label, one_line(text)) for label, text in rows]


def alert_lines(alerts: dict | None) -> list[str]:
    """One line per firing rule of a ``status`` object's ``alerts``
    (``control.snapshot.alerts_view``): ``"leak suspected: growth +2.0 MiB/s, the limit in
    3m 40s"``; none when nothing fires (or an older Sentinel's status)."""
    alerts = alerts or {}
    rules = alerts.get("rules") or {}
    out = []
    titles = {"warning": "memory warning", "leak": "leak suspected",
              "prediction": "limit predicted"}
    for rule in alerts.get("firing") or []:
        entry = rules.get(rule) or {}
        parts = []
        if rule == "warning" and entry.get("share") is not None:
            parts.append(f"{entry['share']:.0%} of the limit")
        growth = alerts.get("growth_bytes_per_second")
        if rule != "warning" and growth is not None:
            sign = "+" if growth >= 0 else "-"
            parts.append(f"growth {sign}{fmt_bytes(round(abs(growth)))}/s")
        left = alerts.get("seconds_to_limit")
        if left is not None:
            parts.append(f"the limit in {fmt_duration(left)}")
        out.append(titles.get(rule, str(rule)) + (": " + ", ".join(parts) if parts else ""))
    return out


def figure_text(figure: dict) -> str:
    """``"cgroup working set 250.0 MiB"``, ``"cgroup oom kills 2"``: one entry of
    ``control.snapshot.memory_figures``, its value in its unit."""
    value = figure.get("value")
    shown = fmt_bytes(value) if figure.get("unit") == "bytes" else str(value)
    return f"{figure.get('label')} {shown}"


def cgroup_text(cgroup: dict | None, notes: dict | None = None) -> str:
    """``"v1 /sys/fs/cgroup/memory/x (read-only), limit 100.0 MiB"``, or why none is
    visible (``kernel_notes["cgroup"]``)."""
    if not cgroup:
        why = (notes or {}).get("cgroup")
        return "none visible" + (f": {why}" if why else "")
    text = f"v{cgroup.get('version')} {cgroup.get('path')}"
    if cgroup.get("read_only"):
        text += " (read-only)"
    limit = cgroup.get("limit_bytes")
    text += f", limit {fmt_bytes(limit)}" if limit is not None else ", no limit"
    if cgroup.get("high_bytes") is not None:
        text += f", high {fmt_bytes(cgroup['high_bytes'])}"
    return text


def kernel_rows(s: dict) -> list[tuple[str, str]]:
    """Rows for the kernel's side of a ``status`` object (absent keys: an older Sentinel,
    no rows): the cgroup, kernel OOM kills, wake-ups, and each kernel note."""
    rows: list[tuple[str, str]] = []
    if "cgroup" not in s and "kernel_oom_kills" not in s:
        return rows
    notes = dict(s.get("kernel_notes") or {})
    rows.append(("cgroup", cgroup_text(s.get("cgroup"), notes)))
    rows.append(("kernel OOM kills", str(s.get("kernel_oom_kills") or 0)))
    woke = {k: v for k, v in sorted((s.get("wakeups") or {}).items()) if v}
    if woke:
        rows.append(("wake-ups", ", ".join(f"{k} x{v}" for k, v in woke.items())))
    for topic, text in sorted(notes.items()):
        if topic != "cgroup" or s.get("cgroup"):
            rows.append((f"kernel {topic}", str(text)))
    return rows


def programs_table(status: dict) -> list[list[str]]:
    """The programs of a ``status`` object as table rows, a header first (``PROGRAM``,
    ``STATE``, ``PID``, ``MEMORY`` (measure / limit), ``KILLS``, ``RESTARTS``); the main
    program marked ``*``. Empty with one program (its rows say it all) or an older
    Sentinel's status (no ``programs``)."""
    programs = status.get("programs") or []
    if len(programs) < 2 and not status.get("multi"):
        return []
    rows = [["PROGRAM", "STATE", "PID", "MEMORY", "KILLS", "RESTARTS"]]
    for p in programs:
        value, limit = p.get("measure_bytes"), p.get("limit_bytes")
        memory = f"{p.get('measure')} {fmt_bytes(value) if value is not None else '-'}" + (
            f" / {fmt_bytes(limit)}" if limit is not None else " / no limit")
        state = str(p.get("state") or p.get("phase"))
        if p.get("enforcing") is False:
            state += " (paused)"
        if p.get("dry_run"):
            state += " (DRY RUN)"
        if (p.get("sampling") or {}).get("failing"):
            state += " (SAMPLING FAILING)"
        rows.append([one_line(str(p.get("name"))) + (" *" if p.get("main") else ""), state,
                     str(p["pid"]) if p.get("pid") is not None else "-", memory,
                     str(p.get("kills_total", 0)), str(p.get("restarts", 0))])
    return rows


def _aligned(table: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]


def status_text(status: dict, now: float | None = None) -> str:
    """``status_rows`` as aligned ``label  text`` lines (no trailing newline), then with
    several programs ``programs_table`` as aligned columns (never an empty line: the
    socket's ``status text`` form ends at one)."""
    rows = status_rows(status, now)
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {text}" for label, text in rows]
    table = programs_table(status)
    if table:
        lines += _aligned(table)
    return "\n".join(lines)


# --------------------------------------------------------------------------
# The CLI's side (sentinel status/stop/kill/signal/limit/pause/resume/start/restart/reload)
# --------------------------------------------------------------------------

EXIT_OK = 0
EXIT_FAILED = 1  # no Sentinel answered, or it refused the command
EXIT_USAGE = 2  # a bad argument (caught here or by Sentinel)
EXIT_UNKNOWN_PROGRAM = 3  # Sentinel runs no program of that name (unknown_program)
_USAGE_CODES = ("bad_argument", "unknown_command")


def _program_word(program: str | None) -> str:
    """`` NAME`` for a command line, or "" without a program. Raises ``ValueError`` for a
    name that is not one word."""
    if program is None:
        return ""
    if not program or program.split() != [program]:
        raise ValueError(f"{program!r} is not a program name (one word, no spaces)")
    return f" {program}"


def program_command(verb: str, program: str | None = None) -> str:
    """The line for ``sentinel stop|kill|pause|resume|status|start|restart [NAME]``.
    Raises ``ValueError`` for a name that is not one word."""
    try:
        return verb + _program_word(program)
    except ValueError as exc:
        raise ValueError(f"{verb}: {exc}") from None


def looks_like_size(word: str) -> bool:
    """A word ``limit`` takes as a size, never as a program name: it starts with a digit
    or a dot, or is ``none``/``off``/``unlimited`` (program names start with a letter)."""
    from sentinel.config.settings import NO_LIMIT_WORDS

    word = word.strip()
    return word[:1].isdigit() or word[:1] in ".+-" or word.lower() in NO_LIMIT_WORDS


def limit_command(size: str | None, program: str | None = None) -> str:
    """The ``limit`` line for ``sentinel limit [NAME] [SIZE|none]``: the size checked here
    (grammar and the 64k floor) before anything is sent. Raises ``ValueError``."""
    from sentinel.config.settings import NO_LIMIT_WORDS, parse_limit

    try:
        name = _program_word(program)
    except ValueError as exc:
        raise ValueError(f"limit: {exc}") from None
    if size is None:
        return "limit" + name
    if size.strip().lower() in NO_LIMIT_WORDS:
        return f"limit{name} none"
    try:
        return f"limit{name} {parse_limit(size)}"  # the 64k floor too, before anything is sent
    except ValueError as exc:
        hint = ("; to set a program's limit: sentinel limit NAME SIZE"
                if program is None and size[:1].isalpha() else "")
        raise ValueError(f"limit: {exc}, or none{hint}") from None


def signal_command(name: str, program: str | None = None) -> str:
    """The ``signal`` line for ``sentinel signal [PROGRAM] NAME`` (``name`` is the
    signal: ``TERM``, ``SIGHUP``, ``10``), sent as its number. Raises ``ValueError``."""
    from sentinel.config.settings import parse_signal

    try:
        return f"signal{_program_word(program)} {parse_signal(name)}"
    except ValueError as exc:
        raise ValueError(f"signal: {exc}") from None


def _say_error(message: str) -> None:
    import sys

    sys.stderr.write(f"sentinel: error: {one_line(message)}\n")
    sys.stderr.flush()


def print_status_table(status: dict, file=None) -> None:
    """``status_rows`` as a two-column table on stdout: drawn by rich on a terminal,
    plain aligned lines (``status_text``) into a pipe or file."""
    import sys

    out = file or sys.stdout
    if not out.isatty():
        print(status_text(status), file=out, flush=True)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, text in status_rows(status):
        table.add_row(label, Text(text))  # Text: no markup in commands like x[1]
    console = Console(file=out)
    console.print(table)
    programs = programs_table(status)
    if programs:
        grid = Table(box=None, pad_edge=False, show_edge=False)
        for i, head in enumerate(programs[0]):
            grid.add_column(head, no_wrap=i != 3, justify="right" if i in (2, 4, 5) else "left")
        for row in programs[1:]:
            grid.add_row(*(Text(cell) for cell in row))
        console.print(grid)


def cli_run(path: str, command: str | None, *, as_json: bool, timeout: float,
            build_error: str | None = None) -> int:
    """Send ``command`` for the CLI, print the outcome, return the exit code.

    Prints a table (``status``) or the reply's message on stdout, or the raw
    JSON reply with ``as_json``; errors are one ``sentinel: error: ...`` line
    on stderr: exit 1 when no Sentinel answers or it refuses (``invalid_state``), 2 for a
    bad argument, 3 for a program it does not run (``unknown_program``). ``build_error``
    is a local argument error (exit 2, nothing sent).
    """
    if build_error is None and command is not None:
        try:
            max_reply = max_reply_bytes()
        except ValueError as exc:
            build_error = str(exc)
    if build_error is not None or command is None:
        _say_error(build_error or "no command")
        return EXIT_USAGE
    try:
        reply = request(path, command, timeout, max_reply)
    except ControlError as exc:
        _say_error(str(exc))
        return EXIT_FAILED
    error = reply.get("error") if isinstance(reply.get("error"), dict) else {}
    code = EXIT_OK if reply.get("ok") else (
        EXIT_USAGE if error.get("code") in _USAGE_CODES else
        EXIT_UNKNOWN_PROGRAM if error.get("code") == "unknown_program" else EXIT_FAILED)
    if as_json:
        print(json.dumps(reply), flush=True)
        return code
    if code != EXIT_OK:
        _say_error(f"{error.get('message', 'refused')} [{error.get('code', '?')}]")
        return code
    if isinstance(reply.get("status"), dict):
        print_status_table(reply["status"])
    else:
        print(one_line(str(reply.get("message", "ok"))), flush=True)
    return code
