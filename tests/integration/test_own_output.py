"""No write of Sentinel's own blocks its loop or ends it: a stderr pipe nobody
reads, a stderr closed at start (2>&-), a stderr pipe whose reader went away.
Sentinel keeps supervising, counts the lines it could not write, and the
workload keeps its life and its exit status."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from sentinel.control.client import Connection, request
from sentinel.errors import ControlError
from tests.conftest import CHILDREN, PY, SENTINEL, descendants, full_pipe, wait_until

CROWD = [PY, str(CHILDREN / "crowd.py")]
QUIET = ["--no-metrics", "--k8s-events", "off", "--termination-log", "", "--log-format", "json"]


class Started:
    """A Sentinel whose stderr is what the test gives it; stdout and stdin are pipes."""

    def __init__(self, args: list[str], *, stderr=None, preexec_fn=None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
        self.popen = subprocess.Popen([*SENTINEL, "run", *args], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=stderr, env=env,
                                      preexec_fn=preexec_fn, start_new_session=True)

    def expect(self, prefix: str) -> str:
        while True:
            line = self.popen.stdout.readline().decode()
            assert line, f"stdout ended before a line starting {prefix!r}"
            if line.startswith(prefix):
                return line

    def tell(self, line: str) -> None:
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def kill_all(self) -> None:
        for pid in [self.popen.pid, *descendants(self.popen.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.popen.wait(5)
        for f in (self.popen.stdin, self.popen.stdout):
            try:
                f.close()
            except OSError:
                pass


@pytest.fixture
def started():
    out: list[Started] = []

    def start(*args, **kw) -> Started:
        s = Started(*args, **kw)
        out.append(s)
        return s
    yield start
    for s in out:
        s.kill_all()



def _status(sock) -> dict | None:
    try:
        reply = request(str(sock), "status", timeout=5.0)
    except ControlError:
        return None
    return reply["status"] if reply.get("ok") else None


def test_a_stderr_nobody_reads_blocks_neither_the_ladder_nor_the_socket(started, tmp_path):
    r, w = full_pipe()
    sock = tmp_path / "sentinel.socket"
    try:
        s = started([*QUIET, "--socket", str(sock), "--max-rss", "100Mi", "--", *CROWD],
                    stderr=w)
        os.close(w)
        s.expect("ready ")
        wait_until(lambda: _status(sock), 10, what="the control socket")
        with Connection(str(sock), 5.0) as conn:
            # 1200 more log lines than stderr takes: the queue (1000 lines) overflows.
            for _ in range(600):
                assert conn.request("pause")["ok"] and conn.request("resume")["ok"]
            log = conn.request("status")["status"]["log"]
            text = conn.request("status text")["text"]  # what `sentinel status` prints
        assert log["lines_dropped"] >= 150, log
        assert "line(s) dropped (stderr: full)" in text, text
        started_leak = time.monotonic()
        s.tell("leak")
        leaked = []
        while (line := s.popen.stdout.readline().decode()):
            leaked.append(int(line.split()[1]))
        assert s.popen.wait(10) == 143  # SIGTERM at the limit, as with a stderr read
        assert max(leaked) <= 100 + 16 and time.monotonic() - started_leak < 6
    finally:
        os.close(r)


def test_a_stderr_closed_at_start_keeps_the_exit_status(started, tmp_path):
    sock = tmp_path / "sentinel.socket"
    s = started([*QUIET, "--socket", str(sock), "--", *CROWD], preexec_fn=lambda: os.close(2))
    s.expect("ready ")
    st = wait_until(lambda: _status(sock), 10, what="the control socket")
    assert request(str(sock), "pause")["ok"]  # one more line, dropped
    st = _status(sock)
    assert st["log"]["lines_dropped"] >= 3 and st["log"]["last_error"] == "EBADF", st["log"]
    s.tell("exit 3")
    assert s.popen.wait(10) == 3


def test_a_stderr_reader_that_goes_away_harms_nothing(started, tmp_path):
    r, w = os.pipe()
    sock = tmp_path / "sentinel.socket"
    # A shell, not Python: CPython ignores SIGPIPE, a shell dies of it (as Go and C do).
    s = started([*QUIET, "--socket", str(sock), "--", "sh", "-c",
                 'echo ready; read line; exit "${line#exit }"'], stderr=w)
    os.close(w)
    with os.fdopen(r, "rb") as err:
        assert err.readline().startswith(b"{")  # the first line, then the reader leaves
    s.expect("ready")
    wait_until(lambda: _status(sock), 10, what="the control socket")
    for _ in range(5):  # each writes a log line into the broken pipe: EPIPE, SIGPIPE
        assert request(str(sock), "pause")["ok"] and request(str(sock), "resume")["ok"]
    time.sleep(0.2)  # a forwarded SIGPIPE would have killed the workload by now
    st = _status(sock)
    assert st["phase"] == "running" and st["main_pid"], st  # the workload is alive
    st = wait_until(lambda: (x := _status(sock)) and x["log"]["last_error"] and x, 10,
                    what="a failed write in status")
    assert st["log"]["last_error"] == "EPIPE" and st["log"]["lines_dropped"] >= 10
    s.tell("exit 5")
    assert s.popen.wait(10) == 5  # its own status, not 141 (SIGPIPE)
