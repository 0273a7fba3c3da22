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

from sentinel.core.init import Init, exit_code_of
from sentinel.core.supervisor import Supervisor, facts_text, process_facts, real_uid
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

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        """Run the loop until the workload is gone for good; return Sentinel's exit code."""
        try:
            code = self.loop.run_until_complete(self.serve())
            if self.linger is not None:  # the reports of a kill get out; the code is kept
                self.loop.run_until_complete(self.linger(code))
            return code
        finally:
            self.close()

    async def serve(self) -> int:
        self._done = self.loop.create_future()
        self.loop.set_exception_handler(self._on_loop_error)
        self.init.open()
        if self.child is not None:
            self._adopt(self.child)
        if self.source is not None:
            self.source.start()
        self.init.read_signals()  # anything that arrived between the spawn and now
        return await self._done

    def _on_loop_error(self, loop, context: dict) -> None:
        # A bug in a callback (ours or an exporter's) is logged on one line; the
        # loop, and with it signal forwarding, reaping and the ladder, go on.
        exc = context.get("exception")
        log.error("internal error in %s: %s", context.get("handle") or context.get("future")
                  or "the main loop", repr(exc) if exc else context.get("message"),
                  exc_info=exc if self.settings.debug else None, extra={"event": "internal_error"})

    def close(self) -> None:
        super().close()
        self.init.close()
