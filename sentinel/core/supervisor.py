"""One program's states, and which operator command fits which state.

A supervised program (``sentinel run``'s workload, ``sentinel watch``'s target)
is always in exactly one ``ProgramState``:

==================  ==========================================================
``starting``        no process yet (watch mode waiting for its target)
``running``         the main process runs; the limit is enforced
``stopped_by_signal`` the main process is stopped (SIGSTOP/SIGTSTP, state T)
``stopping``        a ladder (SIGTERM -> grace -> SIGKILL) is under way
``backing_off``     it exited and a restart is scheduled (the back-off delay)
``exited``          it exited on its own and is not restarted
``stopped``         it was stopped (operator ``stop``/``kill``, a shutdown
                    signal) and is not restarted
``given_up``        Sentinel gave up: the main process outlived its SIGKILL
                    (exit code 71), or ``--max-restarts`` was reached
==================  ==========================================================

``check(command, state)`` is the one place that says whether an operator command
(``stop``, ``kill``, ``signal``, ``limit``, ``pause``, ``resume``) fits; a command
that does not is refused with a ``StateError`` (the control socket's
``invalid_state`` reply) whose message is the one the socket has always sent.
``Guardian`` (``sentinel.core.guardian``) computes the state and runs the
command; what each command then does is documented there.
"""

from __future__ import annotations

from enum import Enum

from sentinel.errors import StateError


class ProgramState(str, Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPED_BY_SIGNAL = "stopped_by_signal"
    STOPPING = "stopping"
    BACKING_OFF = "backing_off"
    EXITED = "exited"
    STOPPED = "stopped"
    GIVEN_UP = "given_up"


COMMANDS = ("stop", "kill", "signal", "limit", "pause", "resume")
_ALL = frozenset(ProgramState)
_LIVE = frozenset({ProgramState.RUNNING, ProgramState.STOPPED_BY_SIGNAL})
# Which states each command fits. ``stop``/``kill`` in a back-off cancel the
# restart; ``kill`` while stopping cuts the grace period short; the limit and
# enforcement can be changed in any state (they apply to the next run too).
ALLOWED: dict[str, frozenset[ProgramState]] = {
    "stop": _LIVE | {ProgramState.BACKING_OFF},
    "kill": _LIVE | {ProgramState.STOPPING, ProgramState.BACKING_OFF},
    "signal": _LIVE | {ProgramState.STOPPING},
    "limit": _ALL,
    "pause": _ALL,
    "resume": _ALL,
}


def check(command: str, state: ProgramState) -> None:
    """Return if ``command`` fits ``state``; else raise ``StateError`` (its ``state`` and
    ``command`` set) with the reason an operator reads. Raises ``KeyError`` for a
    command that is not one of ``COMMANDS`` (a bug of the caller)."""
    if state in ALLOWED[command]:
        return
    if state is ProgramState.STOPPING:
        message = "the workload is already being stopped"
    else:
        message = "no workload is running"
    raise StateError(message, state=state.value, command=command)


def program_state(*, has_process: bool, stopping: bool, stopped_by_signal: bool,
                  restart_pending: bool, exited: bool, operator_or_shutdown: bool,
                  given_up: bool) -> ProgramState:
    """The state from the supervisor's facts: ``has_process`` (a main process that has
    not exited), ``stopping`` (a ladder under way), ``stopped_by_signal`` (state T),
    ``restart_pending`` (back-off timer set), ``exited`` (the main process exited:
    its leftovers may still be swept, or Sentinel is ending), ``operator_or_shutdown``
    (the end was asked for: no restart), ``given_up``."""
    if restart_pending:
        return ProgramState.BACKING_OFF
    if given_up:  # a main process that outlived its SIGKILL may still be there
        return ProgramState.GIVEN_UP
    if has_process:
        if stopping:
            return ProgramState.STOPPING
        return ProgramState.STOPPED_BY_SIGNAL if stopped_by_signal else ProgramState.RUNNING
    if exited:
        return ProgramState.STOPPED if operator_or_shutdown else ProgramState.EXITED
    return ProgramState.STARTING
