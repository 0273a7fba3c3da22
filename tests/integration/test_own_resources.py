"""Sentinel's own descriptors stay bounded whatever the workload's shape: a crowd
of threads or processes at the default soft limit of 1024 (and at a hard limit
too low to raise) is still enforced, persistent sampling failure is said out
loud, and the workload keeps the RLIMIT_NOFILE Sentinel was given, restarts too."""

from __future__ import annotations

import os
import resource
import subprocess
import time

import pytest

from sentinel.control.client import Connection, request
from sentinel.errors import ControlError
from tests.conftest import CHILDREN, PY, wait_until

MiB = 2**20
CROWD = [PY, str(CHILDREN / "crowd.py")]
QUIET = ["--no-metrics", "--k8s-events", "off", "--termination-log", "", "--log-format", "json"]
HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _nofile(soft: int, hard: int):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return preexec


def _status(sock) -> dict | None:
    try:
        reply = request(str(sock), "status", timeout=5.0)
    except ControlError:
        return None
    return reply.get("status") if reply.get("ok") else None


@pytest.fixture
def start_piped(start_sentinel):
    """``start_sentinel`` with the workload's stdin a pipe of ours (closed after the test)."""
    started = []

    def start(args, **kw):
        s = start_sentinel(args, stdin=subprocess.PIPE, **kw)
        started.append(s)
        return s
    yield start
    for s in started:
        try:
            s.popen.stdin.close()
        except OSError:  # the workload is gone: nothing reads it
            pass


def _start_crowd(start_sentinel, tmp_path, crowd: list[str], soft: int, hard: int,
                 extra: tuple[str, ...] = (), pid1: bool = False):
    sock = tmp_path / "sentinel.socket"
    s = start_sentinel([*QUIET, "--socket", str(sock), "--grace-period", "5s", *extra, "--",
                        *CROWD, *crowd], preexec_fn=_nofile(soft, hard), pid1=pid1)
    return s, sock


def _leak_until_killed(s, sock, processes: int) -> None:
    """Set the limit 64 MiB above the crowd's measure, start the leak; it must end by
    SIGTERM (143), not by the SIGKILL after the 5 s grace period, with little overshoot."""
    s.expect("ready ", timeout=120)

    def whole_crowd():
        st = _status(sock)
        return st if st and st["memory"] and len(st["pids"]) >= processes else None
    st = wait_until(whole_crowd, 60, what=lambda: f"a sample of the whole crowd; stderr: "
                    f"{s.stderr()[-2000:]}")
    limit = st["memory"]["measure_bytes"] + 64 * MiB
    assert request(str(sock), f"limit {limit}")["ok"]
    s.popen.stdin.write(b"leak\n")
    s.popen.stdin.flush()
    started = time.monotonic()
    assert s.wait(60) == 143, s.stderr()[-3000:]
    took = time.monotonic() - started
    leaked = max(int(line.split()[1]) for line in s.rest() if line.startswith("leaked "))
    assert leaked <= 64 + 16, (leaked, s.stderr()[-2000:])  # 50 MiB/s: about 1.3 s to the limit
    assert took < 10, took
    kinds = [rec.get("event") for rec in s.logs()]
    assert "limit_crossed" in kinds and "sampling_failed" not in kinds


def test_3000_threads_at_soft_limit_1024_are_still_enforced(start_piped, tmp_path):
    s, sock = _start_crowd(start_piped, tmp_path, ["--threads", "3000"], 1024, HARD)
    assert s.expect("limits ").split()[1:] == ["1024", str(HARD)]
    _leak_until_killed(s, sock, processes=1)


def test_1500_processes_at_soft_limit_1024_are_still_enforced(start_piped, tmp_path, mode):
    s, sock = _start_crowd(start_piped, tmp_path, ["--procs", "1500"], 1024, HARD,
                           pid1=mode == "pid1")
    assert s.expect("limits ").split()[1:] == ["1024", str(HARD)]
    st = wait_until(lambda: _status(sock), 30, what="the control socket")
    # Sentinel raised its own soft limit to the hard one; the workload kept 1024.
    assert st["sampling"]["nofile_soft_limit"] == HARD
    assert st["sampling"]["nofile_given_soft_limit"] == 1024
    _leak_until_killed(s, sock, processes=1501)


