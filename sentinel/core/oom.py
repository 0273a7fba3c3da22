"""Telling a kernel OOM kill apart from every other death: a pure decision.

Why not the runtime's flag: podman (and Docker, through containerd's
``OOMKilled``) derive it from events that a cgroup v1 host, a shared cgroup
namespace or an OOM kill of a process other than the container's init do not
always produce; on these machines podman reports ``OOMKilled=false`` after a
real kernel kill. And a SIGKILL alone says nothing: Sentinel sends them, as
do users, a liveness probe's runtime and the kubelet. The kernel's own
counter does not lie: ``oom_kill`` in the cgroup's ``memory.events`` (v2,
mm/memcontrol.c ``memcg_memory_event(MEMCG_OOM_KILL)``) or in
``memory.oom_control`` (v1) rises by one for every task the OOM killer kills
in the group. A workload process that died of a SIGKILL Sentinel did not
send while that counter rose was killed by the kernel.
"""

from __future__ import annotations

import os
import signal

EXITED = "exited"               # a normal exit(), any code
SENTINEL_KILL = "sentinel"       # the SIGKILL Sentinel sent
KERNEL_OOM = "kernel_oom"        # the kernel's OOM killer
SIGNALED = "signaled"            # some other signal, from someone else


def classify_death(wait_status: int, sentinel_sent_sigkill: bool,
                   oom_kill_before: int | None, oom_kill_after: int | None, *,
                   chosen_by_oom_killer: bool = False) -> str:
    """Why a workload process died, from facts Sentinel holds; one of the constants above.

    ``wait_status`` is the raw status from ``os.waitpid``/``os.wait4``;
    ``sentinel_sent_sigkill`` whether Sentinel's ladder sent it SIGKILL;
    ``oom_kill_before``/``oom_kill_after`` the cgroup's ``oom_kill`` counter
    read while the process was alive (the last sample) and after its death
    (``None``: unknown, e.g. no cgroup visible). A SIGKILL death is
    ``KERNEL_OOM`` only when Sentinel did not send it and the counter is
    known on both sides and rose; a counter that went down (the group was
    recreated) proves nothing. Sentinel's own SIGKILL stays
    ``SENTINEL_KILL`` even if the counter rose too: its kill was already
    under way and is the one to report. ``chosen_by_oom_killer``: the eBPF
    probe saw the kernel's OOM killer choose this process (``mark_victim``), which
    makes a SIGKILL Sentinel did not send ``KERNEL_OOM`` without the counter. Pure:
    no I/O, never raises for an int status.
    """
    if os.WIFEXITED(wait_status):
        return EXITED
    if not os.WIFSIGNALED(wait_status):
        return SIGNALED  # stopped/continued statuses are not deaths; never reached by a reaper
    if os.WTERMSIG(wait_status) != signal.SIGKILL:
        return SIGNALED
    if sentinel_sent_sigkill:
        return SENTINEL_KILL
    if chosen_by_oom_killer:
        return KERNEL_OOM
    if oom_kill_before is None or oom_kill_after is None:
        return SIGNALED
    return KERNEL_OOM if oom_kill_after > oom_kill_before else SIGNALED


def is_kernel_oom_kill(wait_status: int, sentinel_sent_sigkill: bool,
                       oom_kill_before: int | None, oom_kill_after: int | None) -> bool:
    """``classify_death(...) == KERNEL_OOM``.

    True for a SIGKILL Sentinel did not send while ``oom_kill`` rose.
    """
    return classify_death(wait_status, sentinel_sent_sigkill,
                          oom_kill_before, oom_kill_after) == KERNEL_OOM
