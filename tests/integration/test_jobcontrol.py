"""Job control on a real pseudo-terminal: an interactive bash runs Sentinel, Ctrl-Z
stops the job, `fg` resumes it, Ctrl-C reaches the workload, which owns the
terminal's foreground while it runs. And from outside, without a terminal
(`docker kill -s TSTP`, `kill -TSTP 1`): the workload leads its own session, where
the kernel would discard SIGTSTP/SIGTTIN/SIGTTOU, and still stops; SIGCONT resumes
it, and `status` says it is stopped meanwhile."""

from __future__ import annotations

import os
import re
import signal
import shlex

import pexpect
import pytest

from sentinel.control.client import request
from tests.conftest import PY, REPO, SENTINEL, descendants, printer, proc_state, wait_until


def _shell():
    sh = pexpect.spawn("bash", ["--norc", "--noprofile", "-i"], cwd=str(REPO),
                       env={"PS1": "PROMPT$ ", "PATH": "/usr/bin:/bin", "TERM": "dumb"},
                       encoding="utf-8", timeout=15, dimensions=(40, 160))
    sh.expect_exact("PROMPT$ ")
    return sh


def _stopped_job_then_fg(sh, child: int) -> None:
    """After Ctrl-Z: Sentinel stopped itself, so the shell shows a stopped job and
    prompts again, with the workload in state T; ``fg`` resumes both."""
    sh.expect(r"Stopped")
    sh.expect_exact("PROMPT$ ")
    wait_until(lambda: proc_state(child) == "T", 5, what="the workload stopped")
    sh.sendline("fg")
    sh.expect("got child SIGCONT")
    wait_until(lambda: proc_state(child) in ("S", "R"), 5, what="the workload running")


def test_ctrl_z_and_fg_behave_as_in_a_shell():
    sh = _shell()
    child = None
    try:
        cmd = " ".join([*SENTINEL, "run", "--no-metrics", "--no-socket", "--log-level", "warning",
                        "--", *printer("--default", "TSTP")])
        sh.sendline(cmd)
        sh.expect(r"ready child (\d+) (\d+)")
        child = int(sh.match.group(1))
        assert int(sh.match.group(2)) == child  # its own process group, in the foreground
        sh.sendcontrol("z")  # the workload stops (default action of SIGTSTP)
        _stopped_job_then_fg(sh, child)
        # The workload owns the terminal again: Ctrl-C goes to it, not to Sentinel.
        sh.sendcontrol("c")
        sh.expect("got child SIGINT")
        sh.sendline("")
        # Now end it through Sentinel and check the shell gets its terminal back.
        sh.sendcontrol("\\")
        sh.expect("got child SIGQUIT")
        sh.sendcontrol("z")
        sh.expect(r"Stopped")
        sh.expect_exact("PROMPT$ ")
        sh.sendline("kill -KILL %1; wait; echo done-$?")
        sh.expect(r"done-\d+")
        sh.expect_exact("PROMPT$ ")
    finally:
        sh.close(force=True)
        if child:  # Sentinel was SIGKILLed above: its workload is ours to end
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_workload_reads_the_terminal_in_the_foreground():
    sh = _shell()
    try:
        sh.sendline(shlex.join([*SENTINEL, "run", "--no-metrics", "--no-socket", "--log-level",
                                "warning", "--", PY, "-c", "print('got', input(), flush=True)"]))
        sh.sendline("hello-tty")
        sh.expect("got hello-tty")
        sh.expect_exact("PROMPT$ ")
        sh.sendline("echo status-$?")
        sh.expect(re.escape("status-0"))
    finally:
        sh.close(force=True)


def test_ctrl_z_stops_the_job_when_the_workload_does_not_have_the_terminal():
    # stdin is not the terminal, so the workload leads its own session; Ctrl-Z
    # reaches only Sentinel (from the terminal: si_code SI_KERNEL). The workload is
    # stopped with SIGSTOP and Sentinel stops too, so the shell sees a stopped job.
    sh = _shell()
    child = None
    try:
        sh.sendline(" ".join([*SENTINEL, "run", "--no-metrics", "--no-socket", "--log-level",
                              "warning", "--", *printer("--exit-on", "USR1=4")]) + " </dev/null")
        sh.expect(r"ready child (\d+) (\d+)")
        child = int(sh.match.group(1))
        sh.sendcontrol("z")
        _stopped_job_then_fg(sh, child)
        os.kill(child, signal.SIGUSR1)
        sh.expect_exact("PROMPT$ ")
        sh.sendline("echo status-$?")
        sh.expect(re.escape("status-4"))
    finally:
        sh.close(force=True)
        if child:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _status(path) -> dict:
    return request(str(path), "status", timeout=5)["status"]


@pytest.mark.parametrize("sig", [signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU],
                         ids=["TSTP", "TTIN", "TTOU"])
def test_job_control_from_outside_stops_and_resumes_the_workload(start_sentinel, mode, sig,
                                                                 tmp_path):
    path = tmp_path / "s.sock"
    s = start_sentinel(["--socket", str(path), "--no-metrics", "--k8s-events", "off", "--",
                        *printer("--default", "TSTP", "--default", "TTIN", "--default", "TTOU",
                                 "--exit-on", "USR1=4")], pid1=mode == "pid1")
    s.expect("ready child")
    child = descendants(s.pid)[0]  # its PID as we see it (also when Sentinel is PID 1)
    wait_until(path.exists, 10, what="the control socket")
    s.signal(sig)
    wait_until(lambda: proc_state(child) == "T", 5, what="the workload stopped")
    status = wait_until(lambda: (st := _status(path))["stopped"] and st, 5,
                        what="status to say stopped")
    assert status["stop_signal"] == "SIGSTOP" and status["phase"] == "running"
    text = request(str(path), "status text", timeout=5)["text"]
    assert "STOPPED by SIGSTOP (state T; SIGCONT resumes it)" in text
    assert proc_state(s.pid) in ("S", "R")  # Sentinel itself keeps guarding
    s.signal(signal.SIGCONT)
    assert s.expect("got child SIGCONT") == "got child SIGCONT"
    wait_until(lambda: proc_state(child) in ("S", "R"), 5, what="the workload running")
    wait_until(lambda: not _status(path)["stopped"], 5, what="status to say running")
    s.signal(signal.SIGUSR1)
    assert s.wait() == 4  # its exit status still comes back after the resume


def test_rewrite_keeps_a_job_control_signal_as_it_is(start_sentinel):
    # --rewrite TSTP:TSTP: the workload's own handler gets SIGTSTP (a caught one is
    # delivered in an orphaned group too), no SIGSTOP is made of it.
    s = start_sentinel(["--no-metrics", "--no-socket", "--rewrite", "TSTP:TSTP", "--",
                        *printer()])
    s.expect("ready child")
    s.signal(signal.SIGTSTP)
    assert s.expect("got child") == "got child SIGTSTP"
    assert proc_state(descendants(s.pid)[0]) in ("S", "R")