def test_1500_processes_with_a_hard_limit_of_256_are_still_enforced(start_piped, tmp_path):
    s, sock = _start_crowd(start_piped, tmp_path, ["--procs", "1500"], 256, 256)
    assert s.expect("limits ").split()[1:] == ["256", "256"]
    _leak_until_killed(s, sock, processes=1501)


def test_kept_descriptors_stay_within_the_budget_that_limit_allows(start_piped, tmp_path):
    # (256 - 128) // 2 = 64 kept; the rest is opened, read and closed each sample.
    s, sock = _start_crowd(start_piped, tmp_path, ["--procs", "1500"], 256, 256)
    s.expect("ready ", timeout=120)
    st = wait_until(lambda: (x := _status(sock)) and len(x["pids"]) >= 1501 and x, 60,
                    what="a sample of the whole crowd")
    assert 0 < st["sampling"]["kept_descriptors"] <= 64
    assert len(os.listdir(f"/proc/{s.pid}/fd")) < 128
    assert not st["sampling"]["failing"]


def test_persistent_sampling_failure_is_said_in_status_and_one_line(start_piped, tmp_path):
    s, sock = _start_crowd(start_piped, tmp_path, ["--procs", "20"], 1024, HARD)
    s.expect("ready ", timeout=30)
    wait_until(lambda: (x := _status(sock)) and len(x["pids"]) >= 21, 30, what="the crowd")
    with Connection(str(sock), 5.0) as conn:  # open before its descriptors run out
        assert conn.request("status")["ok"]  # (and accepted: a connect alone is not)
        # No new descriptor can be opened from now on: every read of /proc fails (EMFILE).
        # (The soft limit only: raising a hard one again needs CAP_SYS_RESOURCE.)
        resource.prlimit(s.pid, resource.RLIMIT_NOFILE, (3, HARD))
        try:
            failing = wait_until(lambda: (x := conn.request("status")["status"])["sampling"]
                                 ["failing"] and x, 10, what="sampling reported failing")
            time.sleep(0.5)  # more failed samples: still one line
            text = conn.request("status text")["text"]  # what `sentinel status` prints
        finally:
            resource.prlimit(s.pid, resource.RLIMIT_NOFILE, (1024, HARD))
        assert "EMFILE" in failing["sampling"]["failure"]
        assert "SAMPLING" in text and "FAILING (children EMFILE)" in text, text
        assert any(e["reason"] == "EMFILE" for e in failing["sample_errors"])
        wait_until(lambda: not conn.request("status")["status"]["sampling"]["failing"], 10,
                   what="sampling recovered")
        assert conn.request("status")["status"]["sampling"]["failing_since"] is None
    lines = [rec for rec in s.logs() if rec.get("event") == "sampling_failed"]
    assert len(lines) == 1, s.stderr()[-3000:]
    assert lines[0]["level"] == "error" and "limit may not be enforced" in lines[0]["msg"]
    assert "out of file descriptors" in lines[0]["msg"]
    assert [rec["event"] for rec in s.logs()].count("sampling_recovered") == 1
    s.popen.stdin.write(b"exit 7\n")
    s.popen.stdin.flush()
    assert s.wait(20) == 7


@pytest.mark.parametrize("soft", [1024, 256])
def test_a_restarted_workload_gets_the_soft_limit_sentinel_was_given(start_piped, tmp_path,
                                                                     soft):
    s, sock = _start_crowd(start_piped, tmp_path, [], soft, HARD,
                           extra=("--restart", "always", "--restart-delay", "100ms"))
    assert s.expect("limits ").split()[1:] == [str(soft), str(HARD)]
    s.expect("ready ")
    st = wait_until(lambda: _status(sock), 30, what="the control socket")
    assert st["sampling"]["nofile_soft_limit"] == HARD  # Sentinel's own, raised
    s.popen.stdin.write(b"exit 0\n")
    s.popen.stdin.flush()
    assert s.expect("limits ", timeout=20).split()[1:] == [str(soft), str(HARD)]
    s.expect("ready ")
    st = _status(sock)
    assert st["restarts"] == 1 and st["sampling"]["nofile_soft_limit"] == HARD
    assert request(str(sock), "stop")["ok"]
    assert s.wait(20) == 143

