"""Sentinel's process: one init and the program it supervises, on one asyncio loop.

``Guardian`` composes the PID-1 duties (``sentinel.core.init.Init``: the
signalfd, forwarding, reaping, job control) with one program's ``Supervisor``
(``sentinel.core.supervisor``: states, sampling, the ladder, restarts, operator
commands), fed by a spawned child (``run``) or a ``WatchSource`` (``watch``).
Exporters (metrics, control socket, Kubernetes Events, dashboard) never get
imported here: they read ``Guardian.state``, subscribe with
``Guardian.listeners``, and call the command methods (``stop``, ``kill``,
``send_signal``, ``set_limit``, ``pause``, ``resume``) from the loop.
"""

from __future__ import annotations

import logging

from sentinel.core.init import Init, exit_code_of, loop_error_handler, run_host
from sentinel.core.supervisor import Supervisor, facts_text, process_facts, real_uid
from sentinel.errors import StateError, UnknownProgram
from sentinel.logs import LOGGER_NAME

__all__ = ["Guardian", "exit_code_of", "facts_text", "process_facts", "real_uid"]

log = logging.getLogger(LOGGER_NAME)


class Guardian(Supervisor):
    """The init plus one supervised program. Create, then ``run()`` until it returns
    Sentinel's exit code. Arguments as ``Supervisor``; ``pid1``/``subreaper`` say
    what the init is."""

    def __init__(self, settings, child, original_mask, *, pid1: bool = False,
                 subreaper: bool = False, **kwargs) -> None:
        super().__init__(settings, child, original_mask, pid1=pid1, subreaper=subreaper,
                         **kwargs)
        # PID-1 duties (signalfd, forwarding, reaping, job control): sentinel.core.init.
        self.init = Init(self.loop, pid1=pid1, subreaper=subreaper, rewrite=settings.rewrite,
                         tty_fd=child.tty_fd if child else None,
                         self_caused=self.state.self_caused_signals)
        self.init.programs.append(self)
        self.late_signal_listeners = self.init.late_signal_listeners  # one list

    # ------------------------------------------------------------------ the host
    # What exporters and the control socket use, the same on a ``Group`` (several
    # programs from a config file, sentinel.core.group): ``state`` holds Sentinel's
    # own figures (components, pid1, self_caused_signals, shutdown_signal) and, here,
    # the one program's too.
    multi = False  # one program: no ``program`` prefix on its log lines and output

    @property
    def programs(self) -> list[Supervisor]:
        """The supervised programs in start order: here the one workload."""
        return [self]

    def program(self, name: str | None = None) -> Supervisor:
        """The program called ``name`` (``None``: the main program, here the only one).
        Raises ``UnknownProgram`` for any other name."""
        if name is None or name == self.state.program:
            return self
        raise UnknownProgram(name, (self.state.program,))

    def start_program(self, name: str | None = None) -> str:
        """``start NAME``: only with several programs (``--config``). Raises
        ``StateError`` here: the one workload's exit ends Sentinel."""
        self.program(name)
        raise StateError("'start' needs several programs (sentinel run --config); the "
                         "workload's exit ends Sentinel", state=self.program_state.value,
                         command="start")

    def restart_program(self, name: str | None = None) -> str:
        """``restart NAME``: only with several programs (``--config``); raises
        ``StateError`` here."""
        self.program(name)
        raise StateError("'restart' needs several programs (sentinel run --config); with one "
                         "workload, Sentinel's container restarts it",
                         state=self.program_state.value, command="restart")

    def reload(self) -> str:
        """``reload``: only with a config file; raises ``StateError`` here."""
        raise StateError("'reload' needs a config file (sentinel run --config FILE)",
                         state=self.program_state.value, command="reload")

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        """Run the loop until the workload is gone for good; return Sentinel's exit code."""
        return run_host(self)

    async def serve(self) -> int:
        self._done = self.loop.create_future()
        self.loop.set_exception_handler(loop_error_handler(self.settings.debug))
        self.init.open()
        if self.child is not None:
            self._adopt(self.child)
        if self.source is not None:
            self.source.start()
        self.init.read_signals()  # anything that arrived between the spawn and now
        return await self._done

    def close(self) -> None:
        super().close()
        self.init.close()
