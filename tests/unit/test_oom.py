"""core.oom.classify_death on real wait statuses (a real child killed, exited, signalled)
and every branch of the counter rule."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from sentinel.core import oom


def status_of(sig: int | None, code: int = 0) -> int:
    """A real raw wait status: a child that dies of ``sig`` or exits ``code``."""
    if sig is None:
        child = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    else:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        os.kill(child.pid, sig)
    _pid, status = os.waitpid(child.pid, 0)
    child.returncode = 0  # reaped here; keep Popen from waiting again
    return status


@pytest.fixture(scope="module")
def sigkill():
    return status_of(signal.SIGKILL)


def test_sigkill_not_ours_while_counter_rose_is_a_kernel_oom_kill(sigkill):
    assert oom.classify_death(sigkill, False, 2, 3) == oom.KERNEL_OOM
    assert oom.is_kernel_oom_kill(sigkill, False, 2, 3)


def test_sigkill_not_ours_with_a_still_counter_is_someone_elses(sigkill):
    assert oom.classify_death(sigkill, False, 3, 3) == oom.SIGNALED
    assert not oom.is_kernel_oom_kill(sigkill, False, 3, 3)


def test_our_own_sigkill_stays_ours_even_if_the_counter_rose(sigkill):
    assert oom.classify_death(sigkill, True, 0, 1) == oom.SENTINEL_KILL


@pytest.mark.parametrize("before,after", [(None, 4), (4, None), (None, None), (5, 0)])
def test_unknown_or_reset_counter_proves_nothing(sigkill, before, after):
    assert oom.classify_death(sigkill, False, before, after) == oom.SIGNALED


def test_other_signals_and_exits_are_never_oom_kills():
    assert oom.classify_death(status_of(signal.SIGTERM), False, 0, 1) == oom.SIGNALED
    # exit(137) is not a kill, whatever a shell would print for it.
    assert oom.classify_death(status_of(None, 137), False, 0, 1) == oom.EXITED
    assert oom.classify_death(status_of(None, 0), True, 0, 1) == oom.EXITED


def test_a_victim_the_ebpf_probe_saw_chosen_needs_no_counter(sigkill):
    assert oom.classify_death(sigkill, False, None, None,
                              chosen_by_oom_killer=True) == oom.KERNEL_OOM
    # Sentinel's own SIGKILL stays its own; a normal exit stays an exit.
    assert oom.classify_death(sigkill, True, None, None,
                              chosen_by_oom_killer=True) == oom.SENTINEL_KILL
    assert oom.classify_death(status_of(None), False, None, None,
                              chosen_by_oom_killer=True) == oom.EXITED
