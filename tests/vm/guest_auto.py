"""--max-rss auto on a real cgroup v2 (issue 9).

1. A group with memory.max 200 MiB and memory.oom.group 1 (the kubelet's): Sentinel inside
   with --max-rss auto (90 % of memory.max, less its own 32 MiB: 148 MiB of the tree's RSS)
   stops a leaker growing 50 MiB/s with SIGTERM (exit 143) before the kernel acts:
   memory.events oom_kill stays 0 (oom.group would have killed Sentinel too).
2. A group with memory.max "max": --max-rss auto is refused with one line, exit 2.
"""

from vmlib import LEAKER, MiB, SENTINEL, Group, check, fact, finish, json_logs, signals_sent
import subprocess

with Group("auto", max_bytes=200 * MiB) as group:
    # A 0.5 s grace: the leak would reach memory.max ~1 s after the SIGTERM, and a grace
    # longer than that lets the kernel side cut it short with an early SIGKILL.
    proc = group.spawn([*SENTINEL, "run", "--max-rss", "auto", "--grace-period", "500ms",
                        "--no-metrics", "--no-socket", "--log-format", "json", "--",
                        "python3", LEAKER, "--rate", "50"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    events, logs = group.events(), json_logs(err)
    crossed = [e for e in logs if e.get("event") == "limit_crossed"]
    fact(sentinel_exit=proc.returncode, memory_events=events, signals_sent=signals_sent(logs),
         auto_limit_bytes=crossed[0]["limit_bytes"] if crossed else None)
    check("sentinel exits 143 (its child died of SIGTERM)", proc.returncode == 143,
          stderr=err[-1500:])
    check("the auto limit is 90 % of memory.max less 32 MiB",
          bool(crossed) and crossed[0]["limit_bytes"] == int(200 * MiB * 0.9) - 32 * MiB)
    check("sentinel sent SIGTERM only", signals_sent(logs) == ["SIGTERM"])
    check("no kernel OOM kill (memory.events oom_kill 0)", events["oom_kill"] == 0,
          memory_events=events)

with Group("auto-unlimited") as group:
    proc = group.spawn([*SENTINEL, "run", "--max-rss", "auto", "--no-metrics", "--no-socket",
                        "--", "true"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    fact(unlimited_exit=proc.returncode, unlimited_stderr=err)
    check("auto without a limit: exit 2", proc.returncode == 2, stderr=err)
    check("auto without a limit: one line naming memory.max",
          len(err.strip().splitlines()) == 1 and 'memory.max is "max"' in err
          and "Traceback" not in err, stderr=err)

finish()
