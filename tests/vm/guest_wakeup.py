"""memory.events wakes Sentinel before its tick (issue 9: wake-ups into the sampler).

A v2 group with memory.high 100 MiB below memory.max 200 MiB (memory.oom.group 1).
Sentinel runs inside it with --measure cgroup, --max-rss 90Mi and a 5 s --interval around
a leaker growing 50 MiB/s: between two ticks the group's usage passes 90 MiB and then
memory.high, whose "high" event (kernfs POLLPRI on memory.events) makes Sentinel sample
at once. It sends SIGTERM well before its next tick (exit 143), says it was woken by
memory_events, and the kernel never OOM-kills (oom_kill 0). The 1 s grace period keeps
the kernel side's early SIGKILL out of it (the leak would reach memory.max in ~2 s, less
than the default 3 s grace: a sample taken before the slow guest runs the leaker's
SIGTERM handler would cut the grace short).
"""

from vmlib import LEAKER, MiB, SENTINEL, Group, check, fact, finish, json_logs, signals_sent
import subprocess
from datetime import datetime

with Group("wakeup", max_bytes=200 * MiB) as group:
    group.write("memory.high", str(100 * MiB))
    proc = group.spawn([*SENTINEL, "run", "--measure", "cgroup", "--max-rss", "90Mi",
                        "--interval", "5s", "--grace-period", "1s", "--no-metrics", "--no-socket", "--log-format",
                        "json", "--", "python3", LEAKER, "--rate", "50", "--max", "190",
                        "--exit-at-max"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    events = group.events()
    logs = json_logs(err)

    def at(kind):
        e = next((e for e in logs if e.get("event") == kind), None)
        return datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp() if e else None

    woken = [e for e in logs if e.get("event") == "wakeup"]
    spawned, crossed = at("spawned"), at("limit_crossed")
    fact(sentinel_exit=proc.returncode, memory_events=events, signals_sent=signals_sent(logs),
         wakeups=[e.get("source") for e in woken],
         crossed_after_seconds=None if None in (spawned, crossed) else crossed - spawned)
    check("sentinel exits 143 (its child died of SIGTERM)", proc.returncode == 143,
          stderr=err[-1500:])
    check("sentinel sent SIGTERM only", signals_sent(logs) == ["SIGTERM"])
    check("memory.events woke sentinel", "memory_events" in [e.get("source") for e in woken],
          stderr=err[-1500:])
    check("the limit was crossed before the 5 s tick",
          spawned is not None and crossed is not None and crossed - spawned < 4.5)
    check("memory.high was passed (a high event)", events["high"] >= 1, memory_events=events)
    check("no kernel OOM kill (memory.events oom_kill 0)", events["oom_kill"] == 0,
          memory_events=events)

finish()
