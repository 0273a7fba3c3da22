"""The control socket's server: an AF_UNIX stream socket served from the guardian's loop.

One command per line in, one reply per line out (a JSON object), for as long
as the client keeps the connection open; docs/control-socket.md is the
protocol and its table of error codes. The protocol itself (framing, limits,
replies, error codes) is ``sentinel.control.protocol``; the verbs (one table,
one entry per verb) and the dispatcher are ``sentinel.control.verbs``. Here:

- ``_Connection`` (an ``asyncio.Protocol``): a ``Session`` on a transport, with
  the per-client timers (idle, unfinished line, unread replies). Callbacks,
  not a task per client, so that every bound is a timer handle and a
  client's cost is one bounded piece of work per loop turn.
- ``ControlServer``: creates the socket file (mode, group, stale files),
  accepts through ``loop.create_unix_server``, checks each peer's
  credentials (``SO_PEERCRED``, ``AccessPolicy``) and caps the number of clients.

Sentinel's own failure never harms the workload: when the socket cannot be
created (directory missing, another Sentinel answers on the path, a file in
the way) ``start`` logs one error, sets ``state.components["socket"]`` to
``"off: <why>"`` and Sentinel runs on without it.
"""
from __future__ import annotations

import asyncio
import errno
import grp
import json
import logging
import os
import pwd
import socket
import stat
import struct
import time
from dataclasses import dataclass

from sentinel.control.protocol import Peer, Reply, Session, error_reply
from sentinel.control.verbs import Dispatcher
from sentinel.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

# Defaults of the per-client bounds; each can be overridden with the option
# named in _TUNABLES (validated with the other settings in sentinel.config.settings;
# documented in docs/control-socket.md).
IDLE_TIMEOUT_SECONDS = 60.0  # no command for this long: "idle_timeout", then close
LINE_TIMEOUT_SECONDS = 5.0  # a started line must end (newline) within this
WRITE_TIMEOUT_SECONDS = 5.0  # replies unread for this long: disconnect
MAX_CLIENTS = 16  # connected, authorised clients at once; more are refused
# Replies buffered in user space beyond this pause the client's commands; they
# resume when the client reads (or the write timeout disconnects it).
WRITE_BUFFER_HIGH_BYTES = 64 * 1024
# Commands handled per client per loop turn, so that a client that pipelines
# thousands of commands cannot delay a sample or the ladder by more than this.
LINES_PER_TURN = 4
# A connection being closed keeps reading for at most this long (see
# _Connection._close_with), and only while fewer than MAX_LINGERING are open,
# so a connection flood cannot pile up descriptors.
LINGER_SECONDS = 1.0
MAX_LINGERING = 128
_LISTEN_BACKLOG = 128
_PROBE_TIMEOUT_SECONDS = 0.5  # asking an existing socket whether a Sentinel answers
_REFUSAL_LOG_INTERVAL_SECONDS = 10.0

_TUNABLES = {  # Settings field (--socket-idle-timeout, ...) -> ControlServer argument
    "socket_idle_timeout_seconds": "idle_timeout",
    "socket_line_timeout_seconds": "line_timeout",
    "socket_write_timeout_seconds": "write_timeout",
    "socket_max_clients": "max_clients",
}

# ---------------------------------------------------------------- access


def peer_credentials(sock) -> Peer:
    """``SO_PEERCRED`` of a connected AF_UNIX socket (as the peer was at ``connect``)."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return Peer(*struct.unpack("3i", data))


def _process_groups(pid: int) -> set[int] | None:
    """The supplementary groups of ``pid`` from /proc (``None`` if unreadable)."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        return None
    return None


