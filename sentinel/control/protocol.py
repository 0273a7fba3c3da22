"""The control socket's protocol, without a socket: framing, limits, replies, errors.

Pure (no asyncio, no I/O), so that each part is testable alone and the
property test can drive the framing with arbitrary bytes:

- ``Session``: one client's bytes in, replies out (the 4 KiB line limit, CRLF,
  a last unterminated line at end of input). It hands each complete line to
  a dispatcher (``sentinel.control.verbs.Dispatcher``) and returns its reply.
- ``split_words(line)``: a command line's words, or ``CommandError`` for
  NUL/control characters, bad UTF-8 and empty lines.
- ``encode``/``Reply``/``error_reply``: one reply line, always one JSON object
  (except ``status text``); errors are ``{"code", "message"}``, never tracebacks.
- ``ERROR_CODES``: the stable error codes scripts match on (docs/control-socket.md
  has the same table; a unit test keeps the two equal).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sentinel import logs

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 4096  # a longer line is refused and the client disconnected

# Stable: scripts match on them. docs/control-socket.md has the same table
# (a unit test keeps the two equal). A code marked "then closes" ends the
# connection after its reply.
ERROR_CODES: dict[str, str] = {
    "empty_command": "the line was empty or only whitespace",
    "bad_encoding": "the line is not valid UTF-8",
    "bad_character": "the line holds a NUL or another control character",
    "unknown_command": "the first word is not a command; see 'help'",
    "bad_argument": "wrong number of arguments, or an argument that does not parse "
                    "(size, signal, status form)",
    "invalid_state": "the guardian cannot do it now (no workload running, a stop already "
                     "in progress); the message says which",
    "unknown_program": "no program of that name (several programs: sentinel run --config); "
                       "the message lists the names",
    "internal": "a bug in Sentinel; the command may not have been applied",
    "line_too_long": "the line is longer than 4096 bytes (then closes)",
    "line_timeout": "a line was started but not finished within the line timeout (then closes)",
    "idle_timeout": "no command within the idle timeout (then closes)",
    "too_many_clients": "the client limit is reached (then closes)",
    "permission_denied": "the peer's user is not root, Sentinel's user or a member of "
                         "--socket-group (then closes)",
    "shutting_down": "Sentinel is exiting; sent to each connected client (then closes)",
}


def encode(obj: dict) -> bytes:
    """One reply line: compact-ish JSON, ASCII only, newline-terminated."""
    return json.dumps(obj, ensure_ascii=True, allow_nan=False).encode("ascii") + b"\n"


@dataclass(frozen=True)
class Reply:
    """What to send (one JSON line, or the ``status text`` block) and whether to close."""

    data: bytes
    ok: bool
    close: bool = False

    def __post_init__(self) -> None:
        # Every reply leaves through here: a registered secret (a webhook URL, e.g. in a
        # pre-kill hook's output in the kill record) never reaches a client.
        if logs.secrets_registered():
            text = self.data.decode("utf-8", "surrogateescape")
            clean = logs.redact(text)
            if clean != text:
                object.__setattr__(self, "data", clean.encode("utf-8", "surrogateescape"))


def error_reply(code: str, message: str, command: str | None = None,
                close: bool = False) -> Reply:
    """``{"ok": false, "command", "error": {"code", "message"}}``; ``code`` must be in ERROR_CODES."""
    assert code in ERROR_CODES, code
    return Reply(encode({"ok": False, "command": command,
                         "error": {"code": code, "message": message}}), ok=False, close=close)


@dataclass(frozen=True)
class Peer:
    """A client's credentials from ``SO_PEERCRED`` (pid 0 when it is in another PID namespace)."""

    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"pid {self.pid} uid {self.uid} gid {self.gid}"


class CommandError(Exception):
    """A refused command: ``code`` (a key of ``ERROR_CODES``) and a message for the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def split_words(line: bytes) -> list[str]:
    """The whitespace-separated words of one command line (without its newline).

    Raises ``CommandError`` (``bad_character``, ``bad_encoding``, ``empty_command``)."""
    if b"\x00" in line:
        raise CommandError("bad_character", "the line holds a NUL byte; send a command "
                           "such as 'status' followed by a newline")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError("bad_encoding", f"the line is not valid UTF-8 (byte "
                           f"{exc.start}); send a command such as 'status'") from None
    if any((c < " " and c != "\t") or c == "\x7f" for c in text):
        raise CommandError("bad_character", "the line holds a control character; send "
                           "a command such as 'status' followed by a newline")
    words = text.split()
    if not words:
        raise CommandError("empty_command", "empty line; send a command such as "
                           "'status' or 'help'")
    return words


class Session:
    """One client's byte stream cut into command lines and answered. No I/O.

    ``dispatcher`` is anything with ``handle(line: bytes, peer) -> Reply`` that
    never raises (``sentinel.control.verbs.Dispatcher``).

    ``receive(data)`` and ``end()`` (the client shut its side) feed it;
    ``next_reply()`` answers the next complete line, ``None`` when there is
    none. A reply with ``close`` ends the session (line too long). After
    ``end()`` a last unterminated line is still answered, so
    ``printf status | nc -U -N path`` works.
    """

    def __init__(self, dispatcher, peer: Peer | None = None,
                 max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.dispatcher = dispatcher
        self.peer = peer
        self.max_line_bytes = max_line_bytes
        self.closed = False
        self._buf = bytearray()
        self._eof = False

    def receive(self, data: bytes) -> None:
        if not self.closed:
            self._buf += data

    def end(self) -> None:
        self._eof = True

    @property
    def partial(self) -> bool:
        """Bytes of an unfinished line are waiting (call after ``next_reply`` gave ``None``)."""
        return bool(self._buf) and not self.closed

    @property
    def done(self) -> bool:
        """Nothing more will come: closed, or input ended and every line was answered."""
        return self.closed or (self._eof and not self._buf)

    def next_reply(self) -> Reply | None:
        if self.closed:
            return None
        i = self._buf.find(b"\n", 0, self.max_line_bytes + 1)
        if i < 0:
            if len(self._buf) > self.max_line_bytes:
                self.closed = True
                self._buf.clear()
                return error_reply("line_too_long", f"line longer than {self.max_line_bytes} "
                                   "bytes; closing the connection", close=True)
            if not (self._eof and self._buf):
                return None
            i = len(self._buf)  # the last line, unterminated
        line = bytes(self._buf[:i])
        del self._buf[:i + 1]
        if line.endswith(b"\r"):
            line = line[:-1]  # CRLF clients (telnet-style, socat crlf)
        return self.dispatcher.handle(line, self.peer)
