"""A stopped workload (state T) is stopped politely: every SIGTERM Sentinel sends is
followed by SIGCONT, as systemd does, so the workload runs its SIGTERM handler at
once instead of sitting stopped until SIGKILL at the end of the grace period.

Each case stops the workload from the test with SIGSTOP, then has Sentinel send
SIGTERM: over the memory limit, the operator's `stop`, Sentinel's own shutdown,
and the leftovers after the main process exits. The grace period is 30 s and each
case must end well inside it, through the handler (its exit code, no SIGKILL).
"""

from __future__ import annotations

import os
import signal
import subprocess

from sentinel.control.client import request
from tests.conftest import PY, descendants, printer, proc_state, wait_until

GRACE = ["--grace-period", "30s"]


def _start_stopped(start_sentinel, mode, path, *args):
    s = start_sentinel(["--socket", str(path), "--no-metrics", "--k8s-events", "off",
                        "--log-format", "json", *GRACE, *args, "--",
                        *printer("--exit-on", "TERM=3")], pid1=mode == "pid1")
    s.expect("ready child")
    child = descendants(s.pid)[0]
    wait_until(path.exists, 10, what="the control socket")
    os.kill(child, signal.SIGSTOP)
    wait_until(lambda: request(str(path), "status", timeout=5)["status"]["stopped"], 5,
               what="status to say stopped")
    assert proc_state(child) == "T"
    return s


def _no_sigkill(s) -> bool:
    return not any(rec.get("signal") == "SIGKILL" for rec in s.logs())


def test_a_stopped_workload_over_its_limit_runs_its_sigterm_handler(start_sentinel, mode,
                                                                    tmp_path):
    path = tmp_path / "s.sock"
    s = _start_stopped(start_sentinel, mode, path, "--max-rss", "1Gi")
    assert request(str(path), "limit 1Mi", timeout=5)["ok"]  # now far over it
    assert s.wait(timeout=10) == 3, s.stderr()[-2000:]
    assert _no_sigkill(s) and "got child SIGTERM" in s.rest()


def test_a_stopped_workload_told_stop_runs_its_sigterm_handler(start_sentinel, mode, tmp_path):
    path = tmp_path / "s.sock"
    s = _start_stopped(start_sentinel, mode, path)
    assert request(str(path), "stop", timeout=5)["ok"]
    assert s.wait(timeout=10) == 3, s.stderr()[-2000:]
    assert _no_sigkill(s) and "got child SIGTERM" in s.rest()


def test_a_stopped_workload_at_shutdown_runs_its_sigterm_handler(start_sentinel, mode,
                                                                 tmp_path):
    path = tmp_path / "s.sock"
    s = _start_stopped(start_sentinel, mode, path)
    s.signal(signal.SIGTERM)  # docker stop, pod deletion
    assert s.wait(timeout=10) == 3, s.stderr()[-2000:]
    assert "got child SIGTERM" in s.rest()


LEAVES_A_STOPPABLE_ORPHAN = """\
import os, signal, time
if os.fork() == 0:
    # The leftover: SIGTERM handler, and deaf to the SIGUSR1 that ends its parent.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *a: (os.write(1, b"leftover got SIGTERM\\n"),
                                              os._exit(0)))
    os.write(1, b"leftover ready\\n")
    while True:
        time.sleep(3600)
signal.signal(signal.SIGUSR1, lambda *a: os._exit(5))
os.write(1, b"main ready\\n")
while True:
    time.sleep(3600)
"""


def test_a_stopped_leftover_runs_its_sigterm_handler(start_sentinel, mode):
    s = start_sentinel(["--no-metrics", "--no-socket", *GRACE, "--", PY, "-c",
                        LEAVES_A_STOPPABLE_ORPHAN], pid1=mode == "pid1")
    assert {s.readline(10), s.readline(10)} == {"leftover ready", "main ready"}
    main, leftover = wait_until(lambda: len(descendants(s.pid)) == 2 and descendants(s.pid))
    os.kill(leftover, signal.SIGSTOP)
    wait_until(lambda: proc_state(leftover) == "T", 5, what="the leftover stopped")
    s.signal(signal.SIGUSR1)  # the main process exits 5; the leftover stays
    assert s.wait(timeout=10) == 5, s.stderr()[-2000:]
    assert "leftover got SIGTERM" in s.rest()


def test_watch_mode_a_stopped_target_over_its_limit_runs_its_sigterm_handler(start_sentinel):
    # Sidecar mode: the target is not Sentinel's child (the test started it).
    target = subprocess.Popen(printer("--exit-on", "TERM=3"), stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        assert target.stdout.readline().startswith(b"ready child")
        os.kill(target.pid, signal.SIGSTOP)
        wait_until(lambda: proc_state(target.pid) == "T", 5, what="the target stopped")
        s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json",
                            "--k8s-events", "off", *GRACE, "--max-rss", "1Mi", "--target-pid",
                            str(target.pid)], cmd="watch")
        try:
            assert target.wait(10) == 3, s.stderr()[-2000:]
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the stopped target was not continued: {s.stderr()[-2000:]}")
        assert target.stdout.readline() == b"got child SIGTERM\n"
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
        target.stdout.close()
