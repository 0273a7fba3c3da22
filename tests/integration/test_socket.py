"""The control socket of a real ``sentinel run``: nc examples from the docs, the
socket file's mode, group and lifecycle, peer credentials, and hostile clients
while a leaking workload is watched (no stall of sampling or the ladder, no
leaked descriptor)."""

from __future__ import annotations

import gc
import json
import os
import select
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.control.client import request
from sentinel.errors import ControlError
from sentinel.control.protocol import ERROR_CODES, MAX_LINE_BYTES
from sentinel.control.server import MAX_CLIENTS
from tests.conftest import PY, leaker, printer, require, wait_until

NC = shutil.which("nc")


# ------------------------------------------------------------------ helpers

def answers(path) -> dict | None:
    try:
        reply = request(str(path), "status", timeout=1.0)
    except ControlError:
        return None
    return reply if reply.get("ok") else None


def start_guarded(start_sentinel, path, *args, cmd=None, env=None, wait=True, **kw):
    """A real ``sentinel run --socket path`` (JSON logs); waits until the socket answers."""
    handshake = cmd is None
    cmd = cmd or printer("--exit-on", "USR1=3", "--exit-on", "TERM=0")
    s = start_sentinel(["--socket", str(path), "--no-metrics", "--log-format", "json",
                        "--k8s-events", "off", *args, "--", *cmd], env=env, **kw)
    if handshake:
        s.expect("ready child")  # its handlers are in place
    if wait:
        wait_until(lambda: answers(path) or s.popen.poll() is not None, 15,
                   what=f"the control socket {path}")
        assert s.popen.poll() is None, s.stderr()[-3000:]
    return s


