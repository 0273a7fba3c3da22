"""A signal the kernel raises because of Sentinel's own action is never forwarded.

Every signal is blocked in Sentinel and read from a signalfd, so a SIGPIPE that
the kernel raises at Sentinel for its own write to a peer that has gone (a
control-socket client that hangs up before reading its reply, a stderr reader
such as `| head -1` that exits) would otherwise be forwarded to the workload's
process group and kill it with status 141. A SIGPIPE *sent* to Sentinel (`kill
-PIPE`, `docker kill -s PIPE`) is still forwarded, as tini and dumb-init do, and
so are Sentinel's deliberate signals to itself (the --pdeathsig re-delivery).
Each test runs Sentinel as PID 1 of a new PID namespace and as a subreaper.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import socket
import subprocess
import time

from sentinel.control.client import request
from sentinel.errors import ControlError
from tests.conftest import PY, SENTINEL, descendants, printer, proc_state, wait_until

# A workload that dies of SIGPIPE if it gets one (a shell leaves it at its
# default; Sentinel undoes CPython's SIG_IGN), and exits 7 on SIGUSR2.
# SIGWINCH makes it print "winch" (a handshake). Its own stderr goes to /dev/null:
# dash reports its `sleep` killed by the forwarded SIGUSR2 there, and would die
# of its own SIGPIPE/SIGXFSZ when it shares Sentinel's broken stderr.
SH_WORKLOAD = ["sh", "-c", "exec 2>/dev/null; trap 'exit 7' USR2; trap 'echo winch' WINCH; "
               "echo ready; while :; do sleep 0.02; done"]


def answers(path) -> bool:
    try:
        return bool(request(str(path), "status", timeout=1.0).get("ok"))
    except ControlError:
        return False


def _workload_alive(s) -> bool:
    kids = descendants(s.pid)
    return bool(kids) and proc_state(kids[0]) not in (None, "Z")


def test_hostile_clients_that_hang_up_at_once_do_not_kill_the_workload(
        start_sentinel, mode, tmp_path):
    path = tmp_path / "s.sock"
    s = start_sentinel(["--socket", str(path), "--no-metrics", "--k8s-events", "off",
                        "--log-level", "info", "--", *SH_WORKLOAD], pid1=mode == "pid1")
    s.expect("ready")
    wait_until(path.exists, 10, what="the control socket")
    for _ in range(300):  # connect, ask, hang up before the reply is read
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for _attempt in range(500):
                try:
                    c.connect(str(path))
                    break
                except ConnectionRefusedError:  # the listen backlog is full: a loaded
                    time.sleep(0.01)  # machine, Sentinel not yet scheduled; try again
            c.sendall(b"status\n")
        finally:
            c.close()
    # Then a client that reads: once one is answered, every hostile one before it
    # was answered (written to) or refused (also written to), and the SIGPIPEs
    # those writes raised have been read from the signalfd.
    wait_until(lambda: answers(path) or s.popen.poll() is not None, 15,
               what="a status reply")
    assert s.popen.poll() is None, f"Sentinel exited {s.popen.poll()}: {s.stderr()[-1500:]}"
    assert _workload_alive(s), s.stderr()[-2000:]
    # Seen, counted and said once (a client that hung up before its reply was written).
    counted = request(str(path), "status", timeout=5)["status"]["self_caused_signals"]
    assert counted.get("SIGPIPE", 0) >= 1, counted
    said = [ln for ln in s.stderr().splitlines() if "SIGPIPE raised by Sentinel's own" in ln]
    assert len(said) == 1, said
    s.signal(signal.SIGUSR2)
    assert s.wait() == 7, s.stderr()[-2000:]


def _spawn_with_stderr_pipe(args: list[str], pid1: bool):
    r, w = os.pipe()
    # --kill-child: killing unshare on a failed test takes its namespace with it.
    cmd = (["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"] if pid1 else []) \
        + [*SENTINEL, "run", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=w, stdin=subprocess.DEVNULL,
                         env=env, start_new_session=True)
    os.close(w)
    return p, r


def test_stderr_reader_that_exits_early_does_not_kill_the_workload(mode):
    # `sentinel run ... 2>&1 | head -1`: the reader takes one line and goes away;
    # each later log line is a write to a pipe with no reader (EPIPE + SIGPIPE).
    p, r = _spawn_with_stderr_pipe(["--no-metrics", "--no-socket", "--log-level", "debug",
                                    "--", *SH_WORKLOAD], mode == "pid1")
    try:
        assert p.stdout.readline() == b"ready\n"
        with os.fdopen(r, "rb") as reader:
            assert reader.readline()  # `head -1`
        sentinel = p.pid if mode == "subreaper" else wait_until(
            lambda: (descendants(p.pid) or [None])[0], what="sentinel under unshare")
        # Each forwarded signal is logged at debug level: a write to the dead pipe,
        # which raises SIGPIPE at Sentinel. The next signal is read after that one
        # (a signal pending on the thread is read before the process-wide ones),
        # so a second handshake shows the SIGPIPE did not reach the workload.
        for _ in range(3):
            os.kill(sentinel, signal.SIGWINCH)
            assert p.stdout.readline() == b"winch\n"
        os.kill(sentinel, signal.SIGUSR2)
        assert p.wait(20) == 7  # the workload's own status
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()


def test_a_full_file_size_limit_on_sentinel_s_log_does_not_kill_the_workload(start_sentinel,
                                                                              mode):
    # stderr is a file (the test's) and RLIMIT_FSIZE is already reached: every log
    # write fails with EFBIG and raises SIGXFSZ at Sentinel (the same class as a
    # full file-size limit for the termination log).
    def small_fsize():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))

    s = start_sentinel(["--no-metrics", "--no-socket", "--log-level", "debug", "--", *SH_WORKLOAD],
                       pid1=mode == "pid1", preexec_fn=small_fsize)
    s.expect("ready")
    for _ in range(3):  # each forwarded signal is a debug line: one more SIGXFSZ
        s.signal(signal.SIGWINCH)
        assert s.expect("winch", timeout=5) == "winch"
    s.signal(signal.SIGUSR2)
    assert s.wait() == 7


def test_sigpipe_sent_from_outside_is_still_forwarded(start_sentinel, mode):
    s = start_sentinel(["--no-metrics", "--no-socket", "--", *SH_WORKLOAD], pid1=mode == "pid1")
    s.expect("ready")
    s.signal(signal.SIGPIPE)  # `kill -PIPE <sentinel>`, `docker kill -s PIPE`
    assert s.wait() == 128 + signal.SIGPIPE


def _read_lines(fd: int, count: int, timeout: float) -> list[str]:
    """Up to ``count`` lines from ``fd``, whatever came within ``timeout`` seconds."""
    buf, deadline = b"", time.monotonic() + timeout
    while buf.count(b"\n") < count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").splitlines()[:count]


REAPER = """\
import os, subprocess, sys
subprocess.Popen(sys.argv[1:])
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


def test_sentinel_s_own_pdeathsig_redelivery_is_forwarded():
    # Sentinel's parent is gone before Sentinel sets PR_SET_PDEATHSIG (it exits
    # right after the spawn; Sentinel's interpreter needs tens of ms to get
    # there), so Sentinel is an orphan of the namespace's init (PID 1) and
    # delivers the signal to itself; that one must reach the workload. Sentinel
    # is not PID 1 here (PID 1 has no parent to lose), so this runs once.
    parent = (
        "import subprocess, sys\n"
        f"subprocess.Popen({SENTINEL!r} + ['run', '--no-metrics', '--no-socket', "
        "'--pdeathsig', 'USR1', '--', *sys.argv[1:]])\n"
    )
    p = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
                          PY, "-c", REAPER, PY, "-c", parent, *printer("--exit-on", "USR1=5")],
                         stdout=subprocess.PIPE, start_new_session=True)
    try:
        lines = _read_lines(p.stdout.fileno(), 2, timeout=10)
        assert lines[:1] and lines[0].startswith("ready child"), lines
        assert lines[1:] == ["got child SIGUSR1"], lines
        assert p.wait(20) == 0  # the namespace emptied: Sentinel exited with it
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
