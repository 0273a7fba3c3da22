"""``sentinel watch``: guard a workload Sentinel did not start (sidecar mode).

In a pod with ``shareProcessNamespace: true`` the sidecar sees the
workload's processes. A ``WatchSource`` is where the supervisor (``Guardian``)
gets its workload from: it waits for the target (``sentinel.core.targets`` finds
it; a poll every ``POLL_SECONDS`` with psutil), attaches the supervisor to it, and
from then on Sentinel behaves as ``run`` does: the same sampler over the target's process tree
(``TreeProbe`` rooted at the target, the target included), the same
SIGTERM -> grace -> SIGKILL ladder, now sent to every process of the tree,
and the same state, listeners and command methods, so the metrics exporter,
control socket, Kubernetes Events and dashboard work unchanged
(``sentinel.app.start_components``; ``sentinel.app.serve_watch`` wires them).

The target is not Sentinel's child, so its exit is seen through a pidfd
(``os.pidfd_open``, readable when the process ends) and its exit status is
unknown. When it is gone Sentinel waits for the next one (the kubelet restarts
the container) and attaches again. If a kill was under way, processes of the
old tree that are still alive get the same ladder; if the target exited on
its own, its leftovers are not Sentinel's business.

``--target-pid`` attaches once: after that process is gone a new process
with that PID is a different program, so Sentinel stays idle (use
``--target-name`` or ``--target-cmdline`` for a workload that restarts).
A PID that is Sentinel itself or one of its ancestors is refused at start
(exit code 2): those are never watched, so it would wait forever. A PID with
no process yet is waited for, with one line saying so (a sidecar may start
before its target).

Several equally good matches are a warning on one line: the first
``CANDIDATES_SHOWN`` roots, then "and N more" (``--target-cmdline '.*'`` matches
every process), the one chosen (the oldest), and how to choose explicitly.

Sentinel never exits on its own. SIGTERM or SIGINT make it exit 0 at once
without touching the target: Kubernetes stops each container itself, and the
workload's own shutdown must not depend on its sidecar. Other signals are
ignored (nothing is forwarded: the target has its own parent).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time

from sentinel.core import kernel
from sentinel.config.settings import Settings, signal_name
from sentinel.core.guardian import Guardian
from sentinel.logs import LOGGER_NAME, fmt_bytes
from sentinel.probes.tree import CgroupProbe, TreeProbe, walk_period_for
from sentinel.core.ladder import Ladder, Reach
from sentinel.core.spawn import Child
from sentinel.core.state import PHASE_RUNNING, PHASE_WAITING
from sentinel.core.targets import (
    Candidate, TargetPermissionError, TargetSpec, age_seconds, candidate, check_signalable,
    choose, own_lineage, scan,
)

log = logging.getLogger(LOGGER_NAME)

# How often to look for the target while there is none: psutil reads every
# process's stat, cmdline (and exe for --target-name); a few ms for a pod's
# handful of processes, so 2 Hz costs nothing and attaches within half a second.
POLL_SECONDS = 0.5
# Roots named in the "several matches" line; the rest are counted.
CANDIDATES_SHOWN = 10
_SHUTDOWN = (signal.SIGTERM, signal.SIGINT)


class WatchSource:
    """The source of ``sentinel watch``'s workload: finds the target, attaches the
    supervisor (``Guardian.begin_run``) to it, watches its exit through a pidfd
    (``end_run``), stops the leftovers of a killed target, and sends signals to the
    target's tree (``send``: the target through its pidfd, so a reused PID is never
    hit). SIGTERM/SIGINT end Sentinel with 0 without touching the target; other
    signals are ignored. Give it to ``Guardian(source=...)``, or use
    ``watch_guardian``."""

    # Every signal goes to the whole tree: the target has no process group of
    # Sentinel's making (Guardian reads this).
    signals_tree = True

    def __init__(self, settings: Settings, *, poll_seconds: float = POLL_SECONDS) -> None:
        self.spec = TargetSpec.from_settings(settings)
        self.poll_seconds = poll_seconds
        self.g = None  # the Guardian, set by bind()
        self._pidfd: int | None = None
        self._poll_handle = None
        self._exit_poll_handle = None  # without pidfd_open (Linux < 5.3)
        self._leftover_ladder: Ladder | None = None  # the sweep after a killed target
        self._target: Candidate | None = None
        self._refused: set[tuple[int, float]] = set()
        self._choice_logged: tuple[int, float] | None = None
        self._waiting_logged = False
        self._attached_once = False
        self._tree_seen: tuple[float, tuple[int, ...]] = (0.0, ())
        self._exclude = own_lineage()

    def bind(self, guardian) -> None:
        """Called by ``Guardian.__init__``: the supervisor this source feeds."""
        self.g = guardian
        guardian.state.phase = PHASE_WAITING
        guardian.sample_listeners.append(self._remember_tree)

    @property
    def loop(self):
        return self.g.loop

    # ------------------------------------------------------------------ loop
    def start(self) -> None:
        """Called when the supervisor's loop starts: look for the target."""
        self.loop.call_soon(self._poll)

    def close(self) -> None:
        for handle in (self._poll_handle, self._exit_poll_handle):
            if handle:
                handle.cancel()
        if self._leftover_ladder is not None:
            self._leftover_ladder.cancel()
        self._close_pidfd()

    # ------------------------------------------------------------------ finding
    def _poll(self) -> None:
        self._poll_handle = None
        if self.g.child is not None or (self.g.finished):
            return
        if self.spec.pid is not None and self._attached_once:
            return  # --target-pid attaches once (see the module docstring)
        target, roots = choose(scan(self.spec, self._exclude), self.spec.quality)
        choice = (target.pid, target.create_time) if target is not None else None
        if len(roots) > 1 and choice != self._choice_logged:
            # Once per choice, not per poll: while the choice cannot be attached
            # (another user's process) a busy host's roots change at every poll.
            self._log_candidates(target, roots)
        self._choice_logged = choice
        if choice is not None and choice not in self._refused:
            if self._attach(target):
                return
        if not self._waiting_logged:
            self._waiting_logged = True
            message, reason = self._waiting_line(refused=choice in self._refused)
            log.info("%s", message, extra={"event": "waiting", "reason": reason})
        self._poll_handle = self.loop.call_later(self.poll_seconds, self._poll)

    def _log_candidates(self, target: Candidate, roots: list[Candidate]) -> None:
        shown = roots[:CANDIDATES_SHOWN]
        listed = ", ".join(c.describe(40) for c in shown)
        if len(roots) > len(shown):
            listed += f" and {len(roots) - len(shown)} more"
        log.warning("%d processes match %s equally well: %s; choosing the oldest, %s; to "
                    "choose another, give --target-pid or a --target-cmdline that only it "
                    "matches", len(roots), self.spec.describe(), listed, target.describe(),
                    extra={"event": "candidates", "pids": [c.pid for c in shown],
                           "candidates_total": len(roots)})

    def _waiting_line(self, *, refused: bool) -> tuple[str, str]:
        """The one "waiting" line and its reason: what Sentinel waits for, and why."""
        every = f"checking every {self.poll_seconds:.1f}s"
        pid = self.spec.pid
        if refused:
            return (f"waiting: the process with {self.spec.describe()} may not be signalled "
                    f"(see the error above); {every}", "not_signalable")
        if pid is None:
            return f"waiting for a process with {self.spec.describe()} ({every})", "no_match"
        if os.path.exists(f"/proc/{pid}"):  # candidate() said no: a zombie
            return (f"waiting: pid {pid} has exited and its parent has not reaped it yet (a "
                    f"zombie); a process that starts later with that PID is another program, "
                    f"so prefer --target-name or --target-cmdline ({every})", "zombie")
        return (f"waiting: no process with pid {pid} yet; it may still start (a sidecar can "
                f"start before its target). Sentinel attaches to it once; for a workload that "
                f"restarts use --target-name or --target-cmdline ({every})", "no_such_pid")

    def _attach(self, c: Candidate) -> bool:
        try:
            pidfd: int | None = os.pidfd_open(c.pid)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:  # ESRCH: gone; EINVAL/ENOENT: not a process
                return False
            pidfd = None  # a kernel before 5.3: poll for the exit instead
        now = candidate(c.pid)
        if now is None or now.create_time != c.create_time:  # gone, or the PID was reused
            if pidfd is not None:
                os.close(pidfd)
            return False
        try:
            check_signalable(c)
        except TargetPermissionError as exc:
            if pidfd is not None:
                os.close(pidfd)
            self._refused.add((c.pid, c.create_time))
            self.g.emit("attach_failed", str(exc), logging.ERROR, pid=c.pid, target_uid=c.uid,
                      uid=exc.own_uid)
            return False
        self._pidfd = pidfd
        if pidfd is not None:
            self.loop.add_reader(pidfd, self.target_exited)
        else:
            self._exit_poll_handle = self.loop.call_later(self.poll_seconds, self._exit_poll)
        s = self.g.settings
        # The target's own cgroup (another container's, in a sidecar): its figures in
        # every sample and its memory.events as a wake-up, where it is visible here.
        cgroup = CgroupProbe.for_pid(c.pid, cgroup_root=s.cgroup_root)
        if cgroup is None:
            from sentinel.probes.cgroup import explain_no_cgroup

            self.g.sampling_side.note("cgroup", explain_no_cgroup(
                c.pid, cgroup_root=s.cgroup_root, sidecar=True))
        self._target = c
        self._attached_once = True
        self._waiting_logged = False
        self.g.begin_run(Child(c.pid, c.cmdline or (c.comm,), None, time.monotonic(),
                             c.create_time),
                       TreeProbe(c.pid, include_root=True, measure=s.measure, cgroup=cgroup,
                                 walk_period=walk_period_for(s.measure)))
        st = self.g.state
        st.command = c.cmdline or (c.comm,)
        age = age_seconds(c.pid)
        if age is None:  # gone since: the pidfd reports it next
            age = max(0.0, time.time() - c.create_time)
        st.started_wall = time.time() - age  # as exact as the age (create_time is not)
        self.g.emit("attached", f"attached to {c.describe()}, user {c.uid}, started {age:.1f}s ago"
                  + (f" (limit {fmt_bytes(st.limit_bytes)} {st.measure})" if st.limit_bytes
                     else " (no memory limit: watching only)"),
                  pid=c.pid, command=list(c.cmdline), target_uid=c.uid,
                  age_seconds=round(age, 3))
        self.g.sample_now("attached")
        return True

    # ------------------------------------------------------------------ the target's end
    def _exit_poll(self) -> None:
        self._exit_poll_handle = None
        c = self._target
        if c is None or self.g.child is None:
            return
        now = candidate(c.pid)
        if now is None or now.create_time != c.create_time:
            self.target_exited()
        else:
            self._exit_poll_handle = self.loop.call_later(self.poll_seconds, self._exit_poll)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            try:
                self.loop.remove_reader(self._pidfd)
            except Exception:
                pass
            os.close(self._pidfd)
            self._pidfd = None

    def target_exited(self) -> None:
        """The target is gone (its pidfd became readable, or the poll without one)."""
        self._close_pidfd()
        if self.g.child is None:
            return
        pid = self.g.child.pid
        st = self.g.state
        if self._exit_poll_handle:
            self._exit_poll_handle.cancel()
            self._exit_poll_handle = None
        kill = st.current_kill
        self.g.emit("detached", f"target pid {pid} is gone (exit status unknown: it is not "
                  "Sentinel's child)", pid=pid)
        leftovers: list[tuple[int, float]] = []
        if kill is not None:
            st.last_kill = kill
            st.current_kill = None
            st.grace_deadline_mono = None
            self.g.emit("kill_finished", f"{kill.reason} stop done: {' then '.join(kill.signals)}; "
                      f"target pid {pid} is gone", kill=kill.to_dict())
            leftovers = self._leftovers(pid)
        self.g.end_run()
        self._target = None
        st.phase = PHASE_WAITING
        if leftovers:
            self._stop_leftovers(leftovers)
        if self.spec.pid is not None:
            log.info("--target-pid %d is gone; not attaching again (a new process with that PID "
                     "is another program): idle until stopped", pid,
                     extra={"event": "waiting"})
            return
        self._poll_handle = self.loop.call_later(0.0, self._poll)

    def _remember_tree(self, sample) -> None:
        self._tree_seen = (time.time(), sample.pids)

    def _leftovers(self, gone_pid: int) -> list[tuple[int, float]]:
        """Processes of the last sampled tree still alive (not a reused PID): (pid, start)."""
        seen_wall, pids = self._tree_seen
        out = []
        for pid in pids:
            if pid == gone_pid:
                continue
            c = candidate(pid)
            if c is not None and c.create_time <= seen_wall:
                out.append((pid, c.create_time))
        return out

    def _stop_leftovers(self, procs: list[tuple[int, float]]) -> None:
        """SIGTERM -> grace -> SIGKILL (one ``Ladder``) to ``procs``, (pid, start time)
        pairs: a PID whose start time changed is another process and is left alone.
        No SIGCONT (as before) and no wait after SIGKILL: these are not Sentinel's
        children, so there is no exit status to wait for."""
        grace = self.g.settings.grace_period_seconds
        log.info("stopping %d leftover process(es) of the killed target: %s", len(procs),
                 [p for p, _ in procs], extra={"event": "cleanup"})

        def signaller(sig: int) -> Reach:
            alive = procs if sig != signal.SIGKILL else [
                (p, t) for p, t in procs if (c := candidate(p)) and c.create_time == t]
            if sig == signal.SIGKILL and alive:
                log.warning("SIGKILL to %d leftover process(es) after the %.1fs grace period: %s",
                            len(alive), grace, [p for p, _ in alive],
                            extra={"event": "cleanup"})
            return Reach(self._send_each(alive, sig))

        if self._leftover_ladder is not None:
            self._leftover_ladder.cancel()
        self._leftover_ladder = Ladder(signaller, self.loop, grace_period_seconds=grace,
                                       continue_after_term=False,
                                       on_sigkill=self.g.after_sigkill)
        self._leftover_ladder.start()

    @staticmethod
    def _send_each(procs, sig: int) -> list[int]:
        """kill(2) each of ``procs``; the PIDs it reached (gone or refusing: not)."""
        hit = []
        for pid, _ in procs:
            try:
                os.kill(pid, sig)
                hit.append(pid)
            except OSError:
                pass
        return hit

    # ------------------------------------------------------------------ signals
    def on_signal(self, info: kernel.SignalInfo, target: int) -> bool:
        if info.signo in _SHUTDOWN:
            log.info("received %s from pid %d: exiting; the target is left alone (Kubernetes "
                     "stops each container itself)", signal_name(info.signo), info.pid,
                     extra={"event": "shutdown"})
            self.g.finish(0)
        else:
            log.debug("ignored %s from pid %d: watch mode forwards no signals",
                      signal_name(info.signo), info.pid)
        return False  # no job control either: the target is not Sentinel's job

    def send(self, pid: int, sig: int) -> None:
        """kill(2) ``pid`` with ``sig``; the target itself through its pidfd, so a reused
        PID is never hit. Raises ``ProcessLookupError``/``PermissionError`` as kill(2)."""
        if self.g.child is not None and pid == self.g.child.pid and self._pidfd is not None:
            signal.pidfd_send_signal(self._pidfd, sig)
        else:
            os.kill(pid, sig)


def watch_guardian(settings: Settings, original_mask: set[int], *, version: str = "",
                   loop=None, poll_seconds: float = POLL_SECONDS) -> Guardian:
    """A ``Guardian`` fed by a ``WatchSource``: its workload is found, not spawned.
    ``run()`` returns 0 on SIGTERM/SIGINT."""
    return Guardian(settings, None, original_mask, loop=loop, version=version,
                    source=WatchSource(settings, poll_seconds=poll_seconds))
