"""Sentinel as a wrapper inside a container-like cgroup v2 group stops a leaker before the
kernel does.

The group has memory.max 100 MiB and memory.oom.group 1 (as the kubelet sets them);
Sentinel runs inside it (its own memory counts too) with --max-rss 60Mi around a leaker
growing 50 MiB/s. Sentinel's SIGTERM stops the leaker: Sentinel exits 143, and the group's
memory.events oom_kill stays 0 (the kernel never had to act).
"""

from vmlib import (LEAKER, MiB, SENTINEL, Group, check, fact, finish, json_logs,
                   signals_sent)
import subprocess

LIMIT = 100 * MiB

with Group("wrapper-sigterm", max_bytes=LIMIT) as group:
    proc = group.spawn([*SENTINEL, "run", "--max-rss", "60Mi", "--no-metrics", "--no-socket",
                        "--log-format", "json", "--", "python3", LEAKER, "--rate", "50"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=90)
    events, peak = group.events(), group.number("memory.peak")
    logs = json_logs(err)
    fact(sentinel_exit=proc.returncode, memory_events=events, memory_peak_bytes=peak,
         memory_max_bytes=group.number("memory.max"), signals_sent=signals_sent(logs))
    check("sentinel exits 143 (its child died of SIGTERM)", proc.returncode == 143,
          stderr=err[-1500:])
    check("sentinel sent SIGTERM only", signals_sent(logs) == ["SIGTERM"])
    check("the leaker got SIGTERM", "got SIGTERM" in out, stdout=out[-500:])
    check("no kernel OOM kill (memory.events oom_kill 0)", events["oom_kill"] == 0,
          memory_events=events)
    check("the group's peak stayed below memory.max", peak < LIMIT, memory_peak_bytes=peak)

finish()
