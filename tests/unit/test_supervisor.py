"""``sentinel.core.supervisor``: every program state x every operator command, on
real ``Guardian`` objects driven into each state on a fake clock: the commands that
fit are carried out, the others refused with a typed ``StateError`` whose message
is the control socket's ``invalid_state`` text."""

from __future__ import annotations

import signal

import pytest

from sentinel.config.settings import Settings
from sentinel.core.guardian import Guardian
from sentinel.core.supervisor import ALLOWED, COMMANDS, ProgramState, check
from sentinel.errors import SentinelError, StateError
from tests.unit.test_guardian_clock import FakeLoop, MiB, ScriptedProbe, make


def _exit(g, loop, status):
    g.child_exited(status)
    loop.advance(0.1)


def starting():
    loop = FakeLoop()
    s = Settings(command=("app",), workload_name="app", max_rss_bytes=None)
    return Guardian(s, None, set(), loop=loop, probe=ScriptedProbe(loop, 0, 0.0),  # type: ignore
                    clock=loop.time), loop


def in_state(state: ProgramState):
    """A guardian (and its loop) in ``state``; ``_finish`` records instead of ending."""
    if state is ProgramState.STARTING:
        return starting()
    restart = ({"restart": "always", "restart_delay_seconds": 5.0}
               if state is ProgramState.BACKING_OFF else {"restart": "never"})
    g, loop, _ = make(limit=None, rate=0.0, grace_period_seconds=1.0, **restart)
    g._finish = lambda code: None  # type: ignore[method-assign]
    loop.advance(0.5)
    if state is ProgramState.STOPPED_BY_SIGNAL:
        g.child_stopped(signal.SIGSTOP)
    elif state is ProgramState.STOPPING:
        g.stop()
    elif state is ProgramState.BACKING_OFF:
        _exit(g, loop, 1 << 8)
    elif state is ProgramState.EXITED:
        _exit(g, loop, 0)
    elif state is ProgramState.STOPPED:
        g.stop()
        _exit(g, loop, signal.SIGTERM)
    elif state is ProgramState.GIVEN_UP:  # still there 10 s after SIGKILL: exit code 71
        g.stop()
        loop.advance(1.0 + 10.1)
        assert g.state.last_kill.confirmed is False
    return g, loop


@pytest.mark.parametrize("state", list(ProgramState), ids=lambda s: s.value)
def test_each_state_is_reached_and_reported(state):
    g, _ = in_state(state)
    assert g.program_state is state


CALLS = {"stop": lambda g: g.stop(), "kill": lambda g: g.kill(),
         "signal": lambda g: g.send_signal(signal.SIGUSR1),
         "limit": lambda g: g.set_limit(64 * MiB), "pause": lambda g: g.pause(),
         "resume": lambda g: g.resume()}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("state", list(ProgramState), ids=lambda s: s.value)
def test_a_command_fits_its_states_and_is_refused_with_a_typed_error_elsewhere(state, command):
    g, _ = in_state(state)
    events_before = len(g.state.events)
    if state in ALLOWED[command]:
        reply = CALLS[command](g)
        assert isinstance(reply, str) and reply
    else:
        with pytest.raises(StateError) as refused:
            CALLS[command](g)
        err = refused.value
        assert isinstance(err, SentinelError) and isinstance(err, ValueError)
        assert (err.state, err.command) == (state.value, command)
        assert str(err) == ("the workload is already being stopped"
                            if state is ProgramState.STOPPING
                            else "no workload is running")
        assert len(g.state.events) == events_before  # nothing done, nothing reported
        assert g.program_state is state


def test_the_transitions_of_a_stop():
    g, loop = in_state(ProgramState.RUNNING)
    g.stop()
    assert g.program_state is ProgramState.STOPPING
    assert g.kill() == "SIGKILL sent"  # cuts the grace period short
    assert g.program_state is ProgramState.STOPPING
    _exit(g, loop, signal.SIGKILL)
    assert g.program_state is ProgramState.STOPPED


def test_stop_and_kill_in_a_back_off_cancel_the_restart():
    for verb in ("stop", "kill"):
        g, loop = in_state(ProgramState.BACKING_OFF)
        assert CALLS[verb](g) == "pending restart cancelled; Sentinel exits"
        assert g.program_state is ProgramState.STOPPED


def test_sigcont_brings_a_stopped_workload_back_to_running():
    g, _ = in_state(ProgramState.STOPPED_BY_SIGNAL)
    g.child_stopped(None)
    assert g.program_state is ProgramState.RUNNING


def test_the_check_table_alone():
    check("limit", ProgramState.GIVEN_UP)
    with pytest.raises(StateError, match="already being stopped"):
        check("stop", ProgramState.STOPPING)
    with pytest.raises(KeyError):
        check("reboot", ProgramState.RUNNING)
