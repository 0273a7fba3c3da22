"""Racing the kernel on real cgroup v2: Sentinel SIGKILLs before memory.max is reached.

Sentinel runs inside a group with memory.max 200 MiB and memory.oom.group 1 (as the kubelet
sets them) around a leaker that ignores SIGTERM and grows 100 MiB/s. Its limit (60Mi) makes
it send SIGTERM; with a 10 s grace period the leaker would reach memory.max long before the
SIGKILL, and the kernel's group kill would take Sentinel too. At its growth rate Sentinel
sees the hard limit coming and SIGKILLs early: it exits 137 and oom_kill stays 0.
Negative control: with --no-early-sigkill the kernel's group kill takes Sentinel too.
"""

from vmlib import (LEAKER, MiB, SENTINEL, Group, check, fact, finish, json_logs,
                   signals_sent)
import subprocess

LIMIT = 200 * MiB


def race(group: Group, *extra: str):
    proc = group.spawn([*SENTINEL, "run", "--max-rss", "60Mi", "--grace-period", "10s",
                        *extra, "--no-metrics", "--no-socket", "--log-format", "json", "--",
                        "python3", LEAKER, "--rate", "100", "--ignore-term", "--quiet"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=90)
    return proc, err


with Group("early-sigkill", max_bytes=LIMIT) as group:
    proc, err = race(group)
    events, peak = group.events(), group.number("memory.peak")
    logs = json_logs(err)
    sent = [e for e in logs if e.get("event") == "signal_sent"]
    reason = sent[-1]["kill"].get("early_sigkill_reason") if sent else None
    fact(sentinel_exit=proc.returncode, memory_events=events, memory_peak_bytes=peak,
         signals_sent=signals_sent(logs), early_sigkill_reason=reason)
    check("sentinel exits 137 (its child died of its SIGKILL)", proc.returncode == 137,
          stderr=err[-1500:])
    check("SIGTERM then an early SIGKILL", signals_sent(logs) == ["SIGTERM", "SIGKILL"]
          and bool(reason), reason=reason)
    check("no kernel OOM kill (memory.events oom_kill 0)", events["oom_kill"] == 0,
          memory_events=events)
    check("the group's peak stayed below memory.max", peak < LIMIT, memory_peak_bytes=peak)

with Group("no-early-sigkill", max_bytes=LIMIT) as group:
    proc, err = race(group, "--no-early-sigkill")
    events = group.events()
    fact(no_early_sentinel_exit=proc.returncode, no_early_memory_events=events)
    check("without it the kernel's group kill takes Sentinel too", proc.returncode == -9
          and events["oom_group_kill"] >= 1, memory_events=events, stderr=err[-1500:])

finish()
