"""Job control on a real pseudo-terminal: an interactive bash runs Sentinel, Ctrl-Z
stops the job, `fg` resumes it, Ctrl-C reaches the workload, which owns the
terminal's foreground while it runs."""

from __future__ import annotations

import os
import re
import signal
import shlex

import pexpect

from tests.conftest import PY, REPO, SENTINEL, printer, proc_state, wait_until


def _shell():
    sh = pexpect.spawn("bash", ["--norc", "--noprofile", "-i"], cwd=str(REPO),
                       env={"PS1": "PROMPT$ ", "PATH": "/usr/bin:/bin", "TERM": "dumb"},
                       encoding="utf-8", timeout=15, dimensions=(40, 160))
    sh.expect_exact("PROMPT$ ")
    return sh


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
        # Sentinel stops itself so the shell sees a stopped job and prompts again.
        sh.expect(r"Stopped")
        sh.expect_exact("PROMPT$ ")
        wait_until(lambda: proc_state(child) == "T", 5, what="the workload stopped")
        sh.sendline("fg")
        sh.expect("got child SIGCONT")
        wait_until(lambda: proc_state(child) in ("S", "R"), 5, what="the workload running")
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