def fds(pid: int) -> tuple[int, int]:
    """(client connections, other descriptors) held by Sentinel: a client connection is
    a socket that /proc/net/unix lists as connected (state 03) with a path (accepted
    sockets carry the listener's path); the listening socket and asyncio's self-pipe
    (no path) count as other descriptors."""
    connected = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[5] == "03":  # connected, with a path: accepted
                connected.add(parts[6])
    clients = other = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:[") and target[8:-1] in connected:
            clients += 1
        else:
            other += 1
    return clients, other


def settle_fds(pid: int, baseline: tuple[int, int], timeout: float = 10.0) -> None:
    """Wait until Sentinel holds no client socket and its other descriptors are back."""
    wait_until(lambda: fds(pid) == baseline, timeout,
               what=f"sentinel's descriptors back to {baseline} (now {fds(pid)})")


def idle_baseline(pid: int) -> tuple[int, int]:
    """Sentinel's descriptors with no client connected (the readiness probe's gone too)."""
    return wait_until(lambda: (lambda n: n[0] == 0 and (0, n[1]))(fds(pid)), 10,
                      what="no client connected")


def connect(path, timeout: float = 5.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
    except BaseException:
        s.close()
        raise
    return s


def connect_all(stack: ExitStack, path, n: int) -> list[socket.socket]:
    """``n`` connections to ``path``, each closed by ``stack``: also the ones made before
    a connect fails (a full listen queue makes it fail at once with EAGAIN)."""
    return [stack.enter_context(connect(path)) for _ in range(n)]


class NoReply(AssertionError):
    """No reply line within the deadline: Sentinel stopped answering (a failure)."""


class Disconnected(AssertionError):
    """The connection closed without a reply (Sentinel may drop a hostile client)."""


class Reader:
    """Reads reply lines from a client socket with deadlines."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.eof = False

    def line(self, timeout: float = 5.0) -> bytes | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoReply(f"no reply line within {timeout}s (have {self.buf[:80]!r})")
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                try:
                    chunk = self.sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    self.eof = True
                self.buf += chunk
        if b"\n" not in self.buf:
            return None
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def json(self, timeout: float = 5.0) -> dict:
        line = self.line(timeout)
        if line is None:
            raise Disconnected("connection closed without a reply")
        return json.loads(line)

    def closed(self, timeout: float = 5.0) -> bool:
        """True once the server closed the connection (EOF) with nothing more to read."""
        return self.line(timeout) is None and self.eof


def code(reply: dict) -> str | None:
    return None if reply["ok"] else reply["error"]["code"]


def event_logs(s, kind: str) -> list[dict]:
    return [r for r in s.logs() if r.get("event") == kind]


def nc(path, data: bytes, timeout: float = 10.0) -> bytes:
    out = subprocess.run([NC, "-U", "-N", str(path)], input=data, capture_output=True,
                         timeout=timeout, check=True)
    return out.stdout


@pytest.fixture
def sock_path(tmp_path):
    return tmp_path / "sentinel.socket"


# ------------------------------------------------------------------ the docs' examples

def test_nc_examples_from_the_docs(start_sentinel, sock_path):
    require("nc")
    start_guarded(start_sentinel, sock_path, "--max-rss", "200Mi")
    wait_until(lambda: answers(sock_path)["status"]["memory"], what="a first sample")
    out = nc(sock_path, b"status\n")
    assert out.count(b"\n") == 1
    s = json.loads(out)["status"]
    assert s["phase"] == "running" and s["main_pid"] in s["pids"]
    assert s["memory"]["rss_bytes"] > 0 and s["limit_bytes"] == 200 * 2**20
    assert s["headroom_bytes"] == s["limit_bytes"] - s["memory"]["measure_bytes"]
    assert s["components"]["socket"] == f"listening on {sock_path} (mode 0600)"

    text = nc(sock_path, b"status text\n").decode()
    assert text.endswith("\n\n") and text.count("\n\n") == 1
    lines = text.splitlines()
    assert lines[1].split() == ["phase", "running"]
    assert any(line.split()[:3] == ["limit", "200.0", "MiB"] for line in lines)

    first, second = nc(sock_path, b"limit 300Mi\nlimit\n").splitlines()
    assert json.loads(first) == {"ok": True, "command": "limit", "limit_bytes": 314572800,
                                 "measure": "rss", "message": "limit 300.0 MiB"}
    assert json.loads(second)["message"] == "limit 300.0 MiB on rss"
    bogus = json.loads(nc(sock_path, b"bogus\n"))
    assert code(bogus) == "unknown_command" and bogus["command"] is None
    # printf without a newline, then end of input: answered too.
    assert json.loads(nc(sock_path, b"help"))["command"] == "help"


# ------------------------------------------------------------------ the file

def test_socket_file_is_0600_by_default(start_sentinel, sock_path):
    start_guarded(start_sentinel, sock_path)
    st_ = os.lstat(sock_path)
    assert stat.S_ISSOCK(st_.st_mode) and stat.S_IMODE(st_.st_mode) == 0o600
    assert st_.st_uid == os.geteuid()


def test_socket_mode_and_group(start_sentinel, sock_path):
    s = start_guarded(start_sentinel, sock_path, "--socket-mode", "0660", "--socket-group",
                      "users")
    st_ = os.lstat(sock_path)
    assert stat.S_IMODE(st_.st_mode) == 0o660 and st_.st_gid == 100
    assert answers(sock_path)["status"]["socket"]["group"] == "users"
    assert not [r for r in s.logs() if r["level"] == "warning"]


@pytest.mark.parametrize("how,expected", [("workload-exits", 3), ("stop", 0), ("kill", 137),
                                          ("sigterm", 0)])
def test_socket_file_is_removed_on_exit(start_sentinel, tmp_path, mode, how, expected):
    path = tmp_path / "s.sock"
    s = start_guarded(start_sentinel, path, "--grace-period", "2s", pid1=mode == "pid1")
    with connect(path) as held:
        held_reader = Reader(held)
        held.sendall(b"help\n")
        assert held_reader.json()["ok"]
        if how == "workload-exits":
            assert request(str(path), "signal USR1")["ok"]
        elif how == "sigterm":
            s.signal(15)
        else:
            assert request(str(path), how)["ok"]
        assert s.wait() == expected
        assert not os.path.lexists(path)
        # a connected client is told, then closed
        assert code(held_reader.json()) == "shutting_down" and held_reader.closed()
    if how in ("stop", "kill"):
        (done,) = event_logs(s, "kill_finished")
        assert done["kill"]["reason"] == "operator"


def test_stale_socket_file_is_replaced(start_sentinel, sock_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(sock_path))
    # closed: the file stays, nobody accepts on it: what a SIGKILLed Sentinel leaves
    os.chmod(sock_path, 0o755)  # (inode numbers are reused at once: tell files by mode)
    s = start_guarded(start_sentinel, sock_path)
    assert stat.S_IMODE(os.lstat(sock_path).st_mode) == 0o600
    assert [r for r in s.logs() if r.get("event") == "socket_stale"]


def test_live_socket_is_not_taken_and_the_workload_is_unharmed(start_sentinel, sock_path):
    first = start_guarded(start_sentinel, sock_path)
    inode = os.lstat(sock_path).st_ino
    second = start_guarded(start_sentinel, sock_path, wait=False,
                           cmd=[PY, "-c", "import time; time.sleep(0.5); raise SystemExit(5)"])
    assert second.wait() == 5  # the workload ran to its end; its code passed through
    errors = [r for r in second.logs() if r["level"] == "error"]
    assert len(errors) == 1, second.stderr()
    assert errors[0]["msg"] == (
        f"control socket off: another Sentinel (pid {first.pid}) answers on {sock_path}; give "
        "each Sentinel its own --socket (or --no-socket); the workload runs on without it")
    assert "Traceback" not in second.stderr()
    assert os.lstat(sock_path).st_ino == inode  # not removed by the second one's exit
    assert answers(sock_path)["status"]["sentinel_pid"] == first.pid


@pytest.mark.parametrize("case", ["no-directory", "not-a-socket", "too-long", "no-group"])
def test_unusable_path_leaves_the_socket_off(start_sentinel, tmp_path, case):
    path, args, expect = tmp_path / "s.sock", [], ""
    if case == "no-directory":
        path = tmp_path / "missing" / "s.sock"
        expect = f"directory {tmp_path / 'missing'} does not exist"
    elif case == "not-a-socket":
        path.write_text("precious")
        expect = f"{path} exists and is not a socket"
    elif case == "too-long":
        path = tmp_path / ("x" * 120)
        expect = "more than a unix socket address holds (107)"
    else:
        args, expect = ["--socket-group", "no-such-group-here"], "no group named"
    s = start_guarded(start_sentinel, path, *args, wait=False,
                      cmd=[PY, "-c", "raise SystemExit(4)"])
    assert s.wait() == 4
    (error,) = [r for r in s.logs() if r["level"] == "error"]
    assert error["msg"].startswith("control socket off: ") and expect in error["msg"]
    assert error["msg"].endswith("the workload runs on without it")
    if case == "not-a-socket":
        assert path.read_text() == "precious"
    else:
        assert not os.path.lexists(path)


# ------------------------------------------------------------------ peer credentials

CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connect_error": type(exc).__name__}))
    sys.exit()
s.sendall(b"status\n")
data, eof = b"", False
while True:
    chunk = s.recv(65536)
    if not chunk:
        eof = True
        break
    data += chunk
    if sys.argv[2] == "one" and b"\n" in data:
        break
print(json.dumps({"reply": json.loads(data.split(b"\n")[0]), "eof": eof}))
"""


def run_as(uid: int, gid: int, groups: list[int] | None, path, wait_eof: bool) -> dict:
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={gid}"] + (
        [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"])
    out = subprocess.run([*setpriv, "/usr/bin/python3", "-c", CLIENT, str(path),
                          "eof" if wait_eof else "one"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def shared_dir():
    """A directory other users can reach (pytest's tmp_path is 0700)."""
    d = tempfile.mkdtemp(prefix="sntl-", dir="/tmp")
    os.chmod(d, 0o711)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def test_peer_credentials_decide_not_the_file_mode(start_sentinel, shared_dir):
    require("setpriv", root=True)
    path = shared_dir / "s.sock"
    s = start_guarded(start_sentinel, path, "--socket-mode", "0666", "--socket-group", "users")
    refused = run_as(65534, 65534, None, path, wait_eof=True)  # nobody, no groups
    assert refused["eof"] is True
    assert code(refused["reply"]) == "permission_denied"
    assert refused["reply"]["error"]["message"] == (
        "permission denied: uid 65534 may not use this control socket (allowed: root and "
        "members of group 'users')")
    (log,) = event_logs(s, "socket_refused")
    assert log["level"] == "warning" and log["peer_uid"] == 65534
    assert log["reason"] == "permission_denied"
    # Members of the group are served: by a supplementary group, or the primary one.
    assert run_as(65534, 65534, [100], path, wait_eof=False)["reply"]["ok"] is True
    assert run_as(65534, 100, None, path, wait_eof=False)["reply"]["ok"] is True


def test_other_users_are_refused_without_a_group(start_sentinel, shared_dir):
    require("setpriv", root=True)
    path = shared_dir / "s.sock"
    start_guarded(start_sentinel, path, "--socket-mode", "0666")
    reply = run_as(65534, 100, [100], path, wait_eof=True)["reply"]
    assert code(reply) == "permission_denied" and "allowed: root)" in reply["error"]["message"]
    path2 = shared_dir / "default.sock"
    start_guarded(start_sentinel, path2)  # 0600: the kernel refuses before Sentinel sees it
    assert run_as(65534, 65534, None, path2, wait_eof=True) == {"connect_error":
                                                                "PermissionError"}


# ------------------------------------------------------------------ hostile clients

FAST = {"SENTINEL_SOCKET_IDLE_TIMEOUT": "1s", "SENTINEL_SOCKET_LINE_TIMEOUT": "1s",
        "SENTINEL_SOCKET_WRITE_TIMEOUT": "1s"}


@pytest.fixture
def watched(start_sentinel, sock_path):
    """A Sentinel watching a slowly leaking workload, with 1 s client timeouts; yields
    (running, baseline fd count). Checks no descriptor is left behind afterwards."""
    s = start_guarded(start_sentinel, sock_path, "--max-rss", "2Gi", env=FAST,
                      cmd=leaker("--rate", "2", "--max", "40", "--quiet"))
    baseline = idle_baseline(s.pid)
    yield s, baseline
    settle_fds(s.pid, baseline)
    assert s.popen.poll() is None
    assert answers(sock_path)["status"]["phase"] == "running"


def test_line_longer_than_4k_is_refused_and_disconnected(watched, sock_path):
    with connect(sock_path) as c:
        r = Reader(c)
        c.sendall(b"x" * MAX_LINE_BYTES + b"\n")  # exactly 4 KiB: an ordinary bad command
        assert code(r.json()) == "unknown_command"
        c.sendall(b"status " + b"y" * MAX_LINE_BYTES)  # no newline needed to be too long
        reply = r.json()
        assert code(reply) == "line_too_long" and "4096" in reply["error"]["message"]
        assert r.closed()


def test_bad_bytes_get_errors_and_the_connection_stays_usable(watched, sock_path):
    with connect(sock_path) as c:
        r = Reader(c)
        c.sendall(b"\xff\xfe\xfd\nsta\x00tus\n\n   \nstatus\x07\nstatus\n")
        assert [code(r.json()) for _ in range(5)] == [
            "bad_encoding", "bad_character", "empty_command", "empty_command", "bad_character"]
        assert r.json()["ok"] is True


def test_silent_client_gets_idle_timeout(watched, sock_path):
    t0 = time.monotonic()
    with connect(sock_path) as c:
        r = Reader(c)
        reply = r.json(timeout=5)
        assert code(reply) == "idle_timeout"
        assert r.closed()
    assert 0.9 <= time.monotonic() - t0 < 3.0


def test_one_byte_at_a_time_never_completes_a_line(watched, sock_path):
    with connect(sock_path) as c:
        r = Reader(c)
        t0 = time.monotonic()
        for byte in b"status\n":  # 7 bytes, 0.3 s apart: the line would end after 1.8 s
            try:
                c.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            ready, _, _ = select.select([c], [], [], 0.3)
            if ready:
                break
        reply = r.json()
        assert code(reply) == "line_timeout"
        assert r.closed()
        assert time.monotonic() - t0 < 2.0


def test_client_that_never_reads_is_disconnected(watched, sock_path):
    s, baseline = watched
    with connect(sock_path) as c:
        c.sendall(b"status\n" * 5000)  # about 10 MB of replies, never read
        wait_until(lambda: fds(s.pid) == (1, baseline[1]), 5, what="the client accepted")
        t0 = time.monotonic()
        settle_fds(s.pid, baseline, timeout=5)  # dropped while this end is still open
        assert time.monotonic() - t0 < 4.0
        (dropped,) = wait_until(lambda: event_logs(s, "socket_client_dropped"), 5)
        assert "did not read its replies" in dropped["msg"]


def test_a_hundred_clients_at_once(watched, sock_path):
    s, baseline = watched
    settle_fds(s.pid, baseline)  # every earlier client is gone: 16 free places
    with ExitStack() as stack:
        clients = connect_all(stack, sock_path, 100)
        for c in clients:
            try:
                c.sendall(b"status\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused and closed already; its refusal is still readable
        replies = [Reader(c).json() for c in clients]
    served = [r for r in replies if r["ok"]]
    refused = [r for r in replies if code(r) == "too_many_clients"]
    assert len(served) == MAX_CLIENTS and len(refused) == 100 - MAX_CLIENTS
    assert "too many clients (16 connected)" in refused[0]["error"]["message"]
    assert len(event_logs(s, "socket_refused")) == 1  # the rest counted, not logged
    settle_fds(s.pid, baseline)
    assert answers(sock_path)["status"]["socket"]["clients"] == 1


def test_random_bytes_over_the_socket(watched, sock_path):
    """Arbitrary bytes from a real client: only well-formed replies, then a close."""

    @settings(max_examples=40, deadline=None)
    @given(data=st.lists(st.one_of(st.binary(max_size=300),
                                   st.sampled_from([b"status\n", b"help\n", b"limit\n",
                                                    b"\n", b"\r\n", b"\x00"]),
                                   st.binary(min_size=4000, max_size=4200)), max_size=8))
    def check(data):
        with connect(sock_path) as c:
            payload = b"".join(data)
            try:
                c.sendall(payload)
                c.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed after line_too_long
            r = Reader(c)
            replies = []
            while (line := r.line()) is not None:
                replies.append(line)
        assert r.eof
        for line in replies:
            if line.startswith(b"{"):
                obj = json.loads(line)
                assert isinstance(obj["ok"], bool)
                if not obj["ok"]:
                    assert obj["error"]["code"] in ERROR_CODES
                    assert obj["error"]["code"] not in ("internal", "idle_timeout")
        assert len([x for x in replies if x.startswith(b"{")]) <= payload.count(b"\n") + 1

    check()


# ------------------------------------------------------------------ timing under load

class Hostiles:
    """Hostile clients in threads until ``stop()``: flooders (pipelined status, reading),
    a non-reader, a one-byte-a-second sender, idle connections, connection churn and
    bursts of a hundred connections at once."""

    def __init__(self, path, reply_timeout: float = 5.0) -> None:
        self.path = str(path)
        self.reply_timeout = reply_timeout
        self.halt = threading.Event()
        self.replies = 0
        self.max_sample_age = 0.0
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._guard, args=(f,), daemon=True)
                        for f in (self._flood, self._flood, self._non_reader, self._slow,
                                  self._idle, self._churn, self._burst)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.halt.set()
        for t in self.threads:
            t.join(10)
        assert not any(t.is_alive() for t in self.threads)

    def _guard(self, fn) -> None:
        while not self.halt.is_set():
            try:
                fn()
            except (OSError, Disconnected, ValueError):
                self.halt.wait(0.01)  # dropped by Sentinel, as it should: connect again
            except BaseException as exc:  # no reply in time (NoReply), or a bug in the test
                self.errors.append(exc)
                return

    def _flood(self) -> None:
        with connect(self.path) as c:
            r = Reader(c)
            while not self.halt.is_set():
                c.sendall(b"status\n" * 16)
                for _ in range(16):
                    reply = r.json(self.reply_timeout)
                    if not reply["ok"]:
                        return  # e.g. too_many_clients while others reconnect
                    mem = reply["status"]["memory"]
                    if mem:
                        self.max_sample_age = max(self.max_sample_age, mem["sample_age_seconds"])
                    self.replies += 1

    def _non_reader(self) -> None:
        with connect(self.path) as c:
            c.sendall(b"status\n" * 3000)
            self.halt.wait(3)

    def _slow(self) -> None:
        with connect(self.path) as c:
            for byte in b"status status status status\n":
                if self.halt.wait(0.2):
                    return
                c.sendall(bytes([byte]))

    # Every connection is closed on every path: while a burst fills Sentinel's listen
    # queue a connect fails at once (EAGAIN), and a connection left to the garbage
    # collector is "ResourceWarning: unclosed socket", an error in this suite.

    def _idle(self) -> None:
        with ExitStack() as stack:
            connect_all(stack, self.path, 6)
            self.halt.wait(3)

    def _burst(self) -> None:
        with ExitStack() as stack:
            connect_all(stack, self.path, 100)
            self.halt.wait(0.5)

    def _churn(self) -> None:
        for _ in range(20):
            with connect(self.path) as c:
                c.sendall(b"help\n")
            if self.halt.is_set():
                return


@pytest.mark.parametrize("method", ["_idle", "_burst"])
def test_hostile_clients_close_their_connections_when_a_connect_fails(tmp_path, method):
    """A listener that never accepts, with room for 3 pending connections: the 4th
    connect fails (EAGAIN), and the 3 made before it must be closed, not left to the
    garbage collector (the load test below flaked on that)."""
    path = tmp_path / "full.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(str(path))
        srv.listen(2)  # Linux queues backlog + 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(OSError):
                getattr(Hostiles(path), method)()
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
        # The connections were made and closed: the queue holds them, so a connect fails.
        with pytest.raises(BlockingIOError), ExitStack() as stack:
            connect_all(stack, path, 1)


@pytest.mark.parametrize("server", ["silent", "hangs_up"])
def test_the_hostile_guard_counts_no_reply_as_a_failure_and_a_hang_up_as_normal(tmp_path,
                                                                              server):
    """A server that accepts and never answers is a failure the load test must see (it
    counted any AssertionError, the reply timeout included, as a normal disconnect); one
    that hangs up is what Sentinel may do to a hostile client: connect again."""
    path = tmp_path / f"{server}.sock"
    held: list[socket.socket] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(str(path))
        srv.listen(8)
        srv.settimeout(0.05)
        hostiles = Hostiles(path, reply_timeout=0.3)
        flood = threading.Thread(target=hostiles._guard, args=(hostiles._flood,), daemon=True)
        flood.start()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and flood.is_alive():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            if server == "silent":
                held.append(conn)  # reads nothing, answers nothing
            else:
                conn.close()
        hostiles.halt.set()
        flood.join(5)
        for conn in held:
            conn.close()
    assert not flood.is_alive()
    if server == "silent":
        assert len(hostiles.errors) == 1 and isinstance(hostiles.errors[0], NoReply)
    else:
        assert hostiles.errors == []


def memory_kill(start_sentinel, path, env, hostile: bool) -> tuple[dict, "Hostiles | None"]:
    """Run a leaker into a 120 MiB limit; return the SIGTERM log record (with
    reaction_seconds) and the hostile clients that were connected meanwhile."""
    s = start_guarded(start_sentinel, path, "--max-rss", "120Mi", "--restart", "always",
                      "--restart-delay", "60s", "--restart-max-delay", "60s",
                      "--grace-period", "1s", env=env,
                      cmd=leaker("--rate", "40", "--start-delay", "1.5", "--quiet"))
    baseline = idle_baseline(s.pid)
    hostiles = Hostiles(path) if hostile else None

    def sigterm():
        return [r for r in event_logs(s, "signal_sent")
                if r["signal"] == "SIGTERM" and r["reason"] == "memory_limit"]

    if hostiles:
        with hostiles:
            (sent,) = wait_until(sigterm, 20, what="the memory kill")
    else:
        (sent,) = wait_until(sigterm, 20, what="the memory kill")
    last_kill = wait_until(lambda: (answers(path) or {}).get("status", {}).get("last_kill"), 10)
    assert last_kill["reaction_seconds"] == sent["reaction_seconds"]
    assert last_kill["reason"] == "memory_limit" and last_kill["signals"][0] == "SIGTERM"
    settle_fds(s.pid, baseline)
    return sent, hostiles


def test_reaction_to_a_limit_crossing_is_unchanged_by_hostile_clients(start_sentinel,
                                                                      tmp_path):
    env = {"SENTINEL_SOCKET_LINE_TIMEOUT": "1s", "SENTINEL_SOCKET_WRITE_TIMEOUT": "1s"}
    quiet, _ = memory_kill(start_sentinel, tmp_path / "quiet.sock", env, hostile=False)
    loaded, hostiles = memory_kill(start_sentinel, tmp_path / "loaded.sock", env, hostile=True)
    assert not hostiles.errors
    print(f"reaction quiet {quiet['reaction_seconds']:.4f}s, loaded "
          f"{loaded['reaction_seconds']:.4f}s, {hostiles.replies} flood replies, "
          f"max sample age {hostiles.max_sample_age:.3f}s")
    # The normal range: within about one resting sampling period (0.1 s) of the
    # crossing (near the limit the sampler runs faster: a quiet run shows a few ms).
    # A server that blocked the loop 20 ms per command measured 0.37 s here.
    assert quiet["reaction_seconds"] < 0.15
    assert loaded["reaction_seconds"] < 0.15, (quiet, loaded)
    # Samples stayed fresh while the flood was answered: a period plus scheduling
    # noise on a shared 2-core machine (0.16-0.22 s seen; 0.53 s with that server).
    assert hostiles.max_sample_age < 0.35
    assert hostiles.replies > 200, "the flood did not happen: the test would prove nothing"


def test_a_pending_shutdown_shows_in_status_and_a_repeated_signal_is_logged(start_sentinel,
                                                                          sock_path, mode):
    # The workload handles SIGTERM by printing it and carrying on (a slow shutdown):
    # Sentinel forwards, waits for it, and says so instead of looking "running".
    import signal as sig

    from sentinel.control.client import status_rows, status_text

    def status():
        reply = answers(sock_path)
        return reply["status"] if reply else None

    s = start_guarded(start_sentinel, sock_path, cmd=printer("--exit-on", "USR1=3"),
                      pid1=(mode == "pid1"))
    s.expect("ready")
    assert status()["shutdown_signal"] is None
    s.signal(sig.SIGTERM)
    s.expect("got child SIGTERM")
    now = wait_until(lambda: (r := status()) and r.get("shutdown_signal") and r, 10,
                     what="shutdown_signal in status")
    assert now["shutdown_signal"] == "SIGTERM" and now["main_pid"] is not None
    assert "SHUTTING DOWN (SIGTERM forwarded" in status_text(now)
    s.signal(sig.SIGTERM)
    s.expect("got child SIGTERM")
    wait_until(lambda: [e for e in s.logs() if e.get("event") == "shutdown"
                        and "again" in e["msg"]], 10, what="the repeated SIGTERM logged")
    s.signal(sig.SIGUSR1)
    assert s.wait() == 3


def test_status_names_the_real_cgroup_and_every_figure_it_reads(start_sentinel, tmp_path):
    # This host's memory controller is cgroup v1 (hybrid): the workload shares
    # Sentinel's group, which `sentinel run` publishes for status and the TUI.
    from sentinel.control.client import status_rows

    path = tmp_path / "s.sock"
    s = start_guarded(start_sentinel, path)
    status = wait_until(lambda: (r := answers(path)) and r["status"]["memory"] and r["status"],
                        10, what="a sample in status")
    cgroup = status["cgroup"]
    assert cgroup["version"] == 1 and cgroup["path"].startswith("/sys/fs/cgroup/memory")
    assert status["memory"]["cgroup_memory_current_bytes"] > 0
    assert status["kernel_oom_kills"] == 0
    rows = dict(status_rows(status))
    assert rows["cgroup"].startswith(f"v1 {cgroup['path']}")
    assert "cgroup memory current " in rows["figures"] and rows["kernel OOM kills"] == "0"
    s.signal(15)
    s.wait()