@dataclass(frozen=True)
class AccessPolicy:
    """Who may use the socket: root, Sentinel's own user, and members of ``gid``."""

    uid: int
    gid: int | None = None
    group: str | None = None

    def allows(self, peer: Peer) -> bool:
        if peer.uid == 0 or peer.uid == self.uid:
            return True
        if self.gid is None:
            return False
        if peer.gid == self.gid:
            return True
        groups = _process_groups(peer.pid)
        if groups is not None:
            return self.gid in groups
        # The peer is in another PID namespace: fall back to the group database.
        try:
            name = pwd.getpwuid(peer.uid).pw_name
            return name in grp.getgrgid(self.gid).gr_mem
        except KeyError:
            return False

    def describe(self) -> str:
        who = "root" + (f", uid {self.uid}" if self.uid != 0 else "")
        return who + (f" and members of group {self.group!r}" if self.group else "")


def resolve_group(group: str) -> int:
    """A group name or number as a gid. Raises ``ValueError``."""
    if group.strip().isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"--socket-group: no group named {group!r}") from None


# ---------------------------------------------------------------- the socket file


class SocketUnavailable(Exception):
    """The control socket cannot be created; the message says why and what to do."""


def _who_answers(path: str) -> str | None:
    """Connect to ``path``; ``None`` if nobody listens (a stale file), else who answers."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(_PROBE_TIMEOUT_SECONDS)
    try:
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        except (BlockingIOError, TimeoutError, socket.timeout):
            return "a busy listener"  # backlog full: alive
        except PermissionError:
            raise SocketUnavailable(f"{path} exists and cannot be checked (permission denied); "
                                    "remove it or choose another --socket") from None
        try:
            # MSG_NOSIGNAL: a listener that hangs up raises no SIGPIPE at Sentinel
            # (defence in depth: the guardian never forwards a self-caused one).
            probe.sendall(b"status\n", socket.MSG_NOSIGNAL)
            data = b""
            deadline = time.monotonic() + _PROBE_TIMEOUT_SECONDS
            while b"\n" not in data and len(data) < 65536:
                probe.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = probe.recv(65536)
                if not chunk:
                    break
                data += chunk
            reply = json.loads(data.split(b"\n", 1)[0])
            pid = (reply.get("status") or {}).get("sentinel_pid")
            return f"another Sentinel (pid {pid})" if pid else "another Sentinel"
        except (OSError, ValueError, AttributeError):
            return "another process"
    finally:
        probe.close()


def create_listener(path: str, mode: int, gid: int | None) -> tuple[socket.socket, os.stat_result]:
    """Bind and listen on ``path`` with ``mode`` (and group ``gid``); return the socket and
    the file's stat (to recognise it at removal). Replaces a stale socket file; raises
    ``SocketUnavailable`` with a user-facing reason otherwise."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise SocketUnavailable(f"directory {directory} does not exist; create it or pass "
                                "another --socket (or --no-socket)")
    if len(os.fsencode(path)) > 107:
        raise SocketUnavailable(f"path {path!r} is {len(os.fsencode(path))} bytes long, more "
                                "than a unix socket address holds (107); use a shorter --socket")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise SocketUnavailable(f"cannot check {path}: {exc.strerror}") from None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketUnavailable(f"{path} exists and is not a socket; remove it or choose "
                                    "another --socket")
        who = _who_answers(path)
        if who is not None:
            raise SocketUnavailable(f"{who} answers on {path}; give each Sentinel its own "
                                    "--socket (or --no-socket)")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SocketUnavailable(f"cannot remove the stale socket {path}: {exc.strerror}; "
                                    "remove it or choose another --socket") from None
        log.info("replaced the stale control socket %s (no Sentinel answered on it)", path,
                 extra={"event": "socket_stale"})
    sock = socket.socket(socket.AF_UNIX,
                         socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    bound = False
    try:
        # bind() creates the file with 0777 & ~umask: with umask 0177 it is born
        # 0600, so it is never wider than wanted, not even between bind and chmod.
        # (The umask is process-wide; no other thread creates files meanwhile.)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        bound = True
        if gid is not None:
            try:
                os.chown(path, -1, gid)
            except PermissionError:
                raise OSError(errno.EPERM, f"cannot give it to group {gid} (Sentinel's user "
                              "is not root and not a member)") from None
        os.chmod(path, mode)
        sock.listen(_LISTEN_BACKLOG)
        return sock, os.stat(path)
    except OSError as exc:
        sock.close()
        if bound:
            try:
                os.unlink(path)
            except OSError:
                pass
        if exc.errno == errno.EADDRINUSE:
            raise SocketUnavailable(f"{path} was taken while starting; give each Sentinel "
                                    "its own --socket") from None
        raise SocketUnavailable(f"cannot create {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------- connections


class _Connection(asyncio.Protocol):
    """One client on the loop: feeds its ``Session``, writes replies, enforces the bounds."""

    def __init__(self, server: "ControlServer") -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.admitted = False
        self.closing = False
        self.write_paused = False
        self.eof_seen = False
        self.peer: Peer | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._line: asyncio.TimerHandle | None = None
        self._drain: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._turn: asyncio.Handle | None = None

    # -- asyncio callbacks
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        srv = self.server
        srv.connections.add(self)
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_BYTES)
        if srv.closed:
            self._close_with(error_reply("shutting_down", "Sentinel is exiting", close=True))
            return
        try:
            self.peer = peer_credentials(transport.get_extra_info("socket"))
        except OSError as exc:
            log.warning("control socket: no peer credentials (%s); closing", exc,
                        extra={"event": "socket_refused"})
            transport.abort()
            return
        if not srv.policy.allows(self.peer):
            srv.log_refusal("permission_denied", self.peer)
            self._close_with(error_reply(
                "permission_denied", f"permission denied: uid {self.peer.uid} may not use this "
                f"control socket (allowed: {srv.policy.describe()})", close=True))
            return
        if srv.admitted >= srv.max_clients:
            srv.log_refusal("too_many_clients", self.peer)
            self._close_with(error_reply(
                "too_many_clients", f"too many clients ({srv.max_clients} connected); try "
                "again later", close=True))
            return
        self.admitted = True
        srv.admitted += 1
        self.session = Session(srv.dispatcher, self.peer)
        self._idle = self.loop.call_later(srv.idle_timeout, self._on_idle)

    def data_received(self, data: bytes) -> None:
        if self.closing or self.session is None:
            return
        self.session.receive(data)
        self._run()

    def eof_received(self) -> bool:
        self.eof_seen = True
        if self.closing:
            return False  # the lingering close is over: let the transport close
        if self.session is not None:
            self.session.end()
            self._run()
        return True  # keep our side open until the replies are out; _run closes

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()
        if self._drain is None and not self.closing:
            self._drain = self.loop.call_later(self.server.write_timeout, self._on_drain_timeout)

    def resume_writing(self) -> None:
        self.write_paused = False
        self._cancel("_drain")
        if not self.closing:
            self._schedule_turn()

    def connection_lost(self, exc) -> None:
        for name in ("_idle", "_line", "_drain", "_linger", "_turn"):
            self._cancel(name)
        srv = self.server
        srv.connections.discard(self)
        if self.admitted:
            self.admitted = False
            srv.admitted -= 1
        self.transport = None

    # -- the work
    def _schedule_turn(self) -> None:
        if self._turn is None:
            self._turn = self.loop.call_soon(self._run)

    def _run(self) -> None:
        """Answer up to LINES_PER_TURN complete lines; the rest waits for the next turn."""
        self._turn = None
        session, transport = self.session, self.transport
        if session is None or transport is None or self.closing:
            return
        try:
            answered = 0
            while not self.write_paused:
                if answered >= LINES_PER_TURN:
                    transport.pause_reading()
                    self._schedule_turn()
                    return
                reply = session.next_reply()
                if reply is None:
                    break
                answered += 1
                if reply.close:
                    self._close_with(reply)
                    return
                transport.write(reply.data)
            if answered:
                self._cancel("_line")  # a line ended: the next one gets its own bound
                self._cancel("_idle")
                self._idle = self.loop.call_later(self.server.idle_timeout, self._on_idle)
            if self.write_paused:
                return
            if session.done:
                self._close_with(None)
                return
            if session.partial and self._line is None:
                self._line = self.loop.call_later(self.server.line_timeout, self._on_line_timeout)
            transport.resume_reading()
        except Exception as exc:  # never let one client's bug escape into the loop
            log.warning("control socket: dropping a client after an error: %r", exc,
                        extra={"event": "control_error"})
            self._abort()

    def _close_with(self, reply: Reply | None) -> None:
        """Send ``reply`` (if any) and end the connection.

        A lingering close: shut down our sending side and read (and drop) what
        the client still sends until its end of input, then close. Closing at
        once with unread input makes the kernel reset the connection, and the
        client would see ECONNRESET instead of the reply that says why. The
        linger is bounded in time, and skipped when many connections are open.
        """
        self.closing = True
        for name in ("_idle", "_line", "_turn"):
            self._cancel(name)
        transport = self.transport
        if transport is None:
            return
        try:
            if reply is not None:
                transport.write(reply.data)
            if self.eof_seen or len(self.server.connections) > MAX_LINGERING:
                transport.close()
            else:
                transport.write_eof()
                transport.resume_reading()
        except Exception:  # e.g. the peer is already gone: shutdown() fails
            transport.abort()
            return
        if self._linger is None:
            self._linger = self.loop.call_later(LINGER_SECONDS, self._abort)

    def _abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def _on_idle(self) -> None:
        self._idle = None
        if self.write_paused or self.closing or (self.session and self.session.partial):
            return  # the write timeout or the line timeout decides
        log.debug("control socket: closing an idle client (%s)", self.peer)
        self._close_with(error_reply("idle_timeout", f"no command for "
                                     f"{self.server.idle_timeout:g}s; closing the connection",
                                     close=True))

    def _on_line_timeout(self) -> None:
        self._line = None
        if self.closing:
            return
        log.info("control socket: closing a client whose line did not end within %gs (%s)",
                 self.server.line_timeout, self.peer, extra={"event": "socket_client_dropped"})
        self._close_with(error_reply("line_timeout", f"the line did not end within "
                                     f"{self.server.line_timeout:g}s; closing the connection",
                                     close=True))

    def _on_drain_timeout(self) -> None:
        self._drain = None
        log.info("control socket: disconnecting a client that did not read its replies for "
                 "%gs (%s)", self.server.write_timeout, self.peer,
                 extra={"event": "socket_client_dropped"})
        self._abort()

    def _cancel(self, name: str) -> None:
        handle = getattr(self, name)
        if handle is not None:
            handle.cancel()
            setattr(self, name, None)


class ControlServer:
    """The control socket of one guardian. ``start()`` (raises ``SocketUnavailable``),
    then ``close()`` (idempotent; removes the socket file if it is still ours)."""

    def __init__(self, guardian, path: str, *, mode: int = 0o600, group: str | None = None,
                 idle_timeout: float = IDLE_TIMEOUT_SECONDS,
                 line_timeout: float = LINE_TIMEOUT_SECONDS,
                 write_timeout: float = WRITE_TIMEOUT_SECONDS,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.guardian = guardian
        self.loop: asyncio.AbstractEventLoop = guardian.loop
        self.path = path
        self.mode = mode
        self.group = group
        self.idle_timeout = idle_timeout
        self.line_timeout = line_timeout
        self.write_timeout = write_timeout
        self.max_clients = max_clients
        self.policy = AccessPolicy(os.geteuid())
        self.dispatcher = Dispatcher(guardian, self.info)
        self.connections: set[_Connection] = set()
        self.admitted = 0
        self.closed = False
        self._server: asyncio.AbstractServer | None = None
        self._sock: socket.socket | None = None
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file
        self._refusals: dict[str, list] = {}  # reason -> [last log mono, suppressed count]

    def info(self) -> dict:
        return {"path": self.path, "mode": f"{self.mode:04o}", "group": self.group,
                "clients": self.admitted, "max_clients": self.max_clients}

    def start(self) -> None:
        gid = None
        if self.group:
            try:
                gid = resolve_group(self.group)
            except ValueError as exc:
                raise SocketUnavailable(f"{exc}; create the group or fix --socket-group") \
                    from None
        self.policy = AccessPolicy(os.geteuid(), gid, self.group)
        if gid is not None and not self.mode & 0o060:
            log.warning("control socket: --socket-group %s has no effect with --socket-mode "
                        "%04o (the group cannot open the file); use --socket-mode 0660",
                        self.group, self.mode, extra={"event": "component"})
        sock, st = create_listener(self.path, self.mode, gid)
        self._sock, self._file = sock, (st.st_dev, st.st_ino)
        try:
            # Before the guardian's loop runs (start_components): run it just long
            # enough to register the listener.
            self._server = self.loop.run_until_complete(self.loop.create_unix_server(
                lambda: _Connection(self), sock=sock, backlog=_LISTEN_BACKLOG))
        except BaseException:
            sock.close()
            self._cleanup_file()
            raise

    def log_refusal(self, reason: str, peer: Peer) -> None:
        """Log a refused client; at most one line per reason every 10 s (a local flood
        must not flood the log), with the count of the ones left out."""
        now = time.monotonic()
        last = self._refusals.setdefault(reason, [-1e9, 0])
        if now - last[0] < _REFUSAL_LOG_INTERVAL_SECONDS:
            last[1] += 1
            return
        more = f" ({last[1]} more since the last report)" if last[1] else ""
        last[0], last[1] = now, 0
        log.warning("control socket: refused a client (%s): %s%s", reason, peer, more,
                    extra={"event": "socket_refused", "reason": reason, "peer_uid": peer.uid,
                           "peer_pid": peer.pid})

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._server is not None:
            self._server.close()  # stops listening and closes the listening socket
        elif self._sock is not None:
            self._sock.close()
        bye = error_reply("shutting_down", "Sentinel is exiting; closing the connection",
                          close=True)
        for conn in list(self.connections):
            if conn.transport is not None and conn.admitted and not conn.closing:
                conn.transport.write(bye.data)  # sent at once unless its buffer is full
            conn._abort()
        self._cleanup_file()
        if not self.loop.is_running() and not self.loop.is_closed():
            # Let the aborted transports run connection_lost and close their descriptors.
            self.loop.run_until_complete(asyncio.sleep(0))
        self.guardian.state.components["socket"] = "closed"

    def _cleanup_file(self) -> None:
        if self._file is None:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._file:
                os.unlink(self.path)
        except OSError:
            pass
        self._file = None


def _tunables(settings) -> dict:
    """The control-socket limits given in ``settings`` (``None``: the default here)."""
    return {arg: getattr(settings, field) for field, arg in _TUNABLES.items()
            if getattr(settings, field, None) is not None}


def start(guardian, settings) -> ControlServer | None:
    """Start the control socket at ``settings.socket_path``; ``None`` (and one logged error)
    if it cannot be. Sets ``guardian.state.components["socket"]``."""
    components = guardian.state.components
    path = settings.socket_path
    try:
        server = ControlServer(guardian, path, mode=settings.socket_mode,
                               group=settings.socket_group,
                               **_tunables(settings))
        server.start()
    except SocketUnavailable as exc:
        components["socket"] = f"off: {exc}"
        log.error("control socket off: %s; the workload runs on without it", exc,
                  extra={"event": "component", "component": "socket"})
        return None
    except Exception as exc:  # a bug here must not stop Sentinel or the workload
        components["socket"] = f"off: internal error {exc!r}"
        log.error("control socket off after an internal error: %r; the workload runs on "
                  "without it", exc, exc_info=settings.debug,
                  extra={"event": "component", "component": "socket"})
        return None
    components["socket"] = f"listening on {path} (mode {settings.socket_mode:04o}" + \
        (f", group {settings.socket_group}" if settings.socket_group else "") + ")"
    log.info("control socket listening on %s", path,
             extra={"event": "component", "component": "socket"})
    return server
