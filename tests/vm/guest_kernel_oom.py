"""Negative control: with Sentinel's limit above the group's memory.max, the kernel kills first.

Same group as guest_wrapper_sigterm (memory.max 100 MiB, memory.oom.group 1) and the same
leaker, but --max-rss 200Mi: the kernel's OOM killer takes the whole group, Sentinel
included (oom.group), so Sentinel dies of SIGKILL without having sent a signal, and
memory.events oom_kill and oom_group_kill rise. This is what later work reports as a kernel
OOM kill.
"""

from vmlib import (LEAKER, MiB, SENTINEL, Group, check, fact, finish, json_logs,
                   signals_sent, wait_until)
import subprocess

LIMIT = 100 * MiB

with Group("kernel-oom", max_bytes=LIMIT) as group:
    proc = group.spawn([*SENTINEL, "run", "--max-rss", "200Mi", "--no-metrics", "--no-socket",
                        "--log-format", "json", "--", "python3", LEAKER, "--rate", "50"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=90)
    # oom.group: every process of the group is killed; wait for the last to go.
    wait_until(lambda: "populated 0" in group.read("cgroup.events"), 10, "an empty group")
    events = group.events()
    logs = json_logs(err)
    fact(sentinel_exit=proc.returncode, memory_events=events, signals_sent=signals_sent(logs),
         memory_max_bytes=group.number("memory.max"))
    check("sentinel itself died of SIGKILL", proc.returncode == -9, stderr=err[-1500:])
    check("sentinel sent no signal", signals_sent(logs) == [])
    check("the kernel's oom_kill rose", events["oom_kill"] >= 1, memory_events=events)
    check("the whole group was killed (oom_group_kill)", events.get("oom_group_kill", 0) >= 1,
          memory_events=events)

finish()
